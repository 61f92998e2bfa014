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
    /// When set, a later entry must also restate the fact the question
    /// asks about (the caller's test, [`LaterTests::restates`]): a
    /// sentence of it is closest to the best entry's sentence that answers
    /// the question — a report of the same fact, however it is worded,
    /// not another fact of the same subject. Read without the question's
    /// names where [`Self::without_names`] is set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restates: bool,
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
    /// Whether `later` restates the fact of `best` the question asks about
    /// (see [`Recency::restates`]), by the caller's sentence encoder, read
    /// `without_names` where asked; `None` where there is no encoder (the
    /// test then passes).
    fn restates(
        &mut self,
        later: usize,
        best: usize,
        without_names: bool,
    ) -> Result<Option<bool>, Self::Error> {
        let _ = (later, best, without_names);
        Ok(None)
    }
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
        restates: false,
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
        if self.restates {
            let (l, b) = (later.span.document, best.span.document);
            if tests.restates(l, b, self.without_names)? == Some(false) {
                return Ok(false);
            }
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
mod tests;
