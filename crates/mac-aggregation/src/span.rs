//! Span memory's aggregation: from the question, which span of which
//! document in memory to hand the frozen LM.
//!
//! A handful of the LM's own key/values of a document's answer span (with
//! its first tokens, an attention sink) carry a fact to the LM better than
//! the whole document does (docs/results.md, "What the frozen LM's own
//! key/values can carry"). Span memory keeps, for every document token,
//! a small *selection key* made from the LM's residual stream at that token
//! (its context: which entity, which attribute a value belongs to); a
//! question, summarised from the LM's residual stream over the question
//! prompt, becomes a start query and an end query; start and end logits
//! over **every token of every document in memory** are one product each,
//! so choosing the document and choosing the span within it are one
//! softmax, trained with a span loss and no pass of the LM's backward.
//!
//! A document's share of the start distribution is its attention share
//! (what an answer drew on). The similarity prior, when used, adds its
//! per-document logit to every token of the document.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use mac_kernels::linear::linear;

use crate::copy::uniform;

/// Shape of a [`SpanSelector`].
#[derive(Config, Debug)]
pub struct SpanSelectorConfig {
    /// Width of the LM's residual stream.
    pub d_lm: usize,
    /// Width of a start (and of an end) key.
    #[config(default = 64)]
    pub d_key: usize,
    /// Longest span chosen, in tokens.
    #[config(default = 8)]
    pub max_span: usize,
    /// Width of a token's matching key (document selection).
    #[config(default = 64)]
    pub d_match: usize,
    /// Initial scale of the document-matching logits.
    #[config(default = 10.0)]
    pub match_scale: f64,
    /// Train the matching projection (else it stays a random projection,
    /// which keeps cosines between states, and only its norm and scale learn).
    #[config(default = true)]
    pub train_match: bool,
}

/// Question-conditioned start/end scores over the tokens of a memory.
#[derive(Module, Debug)]
pub struct SpanSelector {
    /// Norm of a token's residual state.
    pub token_norm: LayerNorm,
    /// Norm of a question's summary (last state, mean state).
    pub question_norm: LayerNorm,
    /// Token state → start key | end key, `[d_lm, 2·d_key]`.
    pub w_token: Param<Tensor<2>>,
    /// Question summary → start query | end query, `[2·d_lm, 2·d_key]`.
    pub w_question: Param<Tensor<2>>,
    /// Norm of a token's state before matching.
    pub match_norm: LayerNorm,
    /// Token state → matching key, `[d_lm, d_match]`, shared by question
    /// and document tokens (so a name matches itself from the start).
    pub w_match: Param<Tensor<2>>,
    /// Scale of the document-matching logits, `[1]`.
    pub match_scale: Param<Tensor<1>>,
    /// Width of a start key.
    #[module(skip)]
    pub d_key: usize,
    /// Longest span chosen.
    #[module(skip)]
    pub max_span: usize,
}

impl SpanSelectorConfig {
    /// A selector with random weights.
    pub fn init(&self, device: &Device) -> SpanSelector {
        SpanSelector {
            token_norm: LayerNormConfig::new(self.d_lm).init(device),
            question_norm: LayerNormConfig::new(2 * self.d_lm).init(device),
            w_token: uniform([self.d_lm, 2 * self.d_key], self.d_lm, device),
            w_question: uniform([2 * self.d_lm, 2 * self.d_key], 2 * self.d_lm, device),
            match_norm: LayerNormConfig::new(self.d_lm).init(device),
            w_match: uniform([self.d_lm, self.d_match], self.d_lm, device)
                .set_require_grad(self.train_match),
            match_scale: Initializer::Constant {
                value: self.match_scale,
            }
            .init([1], device),
            d_key: self.d_key,
            max_span: self.max_span.max(1),
        }
    }
}

/// Start and end logits of questions over a memory's tokens.
#[derive(Debug, Clone)]
pub struct SpanLogits {
    /// `[Q, M]`: where each question's answer starts.
    pub start: Tensor<2>,
    /// `[Q, M]`: where it ends.
    pub end: Tensor<2>,
}

impl SpanSelector {
    /// Selection keys of tokens: what a memory stores per token.
    ///
    /// # Shapes
    /// - `states`: `[M, d_lm]`, the LM's residual stream at each token
    /// - returns `[M, 2·d_key]`: start key, then end key
    pub fn token_keys(&self, states: Tensor<2>) -> Tensor<2> {
        let h = self.token_norm.forward(states);
        linear(h, self.w_token.val(), None)
    }

