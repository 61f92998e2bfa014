//! The aggregation network: question tokens attend over the memory bank.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Tensor};
use mac_kernels::linear::{batched_matmul, linear, linear_layer};

mod memory;
mod selector;
mod shared;
mod streamed;

pub use memory::{AggregationError, ChunkedMemory, InMemory, MemoryChunk};
pub use selector::DocumentSelector;

/// Configuration of an [`Aggregator`] (reference: 4 blocks, 8 heads x 96).
#[derive(Config, Debug)]
pub struct AggregatorConfig {
    /// Modulation width `d_mod`.
    pub d_mod: usize,
    /// Cross-attention blocks.
    #[config(default = 4)]
    pub n_blocks: usize,
    /// Heads per block.
    #[config(default = 8)]
    pub n_heads: usize,
    /// Width of one head.
    #[config(default = 96)]
    pub d_head: usize,
    /// Keep the question tokens on the residual path to the output. With
    /// `false` the output is only what the blocks added to them (the
    /// question still chooses what is read), so the question cannot steer
    /// the prefix on its own and the memory's share of it is not drowned.
    #[config(default = true)]
    pub question_residual: bool,
    /// Key width of a learnt [`DocumentSelector`] (`None`: no selector, the
    /// reference).
    #[config(default = "None")]
    pub selector_dim: Option<usize>,
}

/// One pre-LayerNorm cross-attention block with a GELU feed-forward.
#[derive(Module, Debug)]
pub struct CrossAttentionBlock {
    /// Norm of the queries.
    pub norm_q: LayerNorm,
    /// Norm of the memory.
    pub norm_kv: LayerNorm,
    /// Query projection `[d, H·dh]`.
    pub w_q: Param<Tensor<2>>,
    /// Key projection.
    pub w_k: Param<Tensor<2>>,
    /// Value projection.
    pub w_v: Param<Tensor<2>>,
    /// Output projection `[H·dh, d]`.
    pub w_o: Param<Tensor<2>>,
    /// Norm before the feed-forward.
    pub norm_ff: LayerNorm,
    /// Feed-forward up.
    pub ff_up: Linear,
    /// Feed-forward down.
    pub ff_down: Linear,
    #[module(skip)]
    n_heads: usize,
}

impl CrossAttentionBlock {
    /// `[B, L, H·dh]` → `[B, H, L, dh]`.
    fn heads(&self, z: Tensor<3>) -> Tensor<4> {
        let [b, len, inner] = z.dims();
        z.reshape([b, len, self.n_heads, inner / self.n_heads])
            .swap_dims(1, 2)
    }

    /// Queries `[B, H, n, dh]` of the question tokens `x [B, n, d]`.
    fn queries(&self, x: Tensor<3>) -> Tensor<4> {
        self.heads(linear(self.norm_q.forward(x), self.w_q.val(), None))
    }

    /// Keys and values `[B, H, K, dh]` of `memory [B, K, d]`.
    fn keys_values(&self, memory: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        let mn = self.norm_kv.forward(memory);
        (
            self.heads(linear(mn.clone(), self.w_k.val(), None)),
            self.heads(linear(mn, self.w_v.val(), None)),
        )
    }

    /// Attention logits `[B, H, n, K]`: scaled dot products plus the
    /// per-token bias `[B, K]` shared by every head and query token.
    fn scores(&self, q: Tensor<4>, k: Tensor<4>, bias: Option<Tensor<2>>) -> Tensor<4> {
        let [b, h, n, dh] = q.dims();
        let k_len = k.dims()[2];
        let scores = batched_matmul(q, k.swap_dims(2, 3)) / (dh as f64).sqrt();
        match bias {
            Some(bias) => scores + bias.reshape([b, 1, 1, k_len]).expand([b, h, n, k_len]),
            None => scores,
        }
    }

    /// The rest of the block once attention has read `context [B, H, n, dh]`:
    /// output projection and feed-forward, each added to `x [B, n, d]`.
    fn complete(&self, x: Tensor<3>, context: Tensor<4>) -> Tensor<3> {
        let [b, _, n, _] = context.dims();
        let inner = self.w_o.dims()[0];
        let ctx = context.swap_dims(1, 2).reshape([b, n, inner]);
        let x = x + linear(ctx, self.w_o.val(), None);
        let ff = linear_layer(
            &self.ff_down,
            gelu(linear_layer(&self.ff_up, self.norm_ff.forward(x.clone()))),
        );
        x + ff
    }

