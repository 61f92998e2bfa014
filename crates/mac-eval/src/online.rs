//! The online-adaptation evaluation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use mac_data::Dataset;
use mac_memory::MemoryBank;
use mac_model::prompt::{oracle_prompt, question_prompt};
use mac_model::{BankReading, MacRuntime, NewDocument, MAX_ANSWER_TOKENS};
use mac_retrieval::Bm25Index;
use serde::{Deserialize, Serialize};

use crate::memory::reset_peak_rss;
use crate::methods::{
    bar, mac_rag_answers, score, write_predictions, MethodResult, Prediction, Question,
};
use crate::question_only::QuestionOnly;

/// The similarity prior's default scale in evaluations (mac-model's).
pub use mac_model::DEFAULT_PRIOR_SCALE;

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
            progress: false,
        }
    }
}

/// F1 on the first documents' questions after part of the stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetentionPoint {
    /// Fraction of the stream ingested.
    pub fraction: f64,
    /// Documents in the bank.
    pub documents: usize,
    /// EM on the retention questions.
    pub em: f64,
    /// F1 on the retention questions.
    pub f1: f64,
}

/// Everything an evaluation measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    /// `mac`, `no_adapt`, `oracle_context`: top-level keys of `report.json`.
    #[serde(flatten)]
    pub methods: BTreeMap<String, MethodResult>,
    /// MAC's retention as the bank grows.
    pub retention: Vec<RetentionPoint>,
    /// Where MAC's aggregator attended, relative to the gold documents.
    pub attention: AttentionStats,
    /// The same for `mac+prior` (when it ran).
    #[serde(default)]
    pub prior_attention: Option<AttentionStats>,
    /// Documents streamed.
    pub n_documents: usize,
    /// Where the bank was written.
    pub bank: PathBuf,
    /// Where the predictions were written.
    pub predictions: PathBuf,
    /// The options used.
    pub options: EvalOptions,
}

/// The producer an evaluation writes into its bank, and into its control bank.
const EVAL_BANK: &str = "mac-eval";
const CONTROL_BANK: &str = "mac-eval control";

