//! What ingesting and answering trade in, for either memory: documents in
//! and what became of them; answers out with the documents and span they
//! drew on; how a question reads a bank.

use mac_bank::{AppendOutcome, MemoryBank};
use serde::Serialize;

use mac_model::{AnswerGeneration, AnswerTimings, BankReading};

use crate::RuntimeError;

/// Scale of the similarity prior when a bank stores retrieval keys and the
/// caller does not say otherwise (the evaluation's `mac+prior`): with the
/// frozen all-MiniLM-L6-v2 keys, a question's own fact document gets about
/// 0.94 of the prior's mass among 200 (docs/results.md).
pub const DEFAULT_PRIOR_SCALE: f64 = 50.0;

/// Characters of a document's text shown with an answer.
const SNIPPET_CHARS: usize = 100;

/// A document to store.
#[derive(Debug, Clone)]
pub struct NewDocument {
    /// Where it came from (file, URL, request).
    pub source: String,
    /// Its text.
    pub text: String,
}

/// What happened to one ingested document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// Stored under a new id, or already stored under an id.
    pub outcome: AppendOutcome,
    /// Tokens cut off at the encoder's length limit (stored truncated).
    pub truncated_tokens: usize,
}

/// One document an answer drew on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attended {
    /// Bank entry id.
    pub id: u64,
    /// Its source.
    pub source: String,
    /// Share of the aggregator's attention.
    pub weight: f32,
    /// The start of its text.
    pub snippet: String,
}

/// The `top` documents of `bank` with the highest `weights` (one per
/// entry, in bank order), highest first.
pub(crate) fn most_attended(
    bank: &MemoryBank,
    weights: &[f32],
    top: usize,
) -> Result<Vec<Attended>, RuntimeError> {
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]));
    order
        .into_iter()
        .take(top)
        .map(|i| {
            let entry = bank.read(i)?;
            Ok(Attended {
                id: entry.id,
                source: entry.source,
                weight: weights[i],
                snippet: entry.text.chars().take(SNIPPET_CHARS).collect(),
            })
        })
        .collect()
}

/// A batch of questions is answerable: none empty, one generation setting
/// each.
pub(crate) fn check_questions(
    questions: &[&str],
    generation: &[AnswerGeneration],
) -> Result<(), RuntimeError> {
    if let Some(i) = questions.iter().position(|q| q.trim().is_empty()) {
        return Err(RuntimeError::input(format!("question {i} is empty")));
    }
    if generation.len() != questions.len() {
        return Err(RuntimeError::input(format!(
            "{} questions but {} generation settings",
            questions.len(),
            generation.len()
        )));
    }
    Ok(())
}

/// The span of a document an answer was read from.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AnsweredSpan {
    /// Bank entry id of its document.
    pub id: u64,
    /// First and last token of the span (inclusive), in the document as
    /// the LM reads it.
    pub tokens: [usize; 2],
    /// The span's text.
    pub text: String,
    /// Whether the LM was handed the whole document (the selector unsure
    /// of the span) rather than the span or its sentence.
    pub whole_document: bool,
    /// Whether its key/values were read from the bank's store rather than
    /// recomputed from its tokens.
    pub stored_kv: bool,
}

/// An answer and the documents it drew on most.
#[derive(Debug, Clone, Serialize)]
pub struct SourcedAnswer {
    /// The generated answer.
    pub text: String,
    /// The most attended documents, highest share first.
    pub documents: Vec<Attended>,
    /// Every entry's share, in bank order (the aggregator's attention; the
    /// span choice's start distribution).
    #[serde(skip)]
    pub shares: Vec<f32>,
    /// Entries in the bank the answer was read from.
    pub bank_entries: usize,
    /// Generation reached its token limit before the answer's line ended.
    pub hit_token_limit: bool,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Tokens the LM read before answering (prompt and handed tokens).
    pub prompt_tokens: usize,
    /// Where the time of the batch it was answered in went.
    pub timings: AnswerTimings,
    /// The span chosen, for a memory that reads spans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<AnsweredSpan>,
}

/// How a question reads a bank and what comes back with its answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AskOptions {
    /// Attended documents returned with each answer.
    pub top: usize,
    /// Documents read and attended at a time ([`BankReading::chunk`]).
    pub chunk: usize,
    /// The paper's hierarchical approximation instead of exact aggregation.
    pub hierarchical: bool,
    /// Scale of the similarity prior: `Some(0.0)` turns it off; `None`
    /// means [`DEFAULT_PRIOR_SCALE`] when the bank stores retrieval keys,
    /// off otherwise.
    pub similarity_prior: Option<f64>,
}

impl Default for AskOptions {
    fn default() -> Self {
        Self {
            top: 3,
            chunk: BankReading::default().chunk,
            hierarchical: false,
            similarity_prior: None,
        }
    }
}

impl AskOptions {
    /// How `bank` is read with these options.
    pub fn reading(&self, bank: &MemoryBank) -> BankReading {
        let prior_scale = match self.similarity_prior {
            Some(scale) => (scale > 0.0).then_some(scale),
            None => (bank.shape().key_dim > 0).then_some(DEFAULT_PRIOR_SCALE),
        };
        BankReading {
            chunk: self.chunk,
            hierarchical: self.hierarchical,
            prior_scale,
        }
    }
}
