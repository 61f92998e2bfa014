//! Choosing a span over a bank read chunk by chunk: the same span, and the
//! same per-document shares, as over the whole bank at once, holding one
//! chunk's logits at a time (the streamed counterpart of [`best_span`] and
//! [`document_shares`]).

use burn::tensor::{Tensor, TensorReadError};
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::span::{best_span, document_shares};
use crate::span::{per_token, scored_best_span, ChosenSpan, SpanSelector};

/// How a span is chosen from a bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanRule {
    /// The best span over every token of the bank (document and span scores
    /// added): one softmax, as trained.
    Joint,
    /// The best-matching document first, then the best span within it.
    DocumentFirst,
}

/// One question's span choice over a bank whose documents arrive in
/// chunks, in bank order (the order they were ingested). Each document has
/// a score — its logit under [`SpanRule::DocumentFirst`], its best span's
/// under [`SpanRule::Joint`] — and the choice is the best document's best
/// span; ties go to the earlier document, as over the whole bank. With a
/// recency margin `r > 0`, the runner-up is chosen instead when it lies
/// later in the bank and scores within `r` of the best (`score + r >
/// best`): of the two entries that best answer the question, the later
/// report.
#[derive(Debug, Clone)]
pub struct StreamedSpanChoice {
    rule: SpanRule,
    max_span: usize,
    recency: f32,
    /// Documents pushed so far.
    documents: usize,
    /// The best document so far (the earliest of equals): score and span.
    best: Option<(f32, ChosenSpan)>,
    /// The best of the others (the earliest of equals), kept with a margin.
    second: Option<(f32, ChosenSpan)>,
    /// Log-sum-exp of each document's start logits.
    masses: Vec<f32>,
}

/// What a streamed choice found: the span (its document counted over the
/// whole bank) and each document's share of the start distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanChoice {
    /// The span chosen.
    pub span: ChosenSpan,
    /// `shares[n]`: the probability of document `n`'s tokens under a
    /// softmax of the start logits over the whole bank.
    pub shares: Vec<f32>,
}

impl StreamedSpanChoice {
    /// A choice by `rule` over spans of at most `max_span` tokens, without
    /// a recency margin.
    pub fn new(rule: SpanRule, max_span: usize) -> Self {
        Self {
            rule,
            max_span,
            recency: 0.0,
            documents: 0,
            best: None,
            second: None,
            masses: Vec::new(),
        }
    }

    /// The same choice preferring a later runner-up within `margin` of the
    /// best (no preference for `margin <= 0` or not finite).
    pub fn with_recency(self, margin: f32) -> Self {
        let recency = if margin.is_finite() {
            margin.max(0.0)
        } else {
            0.0
        };
        Self { recency, ..self }
    }

    /// Adds the next chunk of documents: their logits (`document_logits[n]`,
    /// one per document), the start and end logits over their tokens (the
    /// document logits included where the rule adds them), and their token
    /// counts, in the order the tokens lie.
    pub fn push(&mut self, document_logits: &[f32], start: &[f32], end: &[f32], lengths: &[usize]) {
        let mut from = 0;
        for (n, &len) in lengths.iter().enumerate() {
            let to = (from + len).min(start.len()).min(end.len());
            let range = from.min(to)..to;
            let (start, end) = (&start[range.clone()], &end[range]);
            let best_in = || scored_best_span(start, end, &[len], self.max_span);
            let found = match self.rule {
                SpanRule::Joint => best_in(),
                SpanRule::DocumentFirst => document_logits
                    .get(n)
                    .filter(|&&logit| self.admits(logit))
                    .and_then(|&logit| Some((logit, best_in()?.1))),
            };
            if let Some((score, span)) = found.filter(|(score, _)| !score.is_nan()) {
                let document = self.documents + n;
                self.offer(score, ChosenSpan { document, ..span });
            }
            self.masses.push(log_sum_exp(start));
            from = to;
        }
        self.documents += lengths.len();
    }

    /// Whether a document scoring `score` would be kept.
    fn admits(&self, score: f32) -> bool {
        let above = |kept: Option<(f32, ChosenSpan)>| kept.is_none_or(|(k, _)| score > k);
        above(self.best) || (self.recency > 0.0 && above(self.second))
    }

    /// Keeps a document's span as the best so far, or as the runner-up
    /// where a margin asks for one.
    fn offer(&mut self, score: f32, span: ChosenSpan) {
        if self.best.is_none_or(|(best, _)| score > best) {
            self.second = self.best.replace((score, span));
        } else if self.admits(score) {
            self.second = Some((score, span));
        }
    }

