//! Knowledge that changes: of the questions whose fact a later document
//! changed (those with [`mac_data::QaPair::stale`] answers), how many each
//! method answered with the new value and how many with the replaced one.

use std::collections::{BTreeMap, HashMap};

use mac_data::{normalize_answer, Document};
use serde::{Deserialize, Serialize};

use crate::Prediction;

/// One method's answers to the questions about changed facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateShare {
    /// Questions about a changed fact the method answered.
    pub questions: usize,
    /// Share whose answer carries the new value and not the stale one.
    pub new: f64,
    /// Share whose answer carries the stale value and not the new one.
    pub stale: f64,
}

/// Whether `value`'s words occur, in order and together, in `prediction`'s
/// (both normalised as SQuAD's metrics do).
pub fn carries(prediction: &str, value: &str) -> bool {
    let words = |s: &str| {
        normalize_answer(s)
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (p, v) = (words(prediction), words(value));
    !v.is_empty() && p.windows(v.len()).any(|w| w == v.as_slice())
}

/// Each method's [`UpdateShare`] over `preds`, for the questions of `docs`
/// that have stale answers; empty when there are none.
pub fn update_shares(docs: &[Document], preds: &[Prediction]) -> BTreeMap<String, UpdateShare> {
    let stale: HashMap<(usize, &str), &[String]> = docs
        .iter()
        .enumerate()
        .flat_map(|(i, d)| d.qas.iter().map(move |q| (i, q)))
        .filter(|(_, q)| !q.stale.is_empty())
        .map(|(i, q)| ((i, q.question.as_str()), q.stale.as_slice()))
        .collect();
    let mut counts: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for p in preds {
        let Some(old) = stale.get(&(p.document, p.question.as_str())) else {
            continue;
        };
        let new = p.answers.iter().any(|a| carries(&p.prediction, a));
        let was = old.iter().any(|a| carries(&p.prediction, a));
        let c = counts.entry(p.method.clone()).or_default();
        c[0] += 1;
        c[1] += usize::from(new && !was);
        c[2] += usize::from(was && !new);
    }
    counts
        .into_iter()
        .map(|(m, [n, new, stale])| {
            let share = |k: usize| k as f64 / n.max(1) as f64;
            let row = UpdateShare {
                questions: n,
                new: share(new),
                stale: share(stale),
            };
            (m, row)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mac_data::QaPair;

    fn pred(method: &str, document: usize, question: &str, prediction: &str) -> Prediction {
        Prediction {
            method: method.into(),
            document,
            question: question.into(),
            prediction: prediction.into(),
            answers: vec!["Moreau & Novak".into()],
            em: 0.0,
            f1: 0.0,
        }
    }

    #[test]
    fn counts_new_and_stale_answers_of_changed_facts_only() {
        let doc = |qas| Document {
            id: String::new(),
            text: String::new(),
            qas,
        };
        let docs = vec![
            doc(vec![QaPair {
                question: "Who is Ana's employer?".into(),
                answers: vec!["Moreau & Novak".into()],
                stale: vec!["Iyer Brothers".into()],
            }]),
            doc(vec![QaPair {
                question: "Where was Ana raised?".into(),
                answers: vec!["Val Rena".into()],
                stale: Vec::new(),
            }]),
        ];
        let q = "Who is Ana's employer?";
        let preds = vec![
            pred("m", 0, q, "Moreau & Novak."),
            pred("m", 0, q, "The Iyer Brothers."),
            pred("m", 0, q, "Iyer Brothers, then Moreau & Novak"),
            pred("m", 0, q, "nobody"),
            pred("m", 1, "Where was Ana raised?", "Val Rena"),
            pred("r", 0, q, "Moreau"),
        ];
        let shares = update_shares(&docs, &preds);
        assert_eq!(shares["m"].questions, 4);
        assert_eq!((shares["m"].new, shares["m"].stale), (0.25, 0.25));
        // A part of the new value is not the new value.
        assert_eq!((shares["r"].new, shares["r"].stale), (0.0, 0.0));
        assert!(update_shares(&docs[1..], &preds).is_empty());
        assert!(carries("It is Moreau & Novak.", "moreau novak"));
        assert!(!carries("moreau and novak", "Moreau & Novak"));
    }
}
