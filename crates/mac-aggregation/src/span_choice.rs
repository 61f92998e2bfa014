//! Choosing a span over a bank read chunk by chunk: the same span, and the
//! same per-document shares, as over the whole bank at once, holding one
//! chunk's logits at a time (the streamed counterpart of [`best_span`] and
//! [`document_shares`]).

use burn::tensor::{Tensor, TensorReadError};
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::span::{best_span, document_shares};
use crate::span::{per_token, scored_best_span, ChosenSpan, DocumentMatches, SpanSelector};

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

/// When a later entry is read instead of the best (knowledge that
/// changes: of the entries that answer a question, the latest report).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Recency {
    /// A later entry scoring within this of the best may be read instead
    /// (0: never; not finite or negative reads as 0).
    pub margin: f32,
    /// When set, only a later entry that matches every question token
    /// nearly as well as the best does: no token's best cosine over it more
    /// than this below its best cosine over the best entry (the same entity,
    /// named by the same tokens). Unset: any entry within the margin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f32>,
    /// When set, a later entry must also name what the question names (the
    /// caller's test, [`LaterTests::names_the_same`]): a later report
    /// about the same entity, not another one close behind.
    #[serde(default)]
    pub same_names: bool,
    /// When set, a later entry must also answer the question: its best
    /// span scoring (start and end logits, its document's logit taken out)
    /// no more than this below the best entry's best span — a later report
    /// of what was asked, not another fact about the same subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<f32>,
    /// When set, a later entry must also answer the question as the
    /// caller's sentence encoder judges it (the caller's test,
    /// [`LaterTests::best_match`]): its sentence matching the
    /// question best no more than this (in cosine) below the best entry's —
    /// a later report of what was asked, judged beyond the wording the
    /// selector was trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentence_answers: Option<f32>,
    /// Where both answer tests are set ([`Self::answers`] and
    /// [`Self::sentence_answers`]), a later entry that passes either is
    /// read — the selector's judgement or the sentence encoder's, each
    /// catching reports the other misses; unset: it must pass both.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub either_answers: bool,
    /// Where the encoder judges a later entry ([`Self::sentence_answers`]),
    /// it reads the question and the entries with the question's names
    /// left out: whether a sentence states what was asked, not how much of
    /// it is the subject's name (the names test tells the subject).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub without_names: bool,
}

/// The caller's tests of a later entry, asked where a [`Recency`] wants
/// them: what the bank's scores do not tell (entries by their index in
/// the bank, for one question).
pub trait LaterTests {
    /// What a test can fail with (reading an entry, encoding a sentence).
    type Error;
    /// Whether `entry` names every name the question names.
    fn names_the_same(&mut self, entry: usize) -> Result<bool, Self::Error>;
    /// The cosine of `entry`'s sentence matching the question best, by the
    /// caller's sentence encoder, both read `without_names` where asked (see
    /// [`Recency::without_names`]); `None` where there is no encoder (the
    /// test then passes).
    fn best_match(&mut self, entry: usize, without_names: bool)
        -> Result<Option<f32>, Self::Error>;
}

/// Tests that pass every entry (a choice whose caller tells nothing).
struct Unasked;

impl LaterTests for Unasked {
    type Error = std::convert::Infallible;
    fn names_the_same(&mut self, _: usize) -> Result<bool, Self::Error> {
        Ok(true)
    }
    fn best_match(&mut self, _: usize, _: bool) -> Result<Option<f32>, Self::Error> {
        Ok(None)
    }
}

impl Recency {
    /// No preference for later entries.
    pub const NONE: Recency = Recency {
        margin: 0.0,
        agreement: None,
        same_names: false,
        answers: None,
        sentence_answers: None,
        either_answers: false,
        without_names: false,
    };

    /// A margin without an agreement condition.
    pub fn margin(margin: f32) -> Self {
        Self {
            margin,
            ..Self::NONE
        }
    }

    /// Whether a later entry matching the question tokens as `later` does
    /// agrees with the best, which matches them as `best`.
    fn agrees(&self, best: &[f32], later: &[f32]) -> bool {
        self.agreement
            .is_none_or(|a| best.iter().zip(later).all(|(b, l)| b - l <= a))
    }

    /// Whether `later` is read instead of `best` (its score within
    /// `margin`): it agrees with the best, names what the question names
    /// and answers it, as this recency asks (see the fields).
    fn reads<T: LaterTests>(
        &self,
        (best, later): (&Scored, &Scored),
        margin: f32,
        tests: &mut T,
    ) -> Result<bool, T::Error> {
        if !(later.score + margin > best.score && self.agrees(&best.profile, &later.profile)) {
            return Ok(false);
        }
        if self.same_names && !tests.names_the_same(later.span.document)? {
            return Ok(false);
        }
        let head = self
            .answers
            .map(|a| best.span_score - later.span_score <= a);
        let Some(slack) = self.sentence_answers else {
            return Ok(head.unwrap_or(true));
        };
        match (head, self.either_answers) {
            (Some(true), true) => return Ok(true),
            (Some(false), false) => return Ok(false),
            _ => {}
        }
        let matched = (
            tests.best_match(best.span.document, self.without_names)?,
            tests.best_match(later.span.document, self.without_names)?,
        );
        Ok(match matched {
            (Some(b), Some(l)) => l >= b - slack,
            _ => true,
        })
    }

