//! What the aggregator reads: a memory of documents, a chunk at a time
//! ([`ChunkedMemory`]; [`InMemory`] for modulations already in hand), and
//! the errors of reading one.

use burn::tensor::Tensor;

use super::SimilarityPrior;

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
pub(super) struct ChunkReader<'a, M> {
    pub(super) memory: &'a M,
    prior: Option<&'a SimilarityPrior>,
    batch: usize,
    pub(super) n_tokens: usize,
    d_mod: usize,
}

impl<'a, M: ChunkedMemory> ChunkReader<'a, M> {
    pub(super) fn new(
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
    pub(super) fn read_documents(
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
    pub(super) fn read_shared(
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
pub(super) fn combine(within: &[Vec<Vec<f32>>], chunk_weights: &[Vec<f32>]) -> Vec<Vec<f32>> {
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
