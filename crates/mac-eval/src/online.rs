//! The online-adaptation evaluation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use mac_bank::MemoryBank;
use mac_data::Dataset;
use mac_lm::LoadedLm;
use mac_model::prompt::framed_prompt;
use mac_retrieval::Bm25Index;
use mac_runtime::Memory;
use serde::{Deserialize, Serialize};

use crate::asking::{
    ask_all, attention_stats, clear_eval_bank, ingest, AttentionStats, EvalOptions,
};
use crate::methods::{
    answer_prompts, bar, mac_rag_answers, rag_context, rag_prompt, retrieve, score,
    write_predictions, MethodResult, Prediction, Question,
};
use crate::question_only::QuestionOnly;
use crate::rss::reset_peak_rss;
use crate::sizes::{bank_size_points, BankSizePoint};

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
    /// The memory evaluated (`mac`: the paper's path; `span memory`).
    #[serde(default = "paper_path")]
    pub memory: String,
    /// `mac` (or `span_memory`), `no_adapt`, `oracle_context`, `rag@1`:
    /// top-level keys of `report.json`.
    #[serde(flatten)]
    pub methods: BTreeMap<String, MethodResult>,
    /// The memory's retention as the bank grows.
    pub retention: Vec<RetentionPoint>,
    /// The first documents' questions as the bank grows with unrelated
    /// documents.
    #[serde(default)]
    pub bank_sizes: Vec<BankSizePoint>,
    /// Of the questions about facts a later document changed: each
    /// method's share of answers with the new value and with the stale one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub updates: BTreeMap<String, crate::UpdateShare>,
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
    /// Other memories' rows set beside this one's: the memory, and the
    /// evaluation they came from ([`EvalReport::add_beside`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub beside: Vec<(String, PathBuf)>,
}

fn paper_path() -> String {
    "mac".into()
}

/// The producer an evaluation writes into its bank, and into its control bank.
const EVAL_BANK: &str = "mac-eval";
const CONTROL_BANK: &str = "mac-eval control";