    /// Start and end queries of questions.
    ///
    /// # Shapes
    /// - `summaries`: `[Q, 2·d_lm]`, each question prompt's last residual
    ///   state, then the mean of its states
    /// - returns `[Q, 2·d_key]`: start query, then end query
    pub fn question_queries(&self, summaries: Tensor<2>) -> Tensor<2> {
        let h = self.question_norm.forward(summaries);
        linear(h, self.w_question.val(), None)
    }

    /// Start and end logits of every question over every token.
    ///
    /// # Shapes
    /// - `queries`: `[Q, 2·d_key]` from [`Self::question_queries`]
    /// - `keys`: `[M, 2·d_key]` from [`Self::token_keys`], the memory's
    ///   documents one after another
    /// - `bias`: `[Q, M]`, added to both (the prior, per token of its document)
    pub fn logits(
        &self,
        queries: Tensor<2>,
        keys: Tensor<2>,
        bias: Option<Tensor<2>>,
    ) -> SpanLogits {
        let k = self.d_key;
        let scale = 1.0 / (k as f64).sqrt();
        let part = |t: &Tensor<2>, i: usize| t.clone().narrow(1, i * k, k);
        let mut start = part(&queries, 0).matmul(part(&keys, 0).transpose()) * scale;
        let mut end = part(&queries, 1).matmul(part(&keys, 1).transpose()) * scale;
        if let Some(b) = bias {
            start = start + b.clone();
            end = end + b;
        }
        SpanLogits { start, end }
    }
}

impl SpanSelector {
    /// Matching keys of tokens (unit length): what a memory stores per
    /// token for choosing documents.
    ///
    /// # Shapes
    /// - `states`: `[..., d_lm]` as `[M, d_lm]`
    /// - returns `[M, d_match]`
    pub fn match_keys(&self, states: Tensor<2>) -> Tensor<2> {
        let k = linear(self.match_norm.forward(states), self.w_match.val(), None);
        // (Padding's states are zeros: the epsilon inside the root keeps
        // their gradient finite.)
        let norm = k.clone().powi_scalar(2).sum_dim(1).add_scalar(1e-12).sqrt();
        k / norm
    }

    /// How well each document matches each question: for every question
    /// token the best cosine over the document's tokens, averaged over the
    /// question's tokens, times a learnt scale (late interaction, as in
    /// ColBERT).
    ///
    /// # Shapes
    /// - `questions`: `[Q, Tq, d_match]` matching keys, `question_valid` `[Q, Tq]`
    /// - `documents`: `[N, T, d_match]` matching keys, `document_valid` `[N, T]`
    /// - returns `[Q, N]`
    pub fn document_logits(
        &self,
        questions: Tensor<3>,
        question_valid: Tensor<2, Bool>,
        documents: Tensor<3>,
        document_valid: Tensor<2, Bool>,
    ) -> Tensor<2> {
        self.document_matches(questions, question_valid, documents, document_valid)
            .logits
    }

    /// [`Self::document_logits`] with what they average: each question
    /// token's best cosine over each document's tokens.
    ///
    /// # Shapes
    /// As [`Self::document_logits`]; `tokens` of the result is `[Q, N, Tq]`,
    /// zero at the question's padding.
    pub fn document_matches(
        &self,
        questions: Tensor<3>,
        question_valid: Tensor<2, Bool>,
        documents: Tensor<3>,
        document_valid: Tensor<2, Bool>,
    ) -> DocumentMatches {
        let [q, tq, dm] = questions.dims();
        let [n, t, _] = documents.dims();
        let sim = questions
            .reshape([q * tq, dm])
            .matmul(documents.reshape([n * t, dm]).transpose())
            .reshape([q * tq, n, t]);
        let padding = document_valid
            .bool_not()
            .unsqueeze_dim::<3>(0)
            .expand([q * tq, n, t]);
        let best = sim.mask_fill(padding, -2.0).max_dim(2).reshape([q, tq, n]);
        let w = question_valid.float().unsqueeze_dim::<3>(2); // [Q, Tq, 1]
        let count = w.clone().sum_dim(1).clamp_min(1.0); // [Q, 1, 1]
        let tokens = best * w;
        let mean = (tokens.clone().sum_dim(1) / count).reshape([q, n]);
        DocumentMatches {
            logits: mean * self.match_scale.val().unsqueeze_dim::<2>(0),
            tokens: tokens.swap_dims(1, 2),
        }
    }
}

