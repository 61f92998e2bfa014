//! The paper's comparison (§4.2–4.4) on one test stream: MAC against online
//! fine-tuning (uniform, salient spans), retrieval (BM25 RAG@k) and MAC +
//! retrieval (aggregate only the top-k documents' modulations), with the
//! no-adaptation and oracle-context references.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use mac_data::Dataset;
use mac_finetune::{FinetuneConfig, FinetuneKind, OnlineFinetuner};
use mac_memory::MemoryBank;
use mac_model::prompt::question_prompt;
use mac_model::{generate_answers, MacRuntime, MAX_ANSWER_TOKENS};
use mac_retrieval::Bm25Index;
use serde::{Deserialize, Serialize};

use crate::memory::{peak_rss_mb, reset_peak_rss};
use crate::methods::{
    bar, mac_rag_answers, rag_prompt, retrieve, score, write_predictions, Question,
};
use crate::online::retention_points;
use crate::report::method_table;
use crate::{evaluate, EvalOptions, MethodResult, Prediction, RetentionPoint};

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
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(batch.max(1)) {
        out.extend(generate_answers(lm, chunk, None, MAX_ANSWER_TOKENS)?);
    }
    Ok(out)
}

/// RAG@k answers: the top-k documents of `index` in the prompt.
fn rag_answers(
    rt: &MacRuntime,
    index: &Bm25Index,
    docs: &[mac_data::Document],
    qs: &[Question<'_>],
    k: usize,
    batch: usize,
) -> Result<Vec<String>> {
    let mut prompts = Vec::with_capacity(qs.len());
    for (_, q) in qs {
        let hits = retrieve(index, &q.question, k, index.len())?;
        prompts.push(rag_prompt(None, docs, &hits, &q.question));
    }
    plain_answers(&rt.lm, &prompts, batch)
}

fn finetune_stream(
    lm_path: &Path,
    rt: &MacRuntime,
    cfg: FinetuneConfig,
    docs: &[mac_data::Document],
    checkpoints: &[(f64, usize)],
    retention_qs: &[Question<'_>],
    eval: &EvalOptions,
) -> Result<(OnlineFinetuner, f64, Vec<RetentionPoint>)> {
    let (batch, show) = (eval.question_batch, eval.progress);
    let mut ft = OnlineFinetuner::load(lm_path, &rt.device, cfg)?;
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

/// Runs every method on the first `opts.eval.max_documents` documents of
/// `test`; `validation` chooses the fine-tuning learning rate. Writes
/// `predictions.jsonl` (all methods) under `out_dir`.
pub fn compare(
    rt: &MacRuntime,
    lm_path: &Path,
    test: &Dataset,
    validation: &Dataset,
    out_dir: &Path,
    opts: &CompareOptions,
) -> Result<CompareReport> {
    // MAC+RAG@k is measured below for every k, retention included.
    let base_opts = EvalOptions {
        retrieval_k: None,
        ..opts.eval.clone()
    };
    let base = evaluate(rt, test, None, None, out_dir, &base_opts)?;
    let mut methods = base.methods.clone();
    let mut retention = BTreeMap::new();
    retention.insert("mac".to_string(), base.retention.clone());
    let n_docs = base.n_documents;
    let docs = &test.documents[..n_docs];
    let qs = questions_of(docs);
    let (first, mut checkpoints) = retention_points(n_docs, &opts.eval);
    let retention_qs: Vec<Question<'_>> = qs.iter().copied().filter(|(d, _)| *d < first).collect();
    if checkpoints.last().is_none_or(|c| c.1 != n_docs) {
        checkpoints.push((1.0, n_docs));
    }
    let batch = opts.eval.question_batch;
    let mut preds: Vec<Prediction> = Vec::new();
    let bank = MemoryBank::open_read_only(&base.bank)?;

    // --- Retrieval: the index grows with the stream; retention at each point.
    let mut index = Bm25Index::new()?;
    let mut index_seconds = 0.0;
    let mut indexed = 0;
    for &(fraction, upto) in &checkpoints {
        let t0 = Instant::now();
        let texts: Vec<&str> = docs[indexed..upto]
            .iter()
            .map(|d| d.text.as_str())
            .collect();
        index.add(&texts)?;
        index_seconds += t0.elapsed().as_secs_f64();
        indexed = upto;
        for &k in &opts.ks {
            for (name, answers) in [
                (
                    format!("rag@{k}"),
                    rag_answers(rt, &index, docs, &retention_qs, k, batch)?,
                ),
                (
                    format!("mac+rag@{k}"),
                    mac_rag_answers(rt, &index, &bank, &retention_qs, k, batch, 0)?,
                ),
            ] {
                let (em, f1, _) = score("retention", &retention_qs, &answers, &mut Vec::new());
                retention
                    .entry(name)
                    .or_insert_with(Vec::new)
                    .push(RetentionPoint {
                        fraction,
                        documents: upto,
                        em,
                        f1,
                    });
            }
        }
    }
    let mac_adapt = methods
        .get("mac")
        .map(|m| m.adapt_ms_per_doc)
        .unwrap_or(0.0);
    let mac_storage = methods
        .get("mac")
        .map(|m| m.storage_bytes_per_doc)
        .unwrap_or(0.0);
    let text_bytes = docs.iter().map(|d| d.text.len()).sum::<usize>() as f64 / n_docs as f64;
    for &k in &opts.ks {
        for kind in ["rag", "mac+rag"] {
            reset_peak_rss();
            let t0 = Instant::now();
            let answers = if kind == "rag" {
                rag_answers(rt, &index, docs, &qs, k, batch)?
            } else {
                mac_rag_answers(rt, &index, &bank, &qs, k, batch, 0)?
            };
            let secs = t0.elapsed().as_secs_f64();
            let name = format!("{kind}@{k}");
            let scores = score(&name, &qs, &answers, &mut preds);
            let index_ms = 1000.0 * index_seconds / n_docs as f64;
            let (adapt_ms, storage) = if kind == "rag" {
                (index_ms, text_bytes)
            } else {
                (index_ms + mac_adapt, text_bytes + mac_storage)
            };
            methods.insert(
                name,
                MethodResult::measured(scores, qs.len(), secs, adapt_ms, storage),
            );
        }
    }

    // --- Online fine-tuning: learning rate chosen on the validation stream.
    let mut sweep = Vec::new();
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
    for kind in [FinetuneKind::Uniform, FinetuneKind::SalientSpans] {
        let mut best: Option<(f64, f64)> = None;
        for &lr in &opts.finetune_lrs {
            let cfg = FinetuneConfig {
                kind,
                learning_rate: lr,
                steps_per_document: opts.finetune_steps,
                max_tokens: 256,
            };
            let (ft, _, _) = finetune_stream(
                lm_path,
                rt,
                cfg,
                &val_docs,
                &[(1.0, val_docs.len())],
                &[],
                &quiet,
            )?;
            let prompts: Vec<String> = val_qs
                .iter()
                .map(|(_, q)| question_prompt(&q.question))
                .collect();
            let answers = plain_answers(&ft.snapshot(), &prompts, batch)?;
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
        let cfg = FinetuneConfig {
            kind,
            learning_rate: lr,
            steps_per_document: opts.finetune_steps,
            max_tokens: 256,
        };
        reset_peak_rss();
        let (ft, adapt_s, ret) = finetune_stream(
            lm_path,
            rt,
            cfg,
            docs,
            &checkpoints,
            &retention_qs,
            &opts.eval,
        )?;
        let peak = peak_rss_mb();
        let t0 = Instant::now();
        let prompts: Vec<String> = qs
            .iter()
            .map(|(_, q)| question_prompt(&q.question))
            .collect();
        let answers = plain_answers(&ft.snapshot(), &prompts, batch)?;
        let secs = t0.elapsed().as_secs_f64();
        let scores = score(kind.name(), &qs, &answers, &mut preds);
        retention.insert(kind.name().to_string(), ret);
        methods.insert(
            kind.name().to_string(),
            MethodResult {
                // Peak memory of the fine-tuning, read before answering.
                peak_rss_mb: peak,
                // The whole updated model is the adaptation's storage.
                ..MethodResult::measured(
                    scores,
                    qs.len(),
                    secs,
                    1000.0 * adapt_s / n_docs as f64,
                    0.0,
                )
            },
        );
    }

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
