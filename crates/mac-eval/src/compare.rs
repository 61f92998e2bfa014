//! The paper's comparison (§4.2–4.4) on one test stream: the memory (either
//! design) against online fine-tuning (uniform, salient spans) and
//! retrieval (BM25 RAG@k, in the memory's frame), with the no-adaptation
//! and oracle-context references; for the paper's path also MAC +
//! retrieval (aggregate only the top-k documents' modulations).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use burn::tensor::Device;
use mac_bank::MemoryBank;
use mac_data::Dataset;
use mac_finetune::{FinetuneConfig, FinetuneKind, OnlineFinetuner};
use mac_model::prompt::question_prompt;
use mac_retrieval::Bm25Index;
use mac_runtime::Memory;
use serde::{Deserialize, Serialize};

use crate::methods::{
    answer_prompts, bar, mac_rag_answers, rag_prompt, retrieve, score, write_predictions, Question,
};
use crate::online::retention_points;
use crate::report::method_table;
use crate::rss::{peak_rss_mb, reset_peak_rss};
use crate::{evaluate, method_key, EvalOptions, MethodResult, Prediction, RetentionPoint};

/// What to compare.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareOptions {
    /// The MAC evaluation's options (also: documents evaluated, retention points).
    pub eval: EvalOptions,
    /// Retrieval depths for RAG@k and MAC+RAG@k.
    pub ks: Vec<usize>,
    /// Learning rates tried for the fine-tuning baselines on the validation stream.
    pub finetune_lrs: Vec<f64>,
    /// Gradient steps per document for fine-tuning.
    pub finetune_steps: usize,
    /// Validation documents used to choose the learning rate.
    pub sweep_documents: usize,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            eval: EvalOptions::default(),
            ks: vec![1, 3, 5],
            finetune_lrs: vec![1e-5, 1e-4],
            finetune_steps: 1,
            sweep_documents: 8,
        }
    }
}

/// One learning rate tried on the validation stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepRow {
    /// `uniform` or `salient_spans`.
    pub method: String,
    /// Learning rate.
    pub learning_rate: f64,
    /// Validation F1 after the validation stream.
    pub f1: f64,
}

/// The comparison: one object per method (top-level keys of `report.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareReport {
    /// Scores and costs per method.
    #[serde(flatten)]
    pub methods: BTreeMap<String, MethodResult>,
    /// Retention per method as the stream grows.
    pub retention: BTreeMap<String, Vec<RetentionPoint>>,
    /// The fine-tuning learning-rate sweep.
    pub lr_sweep: Vec<SweepRow>,
    /// Documents streamed.
    pub n_documents: usize,
}

fn questions_of(docs: &[mac_data::Document]) -> Vec<Question<'_>> {
    docs.iter()
        .enumerate()
        .flat_map(|(i, d)| d.qas.iter().map(move |q| (i, q)))
        .collect()
}

fn plain_answers(lm: &mac_lm::LoadedLm, prompts: &[String], batch: usize) -> Result<Vec<String>> {
    answer_prompts(lm, prompts, None, batch, &indicatif::ProgressBar::hidden())
}

