//! The aggregation network: question tokens attend over the memory bank.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Tensor};
use mac_lm::linear::{linear, linear_layer};

mod selector;
mod shared;

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
        let scores = q.matmul(k.swap_dims(2, 3)) / (dh as f64).sqrt();
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
        (self.complete(x, attn.matmul(v)), weights)
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

    /// A memory of at most `limit` documents read at once and aggregated
    /// flat (both streamed forms reduce to this); `None` for a larger one.
    fn aggregate_whole<M: ChunkedMemory>(
        &self,
        question: &Tensor<3>,
        reader: &ChunkReader<'_, M>,
        limit: usize,
    ) -> Result<Option<Aggregation>, M::Error> {
        let n_docs = reader.memory.n_documents();
        if n_docs > limit {
            return Ok(None);
        }
        let (memory, prior) = reader.read_shared(0, n_docs)?;
        Ok(Some(self.aggregate_shared(question.clone(), memory, prior)))
    }

    /// Hierarchical aggregation (the paper's approximation for large banks)
    /// over a memory read chunk by chunk: chunks of at most `m` documents are
    /// aggregated into one modulation each, conditioned on the question, and
    /// the results are aggregated again until at most `m` remain; memory is
    /// O(m). [`Self::aggregate_streamed`] is exact; this is kept for
    /// comparison with the paper.
    pub fn aggregate_hierarchical_streamed<M: ChunkedMemory>(
        &self,
        question: Tensor<3>,
        memory: &M,
        prior: Option<&SimilarityPrior>,
        m: usize,
    ) -> Result<Aggregation, M::Error> {
        let m = m.max(2);
        let n_docs = memory.n_documents();
        let reader = ChunkReader::new(memory, &question, prior)?;
        if let Some(whole) = self.aggregate_whole(&question, &reader, m)? {
            return Ok(whole);
        }
        let chunks = (0..n_docs)
            .step_by(m)
            .map(|start| reader.read_documents(start, m.min(n_docs - start)));
        self.reduce_chunks(question, chunks, m)
    }

    /// Exact aggregation over a memory of any size, read `chunk` documents
    /// at a time: every block's attention over all `N·n` memory tokens is
    /// computed chunk by chunk and merged with an online (log-sum-exp)
    /// softmax, so the result equals [`Self::aggregate_with_prior`] over the
    /// whole memory at once while only one chunk is held. Each block reads
    /// the memory once, and the last block once more for the per-document
    /// attention. `question` is `[B, n, d]`; the memory is shared by every
    /// question.
    pub fn aggregate_streamed<M: ChunkedMemory>(
        &self,
        question: Tensor<3>,
        memory: &M,
        prior: Option<&SimilarityPrior>,
        chunk: usize,
    ) -> Result<Aggregation, M::Error> {
        let chunk = chunk.max(1);
        let n_docs = memory.n_documents();
        let reader = ChunkReader::new(memory, &question, prior)?;
        if let Some(whole) = self.aggregate_whole(&question, &reader, chunk)? {
            return Ok(whole);
        }
        let b = question.dims()[0];
        let n = reader.n_tokens;
        let starts = || {
            (0..n_docs)
                .step_by(chunk)
                .map(move |s| (s, chunk.min(n_docs - s)))
        };
        let selector = self
            .selector
            .as_ref()
            .map(|s| (s, s.question_keys(question.clone())));
        // Memory `[B, len·n, d]` of a chunk and its attention bias per token
        // (the prior and the selector's scores).
        let read = |s: usize, len: usize| -> Result<(Tensor<3>, Option<Tensor<2>>), M::Error> {
            let (mem, prior) = reader.read_documents(s, len)?;
            let prior = match &selector {
                Some((sel, keys)) => Some(add(
                    prior,
                    self.selector_scores_each(sel, keys.clone(), &mem, n),
                )),
                None => prior,
            };
            Ok((mem, prior.map(|p| per_token(p, n))))
        };
        let start = (!self.question_residual).then(|| question.clone());
        let mut x = question;
        let mut doc_weights = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            let q = block.queries(x.clone());
            // Running max, normaliser and weighted values, per head and query token.
            let mut state: Option<(Tensor<4>, Tensor<4>, Tensor<4>)> = None;
            for (s, len) in starts() {
                let (mem, bias) = read(s, len)?;
                let (k, v) = block.keys_values(mem);
                let scores = block.scores(q.clone(), k, bias);
                let chunk_max = scores.clone().max_dim(3);
                state = Some(match state {
                    None => {
                        let p = (scores - chunk_max.clone()).exp();
                        (chunk_max, p.clone().sum_dim(3), p.matmul(v))
                    }
                    Some((max, sum, acc)) => {
                        let new_max = max.clone().max_pair(chunk_max);
                        let p = (scores - new_max.clone()).exp();
                        let decay = (max - new_max.clone()).exp();
                        (
                            new_max,
                            sum * decay.clone() + p.clone().sum_dim(3),
                            acc * decay + p.matmul(v),
                        )
                    }
                });
            }
            let Some((max, sum, acc)) = state else {
                unreachable!("a memory of at least one document has a first chunk")
            };
            if i + 1 == self.blocks.len() {
                // The attention each document received: a second pass with
                // the final normaliser, mean over heads and query tokens.
                doc_weights = vec![Vec::with_capacity(n_docs); b];
                for (s, len) in starts() {
                    let (mem, bias) = read(s, len)?;
                    let (k, _) = block.keys_values(mem);
                    let w = (block.scores(q.clone(), k, bias) - max.clone()).exp() / sum.clone();
                    let w = w.mean_dim(1).mean_dim(2).reshape([b, len * n]);
                    for (row, chunk_weights) in doc_weights.iter_mut().zip(self::doc_weights(w, n))
                    {
                        row.extend(chunk_weights);
                    }
                }
            }
            x = block.complete(x, acc / sum);
        }
        Ok(Aggregation {
            modulation: self.output(x, start),
            doc_weights,
            token_weights: Vec::new(),
        })
    }
}

