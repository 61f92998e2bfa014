//! The question-only baseline: the best fixed answer per question form,
//! chosen on the training data, with no memory, no document and no LM.
//!
//! A question's *form* is its words without capitalised names (after the
//! first word), lower-cased: "When was Hesdor Wexlar born?" → "when was
//! born". Each training form answers with its most frequent training answer;
//! a test question whose form training never had takes the form most like
//! it (BM25 over the training forms). On a stream whose test answers come
//! from small pools shared with training, this scores what memorising the
//! pools buys; on one whose test values never occur in training, about
//! nothing. A method has to beat it to show it read its memory.

use std::collections::BTreeMap;

use anyhow::Result;
use mac_data::Dataset;
use mac_retrieval::Bm25Index;

/// Fitted on a training split: one answer per question form.
pub struct QuestionOnly {
    /// The distinct training forms, in a fixed order.
    forms: Vec<String>,
    /// The answer of each form.
    answers: Vec<String>,
    /// BM25 over `forms`.
    index: Bm25Index,
}

/// `question` without its capitalised words after the first, lower-cased,
/// words only.
pub fn question_form(question: &str) -> String {
    question
        .split_whitespace()
        .enumerate()
        .filter(|(i, w)| *i == 0 || !w.starts_with(char::is_uppercase))
        .map(|(_, w)| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl QuestionOnly {
    /// Counts each training form's answers (the first reference of each
    /// question) and keeps the most frequent (ties: the first met).
    pub fn fit(train: &Dataset) -> Result<Self> {
        let mut counts: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
        for qa in train.documents.iter().flat_map(|d| &d.qas) {
            let Some(answer) = qa.answers.first() else {
                continue;
            };
            let tally = counts.entry(question_form(&qa.question)).or_default();
            match tally.iter_mut().find(|(a, _)| a == answer) {
                Some((_, n)) => *n += 1,
                None => tally.push((answer.clone(), 1)),
            }
        }
        let mut forms = Vec::with_capacity(counts.len());
        let mut answers = Vec::with_capacity(counts.len());
        for (form, tally) in counts {
            let mut best: Option<&(String, usize)> = None;
            for entry in &tally {
                if best.is_none_or(|b| entry.1 > b.1) {
                    best = Some(entry);
                }
            }
            if let Some((answer, _)) = best {
                forms.push(form);
                answers.push(answer.clone());
            }
        }
        anyhow::ensure!(!forms.is_empty(), "the training split has no questions");
        let index = Bm25Index::build(&forms)?;
        Ok(Self {
            forms,
            answers,
            index,
        })
    }

    /// The answer for `question`: its form's, or the nearest form's.
    pub fn answer(&self, question: &str) -> Result<String> {
        let form = question_form(question);
        if let Ok(i) = self.forms.binary_search(&form) {
            return Ok(self.answers[i].clone());
        }
        let hit = self.index.search(&form, 1)?;
        let i = hit.first().map_or(0, |h| h.document);
        Ok(self.answers[i].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mac_data::{Document, QaPair};

    fn doc(qas: &[(&str, &str)]) -> Document {
        Document {
            id: String::new(),
            text: String::new(),
            qas: qas
                .iter()
                .map(|(q, a)| QaPair {
                    question: q.to_string(),
                    answers: vec![a.to_string()],
                    stale: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn each_form_answers_with_its_most_frequent_training_answer() {
        assert_eq!(
            question_form("When was Hesdor Wexlar born?"),
            "when was born"
        );
        let train = Dataset {
            documents: vec![
                doc(&[
                    ("Where was Ana Bell born?", "Oslo"),
                    ("When was Ana Bell born?", "1 May 1990"),
                ]),
                doc(&[("Where was Kai Orm born?", "Lima")]),
                doc(&[
                    ("Where was Ivo Rusk born?", "Lima"),
                    ("Who employs Ivo Rusk?", "Acme"),
                ]),
            ],
        };
        let q = QuestionOnly::fit(&train).unwrap();
        assert_eq!(q.answer("Where was Zed Quill born?").unwrap(), "Lima");
        assert_eq!(q.answer("When was Zed Quill born?").unwrap(), "1 May 1990");
        // A form training never had: the nearest one's answer.
        assert_eq!(q.answer("Who employs Zed Quill now?").unwrap(), "Acme");
        assert!(QuestionOnly::fit(&Dataset { documents: vec![] }).is_err());
    }
}