    /// `x [B, n, d]` attends over `memory [B, K, d]`, with `bias [B, K]`
    /// added to every head's logits; returns the new `x` and the attention
    /// `[B, K]` averaged over heads and query tokens.
    fn forward(
        &self,
        x: Tensor<3>,
        memory: Tensor<3>,
        bias: Option<Tensor<2>>,
    ) -> (Tensor<3>, Tensor<2>) {
        let [b, _, _] = x.dims();
        let k_len = memory.dims()[1];
        let q = self.queries(x.clone());
        let (k, v) = self.keys_values(memory);
        let attn = softmax(self.scores(q, k, bias), 3);
        let weights = attn.clone().mean_dim(1).mean_dim(2).reshape([b, k_len]);
        (self.complete(x, batched_matmul(attn, v)), weights)
    }
}

/// The aggregation network (the cross-attention part; the question's tokens
/// come from a [`crate::QueryTokenHead`] over the question encoder).
#[derive(Module, Debug)]
pub struct Aggregator {
    /// Cross-attention blocks.
    pub blocks: Vec<CrossAttentionBlock>,
    /// Final norm.
    pub norm_out: LayerNorm,
    /// Learnt per-document scores added to the attention logits.
    pub selector: Option<DocumentSelector>,
    #[module(skip)]
    question_residual: bool,
}

/// The question–document similarity prior: `scale · cos(question key,
/// document key)` is added to the aggregator's attention logits over every
/// token of that document, so a question leans towards the documents its
/// frozen sentence embedding resembles before anything is learnt. Keys are
/// compared after L2 normalisation.
#[derive(Debug, Clone)]
pub struct SimilarityPrior {
    /// One key per question `[B, k]`.
    pub question_keys: Tensor<2>,
    /// Logit per unit of cosine similarity.
    pub scale: f64,
}

impl SimilarityPrior {
    /// Document keys `[N, k]` → prior logits `[B, N]`.
    pub fn logits(&self, document_keys: Tensor<2>) -> Tensor<2> {
        unit(self.question_keys.clone()).matmul(unit(document_keys).transpose()) * self.scale
    }
}

