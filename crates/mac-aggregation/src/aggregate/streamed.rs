//! Aggregation over a [`ChunkedMemory`] read a chunk at a time: exactly
//! (every block's attention over all documents with an online-softmax
//! merge across chunks, memory O(chunk)) or hierarchically, as in the paper
//! (each chunk aggregated into one modulation, then those).

use burn::tensor::Tensor;
use mac_kernels::linear::batched_matmul;

use super::memory::{combine, ChunkReader};
use super::{add, log_sum_exp, per_token, Aggregation, Aggregator, ChunkedMemory, SimilarityPrior};

impl Aggregator {
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
                        (chunk_max, p.clone().sum_dim(3), batched_matmul(p, v))
                    }
                    Some((max, sum, acc)) => {
                        let new_max = max.clone().max_pair(chunk_max);
                        let p = (scores - new_max.clone()).exp();
                        let decay = (max - new_max.clone()).exp();
                        (
                            new_max,
                            sum * decay.clone() + p.clone().sum_dim(3),
                            acc * decay + batched_matmul(p, v),
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
                    for (row, chunk_weights) in doc_weights.iter_mut().zip(super::doc_weights(w, n))
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