/// Answers every question from `bank` (with the similarity prior of scale
/// `prior`, if any) and scores them as method `name`: its result (no
/// adaptation cost set) and where its attention went.
fn bank_method(
    memory: &dyn Memory,
    bank: &MemoryBank,
    questions: &[Question<'_>],
    opts: &EvalOptions,
    prior: Option<f64>,
    name: &str,
    preds: &mut Vec<Prediction>,
) -> Result<(MethodResult, AttentionStats)> {
    let t0 = Instant::now();
    let full = ask_all(memory, bank, questions, opts, prior, name)?;
    let secs = t0.elapsed().as_secs_f64();
    let attention = attention_stats(questions, &full, bank.len());
    let answers: Vec<String> = full.into_iter().map(|a| a.text).collect();
    let scores = score(name, questions, &answers, preds);
    let storage = bank.size_bytes() as f64 / bank.len().max(1) as f64;
    let result = MethodResult::measured(scores, questions.len(), secs, 0.0, storage);
    Ok((result, attention))
}

/// The LM's answers to text prompts, a batch at a time, with a progress bar.
fn prompts_answered(
    lm: &LoadedLm,
    (prompts, sources): (&[String], Option<&[&str]>),
    opts: &EvalOptions,
    label: &str,
) -> Result<Vec<String>> {
    let pb = bar(opts.progress, prompts.len(), label);
    let out = answer_prompts(lm, prompts, sources, opts.question_batch, &pb)?;
    pb.finish_and_clear();
    Ok(out)
}

/// Streams `test` into a fresh bank under `out_dir/bank`, answers every
/// question with `memory` and the methods put beside it, and writes
/// `predictions.jsonl`.
///
/// Every method that reads text puts the question in the memory's frame
/// ([`Memory::frame`]): `no_adapt` (the question alone), `oracle_context`
/// (the gold document), `rag@k` (the top-k BM25 documents); where the
/// memory copies its answers ([`Memory::copies_answers`]), the last two
/// copy theirs from the documents they hand the LM. With `control`
/// documents, a second bank of those (unrelated) documents answers the same
/// questions (`<memory>_unrelated_bank`: what it scores from the question
/// alone), and banks of growing size are the first test documents among
/// them (`bank_sizes`). With the `training` split, the references include
/// the question-only baseline (`question_only`, see [`crate::QuestionOnly`]).
/// The paper's path adds its own rows (`mac+prior`, `mac+rag@k`).
pub fn evaluate(
    memory: &dyn Memory,
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
    let mut run = Run {
        memory,
        key: method_key(memory),
        docs: &test.documents[..n_docs],
        questions: test.documents[..n_docs]
            .iter()
            .enumerate()
            .flat_map(|(i, d)| d.qas.iter().map(move |q| (i, q)))
            .collect(),
        opts,
        preds: Vec::new(),
        methods: BTreeMap::new(),
    };
    let bank_dir = out_dir.join("bank");
    let (bank, retention, adapt_ms) = run.stream_in(&bank_dir)?;
    let (attention, prior_attention) = run.memory_rows(&bank, adapt_ms)?;
    run.retrieval_rows(&bank, adapt_ms)?;
    let mut bank_sizes = Vec::new();
    if let Some(control) = control.filter(|c| !c.documents.is_empty()) {
        run.control_rows(control, out_dir)?;
        if !opts.bank_sizes.is_empty() {
            bank_sizes =
                bank_size_points(memory, run.docs, &run.questions, control, out_dir, opts)?;
        }
    }
    if opts.references {
        run.reference_rows(training)?;
    }
    let updates = crate::updates::update_shares(run.docs, &run.preds);
    let Run {
        mut methods, preds, ..
    } = run;
    crate::bootstrap::add_intervals(&mut methods, &preds);
    let pred_path = out_dir.join("predictions.jsonl");
    write_predictions(&pred_path, &preds)?;
    Ok(EvalReport {
        memory: memory.name().to_string(),
        methods,
        retention,
        bank_sizes,
        updates,
        attention,
        prior_attention,
        n_documents: n_docs,
        bank: bank_dir,
        predictions: pred_path,
        options: opts.clone(),
        beside: Vec::new(),
    })
}

/// Of a stream of `n_docs` documents: how many lead it (their questions
/// measure retention), and the (fraction, documents ingested) points at
/// which they are asked, each point after the leading documents.
pub(crate) fn retention_points(n_docs: usize, opts: &EvalOptions) -> (usize, Vec<(f64, usize)>) {
    let first = ((n_docs as f64 * opts.retention_first).ceil() as usize).clamp(1, n_docs);
    let mut points: Vec<(f64, usize)> = opts
        .retention_points
        .iter()
        .map(|&f| {
            (
                f,
                ((n_docs as f64 * f).ceil() as usize).clamp(first, n_docs),
            )
        })
        .collect();
    points.dedup_by_key(|c| c.1);
    (first, points)
}

/// A memory's rows are named by it: `mac` (the paper's path), `span_memory`.
pub fn method_key(memory: &dyn Memory) -> String {
    row_key(memory.name())
}

/// The key of a memory's rows in a report, from its name (`span memory` →
/// `span_memory`).
pub(crate) fn row_key(memory_name: &str) -> String {
    memory_name.replace(' ', "_")
}

/// One evaluation in progress: what it asks and what it has measured.
struct Run<'a> {
    memory: &'a dyn Memory,
    key: String,
    docs: &'a [mac_data::Document],
    questions: Vec<Question<'a>>,
    opts: &'a EvalOptions,
    preds: Vec<Prediction>,
    methods: BTreeMap<String, MethodResult>,
}

