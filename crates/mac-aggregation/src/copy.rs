//! Copy mode: modulations that carry the base LM's own token embeddings.
//!
//! In the reference design every value a document holds reaches the frozen
//! LM through a chain of learnt projections (encoder head, aggregator
//! blocks, expansion MLP), all random at the start: before the memory can
//! carry "Porto", that chain must learn to reproduce the identity of any
//! token, which a CPU's budget of steps does not buy (docs/results.md).
//! Copy mode gives the value an identity path instead, so that what has to
//! be learnt is *where to look*, as in a pointer network:
//!
//! - [`CopyHead`] (document side, the amortization): `k` learnt slot queries
//!   attend over the document's contextual LM states; each slot stores a key
//!   (`d_key`, what it read, in context) and the attention-weighted mix of
//!   the document's **raw LM input embeddings** (`d_lm`). A modulation is
//!   `[k, d_key + d_lm]`.
//! - [`CopyReader`] (question side, the aggregation): `p` queries made from
//!   the question attend over the keys of every slot in memory; output `r`
//!   is the attention-weighted mix of the slots' embeddings — `p` tokens in
//!   the LM's input-embedding space, which the LM reads as a soft prompt.
//!
//! With one-hot attention the LM is given exactly the embeddings of the
//! document tokens attended to. Soft mixtures of embeddings give the LM
//! almost nothing (docs/results.md: the mean of an answer's embeddings
//! lowers its NLL by 0.4 nats, the embeddings themselves by 3.5), so both
//! modules can attend *hard*: the forward pass takes the most attended
//! token (slot) exactly, the backward pass the softmax's gradient
//! (straight-through).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Tensor};
use mac_kernels::linear::linear;

use crate::aggregate::doc_weights;
use crate::Aggregation;

/// Shape of a [`CopyHead`].
#[derive(Config, Debug)]
pub struct CopyHeadConfig {
    /// Width of the LM's states and embeddings.
    pub d_lm: usize,
    /// Slots per document `k`.
    pub slots: usize,
    /// Width of each slot's key.
    pub d_key: usize,
    /// Attend hard (straight-through): each slot stores one token exactly.
    #[config(default = false)]
    pub hard: bool,
}

/// Document side of copy mode: contextual states and raw embeddings of a
/// document's LM tokens → `[B, k, d_key + d_lm]`.
#[derive(Module, Debug)]
pub struct CopyHead {
    /// Norm of the contextual states.
    pub norm: LayerNorm,
    /// Slot queries `[k, d_key]`.
    pub queries: Param<Tensor<2>>,
    /// Contextual state → attention key `[d_lm, d_key]`.
    pub w_score: Param<Tensor<2>>,
    /// Contextual state → stored key `[d_lm, d_key]`.
    pub w_key: Param<Tensor<2>>,
    /// Hard attention (straight-through).
    #[module(skip)]
    pub hard: bool,
}

/// A `[rows, cols]` weight drawn uniformly within ±1/√fan_in (PyTorch's
/// `nn.Linear` default scale).
pub(crate) fn uniform(shape: [usize; 2], fan_in: usize, device: &Device) -> Param<Tensor<2>> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Initializer::Uniform {
        min: -bound,
        max: bound,
    }
    .init(shape, device)
}

impl CopyHeadConfig {
    /// A head with random weights.
    pub fn init(&self, device: &Device) -> CopyHead {
        CopyHead {
            norm: LayerNormConfig::new(self.d_lm).init(device),
            queries: Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            }
            .init([self.slots, self.d_key], device),
            w_score: uniform([self.d_lm, self.d_key], self.d_lm, device),
            w_key: uniform([self.d_lm, self.d_key], self.d_lm, device),
            hard: self.hard,
        }
    }
}

impl CopyHead {
    /// Slots of the documents.
    ///
    /// # Shapes
    /// - `context`: `[B, T, d_lm]`, the LM's residual stream over the tokens
    /// - `embeddings`: `[B, T, d_lm]`, the LM's input embeddings of the same tokens
    /// - `valid`: `[B, T]`, true at real tokens
    /// - returns `[B, k, d_key + d_lm]`: each slot's key, then its embedding mix
    pub fn forward(
        &self,
        context: Tensor<3>,
        embeddings: Tensor<3>,
        valid: Tensor<2, Bool>,
    ) -> Tensor<3> {
        let [b, t, _] = context.dims();
        let [k, d_key] = self.queries.dims();
        let h = self.norm.forward(context);
        let scores_in = linear(h.clone(), self.w_score.val(), None); // [B, T, d_key]
        let keys_in = linear(h, self.w_key.val(), None); // [B, T, d_key]
        let q = self
            .queries
            .val()
            .unsqueeze_dim::<3>(0)
            .expand([b, k, d_key]);
        let logits = q.matmul(scores_in.swap_dims(1, 2)) / (d_key as f64).sqrt(); // [B, k, T]
        let masked = valid.bool_not().reshape([b, 1, t]).expand([b, k, t]);
        let attention = sharpen(softmax(logits.mask_fill(masked, -1e9), 2), self.hard);
        let keys = attention.clone().matmul(keys_in); // [B, k, d_key]
        let copied = attention.matmul(embeddings); // [B, k, d_lm]
        Tensor::cat(vec![keys, copied], 2)
    }
}