/// Why a memory cannot be aggregated: reported through the memory's own
/// error type (see [`ChunkedMemory::Error`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregationError {
    /// The memory holds no documents.
    EmptyMemory,
    /// A chunk's modulations are not `[len, n, d]` for the question's `n`, `d`.
    Shape {
        /// What the memory returned.
        found: Vec<usize>,
        /// What the question tokens need.
        expected: Vec<usize>,
    },
    /// The similarity prior is on, but the memory stores no retrieval keys.
    MissingKeys,
    /// The memory's retrieval keys are not as wide as the question's.
    KeyWidth {
        /// Width of the question keys.
        question: usize,
        /// Width of the memory's keys.
        memory: usize,
    },
}

impl std::fmt::Display for AggregationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EmptyMemory => write!(f, "the memory bank is empty: ingest documents first"),
            Self::Shape { found, expected } => write!(
                f,
                "the memory holds modulations of shape {found:?}, the question tokens need {expected:?}"
            ),
            Self::MissingKeys => write!(
                f,
                "the similarity prior needs retrieval keys, and this memory stores none \
                 (a bank built before keys were stored has none: rebuild it)"
            ),
            Self::KeyWidth { question, memory } => write!(
                f,
                "the similarity prior compares keys of {question} values, the memory stores {memory}"
            ),
        }
    }
}

impl std::error::Error for AggregationError {}

/// A memory the aggregator reads a chunk of documents at a time, as often
/// as it needs (exact streaming reads it once per block): a bank on disk
/// (its adapter lives with the runtime) or modulations already in memory
/// ([`InMemory`]).
pub trait ChunkedMemory {
    /// What a failed read reports; [`AggregationError`]s are reported through it.
    type Error: From<AggregationError>;
    /// Number of documents.
    fn n_documents(&self) -> usize;
    /// Documents `start..start + len` (`start + len <= n_documents()`).
    fn read(&self, start: usize, len: usize) -> Result<MemoryChunk, Self::Error>;
}

/// Some documents of a [`ChunkedMemory`].
#[derive(Debug, Clone)]
pub struct MemoryChunk {
    /// Their modulations `[len, n, d]`, shared by every question.
    pub modulations: Tensor<3>,
    /// Their retrieval keys `[len, k]`, when the memory stores them.
    pub keys: Option<Tensor<2>>,
}

/// Modulations (and keys) already in memory, as a [`ChunkedMemory`].
#[derive(Debug, Clone)]
pub struct InMemory {
    /// `[N, n, d]`.
    pub modulations: Tensor<3>,
    /// `[N, k]`, or `None`.
    pub keys: Option<Tensor<2>>,
}

impl ChunkedMemory for InMemory {
    type Error = AggregationError;
    fn n_documents(&self) -> usize {
        self.modulations.dims()[0]
    }
    fn read(&self, start: usize, len: usize) -> Result<MemoryChunk, AggregationError> {
        Ok(MemoryChunk {
            modulations: self.modulations.clone().narrow(0, start, len),
            keys: self.keys.clone().map(|k| k.narrow(0, start, len)),
        })
    }
}

/// Reads chunks of a [`ChunkedMemory`] as the aggregator needs them: memory
/// tokens broadcast over the questions, and the prior's logits.
struct ChunkReader<'a, M> {
    memory: &'a M,
    prior: Option<&'a SimilarityPrior>,
    batch: usize,
    n_tokens: usize,
    d_mod: usize,
}

impl<'a, M: ChunkedMemory> ChunkReader<'a, M> {
    fn new(
        memory: &'a M,
        question: &Tensor<3>,
        prior: Option<&'a SimilarityPrior>,
    ) -> Result<Self, M::Error> {
        if memory.n_documents() == 0 {
            return Err(AggregationError::EmptyMemory.into());
        }
        let [batch, n_tokens, d_mod] = question.dims();
        Ok(Self {
            memory,
            prior,
            batch,
            n_tokens,
            d_mod,
        })
    }

    /// Memory `[B, len·n, d]` (one copy per question) and per-document
    /// prior logits `[B, len]`.
    fn read_documents(
        &self,
        start: usize,
        len: usize,
    ) -> Result<(Tensor<3>, Option<Tensor<2>>), M::Error> {
        let (memory, prior) = self.read_shared(start, len)?;
        let (n, d) = (self.n_tokens, self.d_mod);
        let memory = memory
            .reshape([1, len * n, d])
            .expand([self.batch, len * n, d]);
        Ok((memory, prior))
    }

    /// Memory `[len·n, d]` shared by every question and per-document prior
    /// logits `[B, len]`.
    fn read_shared(
        &self,
        start: usize,
        len: usize,
    ) -> Result<(Tensor<2>, Option<Tensor<2>>), M::Error> {
        let chunk = self.memory.read(start, len)?;
        let (n, d) = (self.n_tokens, self.d_mod);
        let dims = chunk.modulations.dims();
        if dims != [len, n, d] {
            return Err(AggregationError::Shape {
                found: dims.to_vec(),
                expected: vec![len, n, d],
            }
            .into());
        }
        let prior = match self.prior {
            None => None,
            Some(p) => {
                let keys = chunk.keys.ok_or(AggregationError::MissingKeys)?;
                let (question, memory) = (p.question_keys.dims()[1], keys.dims()[1]);
                if question != memory {
                    return Err(AggregationError::KeyWidth { question, memory }.into());
                }
                Some(p.logits(keys))
            }
        };
        Ok((chunk.modulations.reshape([len * n, d]), prior))
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