/// Removes `dir` when it holds a bank an evaluation made (its producer is
/// `producer`), so a rerun starts fresh; anything else there is an error
/// and is left as it is.
fn clear_eval_bank(dir: &Path, producer: &str) -> Result<()> {
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

fn answer_from_bank(
    rt: &MacRuntime,
    bank: &MemoryBank,
    questions: &[Question<'_>],
    opts: &EvalOptions,
    label: &str,
) -> Result<Vec<String>> {
    Ok(
        answers_with_weights(rt, bank, questions, opts, None, label)?
            .into_iter()
            .map(|a| a.text)
            .collect(),
    )
}

/// Answers every question from `bank` (with the similarity prior of scale
/// `prior`, if any) and scores them as method `name`: its result (no
/// adaptation cost set) and where its attention went.
fn bank_method(
    rt: &MacRuntime,
    bank: &MemoryBank,
    questions: &[Question<'_>],
    opts: &EvalOptions,
    prior: Option<f64>,
    name: &str,
    preds: &mut Vec<Prediction>,
) -> Result<(MethodResult, AttentionStats)> {
    let t0 = Instant::now();
    let full = answers_with_weights(rt, bank, questions, opts, prior, name)?;
    let secs = t0.elapsed().as_secs_f64();
    let attention = attention_stats(questions, &full, bank.len());
    let answers: Vec<String> = full.into_iter().map(|a| a.text).collect();
    let scores = score(name, questions, &answers, preds);
    let storage = bank.size_bytes() as f64 / bank.len().max(1) as f64;
    let result = MethodResult::measured(scores, questions.len(), secs, 0.0, storage);
    Ok((result, attention))
}

fn answers_with_weights(
    rt: &MacRuntime,
    bank: &MemoryBank,
    questions: &[Question<'_>],
    opts: &EvalOptions,
    prior: Option<f64>,
    label: &str,
) -> Result<Vec<mac_model::Answer>> {
    let pb = bar(opts.progress, questions.len(), label);
    let mut out = Vec::with_capacity(questions.len());
    for chunk in questions.chunks(opts.question_batch.max(1)) {
        let qs: Vec<&str> = chunk.iter().map(|(_, q)| q.question.as_str()).collect();
        let reading = BankReading {
            chunk: opts.chunk,
            hierarchical: opts.hierarchical,
            prior_scale: prior,
        };
        out.extend(rt.answer_from_bank(&qs, bank, &reading)?);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(out)
}

/// Amortizes `docs` and appends them to `bank` ([`MacRuntime::ingest`]);
/// returns how many were truncated at the encoder's token limit.
fn ingest(rt: &MacRuntime, bank: &mut MemoryBank, docs: &[mac_data::Document]) -> Result<usize> {
    let docs: Vec<NewDocument> = docs
        .iter()
        .map(|d| NewDocument {
            source: d.id.clone(),
            text: d.text.clone(),
        })
        .collect();
    let done = rt.ingest(bank, &docs, |_| {})?;
    Ok(done.iter().filter(|d| d.truncated_tokens > 0).count())
}

/// Where the aggregator's attention went, relative to each question's gold document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttentionStats {
    /// Fraction of questions whose gold document received the most attention.
    pub gold_top1: f64,
    /// Mean attention share of the gold document.
    pub gold_weight_mean: f64,
    /// The share a uniform spread would give (1 / documents in the bank).
    pub uniform_weight: f64,
}

fn attention_stats(
    questions: &[Question<'_>],
    answers: &[mac_model::Answer],
    n_docs: usize,
) -> AttentionStats {
    let (mut top1, mut mean) = (0.0, 0.0);
    for ((doc, _), a) in questions.iter().zip(answers) {
        let w = &a.doc_weights;
        if let Some(&g) = w.get(*doc) {
            mean += g as f64;
            if w.iter().all(|&x| x <= g) {
                top1 += 1.0;
            }
        }
    }
    let n = questions.len().max(1) as f64;
    AttentionStats {
        gold_top1: top1 / n,
        gold_weight_mean: mean / n,
        uniform_weight: 1.0 / n_docs.max(1) as f64,
    }
}

fn answer_plain(
    rt: &MacRuntime,
    prompts: &[String],
    opts: &EvalOptions,
    label: &str,
) -> Result<Vec<String>> {
    let pb = bar(opts.progress, prompts.len(), label);
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(opts.question_batch.max(1)) {
        out.extend(rt.generate(chunk, None, MAX_ANSWER_TOKENS)?);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(out)
}

/// Streams `test` into a fresh bank under `out_dir/bank`, answers every
/// question, runs the references, and writes `predictions.jsonl`.
///
/// With `control` documents, a second bank of those (unrelated) documents
/// answers the same questions (`mac_unrelated_bank`): what MAC scores
/// without the right documents in memory, i.e. from the question alone.
/// With the `training` split, the references include the question-only
/// baseline (`question_only`, see [`crate::QuestionOnly`]).
pub fn evaluate(
    rt: &MacRuntime,
    test: &Dataset,
    control: Option<&Dataset>,
    training: Option<&Dataset>,
    out_dir: &Path,
    opts: &EvalOptions,
) -> Result<EvalReport> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("{}: cannot create", out_dir.display()))?;
    let n_docs = opts
        .max_documents
        .unwrap_or(usize::MAX)
        .min(test.documents.len());
    anyhow::ensure!(n_docs > 0, "the test stream has no documents");
    let docs = &test.documents[..n_docs];
    let questions: Vec<Question<'_>> = docs
        .iter()
        .enumerate()
        .flat_map(|(i, d)| d.qas.iter().map(move |q| (i, q)))
        .collect();
    let first_docs = ((n_docs as f64 * opts.retention_first).ceil() as usize).clamp(1, n_docs);
    let retention_qs: Vec<Question<'_>> = questions
        .iter()
        .copied()
        .filter(|(d, _)| *d < first_docs)
        .collect();
    let mut checkpoints: Vec<(f64, usize)> = opts
        .retention_points
        .iter()
        .map(|&f| {
            (
                f,
                ((n_docs as f64 * f).ceil() as usize).clamp(first_docs, n_docs),
            )
        })
        .collect();
    checkpoints.dedup_by_key(|c| c.1);

    let bank_dir = out_dir.join("bank");
    clear_eval_bank(&bank_dir, EVAL_BANK)?;
    let mut bank = MemoryBank::create(&bank_dir, rt.bank_shape(), EVAL_BANK)?;
    let mut preds = Vec::new();
    let mut methods = BTreeMap::new();
    let mut retention = Vec::new();

    // --- MAC: stream the documents in, measuring retention on the way.
    reset_peak_rss();
    let pb = bar(opts.progress, n_docs, "ingest");
    let mut adapt_seconds = 0.0;
    let mut ingested = 0;
    let mut truncated = 0;
    for (c, &(fraction, upto)) in checkpoints.iter().enumerate() {
        while ingested < upto {
            let end = (ingested + opts.ingest_batch.max(1)).min(upto);
            let t0 = Instant::now();
            truncated += ingest(rt, &mut bank, &docs[ingested..end])?;
            adapt_seconds += t0.elapsed().as_secs_f64();
            pb.inc((end - ingested) as u64);
            ingested = end;
        }
        let last = c + 1 == checkpoints.len();
        if !last || ingested == n_docs {
            let label = format!("retention {:.0}%", fraction * 100.0);
            let answers = answer_from_bank(rt, &bank, &retention_qs, opts, &label)?;
            let mut scratch = Vec::new();
            let (em, f1, _) = score("retention", &retention_qs, &answers, &mut scratch);
            retention.push(RetentionPoint {
                fraction,
                documents: ingested,
                em,
                f1,
            });
        }
    }
    pb.finish_and_clear();
    if truncated > 0 {
        eprintln!(
            "warning: {truncated} documents were longer than the encoder's {} tokens and were truncated",
            rt.config.max_document_tokens
        );
    }
    let adapt_ms = 1000.0 * adapt_seconds / n_docs as f64;
    let prior = opts.similarity_prior.filter(|&s| s > 0.0);
    let (result, attention) = bank_method(rt, &bank, &questions, opts, None, "mac", &mut preds)?;
    methods.insert("mac".into(), result.with_adapt_ms(adapt_ms));
    let mut prior_attention = None;
    if let Some(scale) = prior {
        reset_peak_rss();
        let name = "mac+prior";
        let (result, attention) =
            bank_method(rt, &bank, &questions, opts, Some(scale), name, &mut preds)?;
        methods.insert(name.into(), result.with_adapt_ms(adapt_ms));
        prior_attention = Some(attention);
    }

    if let Some(k) = opts.retrieval_k.filter(|&k| k > 0) {
        let t0 = Instant::now();
        let mut index = Bm25Index::new()?;
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        index.add(&texts)?;
        let index_ms = 1000.0 * t0.elapsed().as_secs_f64() / n_docs as f64;
        reset_peak_rss();
        let storage = bank.size_bytes() as f64 / bank.len().max(1) as f64;
        // Then the control: the same k documents' places, each moved half the
        // bank along, i.e. documents about other entities.
        let runs = std::iter::once((format!("mac+rag@{k}"), 0, adapt_ms + index_ms))
            .chain((n_docs >= 2).then(|| (format!("mac+rag@{k}_unrelated"), n_docs / 2, 0.0)));
        for (name, shift, adapt_ms) in runs {
            let t0 = Instant::now();
            let batch = opts.question_batch;
            let answers = mac_rag_answers(rt, &index, &bank, &questions, k, batch, shift)?;
            let secs = t0.elapsed().as_secs_f64();
            let scores = score(&name, &questions, &answers, &mut preds);
            methods.insert(
                name,
                MethodResult::measured(scores, questions.len(), secs, adapt_ms, storage),
            );
        }
    }

    if let Some(control) = control.filter(|c| !c.documents.is_empty()) {
        let dir = out_dir.join("bank-unrelated");
        clear_eval_bank(&dir, CONTROL_BANK)?;
        let mut other = MemoryBank::create(&dir, rt.bank_shape(), CONTROL_BANK)?;
        let docs_c = &control.documents[..n_docs.min(control.documents.len())];
        for chunk in docs_c.chunks(opts.ingest_batch.max(1)) {
            ingest(rt, &mut other, chunk)?;
        }
        reset_peak_rss();
        let controls = std::iter::once(("mac_unrelated_bank", None))
            .chain(prior.map(|scale| ("mac+prior_unrelated_bank", Some(scale))));
        for (name, prior) in controls {
            let (result, _) = bank_method(rt, &other, &questions, opts, prior, name, &mut preds)?;
            methods.insert(name.into(), result);
        }
    }

    if opts.references {
        let plain: Vec<String> = questions
            .iter()
            .map(|(_, q)| question_prompt(&q.question))
            .collect();
        let oracle: Vec<String> = questions
            .iter()
            .map(|(d, q)| oracle_prompt(&docs[*d].text, &q.question))
            .collect();
        for (name, prompts) in [("no_adapt", plain), ("oracle_context", oracle)] {
            reset_peak_rss();
            let t0 = Instant::now();
            let answers = answer_plain(rt, &prompts, opts, name)?;
            let secs = t0.elapsed().as_secs_f64();
            let scores = score(name, &questions, &answers, &mut preds);
            methods.insert(
                name.to_string(),
                MethodResult::measured(scores, questions.len(), secs, 0.0, 0.0),
            );
        }
    }

    if let Some(training) = training.filter(|_| opts.references) {
        let t0 = Instant::now();
        let baseline = QuestionOnly::fit(training)?;
        let answers = questions
            .iter()
            .map(|(_, q)| baseline.answer(&q.question))
            .collect::<Result<Vec<_>>>()?;
        let secs = t0.elapsed().as_secs_f64();
        let name = "question_only";
        let scores = score(name, &questions, &answers, &mut preds);
        methods.insert(
            name.to_string(),
            MethodResult::measured(scores, questions.len(), secs, 0.0, 0.0),
        );
    }

    crate::bootstrap::add_intervals(&mut methods, &preds);
    let pred_path = out_dir.join("predictions.jsonl");
    write_predictions(&pred_path, &preds)?;
    Ok(EvalReport {
        methods,
        retention,
        attention,
        prior_attention,
        n_documents: n_docs,
        bank: bank_dir,
        predictions: pred_path,
        options: opts.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mac_memory::BankShape;

    #[test]
    fn only_a_bank_an_evaluation_made_is_cleared() {
        let root = tempfile::tempdir().unwrap();
        let shape = BankShape {
            n_tokens: 1,
            d_mod: 2,
            key_dim: 0,
            rows_vary: false,
        };
        // A user's directory: refused, kept.
        let user = root.path().join("bank");
        std::fs::create_dir(&user).unwrap();
        std::fs::write(user.join("notes.txt"), "mine").unwrap();
        let err = clear_eval_bank(&user, EVAL_BANK).unwrap_err();
        assert!(
            err.to_string().contains("not a bank an evaluation made"),
            "{err}"
        );
        assert!(user.join("notes.txt").is_file());
        // A bank someone else made: refused, kept.
        let other = root.path().join("other");
        drop(MemoryBank::create(&other, shape, "my ingest").unwrap());
        assert!(clear_eval_bank(&other, EVAL_BANK).is_err());
        assert!(other.join("MANIFEST").is_file());
        // The evaluation's own bank: cleared; a missing one is fine.
        let ours = root.path().join("ours");
        drop(MemoryBank::create(&ours, shape, EVAL_BANK).unwrap());
        clear_eval_bank(&ours, EVAL_BANK).unwrap();
        assert!(!ours.exists());
        clear_eval_bank(&ours, EVAL_BANK).unwrap();
    }
}