    /// The span chosen and the documents' shares; `None` when no document
    /// had a token.
    pub fn finish(self) -> Option<SpanChoice> {
        let (top, best) = self.best?;
        let span = match self.second {
            Some((score, later))
                if self.recency > 0.0
                    && later.document > best.document
                    && score + self.recency > top =>
            {
                later
            }
            _ => best,
        };
        let total = log_sum_exp(&self.masses);
        let shares = self.masses.iter().map(|&m| (m - total).exp()).collect();
        Some(SpanChoice { span, shares })
    }
}

/// Scores one chunk of documents for every question and pushes it into
/// `choices` (`choices[i]` for row `i` of `queries`): the documents' logits
/// are spread over their tokens and added to the start and end logits of
/// the queries over the chunk's token keys.
///
/// # Shapes
/// - `queries`: `[Q, 2·d_key]` ([`SpanSelector::question_queries`])
/// - `token_keys`: `[M, 2·d_key]`, the chunk's documents one after another
/// - `document_logits`: `[Q, N]`; `lengths`: the `N` documents' token counts
pub fn push_chunk(
    choices: &mut [StreamedSpanChoice],
    selector: &SpanSelector,
    queries: Tensor<2>,
    token_keys: Tensor<2>,
    document_logits: Tensor<2>,
    lengths: &[usize],
) -> Result<(), TensorReadError> {
    let (m, n) = (lengths.iter().sum::<usize>(), lengths.len());
    let by_document = document_logits.try_to_vec_as::<f32>()?;
    let bias = per_token(document_logits, lengths);
    let logits = selector.logits(queries, token_keys, Some(bias));
    let start = logits.start.try_to_vec_as::<f32>()?;
    let end = logits.end.try_to_vec_as::<f32>()?;
    for (i, choice) in choices.iter_mut().enumerate() {
        choice.push(
            &by_document[i * n..(i + 1) * n],
            &start[i * m..(i + 1) * m],
            &end[i * m..(i + 1) * m],
            lengths,
        );
    }
    Ok(())
}