/// Shape of a [`CopyReader`].
#[derive(Config, Debug)]
pub struct CopyReaderConfig {
    /// Width of the question tokens.
    pub d_question: usize,
    /// Width of a slot's key.
    pub d_key: usize,
    /// Width of the LM's embeddings.
    pub d_lm: usize,
    /// Soft-prompt tokens made per question `p`.
    pub prefix_tokens: usize,
    /// Attend hard (straight-through): each output is one slot exactly.
    #[config(default = false)]
    pub hard: bool,
    /// Learnt *format* tokens put before the read ones: the question's
    /// pooled tokens projected into the LM's embedding space, one per
    /// position (what kind of answer, how to phrase it), so the read
    /// tokens need only carry the value (0 = none).
    #[config(default = 0)]
    pub format_tokens: usize,
}

/// Question side of copy mode: question tokens over the slots of a memory
/// → `p` soft-prompt tokens in the LM's input-embedding space.
#[derive(Module, Debug)]
pub struct CopyReader {
    /// Norm of the pooled question.
    pub norm: LayerNorm,
    /// Pooled question → query `[d_question, d_key]`.
    pub w_query: Param<Tensor<2>>,
    /// Per output token, added to its query `[p, d_key]`.
    pub positions: Param<Tensor<2>>,
    /// Pooled question → format tokens `[d_question, f · d_lm]` (`None`
    /// without format tokens).
    pub w_format: Option<Param<Tensor<2>>>,
    /// Width of a slot's key (the rest of a slot is its embedding mix).
    #[module(skip)]
    d_key: usize,
    /// Hard attention (straight-through).
    #[module(skip)]
    pub hard: bool,
}

impl CopyReaderConfig {
    /// A reader with random weights.
    pub fn init(&self, device: &Device) -> CopyReader {
        CopyReader {
            norm: LayerNormConfig::new(self.d_question).init(device),
            w_query: uniform([self.d_question, self.d_key], self.d_question, device),
            positions: Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            }
            .init([self.prefix_tokens, self.d_key], device),
            // Format tokens start at about the scale of an LM's input
            // embeddings (entries of std ~0.15 for SmolLM2), a quarter of
            // what a unit-variance projection of the normed question gives.
            w_format: (self.format_tokens > 0).then(|| {
                let bound = 0.25 / (self.d_question as f64).sqrt();
                Initializer::Uniform {
                    min: -bound,
                    max: bound,
                }
                .init([self.d_question, self.format_tokens * self.d_lm], device)
            }),
            d_key: self.d_key,
            hard: self.hard,
        }
    }
}

impl CopyReader {
    /// Reads each question's memory.
    ///
    /// # Shapes
    /// - `question`: `[B, m, d_question]`, the question encoder's tokens
    /// - `memory`: `[B, N·k, d_key + d_lm]`, the slots of `N` documents of `k` slots
    /// - `prior`: optional `[B, N]` logits added to every slot of a document
    /// - returns an [`Aggregation`] whose modulation is `[B, f + p, d_lm]`
    ///   (the `f` format tokens, then the `p` read ones) and
    ///   whose one `token_weights` entry is the attention each slot received
    ///   (mean over the `p` outputs), with `doc_weights` per document of `k` slots
    pub fn read(
        &self,
        question: Tensor<3>,
        memory: Tensor<3>,
        slots: usize,
        prior: Option<Tensor<2>>,
    ) -> Aggregation {
        let [b, m, dq] = question.dims();
        let [_, n_slots, width] = memory.dims();
        let [p, d_key] = self.positions.dims();
        let pooled = self
            .norm
            .forward(question.sum_dim(1).reshape([b, dq]) / m as f64);
        let query = linear(pooled.clone(), self.w_query.val(), None).unsqueeze_dim::<3>(1)
            + self.positions.val().unsqueeze_dim::<3>(0); // [B, p, d_key]
        let keys = memory.clone().narrow(2, 0, d_key);
        let values = memory.narrow(2, d_key, width - d_key);
        let mut logits = query.matmul(keys.swap_dims(1, 2)) / (d_key as f64).sqrt(); // [B, p, K]
        if let Some(prior) = prior {
            let n_docs = prior.dims()[1];
            let per_slot = prior
                .unsqueeze_dim::<3>(2)
                .expand([b, n_docs, slots])
                .reshape([b, 1, n_docs * slots]);
            logits = logits + per_slot;
        }
        let attention = softmax(logits, 2);
        let read = sharpen(attention.clone(), self.hard).matmul(values); // [B, p, d_lm]
        let d_lm = width - d_key;
        let modulation = match &self.w_format {
            Some(w) => {
                let f = w.dims()[1] / d_lm;
                let format = linear(pooled, w.val(), None).reshape([b, f, d_lm]);
                Tensor::cat(vec![format, read], 1)
            }
            None => read,
        };
        let token_weights = attention.sum_dim(1).reshape([b, n_slots]) / p as f64;
        let doc_weights = doc_weights(token_weights.clone(), slots);
        Aggregation {
            modulation,
            doc_weights,
            token_weights: vec![token_weights],
        }
    }

    /// Width of a slot's key.
    pub fn key_width(&self) -> usize {
        self.d_key
    }
}

/// Attention weights `[B, rows, K]` as they are, or (`hard`) one-hot on
/// each row's largest weight in the forward pass with the soft weights'
/// gradient (straight-through).
pub fn sharpen(weights: Tensor<3>, hard: bool) -> Tensor<3> {
    if !hard {
        return weights;
    }
    let dims = weights.dims();
    let top = weights.clone().max_dim(2).expand(dims);
    let one_hot = weights.clone().equal(top).float();
    // Ties (equal largest weights) share the row evenly.
    let one_hot = one_hot.clone() / one_hot.sum_dim(2).expand(dims);
    weights.clone() + (one_hot - weights.detach())
}
