//! Choosing on validation when span memory reads a later entry instead of
//! the best (knowledge that changes): each [`Recency`] tried over a bank
//! of validation documents whose later ones restate an earlier fact with a
//! new value, spread among unrelated documents as a served bank has them.

use anyhow::Result;
use burn::tensor::Device;
use mac_aggregation::{Recency, SpanRule, SpanSelector};
use mac_data::{unrelated_documents, validation_updates, Dataset, Document, FactStreamConfig};
use mac_lm::LoadedLm;
use mac_model::SentenceCheck;
use serde::{Deserialize, Serialize};

use super::config::SpanRunConfig;
use super::{answerable, choose_spans_each, Choosing, SpanFeatures};

/// Recency margins tried on validation, in the selector's logit units
/// (without an agreement or an answer asked of a later entry, wide margins
/// read unrelated entries).
const MARGINS: [f32; 3] = [0.5, 2.0, 16.0];

/// Agreements tried with each margin, in cosine units (none: any later
/// entry within the margin), each without and with the same names (0.1
/// and 1.0 scored below 0.5 on every run measured).
const AGREEMENTS: [f32; 3] = [0.3, 0.5, 0.7];

/// How far below the best's a later entry's best span may score, tried
/// with each of the above (none: no answer asked of it), in logit units.
const ANSWERS: [f32; 2] = [2.0, 4.0];

/// Slacks of the sentence encoder's test of a later entry, tried with each
/// margin and the names test (see [`Recency::sentence_answers`]).
const SENTENCE_ANSWERS: [f32; 3] = [0.05, 0.1, 0.2];

/// Slacks of the encoder's test reading the question and entries without
/// the question's names (see [`Recency::without_names`]): what a sentence
/// says of its subject matches the question less closely than the whole
/// sentence with the name does, so the slacks are wider.
const UNNAMED_ANSWERS: [f32; 4] = [0.1, 0.2, 0.3, 0.4];

/// Every recency tried: none first, then each margin with each agreement,
/// names test and answer asked; then, with a sentence encoder, each margin
/// with the names test and the encoder's test of a later entry, alone and
/// with the selector's answer test beside it (either test admitting); the
/// same with the encoder reading without the question's names; and each
/// margin with the names test and the encoder's test of whether a later
/// entry restates the asked fact (with the names and without).
pub(super) fn tried(sentences: bool) -> Vec<Recency> {
    let mut rules = vec![Recency::NONE];
    for margin in MARGINS {
        for agreement in std::iter::once(None).chain(AGREEMENTS.map(Some)) {
            for same_names in [false, true] {
                for answers in std::iter::once(None).chain(ANSWERS.map(Some)) {
                    rules.push(Recency {
                        margin,
                        agreement,
                        same_names,
                        answers,
                        ..Recency::NONE
                    });
                }
            }
        }
    }
    if sentences {
        let slacks = SENTENCE_ANSWERS.map(|s| (s, false));
        let unnamed = UNNAMED_ANSWERS.map(|s| (s, true));
        for (slack, without_names) in slacks.into_iter().chain(unnamed) {
            for margin in MARGINS {
                let judged = Recency {
                    margin,
                    same_names: true,
                    sentence_answers: Some(slack),
                    without_names,
                    ..Recency::NONE
                };
                rules.push(judged);
                rules.extend(ANSWERS.map(|a| Recency {
                    answers: Some(a),
                    either_answers: true,
                    ..judged
                }));
            }
        }
        // The encoder's test of whether a later entry restates the fact
        // asked about, read with the names and without.
        for margin in MARGINS {
            rules.extend([false, true].map(|without_names| Recency {
                margin,
                same_names: true,
                restates: true,
                without_names,
                ..Recency::NONE
            }));
        }
    }
    rules
}

/// How one recency choice did on validation knowledge that changes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RecencyScore {
    /// The rule scored (its fields at the record's top level).
    #[serde(flatten)]
    pub recency: Recency,
    /// Whether the span was chosen among the documents naming what the
    /// question names first.
    #[serde(default)]
    pub named_first: bool,
    /// Share of questions whose chosen document is their own (for a
    /// changed fact, the later document).
    pub top1: f64,
    /// The same share over the questions about changed facts only.
    pub changed_top1: f64,
    /// Share of questions read from another entry than the one chosen
    /// without any preference for later entries.
    #[serde(default)]
    pub later_reads: f64,
}

/// The recency kept of those scored: the best top-1; of equals, the more
/// cautious rule — the one that departs least often from the choice
/// without a preference, then the one that asks more of a later entry (to
/// name what the question names, to answer it: conditions that can only
/// refuse later entries; either of two answer tests counts as one) — then
/// the first tried.
pub(super) fn kept(scores: &[RecencyScore]) -> usize {
    let asks = |s: &RecencyScore| {
        let r = &s.recency;
        let answer_tests = u8::from(r.answers.is_some()) + u8::from(r.sentence_answers.is_some());
        // Either of two answer tests asks no more than one alone.
        u8::from(r.same_names) + answer_tests.min(if r.either_answers { 1 } else { 2 })
    };
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        let b = &scores[best];
        let cautious = (s.later_reads, std::cmp::Reverse(asks(s)))
            < (b.later_reads, std::cmp::Reverse(asks(b)));
        if s.top1 > b.top1 || (s.top1 == b.top1 && cautious) {
            best = i;
        }
    }
    best
}