fn unit(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// `a + b` where both exist, else `b`.
fn add(a: Option<Tensor<2>>, b: Tensor<2>) -> Tensor<2> {
    match a {
        Some(a) => a + b,
        None => b,
    }
}

/// `log Σ exp` over dim 1, `[B, N]` → `[B, 1]`: a chunk's prior as the
/// total prior mass of its documents.
fn log_sum_exp(x: Tensor<2>) -> Tensor<2> {
    let max = x.clone().max_dim(1);
    (x - max.clone()).exp().sum_dim(1).log() + max
}

/// Per-document logits `[B, N]` → per-token `[B, N·n]`.
fn per_token(prior: Tensor<2>, n: usize) -> Tensor<2> {
    let [b, n_docs] = prior.dims();
    prior
        .unsqueeze_dim::<3>(2)
        .expand([b, n_docs, n])
        .reshape([b, n_docs * n])
}

/// The result of aggregating a bank for a batch of questions.
#[derive(Debug, Clone)]
pub struct Aggregation {
    /// One modulation per question `[B, n, d_mod]`.
    pub modulation: Tensor<3>,
    /// `[B][N]`: how much attention each document received (sums to 1 per question).
    pub doc_weights: Vec<Vec<f32>>,
    /// Per block, the attention each memory token received `[B, K]`
    /// (mean over heads and question tokens), differentiable; empty after
    /// hierarchical aggregation.
    pub token_weights: Vec<Tensor<2>>,
}

impl AggregatorConfig {
    /// Builds the network with random weights.
    pub fn init(&self, device: &Device) -> Aggregator {
        let d = self.d_mod;
        let inner = self.n_heads * self.d_head;
        let w = |i: usize, o: usize| -> Param<Tensor<2>> {
            let bound = 1.0 / (i as f64).sqrt();
            Initializer::Uniform {
                min: -bound,
                max: bound,
            }
            .init([i, o], device)
        };
        let blocks = (0..self.n_blocks)
            .map(|_| CrossAttentionBlock {
                norm_q: LayerNormConfig::new(d).init(device),
                norm_kv: LayerNormConfig::new(d).init(device),
                w_q: w(d, inner),
                w_k: w(d, inner),
                w_v: w(d, inner),
                w_o: w(inner, d),
                norm_ff: LayerNormConfig::new(d).init(device),
                ff_up: LinearConfig::new(d, 4 * d).init(device),
                ff_down: LinearConfig::new(4 * d, d).init(device),
                n_heads: self.n_heads,
            })
            .collect();
        Aggregator {
            blocks,
            norm_out: LayerNormConfig::new(d).init(device),
            selector: self
                .selector_dim
                .map(|k| DocumentSelector::init(d, k, device)),
            question_residual: self.question_residual,
        }
    }
}

/// Per question, the attention share of each document of `n` tokens, from
/// the attention each memory token received `[B, N·n]`.
pub(crate) fn doc_weights(token_weights: Tensor<2>, n: usize) -> Vec<Vec<f32>> {
    let [b, k] = token_weights.dims();
    let flat: Vec<f32> = token_weights
        .reshape([b, k / n, n])
        .sum_dim(2)
        .reshape([b, k / n])
        .try_to_vec_as::<f32>()
        .unwrap_or_default();
    flat.chunks(k / n).map(<[f32]>::to_vec).collect()
}

impl Aggregator {
    /// Flat aggregation: `question [B, n, d]` over `memory [B, N·n, d]`
    /// (use [`Tensor::expand`] to share one bank across the batch).
    pub fn aggregate(&self, question: Tensor<3>, memory: Tensor<3>) -> Aggregation {
        self.aggregate_with_prior(question, memory, None)
    }

    /// [`Self::aggregate`] with per-document prior logits `[B, N]` (see
    /// [`SimilarityPrior`]) added to the attention over each document's tokens.
    pub fn aggregate_with_prior(
        &self,
        question: Tensor<3>,
        memory: Tensor<3>,
        prior: Option<Tensor<2>>,
    ) -> Aggregation {
        let n = question.dims()[1];
        let prior = self.with_selector_each(&question, &memory, prior);
        let bias = prior.map(|p| per_token(p, n));
        self.run_blocks(question, |block, x| {
            block.forward(x, memory.clone(), bias.clone())
        })
    }

    /// The blocks over `question [B, n, d]`, each reading the memory through
    /// `forward` (new tokens and the attention per memory token `[B, K]`),
    /// then the output norm and the per-document attention of the last block.
    fn run_blocks(
        &self,
        question: Tensor<3>,
        forward: impl Fn(&CrossAttentionBlock, Tensor<3>) -> (Tensor<3>, Tensor<2>),
    ) -> Aggregation {
        let n = question.dims()[1];
        let start = (!self.question_residual).then(|| question.clone());
        let mut x = question;
        let mut token_weights = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (y, w) = forward(block, x);
            x = y;
            token_weights.push(w);
        }
        let modulation = self.output(x, start);
        let doc_weights = token_weights
            .last()
            .map(|w| doc_weights(w.clone(), n))
            .unwrap_or_default();
        Aggregation {
            modulation,
            doc_weights,
            token_weights,
        }
    }

    /// Per-document logits `[B, N]`: `prior` plus the selector's scores of
    /// each question's memory `[B, N·n, d]` (just `prior` without a selector).
    fn with_selector_each(
        &self,
        question: &Tensor<3>,
        memory: &Tensor<3>,
        prior: Option<Tensor<2>>,
    ) -> Option<Tensor<2>> {
        let Some(selector) = &self.selector else {
            return prior;
        };
        let keys = selector.question_keys(question.clone());
        Some(add(
            prior,
            self.selector_scores_each(selector, keys, memory, question.dims()[1]),
        ))
    }

    /// The selector's scores `[B, N]` of question keys `[B, k]` against each
    /// question's memory `[B, N·n, d]` of `n`-token documents.
    fn selector_scores_each(
        &self,
        selector: &DocumentSelector,
        question_keys: Tensor<2>,
        memory: &Tensor<3>,
        n: usize,
    ) -> Tensor<2> {
        let [b, k_len, d] = memory.dims();
        selector.scores_each(question_keys, memory.clone().reshape([b, k_len / n, n, d]))
    }

    /// The final norm over what the blocks made of the question tokens
    /// (`start`: the question tokens when they stay off the output).
    fn output(&self, x: Tensor<3>, start: Option<Tensor<3>>) -> Tensor<3> {
        match start {
            Some(q) => self.norm_out.forward(x - q),
            None => self.norm_out.forward(x),
        }
    }

    /// Each question over its own documents: `questions [B, n, d]`,
    /// `docs[i]` `[k_i, n, d]` → one modulation per question `[B, n, d]`
    /// (MAC + retrieval: question `i` attends only over its top-k documents).
    pub fn aggregate_each(&self, questions: Tensor<3>, docs: Vec<Tensor<3>>) -> Tensor<3> {
        let mods: Vec<Tensor<3>> = docs
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let [k, n, dm] = d.dims();
                let q = questions.clone().narrow(0, i, 1);
                self.aggregate(q, d.reshape([1, k * n, dm])).modulation
            })
            .collect();
        Tensor::cat(mods, 0)
    }
}
