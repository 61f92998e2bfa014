//! How an evaluation asks a memory: its options, the banks it makes and
//! clears, documents ingested and questions asked a batch at a time, and
//! where each answer was read from relative to the gold document.

use std::path::Path;

use anyhow::{Context, Result};
use mac_bank::MemoryBank;
use mac_runtime::{AskOptions, Memory, NewDocument, SourcedAnswer};
use serde::{Deserialize, Serialize};

use crate::methods::{bar, Question};

/// The similarity prior's default scale in evaluations (mac-model's).
pub use mac_runtime::DEFAULT_PRIOR_SCALE;

/// Knobs of an evaluation run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalOptions {
    /// Documents read and attended at a time `M` (memory O(M)); a bank of
    /// any size is aggregated exactly unless `hierarchical`.
    pub chunk: usize,
    /// Aggregate banks larger than `chunk` with the paper's hierarchical
    /// approximation instead of exactly.
    #[serde(default)]
    pub hierarchical: bool,
    /// Questions answered per generation batch.
    pub question_batch: usize,
    /// Documents encoded per ingest batch.
    pub ingest_batch: usize,
    /// Fractions of the stream after which retention is measured.
    pub retention_points: Vec<f64>,
    /// The retention questions are those of this leading fraction of the stream.
    pub retention_first: f64,
    /// Evaluate only the first this many documents (all when `None`).
    pub max_documents: Option<usize>,
    /// Also run the no-adaptation and oracle-context references.
    pub references: bool,
    /// Also answer with MAC over only the top-`k` BM25 documents of the bank
    /// (`mac+rag@k`, the paper's §4.4): the modulations' content without
    /// the aggregator having to find the document among all of them.
    #[serde(default)]
    pub retrieval_k: Option<usize>,
    /// Also answer with MAC whose aggregator adds the question–document
    /// similarity prior of this scale (`mac+prior`; see
    /// `mac_aggregation::SimilarityPrior`): the frozen sentence embeddings
    /// point the attention at the documents that resemble the question.
    #[serde(default)]
    pub similarity_prior: Option<f64>,
    /// Bank sizes at which the first documents' questions are answered
    /// again, each from a bank of that size holding its own document
    /// (larger ones filled with unrelated documents, which they need).
    #[serde(default)]
    pub bank_sizes: Vec<usize>,
    /// The leading documents whose questions the bank sizes ask.
    #[serde(default = "default_bank_size_documents")]
    pub bank_size_documents: usize,
    /// Keep the stream's key/values beside its bank at this precision
    /// ([`Memory::store_key_values`]; span memory): answers read them
    /// instead of recomputing them.
    #[serde(default)]
    pub store_kv: Option<mac_bank::Precision>,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            chunk: 256,
            hierarchical: false,
            question_batch: 16,
            ingest_batch: 16,
            retention_points: vec![0.1, 0.25, 0.5, 1.0],
            retention_first: 0.1,
            max_documents: None,
            references: true,
            retrieval_k: Some(1),
            similarity_prior: Some(DEFAULT_PRIOR_SCALE),
            bank_sizes: Vec::new(),
            bank_size_documents: default_bank_size_documents(),
            store_kv: None,
            progress: false,
        }
    }
}

fn default_bank_size_documents() -> usize {
    100
}

/// Removes `dir` when it holds a bank an evaluation made (its producer is
/// `producer`), so a rerun starts fresh; anything else there is an error
/// and is left as it is.
pub(crate) fn clear_eval_bank(dir: &Path, producer: &str) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let ours = MemoryBank::open_read_only(dir).is_ok_and(|b| b.producer() == producer);
    anyhow::ensure!(
        ours,
        "{} exists and is not a bank an evaluation made: remove it or choose another --out",
        dir.display()
    );
    std::fs::remove_dir_all(dir).with_context(|| format!("{}: cannot clear", dir.display()))
}

/// How every question reads a bank in an evaluation: the top document
/// only (the shares say the rest), the prior off unless asked for.
fn ask_options(opts: &EvalOptions, prior: Option<f64>) -> AskOptions {
    AskOptions {
        top: 1,
        chunk: opts.chunk,
        hierarchical: opts.hierarchical,
        similarity_prior: Some(prior.unwrap_or(0.0)),
    }
}

/// Every question answered from `bank`, a batch at a time.
pub(crate) fn ask_all(
    memory: &dyn Memory,
    bank: &MemoryBank,
    questions: &[Question<'_>],
    opts: &EvalOptions,
    prior: Option<f64>,
    label: &str,
) -> Result<Vec<SourcedAnswer>> {
    let pb = bar(opts.progress, questions.len(), label);
    let mut out = Vec::with_capacity(questions.len());
    for chunk in questions.chunks(opts.question_batch.max(1)) {
        let qs: Vec<&str> = chunk.iter().map(|(_, q)| q.question.as_str()).collect();
        out.extend(memory.ask(bank, &qs, &ask_options(opts, prior))?);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(out)
}

/// Reads `docs` into `bank` ([`Memory::ingest`]); returns how many were
/// cut at the memory's token limit.
pub(crate) fn ingest(
    memory: &dyn Memory,
    bank: &mut MemoryBank,
    docs: &[mac_data::Document],
) -> Result<usize> {
    let docs: Vec<NewDocument> = docs
        .iter()
        .map(|d| NewDocument {
            source: d.id.clone(),
            text: d.text.clone(),
        })
        .collect();
    let done = memory.ingest(bank, &docs, &mut |_| {})?;
    Ok(done.iter().filter(|d| d.truncated_tokens > 0).count())
}

/// Where the aggregator's attention went, relative to each question's gold document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttentionStats {
    /// Fraction of questions answered from their gold document: the span's
    /// document for span memory, the most attended for the paper's path.
    pub gold_top1: f64,
    /// Mean attention share of the gold document.
    pub gold_weight_mean: f64,
    /// The share a uniform spread would give (1 / documents in the bank).
    pub uniform_weight: f64,
    /// Fraction of questions whose whole document the LM was handed (span
    /// memory, unsure of the span).
    #[serde(default)]
    pub whole_document: f64,
}

pub(crate) fn attention_stats(
    questions: &[Question<'_>],
    answers: &[SourcedAnswer],
    n_docs: usize,
) -> AttentionStats {
    let (mut top1, mut mean) = (0.0, 0.0);
    let whole = answers
        .iter()
        .filter(|a| a.span.as_ref().is_some_and(|s| s.whole_document))
        .count();
    for ((doc, _), a) in questions.iter().zip(answers) {
        let w = &a.shares;
        let Some(&g) = w.get(*doc) else { continue };
        mean += g as f64;
        if read_from(*doc, a) {
            top1 += 1.0;
        }
    }
    let n = questions.len().max(1) as f64;
    AttentionStats {
        gold_top1: top1 / n,
        gold_weight_mean: mean / n,
        uniform_weight: 1.0 / n_docs.max(1) as f64,
        whole_document: whole as f64 / n,
    }
}

/// Whether `answer` was read from entry `doc`: the document its span was
/// read from, for a memory that reads a span; else the most attended.
/// (An evaluation's banks hold the stream in order: entry `i` has id `i`.)
pub(crate) fn read_from(doc: usize, answer: &SourcedAnswer) -> bool {
    match &answer.span {
        Some(span) => span.id == doc as u64,
        None => answer
            .shares
            .get(doc)
            .is_some_and(|&g| answer.shares.iter().all(|&x| x <= g)),
    }
}
