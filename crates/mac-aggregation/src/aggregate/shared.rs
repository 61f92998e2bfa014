//! Aggregation of one memory shared by a batch of questions: each block's
//! keys and values are computed once for the memory, and every question's
//! query tokens attend over them in one product per head, instead of one
//! copy of the memory per question.

use burn::tensor::activation::softmax;
use burn::tensor::Tensor;
use mac_kernels::linear::{batched_matmul, linear};

use super::{add, per_token, Aggregation, Aggregator, CrossAttentionBlock};

impl CrossAttentionBlock {
    /// Keys or values `[H, K, dh]` of normalised memory tokens `[K, d]`.
    fn shared_heads(&self, memory: Tensor<2>, w: Tensor<2>) -> Tensor<3> {
        let k_len = memory.dims()[0];
        let inner = w.dims()[1];
        linear(memory, w, None)
            .reshape([k_len, self.n_heads, inner / self.n_heads])
            .swap_dims(0, 1)
    }

    /// `x [B, n, d]` attends over one `memory [K, d]` shared by the batch,
    /// with `bias [B, K]` added to every head's logits; returns the new `x`
    /// and the attention `[B, K]` averaged over heads and query tokens.
    fn forward_shared(
        &self,
        x: Tensor<3>,
        memory: Tensor<2>,
        bias: Option<Tensor<2>>,
    ) -> (Tensor<3>, Tensor<2>) {
        let [b, n, _] = x.dims();
        let k_len = memory.dims()[0];
        let h = self.n_heads;
        let q = self.queries(x.clone());
        let dh = q.dims()[3];
        // All questions' query tokens of one head side by side: [H, B·n, dh].
        let q = q.swap_dims(0, 1).reshape([h, b * n, dh]);
        let mn = self.norm_kv.forward(memory);
        let k = self.shared_heads(mn.clone(), self.w_k.val());
        let v = self.shared_heads(mn, self.w_v.val());
        let mut scores = batched_matmul(q, k.swap_dims(1, 2)) / (dh as f64).sqrt();
        if let Some(bias) = bias {
            scores = scores
                + bias
                    .reshape([1, b, 1, k_len])
                    .expand([h, b, n, k_len])
                    .reshape([h, b * n, k_len]);
        }
        let attn = softmax(scores, 2);
        let weights = attn
            .clone()
            .reshape([h, b, n, k_len])
            .mean_dim(0)
            .mean_dim(2)
            .reshape([b, k_len]);
        let context = batched_matmul(attn, v)
            .reshape([h, b, n, dh])
            .swap_dims(0, 1);
        (self.complete(x, context), weights)
    }
}

impl Aggregator {
    /// Flat aggregation of a batch of questions `[B, n, d]` over one memory
    /// `[N·n, d]` that every question shares, with optional per-document
    /// prior logits `[B, N]`: equal to [`Self::aggregate_with_prior`] over
    /// the memory expanded to `[B, N·n, d]`, at the cost of one question's
    /// keys and values.
    pub fn aggregate_shared(
        &self,
        question: Tensor<3>,
        memory: Tensor<2>,
        prior: Option<Tensor<2>>,
    ) -> Aggregation {
        let n = question.dims()[1];
        let prior = self.with_selector_shared(&question, &memory, prior);
        let bias = prior.map(|p| per_token(p, n));
        self.run_blocks(question, |block, x| {
            block.forward_shared(x, memory.clone(), bias.clone())
        })
    }

    /// Per-document logits `[B, N]`: `prior` plus the selector's scores of
    /// the shared memory `[N·n, d]` (just `prior` without a selector).
    fn with_selector_shared(
        &self,
        question: &Tensor<3>,
        memory: &Tensor<2>,
        prior: Option<Tensor<2>>,
    ) -> Option<Tensor<2>> {
        let Some(selector) = &self.selector else {
            return prior;
        };
        let n = question.dims()[1];
        let [k_len, d] = memory.dims();
        let scores = selector.scores(
            selector.question_keys(question.clone()),
            selector.document_keys(memory.clone().reshape([k_len / n, n, d])),
        );
        Some(add(prior, scores))
    }
}