/// A validation bank of `stream`: `config.validation_documents * 3 / 2`
/// documents of [`validation_updates`] with `config.recency_distractors`
/// unrelated documents (questions dropped) spread evenly among them.
fn changing_bank(config: &SpanRunConfig, stream: &FactStreamConfig) -> Dataset {
    let changes = validation_updates(stream, config.validation_documents * 3 / 2);
    let unrelated = unrelated_documents(stream, config.recency_distractors);
    let per = unrelated
        .documents
        .len()
        .div_ceil(changes.documents.len().max(1));
    let mut others = unrelated.documents.into_iter().map(|d| Document {
        qas: Vec::new(),
        ..d
    });
    let mut documents = Vec::new();
    for document in changes.documents {
        documents.push(document);
        documents.extend(others.by_ref().take(per));
    }
    Dataset { documents }
}

/// A validation bank of knowledge that changes, read by the LM.
pub(super) struct ChangingBank {
    /// Its documents, in the order they are banked.
    pub(super) documents: Dataset,
    /// The LM's reading of them.
    pub(super) features: SpanFeatures,
}

impl ChangingBank {
    /// Whether question `q` asks about a fact a later document changed.
    pub(super) fn changed(&self, q: usize) -> bool {
        let document = &self.documents.documents[self.features.questions[q].document];
        document.qas.iter().any(|qa| !qa.stale.is_empty())
    }
}

/// The validation banks of knowledge that changes: the training stream's
/// and [`SpanRunConfig::recency_validation`]'s where set.
pub(super) fn changing_banks(config: &SpanRunConfig, lm: &LoadedLm) -> Result<Vec<ChangingBank>> {
    let streams = std::iter::once(&config.stream).chain(config.recency_validation.as_ref());
    streams
        .map(|stream| {
            let documents = changing_bank(config, stream);
            let features = SpanFeatures::read(lm, &config.reader(), &documents, usize::MAX, 16)?;
            Ok(ChangingBank {
                documents,
                features,
            })
        })
        .collect()
}

