//! The aggregation network: question tokens attend over the memory bank.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor, TensorData};

use mac_memory::{BankError, MemoryBank, Result as BankResult};

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
    /// `x [B, n, d]` attends over `memory [B, K, d]`, with `bias [B, K]`
    /// added to every head's logits; returns the new `x` and the attention
    /// `[B, K]` averaged over heads and query tokens.
    fn forward(
        &self,
        x: Tensor<3>,
        memory: Tensor<3>,
        bias: Option<Tensor<2>>,
    ) -> (Tensor<3>, Tensor<2>) {
        let [b, n, _] = x.dims();
        let k_len = memory.dims()[1];
        let inner = self.w_q.dims()[1];
        let (h, dh) = (self.n_heads, inner / self.n_heads);
        let heads = |z: Tensor<3>, len: usize| z.reshape([b, len, h, dh]).swap_dims(1, 2);
        let xn = self.norm_q.forward(x.clone());
        let mn = self.norm_kv.forward(memory);
        let q = heads(linear(xn, self.w_q.val(), None), n);
        let k = heads(linear(mn.clone(), self.w_k.val(), None), k_len);
        let v = heads(linear(mn, self.w_v.val(), None), k_len);
        let mut scores = q.matmul(k.swap_dims(2, 3)) / (dh as f64).sqrt();
        if let Some(bias) = bias {
            scores = scores + bias.reshape([b, 1, 1, k_len]).expand([b, h, n, k_len]);
        }
        let attn = softmax(scores, 3);
        let weights = attn.clone().mean_dim(1).mean_dim(2).reshape([b, k_len]);
        let ctx = attn.matmul(v).swap_dims(1, 2).reshape([b, n, inner]);
        let x = x + linear(ctx, self.w_o.val(), None);
        let ff = self
            .ff_down
            .forward(gelu(self.ff_up.forward(self.norm_ff.forward(x.clone()))));
        (x + ff, weights)
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
            question_residual: self.question_residual,
        }
    }
}