    /// The margin in force: 0 when it is not finite or negative.
    fn in_force(self) -> f32 {
        if self.margin.is_finite() {
            self.margin.max(0.0)
        } else {
            0.0
        }
    }
}

/// One question's span choice over a bank whose documents arrive in
/// chunks, in bank order (the order they were ingested). Each document has
/// a score — its logit under [`SpanRule::DocumentFirst`], its best span's
/// under [`SpanRule::Joint`] — and the choice is the best document's best
/// span; ties go to the earlier document, as over the whole bank. With a
/// [`Recency`] margin `r > 0`, the latest document after the best that
/// scores within `r` of it (`score + r > best`) and, where an agreement
/// `a` is set, whose per-question-token match falls nowhere more than `a`
/// below the best's (and that passes the recency's other tests, see
/// [`Recency`]), is chosen instead.
///
/// Named first ([`Self::named_first`]), the choice is made among the
/// documents the caller marks as naming what the question names, where
/// any does, and among all of them otherwise.
#[derive(Debug, Clone)]
pub struct StreamedSpanChoice {
    rule: SpanRule,
    max_span: usize,
    recency: Recency,
    named_first: bool,
    /// Documents pushed so far.
    documents: usize,
    /// What every document pushed offered.
    all: Kept,
    /// What the documents marked as naming the question's names offered.
    named: Kept,
    /// Log-sum-exp of each document's start logits.
    masses: Vec<f32>,
}

/// The best document of those offered (the earliest of equals), the
/// documents after it within the margin of it, in bank order, and the best
/// of those offered before it.
#[derive(Debug, Clone, Default)]
struct Kept {
    best: Option<Scored>,
    later: Vec<Scored>,
    /// The best-scoring document offered before `best`.
    earlier: Option<Scored>,
    /// The best-scoring document offered after `best`, within the margin
    /// or not (it lies before any new best).
    since: Option<Scored>,
}

/// Of two optional documents, the higher-scoring (the first of equals).
fn higher(a: Option<Scored>, b: Option<Scored>) -> Option<Scored> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.score > a.score { b } else { a }),
        (a, b) => a.or(b),
    }
}

impl Kept {
    /// Whether a document scoring `score` would be kept.
    fn admits(&self, score: f32, margin: f32) -> bool {
        self.best
            .as_ref()
            .is_none_or(|best| score > best.score || score + margin > best.score)
    }

    /// Keeps a document as the best so far (the documents kept after the
    /// old best now lie before it), or as a later one within the margin.
    fn offer(&mut self, scored: Scored, margin: f32) {
        if self
            .best
            .as_ref()
            .is_none_or(|best| scored.score > best.score)
        {
            let before = higher(self.best.take(), self.since.take());
            self.earlier = higher(self.earlier.take(), before);
            self.best = Some(scored);
            self.later.clear();
            return;
        }
        if self.admits(scored.score, margin) {
            self.later.push(scored.clone());
        }
        self.since = higher(self.since.take(), Some(scored));
    }
}

/// A document's score, its best span with the span's own score (its
/// document's logit taken out), the span's probability within the document
/// and (with an agreement condition) its per-question-token match.
#[derive(Debug, Clone)]
struct Scored {
    score: f32,
    span: ChosenSpan,
    span_score: f32,
    confidence: f32,
    profile: Vec<f32>,
}

/// What a streamed choice found: the span (its document counted over the
/// whole bank) and each document's share of the start distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanChoice {
    /// The span chosen.
    pub span: ChosenSpan,
    /// The span's probability within its document: of its start under a
    /// softmax of the start logits over the document's tokens, times that
    /// of its end (how sure the selector is of where the answer lies).
    pub confidence: f32,
    /// `shares[n]`: the probability of document `n`'s tokens under a
    /// softmax of the start logits over the whole bank.
    pub shares: Vec<f32>,
    /// Where a later entry was read instead of the best (see [`Recency`]),
    /// the best entry's best span: the earlier report it supersedes.
    pub passed_over: Option<ChosenSpan>,
    /// The earlier report the chosen entry may supersede: where a later
    /// entry was read, the best (as [`Self::passed_over`]); where the best
    /// was read from the entries naming the question's names
    /// ([`StreamedSpanChoice::named_first`]), the best-scoring of those
    /// before it (the first of equals). None otherwise: an entry about
    /// another subject supersedes nothing.
    pub earlier: Option<ChosenSpan>,
}

