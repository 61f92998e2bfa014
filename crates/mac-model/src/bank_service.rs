//! Ingest into a memory bank and answer from it: the one sequence the CLI
//! and the server share (amortize → build entries → durable append; answer →
//! the documents drawn on, with their share of the attention).

use std::path::Path;

use mac_memory::{AppendOutcome, BankShape, MemoryBank, NewEntry};
use serde::Serialize;

use crate::{AnswerGeneration, AnswerTimings, BankReading, MacRuntime, ModelError};

/// Scale of the similarity prior when a bank stores retrieval keys and the
/// caller does not say otherwise (the evaluation's `mac+prior`): with the
/// frozen all-MiniLM-L6-v2 keys, a question's own fact document gets about
/// 0.94 of the prior's mass among 200 (docs/results.md).
pub const DEFAULT_PRIOR_SCALE: f64 = 50.0;

/// Documents amortized and appended at a time.
const INGEST_BATCH: usize = 8;

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
) -> Result<Vec<Attended>, ModelError> {
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
    /// The span handed to the LM, for a memory that reads spans.
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

impl MacRuntime {
    /// The shape of the banks this runtime fills.
    pub fn bank_shape(&self) -> BankShape {
        let (n_tokens, d_mod) = self.config.memory_shape();
        BankShape {
            n_tokens,
            d_mod,
            key_dim: self.key_dim(),
            rows_vary: false,
        }
    }

    /// Opens the bank in `dir` as its writer, creating it when absent; a
    /// bank another model filled is refused (its modulations would not fit).
    pub fn open_bank_writer(&self, dir: &Path) -> Result<MemoryBank, ModelError> {
        let bank = MemoryBank::open_or_create(dir, self.bank_shape(), &self.producer)?;
        if bank.producer() != self.producer {
            return Err(ModelError::Input(format!(
                "{}: the bank was built by `{}`, not by `{}` — its modulations would not match; use a new bank",
                dir.display(),
                bank.producer(),
                self.producer
            )));
        }
        Ok(bank)
    }

    /// Amortizes `docs` and appends them to `bank`, eight at a
    /// time, each batch durable (fsynced and committed) before the next;
    /// `progress` is called with the documents done so far. Duplicates (same
    /// text) are reported, not stored again.
    pub fn ingest(
        &self,
        bank: &mut MemoryBank,
        docs: &[NewDocument],
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Ingested>, ModelError> {
        let with_keys = bank.shape().key_dim > 0;
        let mut done = Vec::with_capacity(docs.len());
        for chunk in docs.chunks(INGEST_BATCH) {
            let texts: Vec<&str> = chunk.iter().map(|d| d.text.as_str()).collect();
            let amortized = self.amortize(&texts)?;
            let entries: Vec<NewEntry<'_>> = chunk
                .iter()
                .zip(amortized.modulations.iter().zip(&amortized.keys))
                .map(|(d, (m, k))| NewEntry {
                    source: &d.source,
                    text: &d.text,
                    modulation: m,
                    key: if with_keys { k } else { &[] },
                })
                .collect();
            let outcomes = bank.append_batch(&entries)?;
            done.extend(outcomes.into_iter().zip(&amortized.truncated).map(
                |(outcome, &truncated_tokens)| Ingested {
                    outcome,
                    truncated_tokens,
                },
            ));
            progress(done.len());
        }
        Ok(done)
    }

    /// Answers `questions` from `bank` ([`Self::answer_from_bank_with`],
    /// read as [`AskOptions::reading`] says), each with the `opts.top`
    /// documents it attended to most ([`crate::Memory::ask_with`]).
    pub fn ask_with(
        &self,
        bank: &MemoryBank,
        questions: &[&str],
        generation: &[AnswerGeneration],
        opts: &AskOptions,
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<SourcedAnswer>, ModelError> {
        if let Some(i) = questions.iter().position(|q| q.trim().is_empty()) {
            return Err(ModelError::Input(format!("question {i} is empty")));
        }
        let answers =
            self.answer_from_bank_with(questions, generation, bank, &opts.reading(bank), on_text)?;
        answers
            .into_iter()
            .map(|answer| {
                Ok(SourcedAnswer {
                    text: answer.text,
                    documents: most_attended(bank, &answer.doc_weights, opts.top)?,
                    shares: answer.doc_weights,
                    bank_entries: bank.len(),
                    hit_token_limit: answer.hit_token_limit,
                    generated_tokens: answer.generated_tokens,
                    prompt_tokens: answer.prompt_tokens,
                    timings: answer.timings,
                    span: None,
                })
            })
            .collect()
    }
}