/// Tries each recency choice with the kept selector (`rule`) over the
/// validation `banks` of knowledge that changes, each bank's shares
/// averaged: the scores in the order tried, the first without a
/// preference for later entries (see [`kept`]).
pub(super) fn choose_recency(
    banks: &[ChangingBank],
    selector: &SpanSelector,
    choosing: (SpanRule, Option<&SentenceCheck>),
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<RecencyScore>> {
    let mut banks = banks
        .iter()
        .map(|bank| bank_scores(selector, choosing, bank, device))
        .collect::<Result<Vec<_>>>()?;
    let n = banks.len() as f64;
    let mut scores = banks.pop().unwrap_or_default();
    for other in &banks {
        for (s, o) in scores.iter_mut().zip(other) {
            s.top1 += o.top1;
            s.changed_top1 += o.changed_top1;
            s.later_reads += o.later_reads;
        }
    }
    for s in &mut scores {
        (s.top1, s.changed_top1, s.later_reads) =
            (s.top1 / n, s.changed_top1 / n, s.later_reads / n);
        log(&format!(
            "validation top-1 with recency {:?}{} over {n} changing banks: {:.3} ({:.3} of changed facts; {:.3} read later entries)",
            s.recency,
            if s.named_first { ", named first" } else { "" },
            s.top1, s.changed_top1, s.later_reads
        ));
    }
    Ok(scores)
}

/// Each recency choice's scores over one validation `bank` of knowledge
/// that changes, without and then with named first.
fn bank_scores(
    selector: &SpanSelector,
    (rule, sentences): (SpanRule, Option<&SentenceCheck>),
    changing: &ChangingBank,
    device: &Device,
) -> Result<Vec<RecencyScore>> {
    let features = &changing.features;
    let bank: Vec<usize> = (0..features.documents.len()).collect();
    let questions = answerable(features);
    let changed = |q: usize| changing.changed(q);
    let rules = tried(sentences.is_some());
    let mut plain: Vec<usize> = Vec::new();
    let mut scores = Vec::new();
    for named_first in [false, true] {
        let each = choose_spans_each(
            selector,
            features,
            &bank,
            features,
            &questions,
            None,
            Choosing {
                named_first,
                sentences,
                ..Choosing::by(rule)
            },
            &rules,
            device,
        )?;
        if plain.is_empty() {
            plain = each[0].iter().map(|c| c.span.document).collect();
        }
        for (&recency, spans) in rules.iter().zip(each) {
            let (mut right, mut changed_right, mut n_changed) = (0.0, 0.0, 0.0);
            for (c, &q) in spans.iter().zip(&questions) {
                let own = f64::from(u8::from(c.span.document == features.questions[q].document));
                right += own;
                if changed(q) {
                    (changed_right, n_changed) = (changed_right + own, n_changed + 1.0);
                }
            }
            let departed = spans
                .iter()
                .zip(&plain)
                .filter(|(c, &p)| c.span.document != p)
                .count();
            let n = questions.len().max(1) as f64;
            scores.push(RecencyScore {
                recency,
                named_first,
                top1: right / n,
                changed_top1: changed_right / f64::max(n_changed, 1.0),
                later_reads: departed as f64 / n,
            });
        }
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(top1: f64, later_reads: f64) -> RecencyScore {
        RecencyScore {
            recency: Recency::margin(1.0),
            named_first: false,
            top1,
            changed_top1: 0.0,
            later_reads,
        }
    }

    #[test]
    fn a_score_reads_back_and_so_does_one_written_before_answers() {
        let written = r#"{"margin": 2.0, "agreement": null, "same_names": true,
            "top1": 0.9, "changed_top1": 0.5, "later_reads": 0.1}"#;
        let old: RecencyScore = serde_json::from_str(written).unwrap();
        assert_eq!(
            old.recency,
            Recency {
                margin: 2.0,
                same_names: true,
                ..Recency::NONE
            }
        );
        let now = RecencyScore {
            recency: Recency {
                answers: Some(2.0),
                ..old.recency
            },
            ..old
        };
        let json = serde_json::to_value(now).unwrap();
        assert_eq!(json["margin"], 2.0);
        assert_eq!(json["answers"], 2.0);
        let back: RecencyScore = serde_json::from_value(json).unwrap();
        assert_eq!(back.recency, now.recency);
        assert_eq!(back.top1, now.top1);
    }

    #[test]
    fn of_equal_top1_the_more_cautious_rule_is_kept() {
        assert_eq!(
            kept(&[score(0.8, 0.0), score(0.9, 0.2), score(0.9, 0.1)]),
            2
        );
        assert_eq!(
            kept(&[score(0.8, 0.0), score(0.9, 0.1), score(0.9, 0.1)]),
            1
        );
        assert_eq!(kept(&[score(0.9, 0.0), score(0.85, 0.0)]), 0);
        // Of equals in everything else, the one with the names test.
        let named = |s: RecencyScore| RecencyScore {
            recency: Recency {
                same_names: true,
                ..s.recency
            },
            ..s
        };
        let answering = |s: RecencyScore| RecencyScore {
            recency: Recency {
                answers: Some(2.0),
                ..s.recency
            },
            ..s
        };
        let (plain, named) = (score(0.9, 0.1), named(score(0.9, 0.1)));
        assert_eq!(kept(&[plain, named, plain]), 1);
        assert_eq!(kept(&[named, plain]), 0);
        // Asking a later entry to answer counts as the names test does;
        // both ask more than either.
        let (both, answering) = (answering(named), answering(plain));
        assert_eq!(kept(&[plain, answering]), 1);
        assert_eq!(kept(&[named, answering, both, named]), 2);
        // Either of two answer tests asks as one does; both ask more.
        let sentences = |s: RecencyScore| RecencyScore {
            recency: Recency {
                sentence_answers: Some(0.1),
                ..s.recency
            },
            ..s
        };
        let either = |s: RecencyScore| RecencyScore {
            recency: Recency {
                either_answers: true,
                ..s.recency
            },
            ..s
        };
        let (all, either) = (sentences(both), either(sentences(both)));
        assert_eq!(kept(&[either, both]), 0);
        assert_eq!(kept(&[either, all]), 1);
    }

    #[test]
    fn the_grid_tries_either_answer_test_only_with_an_encoder() {
        let (plain, encoded) = (tried(false), tried(true));
        assert_eq!((plain.len(), encoded.len()), (73, 142));
        assert!(plain.iter().all(|r| !r.either_answers
            && r.sentence_answers.is_none()
            && !r.without_names
            && !r.restates));
        let either: Vec<&Recency> = encoded.iter().filter(|r| r.either_answers).collect();
        assert_eq!(either.len(), 42);
        let unnamed = encoded.iter().filter(|r| r.without_names);
        assert!(unnamed
            .clone()
            .all(|r| r.sentence_answers.is_some() || r.restates));
        assert_eq!(unnamed.count(), 39);
        let restating: Vec<&Recency> = encoded.iter().filter(|r| r.restates).collect();
        assert_eq!(restating.len(), 6);
        assert!(restating
            .iter()
            .all(|r| r.same_names && r.sentence_answers.is_none() && r.answers.is_none()));
        assert!(either
            .iter()
            .all(|r| r.answers.is_some() && r.sentence_answers.is_some() && r.same_names));
    }
}