/// `ln Σ exp(x)`, `-∞` for no element.
fn log_sum_exp(xs: &[f32]) -> f32 {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + xs.iter().map(|&x| (x - max).exp()).sum::<f32>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{best_span, document_shares};

    /// A small deterministic generator (no dependency for a test).
    fn noise(seed: u64, n: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 10_000) as f32 / 1_000.0 - 5.0
            })
            .collect()
    }

    /// A random bank of `n` documents: token counts, document logits,
    /// start and end logits.
    fn bank(seed: u64, n: usize) -> (Vec<usize>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let lengths: Vec<usize> = noise(seed + 10, n)
            .iter()
            .map(|x| 1 + (x.abs() * 3.0) as usize)
            .collect();
        let m: usize = lengths.iter().sum();
        (
            lengths,
            noise(seed + 20, n),
            noise(seed + 30, m),
            noise(seed + 40, m),
        )
    }

    /// `choice` fed the bank `chunk` documents at a time.
    fn streamed(
        mut choice: StreamedSpanChoice,
        chunk: usize,
        (lengths, docs, start, end): &(Vec<usize>, Vec<f32>, Vec<f32>, Vec<f32>),
    ) -> SpanChoice {
        let mut from = 0;
        for (c, ls) in lengths.chunks(chunk).enumerate() {
            let t: usize = ls.iter().sum();
            let d = &docs[c * chunk..c * chunk + ls.len()];
            choice.push(d, &start[from..from + t], &end[from..from + t], ls);
            from += t;
        }
        choice.finish().unwrap()
    }

    /// The whole-bank choice, as the selector's callers made it.
    fn whole(
        rule: SpanRule,
        docs: &[f32],
        start: &[f32],
        end: &[f32],
        lengths: &[usize],
    ) -> SpanChoice {
        let span = match rule {
            SpanRule::Joint => best_span(start, end, lengths, 8).unwrap(),
            SpanRule::DocumentFirst => {
                let n = (0..docs.len()).fold(0, |b, n| if docs[n] > docs[b] { n } else { b });
                let from: usize = lengths[..n].iter().sum();
                let r = from..from + lengths[n];
                let span = best_span(&start[r.clone()], &end[r], &lengths[n..=n], 8).unwrap();
                ChosenSpan {
                    document: n,
                    ..span
                }
            }
        };
        SpanChoice {
            span,
            shares: document_shares(start, lengths),
        }
    }

    #[test]
    fn equals_the_whole_bank_for_any_chunk_size() {
        for (seed, n) in [(1, 1), (2, 7), (3, 256), (4, 1000)] {
            let b = bank(seed, n);
            let (lengths, docs, start, end) = &b;
            for rule in [SpanRule::Joint, SpanRule::DocumentFirst] {
                let expected = whole(rule, docs, start, end, lengths);
                for chunk in [1, 3, 64] {
                    let got = streamed(StreamedSpanChoice::new(rule, 8), chunk, &b);
                    assert_eq!(got.span, expected.span, "{rule:?}, N = {n}, chunk {chunk}");
                    for (a, b) in got.shares.iter().zip(&expected.shares) {
                        assert!(
                            (a - b).abs() < 1e-5,
                            "{rule:?}, N = {n}, chunk {chunk}: {a} vs {b}"
                        );
                    }
                    assert!((got.shares.iter().sum::<f32>() - 1.0).abs() < 1e-4);
                }
            }
        }
    }

    /// The whole-bank choice with a recency margin: each document's score,
    /// the runner-up when it is later and within `r` of the best.
    fn whole_recent(
        rule: SpanRule,
        r: f32,
        docs: &[f32],
        start: &[f32],
        end: &[f32],
        lengths: &[usize],
    ) -> ChosenSpan {
        let mut from = 0;
        let scored: Vec<(f32, ChosenSpan)> = lengths
            .iter()
            .enumerate()
            .map(|(n, &len)| {
                let r = from..from + len;
                from += len;
                let (score, span) =
                    scored_best_span(&start[r.clone()], &end[r], &[len], 8).unwrap();
                let score = if rule == SpanRule::Joint {
                    score
                } else {
                    docs[n]
                };
                (
                    score,
                    ChosenSpan {
                        document: n,
                        ..span
                    },
                )
            })
            .collect();
        let mut order: Vec<usize> = (0..scored.len()).collect();
        order.sort_by(|&a, &b| scored[b].0.total_cmp(&scored[a].0).then(a.cmp(&b)));
        let (best, second) = (order[0], order.get(1).copied());
        match second {
            Some(s) if s > best && scored[s].0 + r > scored[best].0 => scored[s].1,
            _ => scored[best].1,
        }
    }

    #[test]
    fn equals_the_whole_bank_with_a_recency_margin() {
        for (seed, n) in [(5, 2), (6, 9), (7, 300)] {
            let b = bank(seed, n);
            let (lengths, docs, start, end) = &b;
            for rule in [SpanRule::Joint, SpanRule::DocumentFirst] {
                for r in [0.5, 2.0, 100.0] {
                    let expected = whole_recent(rule, r, docs, start, end, lengths);
                    for chunk in [1, 4, 512] {
                        let choice = StreamedSpanChoice::new(rule, 8).with_recency(r);
                        let got = streamed(choice, chunk, &b).span;
                        assert_eq!(got, expected, "{rule:?}, r {r}, N = {n}, chunk {chunk}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_later_runner_up_within_the_margin_is_chosen() {
        let push = |choice: &mut StreamedSpanChoice, logit: f32| {
            choice.push(&[logit], &[0.0, 1.0], &[0.0, 1.0], &[2]);
        };
        let chosen = |r: f32, logits: &[f32]| {
            let mut choice = StreamedSpanChoice::new(SpanRule::DocumentFirst, 4).with_recency(r);
            for &l in logits {
                push(&mut choice, l);
            }
            choice.finish().unwrap().span.document
        };
        // Within 1.0 of the best: the later report wins; beyond it, not.
        assert_eq!(chosen(1.0, &[5.0, 4.5, 1.0]), 1);
        assert_eq!(chosen(0.4, &[5.0, 4.5, 1.0]), 0);
        assert_eq!(chosen(0.0, &[5.0, 4.5, 1.0]), 0);
        // Only the runner-up counts: a third, later document does not.
        assert_eq!(chosen(1.0, &[5.0, 4.8, 4.5]), 1);
        assert_eq!(chosen(1.0, &[4.8, 5.0, 4.5]), 1);
        // A runner-up earlier than the best is not preferred.
        assert_eq!(chosen(1.0, &[4.5, 5.0]), 1);
        assert_eq!(chosen(1.0, &[5.0, 4.5, 8.0, 7.5]), 3);
        // A margin that is not finite or negative prefers nothing.
        assert_eq!(chosen(f32::NAN, &[5.0, 4.5]), 0);
        assert_eq!(chosen(-1.0, &[5.0, 4.5]), 0);
    }

    #[test]
    fn ties_go_to_the_earlier_document_and_an_empty_bank_chooses_nothing() {
        let mut choice = StreamedSpanChoice::new(SpanRule::DocumentFirst, 4);
        choice.push(&[1.0], &[0.0, 2.0], &[0.0, 1.0], &[2]);
        choice.push(&[1.0], &[9.0, 9.0], &[9.0, 9.0], &[2]);
        assert_eq!(choice.finish().unwrap().span.document, 0);
        let mut choice = StreamedSpanChoice::new(SpanRule::Joint, 4);
        choice.push(&[0.0, 0.0], &[], &[], &[0, 0]);
        assert_eq!(choice.finish(), None);
    }
}