impl StreamedSpanChoice {
    /// A choice by `rule` over spans of at most `max_span` tokens, without
    /// a preference for later entries.
    pub fn new(rule: SpanRule, max_span: usize) -> Self {
        Self {
            rule,
            max_span,
            recency: Recency::NONE,
            named_first: false,
            documents: 0,
            all: Kept::default(),
            named: Kept::default(),
            masses: Vec::new(),
        }
    }

    /// The same choice made first among the documents that name what the
    /// question names (marked by the caller in [`Self::push_named`]).
    pub fn named_first(self, named_first: bool) -> Self {
        Self {
            named_first,
            ..self
        }
    }

    /// The same choice preferring later entries as `recency` says.
    pub fn with_recency(self, recency: Recency) -> Self {
        let recency = Recency {
            margin: recency.in_force(),
            ..recency
        };
        Self { recency, ..self }
    }

    /// The same choice keeping every later entry any of `recencies` may
    /// read, so that [`Self::finish_as`] can finish it as each of them
    /// would have (the widest margin; profiles where any asks agreement).
    pub fn keeping_for(self, recencies: &[Recency]) -> Self {
        let margin = recencies.iter().map(|r| r.in_force()).fold(0.0, f32::max);
        let agreement = recencies.iter().find_map(|r| r.agreement);
        self.with_recency(Recency {
            margin,
            agreement,
            ..Recency::NONE
        })
    }

    /// Whether the choice reads per-question-token matches ([`Self::push`]'s
    /// `profiles`).
    pub fn wants_profiles(&self) -> bool {
        self.recency.margin > 0.0 && self.recency.agreement.is_some()
    }

    /// Adds the next chunk of documents: their logits (`document_logits[n]`,
    /// one per document), their per-question-token matches (`profiles`, the
    /// `N` documents' rows one after another; may be empty unless
    /// [`Self::wants_profiles`]), the start and end logits over their tokens
    /// (the document logits included where the rule adds them), and their
    /// token counts, in the order the tokens lie.
    pub fn push(
        &mut self,
        document_logits: &[f32],
        profiles: &[f32],
        start: &[f32],
        end: &[f32],
        lengths: &[usize],
    ) {
        self.push_named(document_logits, profiles, (start, end), lengths, &[]);
    }

    /// [`Self::push`] with `named[n]`: whether document `n` names what the
    /// question names (empty: none is marked).
    pub fn push_named(
        &mut self,
        document_logits: &[f32],
        profiles: &[f32],
        (start, end): (&[f32], &[f32]),
        lengths: &[usize],
        named: &[bool],
    ) {
        let margin = self.recency.margin;
        let width = profiles.len() / lengths.len().max(1);
        let mut from = 0;
        for (n, &len) in lengths.iter().enumerate() {
            let to = (from + len).min(start.len()).min(end.len());
            let range = from.min(to)..to;
            let (start, end) = (&start[range.clone()], &end[range]);
            let logit = document_logits.get(n).copied();
            let is_named = self.named_first && named.get(n).copied().unwrap_or(false);
            let considered = match self.rule {
                SpanRule::Joint => true,
                // A named document is scored even outside the margin: it
                // may be the earlier report of what a later one restates.
                SpanRule::DocumentFirst => {
                    logit.is_some_and(|l| self.all.admits(l, margin) || is_named)
                }
            };
            let found = considered
                .then(|| scored_best_span(start, end, &[len], self.max_span))
                .flatten()
                .map(|(joint, span)| {
                    // The document's logit is in both the start and the end logits.
                    let logit = logit.unwrap_or(0.0);
                    let score = match self.rule {
                        SpanRule::Joint => joint,
                        SpanRule::DocumentFirst => logit,
                    };
                    (score, span, joint - 2.0 * logit)
                });
            let mass = log_sum_exp(start);
            if let Some((score, span, span_score)) = found.filter(|(score, ..)| !score.is_nan()) {
                let document = self.documents + n;
                let profile = match self.wants_profiles() {
                    true => profiles.get(n * width..(n + 1) * width).unwrap_or(&[]),
                    false => &[],
                };
                let confidence =
                    (start[span.start] - mass + end[span.end] - log_sum_exp(end)).exp();
                let scored = Scored {
                    score,
                    span: ChosenSpan { document, ..span },
                    span_score,
                    confidence,
                    profile: profile.to_vec(),
                };
                if is_named {
                    self.named.offer(scored.clone(), margin);
                }
                self.all.offer(scored, margin);
            }
            self.masses.push(mass);
            from = to;
        }
        self.documents += lengths.len();
    }

    /// The span chosen and the documents' shares; `None` when no document
    /// had a token. A recency's tests of a later entry all pass.
    pub fn finish(self) -> Option<SpanChoice> {
        match self.finish_with(&mut Unasked) {
            Ok(choice) => choice,
            Err(never) => match never {},
        }
    }

