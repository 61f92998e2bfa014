//! Choosing on validation when span memory reads a later entry instead of
//! the best (knowledge that changes): each [`Recency`] tried over a bank
//! of validation documents whose later ones restate an earlier fact with a
//! new value, spread among unrelated documents as a served bank has them.

use anyhow::Result;
use burn::tensor::Device;
use mac_aggregation::{Recency, SpanRule, SpanSelector};
use mac_data::{unrelated_documents, validation_updates, Dataset, Document};
use mac_lm::LoadedLm;
use serde::{Deserialize, Serialize};

use super::config::SpanRunConfig;
use super::{answerable, choose_spans_chunked, Choosing, SpanFeatures};

/// Recency margins tried on validation, in the selector's logit units
/// (with an agreement, margins beyond 2 chose as 2 does on every run
/// measured; without one they read unrelated entries).
const MARGINS: [f32; 3] = [0.0, 0.5, 2.0];

/// Agreements tried with each margin above 0, in cosine units (none: any
/// later entry within the margin), each without and with the same names
/// (0.1 and 1.0 scored below 0.5 on every run measured).
const AGREEMENTS: [f32; 3] = [0.3, 0.5, 0.7];

/// How one recency choice did on validation knowledge that changes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RecencyScore {
    /// The margin.
    pub margin: f32,
    /// The agreement asked of a later entry (none: any).
    #[serde(default)]
    pub agreement: Option<f32>,
    /// Whether a later entry must name what the question names.
    #[serde(default)]
    pub same_names: bool,
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
/// without a preference, then the one that also asks a later entry to name
/// what the question names (it can only refuse later entries) — then the
/// first tried.
pub(super) fn kept(scores: &[RecencyScore]) -> usize {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        let b = &scores[best];
        let cautious = (s.later_reads, !s.same_names) < (b.later_reads, !b.same_names);
        if s.top1 > b.top1 || (s.top1 == b.top1 && cautious) {
            best = i;
        }
    }
    best
}

impl RecencyScore {
    /// The choice it scored.
    pub fn recency(&self) -> Recency {
        Recency {
            margin: self.margin,
            agreement: self.agreement,
            same_names: self.same_names,
        }
    }
}

/// The validation bank: `config.validation_documents * 3 / 2` documents of
/// [`validation_updates`] with `config.recency_distractors` unrelated
/// documents (questions dropped) spread evenly among them.
fn changing_bank(config: &SpanRunConfig) -> Dataset {
    let changes = validation_updates(&config.stream, config.validation_documents * 3 / 2);
    let unrelated = unrelated_documents(&config.stream, config.recency_distractors);
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

/// Tries each recency choice with the kept selector (`rule`) over the
/// validation bank of knowledge that changes: the scores in the order
/// tried, the first without a preference for later entries (see [`kept`]).
pub(super) fn choose_recency(
    config: &SpanRunConfig,
    lm: &LoadedLm,
    selector: &SpanSelector,
    rule: SpanRule,
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<RecencyScore>> {
    let bank_documents = changing_bank(config);
    let features = SpanFeatures::read(lm, &config.reader(), &bank_documents, usize::MAX, 16)?;
    let bank: Vec<usize> = (0..features.documents.len()).collect();
    let questions = answerable(&features);
    let changed = |q: usize| {
        let document = &bank_documents.documents[features.questions[q].document];
        document.qas.iter().any(|qa| !qa.stale.is_empty())
    };
    let tried = MARGINS.iter().flat_map(|&margin| {
        let agreements = std::iter::once(None).chain(AGREEMENTS.map(Some));
        let rules = agreements.flat_map(move |agreement| {
            [false, true].map(|same_names| Recency {
                margin,
                agreement,
                same_names,
            })
        });
        let rules: Vec<Recency> = match margin > 0.0 {
            true => rules.collect(),
            false => vec![Recency::NONE],
        };
        rules
    });
    let (mut scores, mut plain) = (Vec::new(), Vec::new());
    for recency in tried {
        let choosing = Choosing {
            recency,
            ..Choosing::by(rule)
        };
        let spans = choose_spans_chunked(
            selector, &features, &bank, &features, &questions, None, choosing, device,
        )?;
        let (mut right, mut changed_right, mut n_changed) = (0.0, 0.0, 0.0);
        for (c, &q) in spans.iter().zip(&questions) {
            let own = f64::from(u8::from(c.span.document == features.questions[q].document));
            right += own;
            if changed(q) {
                (changed_right, n_changed) = (changed_right + own, n_changed + 1.0);
            }
        }
        let chosen: Vec<usize> = spans.iter().map(|c| c.span.document).collect();
        if plain.is_empty() {
            plain.clone_from(&chosen);
        }
        let departed = chosen.iter().zip(&plain).filter(|(a, b)| a != b).count();
        let n = questions.len().max(1) as f64;
        let score = RecencyScore {
            margin: recency.margin,
            agreement: recency.agreement,
            same_names: recency.same_names,
            top1: right / n,
            changed_top1: changed_right / f64::max(n_changed, 1.0),
            later_reads: departed as f64 / n,
        };
        log(&format!(
            "validation top-1 with recency {recency:?} over {} documents: {:.3} ({:.3} of changed facts; {:.3} read later entries)",
            bank.len(), score.top1, score.changed_top1, score.later_reads
        ));
        scores.push(score);
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(top1: f64, later_reads: f64) -> RecencyScore {
        RecencyScore {
            margin: 1.0,
            agreement: None,
            same_names: false,
            top1,
            changed_top1: 0.0,
            later_reads,
        }
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
        let named = RecencyScore {
            same_names: true,
            ..score(0.9, 0.1)
        };
        assert_eq!(kept(&[score(0.9, 0.1), named, score(0.9, 0.1)]), 1);
        assert_eq!(kept(&[named, score(0.9, 0.1)]), 0);
    }
}