impl Run<'_> {
    /// The questions of the first `retention_first` share of the stream.
    fn first_questions(&self) -> (usize, Vec<Question<'_>>) {
        let first = retention_points(self.docs.len(), self.opts).0;
        let qs = self
            .questions
            .iter()
            .copied()
            .filter(|(d, _)| *d < first)
            .collect();
        (first, qs)
    }

    /// Streams the documents into a fresh bank in `dir`, measuring
    /// retention on the way: the bank, the retention points and the
    /// adaptation time per document.
    fn stream_in(&mut self, dir: &Path) -> Result<(MemoryBank, Vec<RetentionPoint>, f64)> {
        let (opts, n_docs) = (self.opts, self.docs.len());
        let (_, retention_qs) = self.first_questions();
        let checkpoints = retention_points(n_docs, opts).1;
        clear_eval_bank(dir, EVAL_BANK)?;
        let mut bank = MemoryBank::create(dir, self.memory.bank_shape(), EVAL_BANK)?;
        if let Some(precision) = opts.store_kv {
            self.memory
                .store_key_values(&bank, precision, &mut |_| {})?;
        }
        let mut retention = Vec::new();
        reset_peak_rss();
        let pb = bar(opts.progress, n_docs, "ingest");
        let (mut adapt_seconds, mut ingested, mut truncated) = (0.0, 0, 0);
        for (c, &(fraction, upto)) in checkpoints.iter().enumerate() {
            while ingested < upto {
                let end = (ingested + opts.ingest_batch.max(1)).min(upto);
                let t0 = Instant::now();
                truncated += ingest(self.memory, &mut bank, &self.docs[ingested..end])?;
                adapt_seconds += t0.elapsed().as_secs_f64();
                pb.inc((end - ingested) as u64);
                ingested = end;
            }
            if c + 1 < checkpoints.len() || ingested == n_docs {
                let label = format!("retention {:.0}%", fraction * 100.0);
                let answers = ask_all(self.memory, &bank, &retention_qs, opts, None, &label)?;
                let texts: Vec<String> = answers.into_iter().map(|a| a.text).collect();
                let (em, f1, _) = score("retention", &retention_qs, &texts, &mut Vec::new());
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
                "warning: {truncated} documents were longer than the memory's {} tokens and were cut",
                self.memory.document_token_limit()
            );
        }
        Ok((bank, retention, 1000.0 * adapt_seconds / n_docs as f64))
    }

    /// The memory over the whole bank, and with the similarity prior where
    /// it has one.
    fn memory_rows(
        &mut self,
        bank: &MemoryBank,
        adapt_ms: f64,
    ) -> Result<(AttentionStats, Option<AttentionStats>)> {
        let (memory, opts) = (self.memory, self.opts);
        let (result, attention) = bank_method(
            memory,
            bank,
            &self.questions,
            opts,
            None,
            &self.key,
            &mut self.preds,
        )?;
        self.methods
            .insert(self.key.clone(), result.with_adapt_ms(adapt_ms));
        let prior = opts
            .similarity_prior
            .filter(|&s| s > 0.0 && memory.has_prior(bank));
        let Some(scale) = prior else {
            return Ok((attention, None));
        };
        reset_peak_rss();
        let name = format!("{}+prior", self.key);
        let (result, prior_attention) = bank_method(
            memory,
            bank,
            &self.questions,
            opts,
            Some(scale),
            &name,
            &mut self.preds,
        )?;
        self.methods.insert(name, result.with_adapt_ms(adapt_ms));
        Ok((attention, Some(prior_attention)))
    }

    /// `rag@k`: the top-k BM25 documents in the prompt, in the memory's
    /// frame; for the paper's path also `mac+rag@k` (its aggregation over
    /// only those documents) and its control with other documents.
    fn retrieval_rows(&mut self, bank: &MemoryBank, adapt_ms: f64) -> Result<()> {
        let Some(k) = self.opts.retrieval_k.filter(|&k| k > 0) else {
            return Ok(());
        };
        let n_docs = self.docs.len();
        let t0 = Instant::now();
        let texts: Vec<&str> = self.docs.iter().map(|d| d.text.as_str()).collect();
        let index = Bm25Index::build(&texts)?;
        let index_ms = 1000.0 * t0.elapsed().as_secs_f64() / n_docs as f64;
        reset_peak_rss();
        let t0 = Instant::now();
        let (mut prompts, mut contexts) = (Vec::new(), Vec::new());
        for (_, q) in &self.questions {
            let hits = retrieve(&index, &q.question, k, n_docs)?;
            let frame = self.memory.frame();
            prompts.push(rag_prompt(frame, self.docs, &hits, &q.question));
            contexts.push(rag_context(self.docs, &hits));
        }
        let name = format!("rag@{k}");
        let contexts: Vec<&str> = contexts.iter().map(String::as_str).collect();
        let sources = self.memory.copies_answers().then_some(contexts.as_slice());
        let answers = prompts_answered(self.memory.lm(), (&prompts, sources), self.opts, &name)?;
        self.record(&name, &answers, t0, index_ms, 0.0);
        let Some(rt) = self.memory.paper_path() else {
            return Ok(());
        };
        let storage = bank.size_bytes() as f64 / bank.len().max(1) as f64;
        // The control: the same k documents' places, each moved half the
        // bank along, i.e. documents about other entities.
        let runs = std::iter::once((format!("mac+rag@{k}"), 0, adapt_ms + index_ms))
            .chain((n_docs >= 2).then(|| (format!("mac+rag@{k}_unrelated"), n_docs / 2, 0.0)));
        for (name, shift, adapt_ms) in runs {
            let t0 = Instant::now();
            let batch = self.opts.question_batch;
            let answers = mac_rag_answers(rt, &index, bank, &self.questions, k, batch, shift)?;
            self.record(&name, &answers, t0, adapt_ms, storage);
        }
        Ok(())
    }

    /// Scores `answers` as method `name`, answered since `t0`.
    fn record(&mut self, name: &str, answers: &[String], t0: Instant, adapt_ms: f64, storage: f64) {
        let secs = t0.elapsed().as_secs_f64();
        let scores = score(name, &self.questions, answers, &mut self.preds);
        let n = self.questions.len();
        self.methods.insert(
            name.to_string(),
            MethodResult::measured(scores, n, secs, adapt_ms, storage),
        );
    }

    /// The memory over a bank of as many unrelated documents.
    fn control_rows(&mut self, control: &Dataset, out_dir: &Path) -> Result<()> {
        let (memory, opts) = (self.memory, self.opts);
        let dir = out_dir.join("bank-unrelated");
        clear_eval_bank(&dir, CONTROL_BANK)?;
        let mut other = MemoryBank::create(&dir, memory.bank_shape(), CONTROL_BANK)?;
        let docs = &control.documents[..self.docs.len().min(control.documents.len())];
        for chunk in docs.chunks(opts.ingest_batch.max(1)) {
            ingest(memory, &mut other, chunk)?;
        }
        reset_peak_rss();
        let prior = opts
            .similarity_prior
            .filter(|&s| s > 0.0 && memory.has_prior(&other));
        let controls = std::iter::once((format!("{}_unrelated_bank", self.key), None))
            .chain(prior.map(|scale| (format!("{}+prior_unrelated_bank", self.key), Some(scale))));
        for (name, prior) in controls {
            let (result, _) = bank_method(
                memory,
                &other,
                &self.questions,
                opts,
                prior,
                &name,
                &mut self.preds,
            )?;
            self.methods.insert(name, result);
        }
        Ok(())
    }

    /// `no_adapt` (the question alone) and `oracle_context` (the gold
    /// document) in the memory's frame; `question_only` given training.
    fn reference_rows(&mut self, training: Option<&Dataset>) -> Result<()> {
        let frame = self.memory.frame();
        for (name, with_document) in [("no_adapt", false), ("oracle_context", true)] {
            let prompts: Vec<String> = self
                .questions
                .iter()
                .map(|(d, q)| {
                    let document = with_document.then(|| self.docs[*d].text.as_str());
                    framed_prompt(frame, document, &q.question)
                })
                .collect();
            let documents: Vec<&str> = self
                .questions
                .iter()
                .map(|(d, _)| self.docs[*d].text.trim())
                .collect();
            let copies = with_document && self.memory.copies_answers();
            let sources = copies.then_some(documents.as_slice());
            reset_peak_rss();
            let t0 = Instant::now();
            let answers = prompts_answered(self.memory.lm(), (&prompts, sources), self.opts, name)?;
            self.record(name, &answers, t0, 0.0, 0.0);
        }
        if let Some(training) = training {
            let t0 = Instant::now();
            let baseline = QuestionOnly::fit(training)?;
            let answers = self
                .questions
                .iter()
                .map(|(_, q)| baseline.answer(&q.question))
                .collect::<Result<Vec<_>>>()?;
            self.record("question_only", &answers, t0, 0.0, 0.0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mac_bank::{BankShape, Precision};

    #[test]
    fn only_a_bank_an_evaluation_made_is_cleared() {
        let root = tempfile::tempdir().unwrap();
        let shape = BankShape {
            n_tokens: 1,
            d_mod: 2,
            key_dim: 0,
            rows_vary: false,
            precision: Precision::F32,
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