    /// [`Self::finish`] with the caller's `tests` of a later entry, where
    /// the recency asks them.
    pub fn finish_with<T: LaterTests>(self, tests: &mut T) -> Result<Option<SpanChoice>, T::Error> {
        self.finish_as(self.recency, tests)
    }

    /// The choice `recency` makes of what was kept: as [`Self::finish_with`]
    /// of the same documents pushed with `recency`, where its margin is at
    /// most the one kept and, if it asks agreement, profiles were kept (see
    /// [`Self::keeping_for`]).
    pub fn finish_as<T: LaterTests>(
        &self,
        recency: Recency,
        tests: &mut T,
    ) -> Result<Option<SpanChoice>, T::Error> {
        let among_named = self.named_first && self.named.best.is_some();
        let kept = match among_named {
            true => &self.named,
            false => &self.all,
        };
        let Some(best) = kept.best.as_ref() else {
            return Ok(None);
        };
        let margin = recency.in_force().min(self.recency.margin);
        let mut chosen = best;
        for later in kept.later.iter().rev() {
            if recency.reads((best, later), margin, tests)? {
                chosen = later;
                break;
            }
        }
        let total = log_sum_exp(&self.masses);
        let shares = self.masses.iter().map(|&m| (m - total).exp()).collect();
        let passed_over = (!std::ptr::eq(chosen, best)).then_some(best.span);
        Ok(Some(SpanChoice {
            span: chosen.span,
            confidence: chosen.confidence,
            shares,
            passed_over,
            earlier: passed_over.or(kept
                .earlier
                .as_ref()
                .filter(|_| among_named)
                .map(|e| e.span)),
        }))
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
/// - `matches`: logits `[Q, N]`, tokens `[Q, N, Tq]`; `lengths`: the `N`
///   documents' token counts
/// - `named`: `[Q][N]`, whether each document names what question `i`
///   names (see [`StreamedSpanChoice::named_first`]), or empty
pub fn push_chunk(
    choices: &mut [StreamedSpanChoice],
    selector: &SpanSelector,
    (queries, token_keys): (Tensor<2>, Tensor<2>),
    matches: DocumentMatches,
    lengths: &[usize],
    named: &[Vec<bool>],
) -> Result<(), TensorReadError> {
    let (m, n) = (lengths.iter().sum::<usize>(), lengths.len());
    let by_document = matches.logits.clone().try_to_vec_as::<f32>()?;
    let profiles = match choices.iter().any(StreamedSpanChoice::wants_profiles) {
        true => matches.tokens.try_to_vec_as::<f32>()?,
        false => Vec::new(),
    };
    let width = profiles.len() / (n * choices.len()).max(1);
    let bias = per_token(matches.logits, lengths);
    let logits = selector.logits(queries, token_keys, Some(bias));
    let start = logits.start.try_to_vec_as::<f32>()?;
    let end = logits.end.try_to_vec_as::<f32>()?;
    for (i, choice) in choices.iter_mut().enumerate() {
        let rows = n * width;
        choice.push_named(
            &by_document[i * n..(i + 1) * n],
            profiles.get(i * rows..(i + 1) * rows).unwrap_or(&[]),
            (&start[i * m..(i + 1) * m], &end[i * m..(i + 1) * m]),
            lengths,
            named.get(i).map_or(&[], Vec::as_slice),
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
            choice.push(d, &[], &start[from..from + t], &end[from..from + t], ls);
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
        // The span's start and end probabilities under softmaxes over its
        // document's tokens (computed apart from the streamed log-sum-exp).
        let from: usize = lengths[..span.document].iter().sum();
        let r = from..from + lengths[span.document];
        let probability = |logits: &[f32], i: usize| {
            let denominator: f64 = logits[r.clone()].iter().map(|&l| f64::from(l).exp()).sum();
            f64::from(logits[from + i]).exp() / denominator
        };
        SpanChoice {
            span,
            confidence: (probability(start, span.start) * probability(end, span.end)) as f32,
            shares: document_shares(start, lengths),
            passed_over: None,
            earlier: None,
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
                    let (c, e) = (got.confidence, expected.confidence);
                    assert!((c - e).abs() < 1e-5 && c > 0.0 && c <= 1.0, "{c} vs {e}");
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

    /// The whole-bank choice with a recency margin: each document's score;
    /// the latest document after the best within `r` of it whose profile
    /// (`width` values per document) agrees with the best's; with the
    /// earlier report it supersedes (the best where a later one is read).
    fn whole_recent(
        rule: SpanRule,
        recency: Recency,
        (lengths, docs, start, end): &(Vec<usize>, Vec<f32>, Vec<f32>, Vec<f32>),
        profiles: &[f32],
        width: usize,
    ) -> (ChosenSpan, Option<ChosenSpan>) {
        let mut from = 0;
        let scored: Vec<(f32, ChosenSpan, f32)> = lengths
            .iter()
            .enumerate()
            .map(|(n, &len)| {
                let r = from..from + len;
                from += len;
                let (joint, span) =
                    scored_best_span(&start[r.clone()], &end[r], &[len], 8).unwrap();
                let score = if rule == SpanRule::Joint {
                    joint
                } else {
                    docs[n]
                };
                let span = ChosenSpan {
                    document: n,
                    ..span
                };
                (score, span, joint - 2.0 * docs[n])
            })
            .collect();
        let best = (0..scored.len()).fold(0, |b, n| if scored[n].0 > scored[b].0 { n } else { b });
        let profile = |n: usize| &profiles[n * width..(n + 1) * width];
        let agrees = |n: usize| {
            recency.agreement.is_none_or(|a| {
                profile(best)
                    .iter()
                    .zip(profile(n))
                    .all(|(b, l)| b - l <= a)
            })
        };
        let answers = |n: usize| {
            recency
                .answers
                .is_none_or(|a| scored[best].2 - scored[n].2 <= a)
        };
        let later = (best + 1..scored.len())
            .rev()
            .find(|&n| scored[n].0 + recency.margin > scored[best].0 && agrees(n) && answers(n));
        match later {
            Some(n) => (scored[n].1, Some(scored[best].1)),
            None => (scored[best].1, None),
        }
    }

    #[test]
    fn equals_the_whole_bank_with_a_recency_margin() {
        let width = 3;
        for (seed, n) in [(5, 2), (6, 9), (7, 300)] {
            let b = bank(seed, n);
            let profiles: Vec<f32> = noise(seed + 50, n * width)
                .iter()
                .map(|x| x / 5.0)
                .collect();
            for rule in [SpanRule::Joint, SpanRule::DocumentFirst] {
                for margin in [0.5, 2.0, 100.0] {
                    for (agreement, answers) in [
                        (None, None),
                        (Some(0.3), None),
                        (Some(1.0), None),
                        (None, Some(0.5)),
                        (Some(1.0), Some(3.0)),
                    ] {
                        let recency = Recency {
                            margin,
                            agreement,
                            answers,
                            ..Recency::NONE
                        };
                        let expected = whole_recent(rule, recency, &b, &profiles, width);
                        for chunk in [1, 4, 512] {
                            let mut choice = StreamedSpanChoice::new(rule, 8).with_recency(recency);
                            let (lengths, docs, start, end) = &b;
                            let (mut from, mut d) = (0, 0);
                            for ls in lengths.chunks(chunk) {
                                let t: usize = ls.iter().sum();
                                let k = ls.len();
                                choice.push(
                                    &docs[d..d + k],
                                    &profiles[d * width..(d + k) * width],
                                    &start[from..from + t],
                                    &end[from..from + t],
                                    ls,
                                );
                                (from, d) = (from + t, d + k);
                            }
                            let got = choice.finish().unwrap();
                            assert_eq!(
                                (got.span, got.earlier),
                                expected,
                                "{rule:?}, {recency:?}, N = {n}, chunk {chunk}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn one_choice_kept_for_many_recencies_finishes_as_each_would() {
        let width = 3;
        let recencies: Vec<Recency> = [0.0, 0.5, 2.0, 100.0]
            .into_iter()
            .flat_map(|margin| {
                [(None, None), (Some(0.3), None), (None, Some(0.5))].map(|(agreement, answers)| {
                    Recency {
                        margin,
                        agreement,
                        answers,
                        ..Recency::NONE
                    }
                })
            })
            .collect();
        for (seed, n) in [(8, 5), (9, 200)] {
            let (lengths, docs, start, end) = bank(seed, n);
            let profiles: Vec<f32> = noise(seed + 50, n * width)
                .iter()
                .map(|x| x / 5.0)
                .collect();
            for rule in [SpanRule::Joint, SpanRule::DocumentFirst] {
                let fed = |choice: StreamedSpanChoice| {
                    let mut choice = choice;
                    choice.push(&docs, &profiles, &start, &end, &lengths);
                    choice
                };
                let kept = fed(StreamedSpanChoice::new(rule, 8).keeping_for(&recencies));
                for &recency in &recencies {
                    let alone = fed(StreamedSpanChoice::new(rule, 8).with_recency(recency));
                    assert_eq!(
                        kept.finish_as(recency, &mut Unasked).unwrap(),
                        alone.finish(),
                        "{rule:?}, {recency:?}, N = {n}"
                    );
                }
            }
        }
    }

    /// The document chosen by the document-first rule with `recency` over
    /// documents of these logits and per-question-token profiles.
    fn chosen_with(recency: Recency, logits: &[f32], profiles: &[&[f32]]) -> usize {
        let mut choice = StreamedSpanChoice::new(SpanRule::DocumentFirst, 4).with_recency(recency);
        for (n, &logit) in logits.iter().enumerate() {
            let profile = profiles.get(n).copied().unwrap_or(&[]);
            choice.push(&[logit], profile, &[0.0, 1.0], &[0.0, 1.0], &[2]);
        }
        choice.finish().unwrap().span.document
    }

    #[test]
    fn named_first_chooses_among_the_named_documents_where_any_is() {
        // Ten documents of two tokens in chunks of three; `named` marks
        // those naming what the question names.
        let chosen = |rule, logits: &[f32], named: &[bool], recency| {
            let lengths = vec![2; logits.len()];
            let start: Vec<f32> = logits.iter().flat_map(|&l| [l + 1.0, l]).collect();
            let mut choice = StreamedSpanChoice::new(rule, 8)
                .with_recency(recency)
                .named_first(true);
            for (c, ls) in lengths.chunks(3).enumerate() {
                let r = 2 * 3 * c..2 * (3 * c + ls.len());
                let d = 3 * c..3 * c + ls.len();
                let marks = &named[d.start.min(named.len())..d.end.min(named.len())];
                choice.push_named(&logits[d], &[], (&start[r.clone()], &start[r]), ls, marks);
            }
            choice.finish().unwrap().span.document
        };
        let logits = [1.0, 2.0, 9.0, 3.0, 8.5, 4.0, 0.5, 7.0, 2.5, 6.0];
        let mut named = [false; 10];
        for rule in [SpanRule::DocumentFirst, SpanRule::Joint] {
            // None named: the best of all.
            assert_eq!(chosen(rule, &logits, &named, Recency::NONE), 2);
            assert_eq!(chosen(rule, &logits, &[], Recency::NONE), 2);
            named[5] = true;
            named[8] = true;
            assert_eq!(chosen(rule, &logits, &named, Recency::NONE), 5);
            // A later named entry within the margin of the best named one.
            assert_eq!(chosen(rule, &logits, &named, Recency::margin(3.5)), 8);
            named = [false; 10];
        }
        // Not named first: the marks are ignored.
        let mut plain = StreamedSpanChoice::new(SpanRule::DocumentFirst, 8);
        let start: Vec<f32> = logits.iter().flat_map(|&l| [l + 1.0, l]).collect();
        let marks = [
            false, false, false, false, false, true, false, false, false, false,
        ];
        plain.push_named(&logits, &[], (&start, &start), &[2; 10], &marks);
        assert_eq!(plain.finish().unwrap().span.document, 2);
    }

    #[test]
    fn the_latest_entry_within_the_margin_is_chosen() {
        let chosen = |r: f32, logits: &[f32]| chosen_with(Recency::margin(r), logits, &[]);
        // Within 1.0 of the best: the later report wins; beyond it, not.
        assert_eq!(chosen(1.0, &[5.0, 4.5, 1.0]), 1);
        assert_eq!(chosen(0.4, &[5.0, 4.5, 1.0]), 0);
        assert_eq!(chosen(0.0, &[5.0, 4.5, 1.0]), 0);
        // The latest of those within the margin.
        assert_eq!(chosen(1.0, &[5.0, 4.8, 4.5]), 2);
        assert_eq!(chosen(1.0, &[4.8, 5.0, 4.5]), 2);
        assert_eq!(chosen(1.0, &[5.0, 4.5, 3.0]), 1);
        // An entry earlier than the best is not preferred.
        assert_eq!(chosen(1.0, &[4.5, 5.0]), 1);
        assert_eq!(chosen(1.0, &[5.0, 4.5, 8.0, 7.5]), 3);
        assert_eq!(chosen(1.0, &[5.0, 4.5, 8.0]), 2);
        // A margin that is not finite or negative prefers nothing.
        assert_eq!(chosen(f32::NAN, &[5.0, 4.5]), 0);
        assert_eq!(chosen(-1.0, &[5.0, 4.5]), 0);
    }

    #[test]
    fn a_later_entry_read_names_the_entry_it_passed_over() {
        let choice = |r: f32, logits: &[f32]| {
            let mut choice = StreamedSpanChoice::new(SpanRule::DocumentFirst, 4)
                .with_recency(Recency::margin(r));
            for &logit in logits {
                choice.push(&[logit], &[], &[0.0, 1.0, 0.5], &[0.0, 0.5, 1.0], &[3]);
            }
            choice.finish().unwrap()
        };
        let read = choice(1.0, &[4.0, 5.0, 4.5, 1.0]);
        assert_eq!(read.span.document, 2);
        let over = read.passed_over.expect("the best entry was passed over");
        assert_eq!((over.document, over.start, over.end), (1, 1, 2));
        assert_eq!(read.earlier, read.passed_over);
        // The best read: nothing passed over, and (not chosen among named
        // entries) nothing superseded.
        let best = choice(0.4, &[4.0, 5.0, 4.5, 1.0]);
        assert_eq!((best.passed_over, best.earlier), (None, None));
        assert_eq!(choice(1.0, &[5.0]).passed_over, None);
    }

    #[test]
    fn named_first_the_earlier_report_is_the_best_named_one_before() {
        let earlier = |named: [bool; 4]| {
            let mut choice = StreamedSpanChoice::new(SpanRule::DocumentFirst, 4)
                .with_recency(Recency::margin(0.5))
                .named_first(true);
            for (logit, named) in [6.0, 1.0, 2.0, 3.0].into_iter().zip(named) {
                let at = [0.0, 1.0];
                choice.push_named(&[logit], &[], (&at, &at), &[2], &[named]);
            }
            let c = choice.finish().unwrap();
            (c.span.document, c.earlier.map(|e| e.document))
        };
        // Entry 3 is the best named; of the named before it, entry 2 scores
        // best, though both lie far below the unnamed entry 0.
        assert_eq!(earlier([false, true, true, true]), (3, Some(2)));
        assert_eq!(earlier([false, true, false, true]), (3, Some(1)));
        // No named entry before the chosen: none.
        assert_eq!(earlier([false, false, false, true]), (3, None));
        // No named entry at all: the choice among all, entry 0, first;
        // nothing it supersedes.
        assert_eq!(earlier([false; 4]), (0, None));
        assert_eq!(earlier([true, false, false, false]), (0, None));
    }

    #[test]
    fn a_later_entry_must_match_every_question_token_as_the_best_does() {
        let recency = Recency {
            agreement: Some(0.2),
            ..Recency::margin(1.0)
        };
        // Question tokens: a name and an attribute. The best matches both.
        let best: &[f32] = &[0.9, 0.6];
        let same_name: &[f32] = &[0.85, 0.3];
        let other_name: &[f32] = &[0.3, 0.9];
        // Another person's document, within the margin, is not read...
        assert_eq!(chosen_with(recency, &[5.0, 4.8], &[best, other_name]), 0);
        // ...the same person's later one is, even with the attribute
        // worded apart (its token falls, the name's holds)...
        let close: &[f32] = &[0.85, 0.45];
        assert_eq!(chosen_with(recency, &[5.0, 4.8], &[best, close]), 1);
        // ...but not beyond the agreement on any token.
        assert_eq!(chosen_with(recency, &[5.0, 4.8], &[best, same_name]), 0);
        // The latest agreeing entry, past one that does not agree.
        assert_eq!(
            chosen_with(recency, &[5.0, 4.8, 4.7], &[best, close, other_name]),
            1
        );
    }

    #[test]
    fn a_later_entry_must_answer_the_question_as_the_best_does() {
        let recency = Recency {
            answers: Some(1.0),
            ..Recency::margin(1.0)
        };
        // One document of two tokens: its best span scores its own logit
        // twice (in the start and in the end) and `span` once taken out.
        let chosen = |later_span: f32| {
            let mut choice =
                StreamedSpanChoice::new(SpanRule::DocumentFirst, 4).with_recency(recency);
            for (logit, span) in [(5.0, 4.0), (4.8, later_span)] {
                let at = |s: f32| [logit, logit + s / 2.0];
                choice.push(&[logit], &[], &at(span), &at(span), &[2]);
            }
            choice.finish().unwrap().span.document
        };
        // A later report whose span scores as the best's does is read...
        assert_eq!(chosen(4.0), 1);
        assert_eq!(chosen(3.2), 1);
        // ...one whose best span falls further below is not: it names the
        // subject but does not hold what was asked.
        assert_eq!(chosen(2.5), 0);
        assert_eq!(chosen(-6.0), 0);
    }

    /// The caller's tests as a test tells them: the entries naming the
    /// question's names, and each entry's best sentence match.
    struct Told {
        named: fn(usize) -> bool,
        matches: Vec<f32>,
        asked: Vec<usize>,
        without_names: Vec<bool>,
    }

    impl LaterTests for Told {
        type Error = String;
        fn names_the_same(&mut self, entry: usize) -> Result<bool, String> {
            Ok((self.named)(entry))
        }
        fn best_match(&mut self, entry: usize, without_names: bool) -> Result<Option<f32>, String> {
            self.asked.push(entry);
            self.without_names.push(without_names);
            Ok(self.matches.get(entry).copied())
        }
    }

    /// The document chosen over three documents of two tokens (logits 5,
    /// 4.8, 4.7; best span scores `spans`) by `recency`, told `named` and
    /// `matches`.
    fn chosen_told(recency: Recency, spans: [f32; 3], told: &mut Told) -> usize {
        let mut choice = StreamedSpanChoice::new(SpanRule::DocumentFirst, 4).with_recency(recency);
        for (logit, span) in [5.0, 4.8, 4.7].into_iter().zip(spans) {
            let at = [logit, logit + span / 2.0];
            choice.push(&[logit], &[], &at, &at, &[2]);
        }
        choice.finish_with(told).unwrap().unwrap().span.document
    }

    #[test]
    fn with_same_names_the_caller_admits_a_later_entry() {
        let names = Recency {
            same_names: true,
            ..Recency::margin(1.0)
        };
        let told = |named: fn(usize) -> bool| Told {
            named,
            matches: Vec::new(),
            asked: Vec::new(),
            without_names: Vec::new(),
        };
        let chosen = |named| chosen_told(names, [1.0; 3], &mut told(named));
        assert_eq!(chosen(|_| true), 2);
        assert_eq!(chosen(|d| d != 2), 1);
        assert_eq!(chosen(|_| false), 0);
        // The best itself needs no admission; without the flag, none does.
        let mut none = told(|_| false);
        assert_eq!(chosen_told(Recency::margin(1.0), [1.0; 3], &mut none), 2);
        assert!(none.asked.is_empty());
        // An error of the caller's is the choice's.
        struct Failing;
        impl LaterTests for Failing {
            type Error = &'static str;
            fn names_the_same(&mut self, _: usize) -> Result<bool, Self::Error> {
                Err("unreadable entry")
            }
            fn best_match(&mut self, _: usize, _: bool) -> Result<Option<f32>, Self::Error> {
                Ok(None)
            }
        }
        let mut choice = StreamedSpanChoice::new(SpanRule::DocumentFirst, 4).with_recency(names);
        choice.push(&[5.0, 4.8], &[], &[0.0; 4], &[0.0; 4], &[2, 2]);
        assert_eq!(choice.finish_with(&mut Failing), Err("unreadable entry"));
    }

    #[test]
    fn a_later_entry_answers_as_the_selector_or_the_encoder_judges() {
        let told = |matches: &[f32]| Told {
            named: |_| true,
            matches: matches.to_vec(),
            asked: Vec::new(),
            without_names: Vec::new(),
        };
        let sentences = Recency {
            sentence_answers: Some(0.1),
            ..Recency::margin(1.0)
        };
        // The encoder's test: within the slack of the best's match.
        let spans = [4.0; 3];
        assert_eq!(
            chosen_told(sentences, spans, &mut told(&[0.8, 0.75, 0.6])),
            1
        );
        assert_eq!(
            chosen_told(sentences, spans, &mut told(&[0.8, 0.65, 0.6])),
            0
        );
        // Without an encoder the test passes.
        assert_eq!(chosen_told(sentences, spans, &mut told(&[])), 2);
        // Both tests: the selector refuses entry 2 (its span 3 below the
        // best's), the encoder entry 1.
        let (spans, matches) = ([4.0, 3.5, 1.0], [0.8, 0.6, 0.78]);
        let both = Recency {
            answers: Some(2.0),
            ..sentences
        };
        assert_eq!(chosen_told(both, spans, &mut told(&matches)), 0);
        let either = Recency {
            either_answers: true,
            ..both
        };
        assert_eq!(chosen_told(either, spans, &mut told(&matches)), 2);
        // Where the selector admits an entry the encoder is not asked.
        let mut asked = told(&[0.8, 0.6, 0.1]);
        assert_eq!(chosen_told(either, [4.0, 3.5, 3.9], &mut asked), 2);
        assert!(asked.asked.is_empty());
        // Neither: the best.
        let refused = [4.0, 1.0, 1.0];
        assert_eq!(chosen_told(either, refused, &mut told(&[0.8, 0.6, 0.6])), 0);
        // The encoder is asked to leave the names out where the rule says.
        for without_names in [false, true] {
            let rule = Recency {
                without_names,
                ..sentences
            };
            let mut asked = told(&[0.8, 0.6, 0.6]);
            chosen_told(rule, [4.0; 3], &mut asked);
            assert!(!asked.without_names.is_empty());
            assert!(asked.without_names.iter().all(|&w| w == without_names));
        }
    }

    #[test]
    fn ties_go_to_the_earlier_document_and_an_empty_bank_chooses_nothing() {
        let mut choice = StreamedSpanChoice::new(SpanRule::DocumentFirst, 4);
        choice.push(&[1.0], &[], &[0.0, 2.0], &[0.0, 1.0], &[2]);
        choice.push(&[1.0], &[], &[9.0, 9.0], &[9.0, 9.0], &[2]);
        assert_eq!(choice.finish().unwrap().span.document, 0);
        let mut choice = StreamedSpanChoice::new(SpanRule::Joint, 4);
        choice.push(&[0.0, 0.0], &[], &[], &[], &[0, 0]);
        assert_eq!(choice.finish(), None);
    }
}