/// How documents match questions (see [`SpanSelector::document_matches`]).
#[derive(Debug, Clone)]
pub struct DocumentMatches {
    /// `[Q, N]`: each document's logit for each question.
    pub logits: Tensor<2>,
    /// `[Q, N, Tq]`: each question token's best cosine over each
    /// document's tokens (zero at the question's padding).
    pub tokens: Tensor<3>,
}

/// Per-document logits `[Q, N]` spread over the documents' tokens `[Q, M]`:
/// every token of document `n` (whose `lengths[n]` tokens lie in memory
/// after those of documents `0..n`) gets its logit.
pub fn per_token(document_logits: Tensor<2>, lengths: &[usize]) -> Tensor<2> {
    let device = document_logits.device();
    let index: Vec<i64> = lengths
        .iter()
        .enumerate()
        .flat_map(|(n, &len)| std::iter::repeat_n(n as i64, len))
        .collect();
    let m = index.len();
    let index = Tensor::<1, Int>::from_data(TensorData::new(index, [m]), &device);
    document_logits.select(1, index)
}

/// A span of one document in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChosenSpan {
    /// The document's index in memory.
    pub document: usize,
    /// First token, within the document.
    pub start: usize,
    /// Last token (inclusive), within the document.
    pub end: usize,
}

/// The span with the highest `start[s] + end[e]` over `s ≤ e < s +
/// max_span` within one document. `lengths` are the documents' token
/// counts, in the order their tokens lie in the logits; `None` when the
/// memory has no token.
pub fn best_span(
    start: &[f32],
    end: &[f32],
    lengths: &[usize],
    max_span: usize,
) -> Option<ChosenSpan> {
    scored_best_span(start, end, lengths, max_span).map(|(_, span)| span)
}

/// [`best_span`] with its score `start[s] + end[e]`.
pub(crate) fn scored_best_span(
    start: &[f32],
    end: &[f32],
    lengths: &[usize],
    max_span: usize,
) -> Option<(f32, ChosenSpan)> {
    let mut best: Option<(f32, ChosenSpan)> = None;
    let mut offset = 0;
    for (document, &len) in lengths.iter().enumerate() {
        for s in 0..len {
            for e in s..len.min(s + max_span.max(1)) {
                let (i, j) = (offset + s, offset + e);
                if j >= start.len() || j >= end.len() {
                    break;
                }
                let score = start[i] + end[j];
                if best.is_none_or(|(b, _)| score > b) {
                    best = Some((
                        score,
                        ChosenSpan {
                            document,
                            start: s,
                            end: e,
                        },
                    ));
                }
            }
        }
        offset += len;
    }
    best
}

/// Each document's share of a softmax over token logits (its attention
/// share): `shares[n]` sums the probability of the document's tokens.
pub fn document_shares(logits: &[f32], lengths: &[usize]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    let mut offset = 0;
    lengths
        .iter()
        .map(|&len| {
            let end = (offset + len).min(exp.len());
            let share = exp[offset.min(end)..end].iter().sum::<f32>() / total;
            offset = end;
            share
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_span_stays_within_one_document_and_its_length() {
        // Two documents of 3 and 4 tokens.
        let lengths = [3, 4];
        let start = [0.0, 5.0, 0.0, -10.0, 0.0, 0.0, 0.0];
        // The best end overall is the other document's first token: a span
        // from token 1 to it would cross documents (and the one-token span
        // there starts badly).
        let end = [0.0, 0.0, 1.0, 9.0, 0.0, 0.0, 0.0];
        let span = best_span(&start, &end, &lengths, 8).unwrap();
        assert_eq!(
            span,
            ChosenSpan {
                document: 0,
                start: 1,
                end: 2
            }
        );
        // Too long a span is not chosen.
        let start = [0.0, 0.0, 0.0, 6.0, 0.0, 0.0, 0.0];
        let end = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0];
        let span = best_span(&start, &end, &lengths, 2).unwrap();
        assert_eq!(span.document, 1);
        // Start 0 to end 3 of document 1 would score 10; within 2 tokens
        // the best is 6, and of the tied spans the shorter is kept.
        assert_eq!((span.start, span.end), (0, 0), "e < s + 2");
        assert_eq!(best_span(&[], &[], &[], 4), None);
    }

    #[test]
    fn document_shares_sum_the_tokens_probabilities() {
        let shares = document_shares(&[0.0, 0.0, 0.0, 0.0], &[1, 3]);
        assert!((shares[0] - 0.25).abs() < 1e-6);
        assert!((shares[1] - 0.75).abs() < 1e-6);
    }
}