fn doc_weights(token_weights: Tensor<2>, n: usize) -> Vec<Vec<f32>> {
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
        let bias = prior.map(|p| per_token(p, n));
        let start = (!self.question_residual).then(|| question.clone());
        let mut x = question;
        let mut token_weights = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (y, w) = block.forward(x, memory.clone(), bias.clone());
            x = y;
            token_weights.push(w);
        }
        let modulation = match start {
            Some(q) => self.norm_out.forward(x - q),
            None => self.norm_out.forward(x),
        };
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

    /// Hierarchical aggregation over documents `[B, N, n, d]` already in
    /// memory: chunks of at most `m` documents are aggregated into one
    /// modulation each (conditioned on the question), repeatedly, until at
    /// most `m` remain; then once more. With `N ≤ m` this is [`Self::aggregate`].
    /// `prior` `[B, N]`: per-document prior logits; a chunk's is the
    /// log-sum-exp of its documents'.
    pub fn aggregate_hierarchical(
        &self,
        question: Tensor<3>,
        docs: Tensor<4>,
        prior: Option<Tensor<2>>,
        m: usize,
    ) -> Aggregation {
        let [b, n_docs, n, d] = docs.dims();
        let m = m.max(2);
        if n_docs <= m {
            return self.aggregate_with_prior(question, docs.reshape([b, n_docs * n, d]), prior);
        }
        let chunks = (0..n_docs).step_by(m).map(|start| {
            let len = m.min(n_docs - start);
            let memory = docs.clone().narrow(1, start, len).reshape([b, len * n, d]);
            let prior = prior.clone().map(|p| p.narrow(1, start, len));
            Ok::<_, std::convert::Infallible>((memory, prior))
        });
        match self.reduce_chunks(question, chunks, m) {
            Ok(agg) => agg,
            Err(never) => match never {},
        }
    }

    /// One level of hierarchical aggregation: each chunk `[B, len·n, d]`
    /// (with its documents' prior logits `[B, len]`) is aggregated into one
    /// modulation, then the results are aggregated hierarchically; document
    /// weights are carried through the levels.
    fn reduce_chunks<E>(
        &self,
        question: Tensor<3>,
        chunks: impl Iterator<Item = Result<(Tensor<3>, Option<Tensor<2>>), E>>,
        m: usize,
    ) -> Result<Aggregation, E> {
        let mut parts = Vec::new();
        let mut weights = Vec::new();
        let mut chunk_priors = Vec::new();
        for chunk in chunks {
            let (memory, prior) = chunk?;
            chunk_priors.extend(prior.clone().map(log_sum_exp));
            let agg = self.aggregate_with_prior(question.clone(), memory, prior);
            parts.push(agg.modulation.unsqueeze_dim::<4>(1));
            weights.push(agg.doc_weights);
        }
        let prior = (chunk_priors.len() == parts.len()).then(|| Tensor::cat(chunk_priors, 1));
        let top = self.aggregate_hierarchical(question, Tensor::cat(parts, 1), prior, m);
        Ok(Aggregation {
            doc_weights: combine(&weights, &top.doc_weights),
            modulation: top.modulation,
            token_weights: Vec::new(),
        })
    }

    /// Hierarchical aggregation streamed from a bank on disk: only `m`
    /// documents' modulations are read and attended at a time, so memory is
    /// O(m), not O(N). `question` is `[B, n, d]`. With a `prior`, the bank
    /// must store retrieval keys as wide as the prior's question keys.
    pub fn aggregate_bank(
        &self,
        question: Tensor<3>,
        bank: &MemoryBank,
        prior: Option<&SimilarityPrior>,
        m: usize,
    ) -> BankResult<Aggregation> {
        let device = question.device();
        let [b, n, d] = question.dims();
        let shape = bank.shape();
        if (shape.n_tokens, shape.d_mod) != (n, d) {
            return Err(BankError::Invalid(format!(
                "{}: bank holds [{}, {}] modulations, the question tokens are [{n}, {d}]",
                bank.dir().display(),
                shape.n_tokens,
                shape.d_mod
            )));
        }
        if bank.is_empty() {
            return Err(BankError::Invalid(format!(
                "{}: the memory bank is empty: ingest documents first",
                bank.dir().display()
            )));
        }
        if let Some(p) = prior {
            let key_dim = p.question_keys.dims()[1];
            if shape.key_dim != key_dim {
                return Err(BankError::Invalid(format!(
                    "{}: the similarity prior compares keys of {key_dim} values, the bank stores {} \
                     (a bank built before keys were stored has none: rebuild it)",
                    bank.dir().display(),
                    shape.key_dim
                )));
            }
        }
        let m = m.max(2);
        let load = |c: mac_memory::Chunk| -> (Tensor<3>, Option<Tensor<2>>) {
            let len = c.ids.len();
            let memory = Tensor::<3>::from_data(TensorData::new(c.data, [1, len * n, d]), &device)
                .expand([b, len * n, d]);
            let prior = prior.map(|p| {
                let keys = TensorData::new(c.keys, [len, shape.key_dim]);
                p.logits(Tensor::from_data(keys, &device))
            });
            (memory, prior)
        };
        if bank.len() <= m {
            let (memory, prior) = load(bank.modulations(0, bank.len())?);
            return Ok(self.aggregate_with_prior(question, memory, prior));
        }
        let chunks = bank.chunks(m).map(|c| c.map(load));
        self.reduce_chunks(question, chunks, m)
    }
}

/// Document weights through one level: weight within its chunk times the
/// chunk's weight one level up.
fn combine(within: &[Vec<Vec<f32>>], chunk_weights: &[Vec<f32>]) -> Vec<Vec<f32>> {
    chunk_weights
        .iter()
        .enumerate()
        .map(|(q, cw)| {
            within
                .iter()
                .zip(cw)
                .flat_map(|(chunk, &w)| chunk[q].iter().map(move |x| x * w))
                .collect()
        })
        .collect()
}
