//! # mac-data — datasets and metrics for MAC
//!
//! * [`facts`]: the embedded default, a seeded generator of a *fact stream*
//!   about fictional entities (split by entity, with held-out templates),
//!   and a *novel* stream written apart from it ([`novel_stream`]: other
//!   names, wording, values and attribute kinds), and an *update* stream in
//!   its wording where later documents change earlier facts
//!   ([`update_stream`]; each changed fact's replaced answer is kept as
//!   [`QaPair::stale`]).
//! * [`formats`]: loaders for SQuAD v1.1 JSON, StreamingQA and ArchivalQA CSV
//!   (the columns the reference code reads) and a plain JSONL format, with
//!   `file:line` errors for malformed records.
//! * [`metrics`]: SQuAD v1.1 exact match and token F1 (and the reference's
//!   prefix match, named as such).
//!
//! Every dataset is a list of [`Document`]s, each with the questions it answers.
//!
//! ```
//! use mac_data::{f1_score, FactStream, FactStreamConfig};
//!
//! let config = FactStreamConfig { n_train: 20, n_validation: 4, n_test: 4, ..FactStreamConfig::open() };
//! let stream = FactStream::generate(&config);
//! let document = &stream.test.documents[0];
//! let qa = &document.qas[0];
//! assert!(document.text.contains(&qa.answers[0])); // the memory can supply every answer
//! assert_eq!(f1_score(&qa.answers[0], &qa.answers), 1.0);
//! assert_eq!(f1_score("something else entirely", &["Porto".to_string()]), 0.0);
//! ```

pub mod facts;
pub mod formats;
pub mod metrics;

use serde::{Deserialize, Serialize};

pub use facts::{
    novel_stream, training_updates, unrelated_documents, update_stream, validation_updates,
    FactStream, FactStreamConfig, ValueVocabulary,
};
pub use formats::{load, DataError, Format, LoadOptions, Loaded};
pub use metrics::{exact_match, f1_score, normalize_answer, prefix_exact_match};

/// One question about a document, with every accepted answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaPair {
    /// The question text.
    pub question: String,
    /// Accepted answers (at least one).
    pub answers: Vec<String>,
    /// Answers that were right until a later document changed them (empty
    /// unless the stream updates this fact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<String>,
}

/// A document of the stream and the questions it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Stable identifier (entity name for the fact stream, line/row for loaded files).
    pub id: String,
    /// The text that is amortized into the memory bank.
    pub text: String,
    /// Questions whose answers are in `text`.
    pub qas: Vec<QaPair>,
}

/// A sequence of documents (the order is the stream order).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// The documents, in stream order.
    pub documents: Vec<Document>,
}

impl Dataset {
    /// Number of questions over all documents.
    pub fn n_questions(&self) -> usize {
        self.documents.iter().map(|d| d.qas.len()).sum()
    }

    /// Every (document index, question) pair, in stream order.
    pub fn questions(&self) -> impl Iterator<Item = (usize, &QaPair)> {
        self.documents
            .iter()
            .enumerate()
            .flat_map(|(i, d)| d.qas.iter().map(move |q| (i, q)))
    }

    /// Writes the dataset as JSONL (`{"document", "question", "answers"}`,
    /// and `"stale"` where a fact was updated; one line per question).
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for d in &self.documents {
            for q in &d.qas {
                let mut line = serde_json::json!({
                    "document": d.text,
                    "question": q.question,
                    "answers": q.answers,
                });
                if !q.stale.is_empty() {
                    line["stale"] = serde_json::json!(q.stale);
                }
                out.push_str(&line.to_string());
                out.push('\n');
            }
        }
        out
    }
}
