//! The document selector: a learnt, question-conditioned score per document
//! added to the aggregator's attention logits over that document's tokens.
//!
//! A question and a document each get a unit key (a projection of the mean
//! of their tokens); the score is a learnt scale times their cosine. Trained
//! with a contrastive loss over large banks (the selection phase), it lets
//! the aggregation pick a document out of a bank of hundreds, where the
//! attention's own token-level matching learns slowly. It reads only what
//! the bank stores (the modulations), so it needs no other key.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

use super::unit;

/// Learnt question and document keys and the scale of their cosine.
#[derive(Module, Debug)]
pub struct DocumentSelector {
    /// Question key projection `[d, k]` (of the mean question token).
    pub w_question: Param<Tensor<2>>,
    /// Document key projection `[d, k]` (of the mean modulation token).
    pub w_document: Param<Tensor<2>>,
    /// Logit per unit of cosine, as its logarithm `[1]`.
    pub log_scale: Param<Tensor<1>>,
}

/// Initial logit per unit of cosine.
const INITIAL_SCALE: f64 = 5.0;

impl DocumentSelector {
    /// A selector for tokens of width `d` with keys of width `k`.
    pub fn init(d: usize, k: usize, device: &Device) -> Self {
        let bound = 1.0 / (d as f64).sqrt();
        let w = || {
            Initializer::Uniform {
                min: -bound,
                max: bound,
            }
            .init([d, k], device)
        };
        Self {
            w_question: w(),
            w_document: w(),
            log_scale: Initializer::Constant {
                value: INITIAL_SCALE.ln(),
            }
            .init([1], device),
        }
    }

    /// Unit keys `[B, k]` of question tokens `[B, n, d]`.
    pub fn question_keys(&self, question: Tensor<3>) -> Tensor<2> {
        let [b, _, d] = question.dims();
        unit(
            question
                .mean_dim(1)
                .reshape([b, d])
                .matmul(self.w_question.val()),
        )
    }

    /// Unit keys `[N, k]` of documents `[N, n, d]`.
    pub fn document_keys(&self, documents: Tensor<3>) -> Tensor<2> {
        let [n_docs, _, d] = documents.dims();
        unit(
            documents
                .mean_dim(1)
                .reshape([n_docs, d])
                .matmul(self.w_document.val()),
        )
    }

    /// Scores `[B, N]` of unit question keys `[B, k]` against unit document
    /// keys `[N, k]`.
    pub fn scores(&self, question_keys: Tensor<2>, document_keys: Tensor<2>) -> Tensor<2> {
        self.scaled(question_keys.matmul(document_keys.transpose()))
    }

    /// Scores `[B, N]` of unit question keys `[B, k]` against each
    /// question's own documents `[B, N, n, d]`.
    pub fn scores_each(&self, question_keys: Tensor<2>, documents: Tensor<4>) -> Tensor<2> {
        let [b, n_docs, n, d] = documents.dims();
        let keys = self
            .document_keys(documents.reshape([b * n_docs, n, d]))
            .reshape([b, n_docs, question_keys.dims()[1]]);
        let k = keys.dims()[2];
        let cos = (keys * question_keys.reshape([b, 1, k]).expand([b, n_docs, k]))
            .sum_dim(2)
            .reshape([b, n_docs]);
        self.scaled(cos)
    }

    /// Cosines `[B, N]` times the learnt scale.
    fn scaled(&self, cos: Tensor<2>) -> Tensor<2> {
        let dims = cos.dims();
        cos * self.log_scale.val().exp().reshape([1, 1]).expand(dims)
    }
}