/// RAG@k answers: the top-k documents of `index` in the prompt, in `frame`.
fn rag_answers(
    memory: &dyn Memory,
    index: &Bm25Index,
    docs: &[mac_data::Document],
    qs: &[Question<'_>],
    k: usize,
    batch: usize,
) -> Result<Vec<String>> {
    let mut prompts = Vec::with_capacity(qs.len());
    for (_, q) in qs {
        let hits = retrieve(index, &q.question, k, index.len())?;
        prompts.push(rag_prompt(memory.frame(), docs, &hits, &q.question));
    }
    plain_answers(memory.lm(), &prompts, batch)
}

fn finetune_stream(
    lm_path: &Path,
    device: &Device,
    cfg: FinetuneConfig,
    docs: &[mac_data::Document],
    checkpoints: &[(f64, usize)],
    retention_qs: &[Question<'_>],
    eval: &EvalOptions,
) -> Result<(OnlineFinetuner, f64, Vec<RetentionPoint>)> {
    let (batch, show) = (eval.question_batch, eval.progress);
    let mut ft = OnlineFinetuner::load(lm_path, device, cfg)?;
    let mut seconds = 0.0;
    let mut retention = Vec::new();
    let mut done = 0;
    let pb = bar(show, docs.len(), cfg.kind.name());
    for &(fraction, upto) in checkpoints {
        while done < upto {
            let t0 = Instant::now();
            ft.adapt(&docs[done].text)?;
            seconds += t0.elapsed().as_secs_f64();
            done += 1;
            pb.inc(1);
        }
        if !retention_qs.is_empty() {
            let lm = ft.snapshot();
            let prompts: Vec<String> = retention_qs
                .iter()
                .map(|(_, q)| question_prompt(&q.question))
                .collect();
            let answers = plain_answers(&lm, &prompts, batch)?;
            let (em, f1, _) = score("retention", retention_qs, &answers, &mut Vec::new());
            retention.push(RetentionPoint {
                fraction,
                documents: done,
                em,
                f1,
            });
        }
    }
    pb.finish_and_clear();
    Ok((ft, seconds, retention))
}

/// What the comparison's phases share: the stream, its questions and
/// what has been measured.
struct Comparison<'a> {
    memory: &'a dyn Memory,
    opts: &'a CompareOptions,
    docs: &'a [mac_data::Document],
    qs: Vec<Question<'a>>,
    retention_qs: Vec<Question<'a>>,
    checkpoints: Vec<(f64, usize)>,
    methods: BTreeMap<String, MethodResult>,
    retention: BTreeMap<String, Vec<RetentionPoint>>,
    preds: Vec<Prediction>,
}

/// Runs every method on the first `opts.eval.max_documents` documents of
/// `test`: the memory (evaluated as [`evaluate`] does), RAG@k in its frame
/// (and, for the paper's path, MAC+RAG@k), and online fine-tuning of the
/// LM at `lm_path` on `device`, its learning rate chosen on `validation`.
/// Writes `predictions.jsonl` (all methods) under `out_dir`.
pub fn compare(
    memory: &dyn Memory,
    lm_path: &Path,
    device: &Device,
    test: &Dataset,
    validation: &Dataset,
    out_dir: &Path,
    opts: &CompareOptions,
) -> Result<CompareReport> {
    // RAG@k (and MAC+RAG@k) are measured below for every k, retention included.
    let base_opts = EvalOptions {
        retrieval_k: None,
        ..opts.eval.clone()
    };
    let base = evaluate(memory, test, None, None, out_dir, &base_opts)?;
    let n_docs = base.n_documents;
    let docs = &test.documents[..n_docs];
    let qs = questions_of(docs);
    let (first, mut checkpoints) = retention_points(n_docs, &opts.eval);
    let retention_qs: Vec<Question<'_>> = qs.iter().copied().filter(|(d, _)| *d < first).collect();
    if checkpoints.last().is_none_or(|c| c.1 != n_docs) {
        checkpoints.push((1.0, n_docs));
    }
    let mut run = Comparison {
        memory,
        opts,
        docs,
        qs,
        retention_qs,
        checkpoints,
        methods: base.methods.clone(),
        retention: BTreeMap::from([(method_key(memory), base.retention.clone())]),
        preds: Vec::new(),
    };
    let bank = MemoryBank::open_read_only(&base.bank)?;
    run.retrieval(&bank)?;
    let mut sweep = Vec::new();
    for kind in [FinetuneKind::Uniform, FinetuneKind::SalientSpans] {
        sweep.extend(run.finetuning(kind, lm_path, device, validation)?);
    }
    let Comparison {
        mut methods,
        retention,
        preds,
        ..
    } = run;
    crate::bootstrap::add_intervals(&mut methods, &preds);
    let path = out_dir.join("predictions-compare.jsonl");
    write_predictions(&path, &preds)?;
    Ok(CompareReport {
        methods,
        retention,
        lr_sweep: sweep,
        n_documents: n_docs,
    })
}

impl Comparison<'_> {
    /// The answers of `kind@k` (`rag` or, for the paper's path, `mac+rag`)
    /// to `qs` over what `index` holds.
    fn retrieved(
        &self,
        kind: &str,
        k: usize,
        index: &Bm25Index,
        bank: &MemoryBank,
        qs: &[Question<'_>],
    ) -> Result<Vec<String>> {
        let batch = self.opts.eval.question_batch;
        match (kind, self.memory.paper_path()) {
            ("mac+rag", Some(rt)) => mac_rag_answers(rt, index, bank, qs, k, batch, 0),
            _ => rag_answers(self.memory, index, self.docs, qs, k, batch),
        }
    }

    /// RAG@k (and MAC+RAG@k) for every k: the index grows with the stream,
    /// retention measured at each point, then every question answered.
    fn retrieval(&mut self, bank: &MemoryBank) -> Result<()> {
        let kinds: &[&str] = if self.memory.paper_path().is_some() {
            &["rag", "mac+rag"]
        } else {
            &["rag"]
        };
        let mut index = Bm25Index::new()?;
        let (mut index_seconds, mut indexed) = (0.0, 0);
        for &(fraction, upto) in &self.checkpoints.clone() {
            let t0 = Instant::now();
            let texts: Vec<&str> = self.docs[indexed..upto]
                .iter()
                .map(|d| d.text.as_str())
                .collect();
            index.add(&texts)?;
            index_seconds += t0.elapsed().as_secs_f64();
            indexed = upto;
            for &k in &self.opts.ks {
                for kind in kinds {
                    let answers = self.retrieved(kind, k, &index, bank, &self.retention_qs)?;
                    let (em, f1, _) =
                        score("retention", &self.retention_qs, &answers, &mut Vec::new());
                    let point = RetentionPoint {
                        fraction,
                        documents: upto,
                        em,
                        f1,
                    };
                    self.retention
                        .entry(format!("{kind}@{k}"))
                        .or_default()
                        .push(point);
                }
            }
        }
        let n_docs = self.docs.len();
        let key = method_key(self.memory);
        let own = self.methods.get(&key);
        let (memory_adapt, memory_storage) = own.map_or((0.0, 0.0), |m| {
            (m.adapt_ms_per_doc, m.storage_bytes_per_doc)
        });
        let text_bytes =
            self.docs.iter().map(|d| d.text.len()).sum::<usize>() as f64 / n_docs as f64;
        let index_ms = 1000.0 * index_seconds / n_docs as f64;
        for &k in &self.opts.ks {
            for kind in kinds {
                reset_peak_rss();
                let t0 = Instant::now();
                let answers = self.retrieved(kind, k, &index, bank, &self.qs)?;
                let secs = t0.elapsed().as_secs_f64();
                let name = format!("{kind}@{k}");
                let scores = score(&name, &self.qs, &answers, &mut self.preds);
                let (adapt_ms, storage) = if *kind == "rag" {
                    (index_ms, text_bytes)
                } else {
                    (index_ms + memory_adapt, text_bytes + memory_storage)
                };
                let result = MethodResult::measured(scores, self.qs.len(), secs, adapt_ms, storage);
                self.methods.insert(name, result);
            }
        }
        Ok(())
    }

    /// The plain question prompts of `qs`.
    fn prompts(qs: &[Question<'_>]) -> Vec<String> {
        qs.iter()
            .map(|(_, q)| question_prompt(&q.question))
            .collect()
    }

    /// Online fine-tuning of `kind`: each learning rate tried on the first
    /// validation documents, the best streamed over the test documents
    /// (retention on the way), every question answered. Returns the sweep.
    fn finetuning(
        &mut self,
        kind: FinetuneKind,
        lm_path: &Path,
        device: &Device,
        validation: &Dataset,
    ) -> Result<Vec<SweepRow>> {
        let opts = self.opts;
        let batch = opts.eval.question_batch;
        let val_docs: Vec<mac_data::Document> = validation
            .documents
            .iter()
            .take(opts.sweep_documents)
            .cloned()
            .collect();
        let val_qs = questions_of(&val_docs);
        let quiet = EvalOptions {
            progress: false,
            ..opts.eval.clone()
        };
        let config = |learning_rate| FinetuneConfig {
            kind,
            learning_rate,
            steps_per_document: opts.finetune_steps,
            max_tokens: 256,
        };
        let mut sweep = Vec::new();
        let mut best: Option<(f64, f64)> = None;
        for &lr in &opts.finetune_lrs {
            let everything = [(1.0, val_docs.len())];
            let (ft, _, _) = finetune_stream(
                lm_path,
                device,
                config(lr),
                &val_docs,
                &everything,
                &[],
                &quiet,
            )?;
            let answers = plain_answers(&ft.snapshot(), &Self::prompts(&val_qs), batch)?;
            let (_, f1, _) = score("sweep", &val_qs, &answers, &mut Vec::new());
            sweep.push(SweepRow {
                method: kind.name().into(),
                learning_rate: lr,
                f1,
            });
            if best.is_none_or(|(b, _)| f1 > b) {
                best = Some((f1, lr));
            }
        }
        let lr = best.map(|b| b.1).unwrap_or(1e-5);
        reset_peak_rss();
        let (ft, adapt_s, ret) = finetune_stream(
            lm_path,
            device,
            config(lr),
            self.docs,
            &self.checkpoints,
            &self.retention_qs,
            &opts.eval,
        )?;
        let peak = peak_rss_mb();
        let t0 = Instant::now();
        let answers = plain_answers(&ft.snapshot(), &Self::prompts(&self.qs), batch)?;
        let secs = t0.elapsed().as_secs_f64();
        let scores = score(kind.name(), &self.qs, &answers, &mut self.preds);
        self.retention.insert(kind.name().to_string(), ret);
        let adapt_ms = 1000.0 * adapt_s / self.docs.len() as f64;
        self.methods.insert(
            kind.name().to_string(),
            MethodResult {
                // Peak memory of the fine-tuning, read before answering.
                peak_rss_mb: peak,
                // The whole updated model is the adaptation's storage.
                ..MethodResult::measured(scores, self.qs.len(), secs, adapt_ms, 0.0)
            },
        );
        Ok(sweep)
    }
}

/// `report.md` for a comparison.
pub fn compare_markdown(r: &CompareReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "# MAC against online fine-tuning and retrieval\n");
    let _ = writeln!(
        s,
        "{} documents streamed; every method answers the same questions.\n",
        r.n_documents
    );
    method_table(&mut s, &r.methods, false);
    let _ = writeln!(s, "\nStorage: MAC keeps one modulation per document (plus its text); RAG keeps the text; fine-tuning changes the whole model (not counted per document).\n");
    let _ = writeln!(s, "## Retention (F1 on the first documents' questions)\n");
    for (name, points) in &r.retention {
        let row: Vec<String> = points
            .iter()
            .map(|p| format!("{:.0}%: {:.3}", 100.0 * p.fraction, p.f1))
            .collect();
        let _ = writeln!(s, "- {name}: {}", row.join(", "));
    }
    let _ = writeln!(s, "\n## Fine-tuning learning-rate sweep (validation stream)\n\n| method | lr | F1 |\n|---|---|---|");
    for row in &r.lr_sweep {
        let _ = writeln!(
            s,
            "| {} | {:e} | {:.3} |",
            row.method, row.learning_rate, row.f1
        );
    }
    s
}
