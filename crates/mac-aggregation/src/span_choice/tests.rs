//! Tests of the streamed span choice: the whole bank's choice for any
//! chunk size, recency and the named-first choice.

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
            let (joint, span) = scored_best_span(&start[r.clone()], &end[r], &[len], 8).unwrap();
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
        let mut choice =
            StreamedSpanChoice::new(SpanRule::DocumentFirst, 4).with_recency(Recency::margin(r));
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
        let mut choice = StreamedSpanChoice::new(SpanRule::DocumentFirst, 4).with_recency(recency);
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
fn chosen_told<T: LaterTests>(recency: Recency, spans: [f32; 3], told: &mut T) -> usize
where
    T::Error: std::fmt::Debug,
{
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

/// The caller's tests telling which later entries restate the asked fact
/// of which best entry.
struct Restating {
    restates: fn(usize, usize) -> Option<bool>,
    asked: Vec<(usize, usize, bool)>,
}

impl LaterTests for Restating {
    type Error = String;
    fn names_the_same(&mut self, _: usize) -> Result<bool, String> {
        Ok(true)
    }
    fn best_match(&mut self, _: usize, _: bool) -> Result<Option<f32>, String> {
        Ok(None)
    }
    fn restates(
        &mut self,
        later: usize,
        best: usize,
        without: bool,
    ) -> Result<Option<bool>, String> {
        self.asked.push((later, best, without));
        Ok((self.restates)(later, best))
    }
}

#[test]
fn with_restates_a_later_entry_must_restate_the_asked_fact_of_the_best() {
    let rule = Recency {
        restates: true,
        without_names: true,
        ..Recency::margin(1.0)
    };
    let chosen = |restates: fn(usize, usize) -> Option<bool>| {
        let mut told = Restating {
            restates,
            asked: Vec::new(),
        };
        (chosen_told(rule, [1.0; 3], &mut told), told.asked)
    };
    // The latest restating entry within the margin is read, the test
    // asked of it against the best (entry 0), without names.
    let (doc, asked) = chosen(|l, _| Some(l == 2));
    assert_eq!(doc, 2);
    assert!(asked.iter().all(|&(_, best, without)| best == 0 && without));
    assert_eq!(chosen(|l, _| Some(l == 1)).0, 1);
    assert_eq!(chosen(|_, _| Some(false)).0, 0);
    // Without an encoder the test passes; without the flag it is not asked.
    assert_eq!(chosen(|_, _| None).0, 2);
    let mut told = Restating {
        restates: |_, _| Some(false),
        asked: Vec::new(),
    };
    assert_eq!(chosen_told(Recency::margin(1.0), [1.0; 3], &mut told), 2);
    assert!(told.asked.is_empty());
}
