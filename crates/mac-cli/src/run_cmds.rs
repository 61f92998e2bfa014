//! `mac train` and `mac eval`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mac_data::{load, Format, LoadOptions};
use mac_eval::{evaluate, write_markdown, EvalOptions};
use mac_model::MacRuntime;
use mac_train::{load_splits, MetricsLine, RunDir, TrainConfig, Trainer};

use crate::{resolve_checkpoint, InputError};

/// Arguments of `mac train`.
pub struct TrainArgs {
    pub preset: String,
    pub config: Option<PathBuf>,
    pub out: PathBuf,
    pub resume: bool,
    pub force: bool,
    pub steps: Option<usize>,
    pub max_minutes: Option<f64>,
    pub stop_after: Option<usize>,
}

impl TrainArgs {
    /// Applies `--steps` and `--max-minutes` to `cfg`; whether any was given.
    fn apply_overrides(&self, cfg: &mut TrainConfig) -> bool {
        if let Some(s) = self.steps {
            cfg.steps = s;
        }
        if let Some(m) = self.max_minutes {
            cfg.max_minutes = Some(m);
        }
        self.steps.is_some() || self.max_minutes.is_some()
    }
}

fn require_models(cfg: &TrainConfig) -> Result<()> {
    let lm = cfg.lm.clone().unwrap_or_else(mac_assets::default_lm_path);
    let enc = cfg
        .encoder
        .clone()
        .unwrap_or_else(mac_assets::default_encoder_dir);
    for p in [&lm, &enc] {
        if !p.exists() {
            return Err(InputError(format!(
                "{} does not exist: run `cargo xtask fetch` (or set `lm`/`encoder` in the config)",
                p.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// `mac train`.
pub fn train(a: TrainArgs, device: &mac_device::Device) -> Result<()> {
    let mut trainer = if a.resume {
        Trainer::resume(&a.out, device)
            .with_context(|| format!("resuming the run in {}", a.out.display()))?
    } else {
        if !a.force {
            if let Some(found) = RunDir::new(&a.out).existing_run_file() {
                return Err(InputError(format!(
                    "{} already holds a training run ({} exists): pass --resume to continue it \
                     or --force to start over in it",
                    a.out.display(),
                    found.display()
                ))
                .into());
            }
        }
        let mut cfg = match &a.config {
            Some(p) => TrainConfig::from_file(p).map_err(|e| InputError(e.to_string()))?,
            None => TrainConfig::preset(&a.preset).map_err(InputError)?,
        };
        a.apply_overrides(&mut cfg);
        require_models(&cfg)?;
        Trainer::new(cfg, &a.out, device)?
    };
    if a.resume && a.apply_overrides(&mut trainer.config) {
        // The run's config.json says what it was trained with.
        trainer.config.validate()?;
        trainer.run_dir.write_config(&trainer.config)?;
    }
    let params = trainer.model.param_summary();
    eprintln!("{:<48} {:>12} {:>12}", "module", "parameters", "trainable");
    for p in &params {
        eprintln!("{:<48} {:>12} {:>12}", p.name, p.total, p.trainable);
    }
    eprintln!(
        "training {} steps of {} documents from step {} ({} train / {} validation / {} test documents)",
        trainer.config.steps,
        trainer.config.batch_documents,
        trainer.step(),
        trainer.splits.train.documents.len(),
        trainer.splits.validation.documents.len(),
        trainer.splits.test.documents.len()
    );
    let summary = trainer.run(true, a.stop_after)?;
    let report = serde_json::json!({
        "preset": trainer.config.preset,
        "summary": summary,
        "parameters": params,
        "config": trainer.config,
    });
    let run = &trainer.run_dir;
    let path = run.report_file("train-report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    let mut md = train_markdown(run, &summary, &params)?;
    match train_plots(run) {
        Ok(()) => {
            md.push_str("\n![loss](learning_curve.png)\n\n![validation F1](validation_f1.png)\n")
        }
        Err(e) => eprintln!("warning: {e:#}"),
    }
    let path = run.report_file("train-report.md");
    std::fs::write(&path, md).with_context(|| format!("{}: cannot write", path.display()))?;
    println!(
        "{}, {:.2} s/step; last validation: {}",
        summary.completion(),
        summary.seconds_per_step,
        summary
            .last_validation
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "none".into())
    );
    if let Some(line) = selection_line(&summary) {
        println!("{line}");
    }
    Ok(())
}

/// One line on the run's selection phase, if it has one.
fn selection_line(summary: &mac_train::TrainSummary) -> Option<String> {
    let sel = summary.selection.as_ref()?;
    let before = sel
        .top1_before
        .map(|b| format!("{b:.3} -> "))
        .unwrap_or_default();
    Some(format!(
        "selection: {} steps in {:.1} min; top-1 on the validation bank (at most {} documents, no prior) {before}{:.3}",
        sel.steps,
        sel.seconds / 60.0,
        mac_train::SELECTION_VALIDATION_DOCUMENTS,
        sel.top1_after
    ))
}

fn train_markdown(
    run: &RunDir,
    summary: &mac_train::TrainSummary,
    params: &[mac_model::ParamSummary],
) -> Result<String> {
    use std::fmt::Write;
    let mut s = String::new();
    writeln!(
        s,
        "# Training run {}: {}\n",
        run.root().display(),
        summary.completion()
    )?;
    writeln!(
        s,
        "{:.2} s/step, {:.1} min in this invocation.\n",
        summary.seconds_per_step,
        summary.seconds / 60.0
    )?;
    if let Some(line) = selection_line(summary) {
        writeln!(s, "{line}\n")?;
    }
    writeln!(s, "| module | parameters | trainable |\n|---|---|---|")?;
    for p in params {
        writeln!(s, "| {} | {} | {} |", p.name, p.total, p.trainable)?;
    }
    writeln!(s, "\n## Learning curve\n\n| step | train loss (mean of the last 25) | validation loss | … with an unrelated bank | own document alone | another document alone | answer probe: own document (another) | gold-document attention (uniform) | EM | F1 |\n|---|---|---|---|---|---|---|---|---|---|")?;
    let mut window = LossWindow::default();
    for line in run.read_metrics()? {
        match line {
            MetricsLine::Train(st) => window.push(st.loss),
            MetricsLine::Validation { stats: v, .. } => {
                let num = |x: Option<f64>| x.map_or_else(|| "–".to_string(), |x| format!("{x:.3}"));
                let probe = match (v.probe_loss_own_document, v.probe_loss_other_document) {
                    (Some(o), Some(x)) => format!("{o:.3} ({x:.3})"),
                    _ => "–".into(),
                };
                writeln!(
                    s,
                    "| {} | {} | {:.3} | {} | {} | {} | {probe} | {:.3} ({:.3}) | {:.3} | {:.3} |",
                    v.step,
                    num(window.mean()),
                    v.loss,
                    num(v.loss_unrelated_bank),
                    num(v.loss_own_document),
                    num(v.loss_other_document),
                    v.gold_weight,
                    v.uniform_weight,
                    v.em,
                    v.f1
                )?;
            }
            MetricsLine::Reading(_) | MetricsLine::Selection(_) => {}
        }
    }
    Ok(s)
}

/// The mean of the last 25 training losses.
#[derive(Default)]
struct LossWindow(std::collections::VecDeque<f64>);

impl LossWindow {
    fn push(&mut self, loss: f64) {
        self.0.push_back(loss);
        if self.0.len() > 25 {
            self.0.pop_front();
        }
    }

    fn mean(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.iter().sum::<f64>() / self.0.len() as f64)
    }
}

/// `learning_curve.png` and `validation_f1.png` from `metrics.jsonl`.
fn train_plots(run: &RunDir) -> Result<()> {
    let (mut train, mut reading, mut val_loss, mut val_f1) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut val_own, mut val_other) = (Vec::new(), Vec::new());
    let (mut window, mut reading_window) = (LossWindow::default(), LossWindow::default());
    for line in run.read_metrics()? {
        match line {
            MetricsLine::Train(st) => {
                window.push(st.loss);
                train.extend(window.mean().map(|m| (st.step as f64, m)));
            }
            MetricsLine::Reading(st) => {
                reading_window.push(st.loss);
                reading.extend(reading_window.mean().map(|m| (st.step as f64, m)));
            }
            MetricsLine::Validation { stats: v, .. } => {
                let step = v.step as f64;
                val_loss.push((step, v.loss));
                val_f1.push((step, v.f1));
                if let (Some(o), Some(x)) = (v.loss_own_document, v.loss_other_document) {
                    val_own.push((step, o));
                    val_other.push((step, x));
                }
            }
            MetricsLine::Selection(_) => {}
        }
    }
    let mut curves = vec![
        ("train (mean of last 25 steps)", train),
        ("validation", val_loss),
        ("validation, own document alone", val_own),
        ("validation, another document alone", val_other),
    ];
    if !reading.is_empty() {
        curves.push((
            "reading steps: answer-token loss (mean of last 25)",
            reading,
        ));
    }
    crate::plots::lines(
        &run.report_file("learning_curve.png"),
        "Answer NLL",
        "step",
        "loss",
        &curves,
    )?;
    crate::plots::lines(
        &run.report_file("validation_f1.png"),
        "Validation F1",
        "step",
        "F1",
        &[("F1", val_f1)],
    )
}

/// The checkpoint, dataset and output directory of `mac eval` and `mac compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalIo {
    /// A checkpoint or run directory (`compare` needs the run directory).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// A dataset file (default: the run's own test split).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Its format: jsonl, squad, streamingqa, archivalqa (default: from the extension).
    #[arg(long)]
    pub format: Option<String>,
    /// Skip malformed records (counted) instead of failing.
    #[arg(long)]
    pub skip_malformed: bool,
    /// Output directory (report.json, report.md, plots, predictions).
    #[arg(long)]
    pub out: PathBuf,
}

/// Arguments of `mac eval`.
pub struct EvalArgs {
    /// Checkpoint, data and output directory.
    pub io: EvalIo,
    pub max_documents: Option<usize>,
    pub chunk: usize,
    pub hierarchical: bool,
    pub references: bool,
    pub retrieval_k: usize,
    pub similarity_prior: f64,
    pub json: bool,
}

/// The run configuration next to a checkpoint (`RUN/checkpoints/NAME`) or in a run directory.
fn run_config(checkpoint_arg: &Path, ckpt_dir: &Path) -> Option<TrainConfig> {
    [
        Some(RunDir::new(checkpoint_arg)),
        RunDir::of_checkpoint(ckpt_dir),
    ]
    .into_iter()
    .flatten()
    .find(|run| run.config().is_file())
    .and_then(|run| run.read_config().ok())
}

/// Loads a dataset file; the format comes from `--format` or the extension.
/// Skipped records (with `skip_malformed`) are listed on stderr.
fn load_data_file(
    path: &Path,
    format: Option<&str>,
    skip_malformed: bool,
) -> Result<mac_data::Dataset> {
    let format = match format {
        Some(f) => f.parse::<Format>().map_err(InputError)?,
        None => Format::from_path(path).ok_or_else(|| {
            InputError(format!(
                "{}: cannot tell the format from the extension; pass --format",
                path.display()
            ))
        })?,
    };
    let loaded = load(path, format, LoadOptions { skip_malformed })?;
    for (line, reason) in &loaded.skipped {
        eprintln!("skipped {}:{line}: {reason}", path.display());
    }
    Ok(loaded.dataset)
}

/// `methods.png` (EM and F1 per method) and `retention.png` (F1 as the
/// stream grows, one line per method); returns the markdown that embeds
/// them, or nothing (with a warning) when they could not be drawn.
fn method_plots(
    out: &Path,
    methods: &std::collections::BTreeMap<String, mac_eval::MethodResult>,
    retention: &[(&str, &[mac_eval::RetentionPoint])],
) -> String {
    let bars: Vec<(String, Vec<f64>)> = methods
        .iter()
        .map(|(k, m)| (k.clone(), vec![m.em, m.f1]))
        .collect();
    let series: Vec<(&str, Vec<(f64, f64)>)> = retention
        .iter()
        .map(|(k, pts)| (*k, pts.iter().map(|p| (100.0 * p.fraction, p.f1)).collect()))
        .collect();
    let plotted = crate::plots::bars(
        &out.join("methods.png"),
        "EM and F1 per method",
        &bars,
        &["EM", "F1"],
    )
    .and_then(|()| {
        crate::plots::lines(
            &out.join("retention.png"),
            "Retention: F1 on the first documents' questions",
            "% of the stream ingested",
            "F1",
            &series,
        )
    });
    match plotted {
        Ok(()) => "\n![methods](methods.png)\n\n![retention](retention.png)\n".to_string(),
        Err(e) => {
            eprintln!("warning: {e:#}");
            String::new()
        }
    }
}

/// `mac report`: report.md and the plots again, from `dir/report.json`.
pub fn rerender(dir: &Path) -> Result<()> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| InputError(format!("{}: cannot read: {e}", path.display())))?;
    let report: mac_eval::EvalReport = serde_json::from_str(&text)
        .map_err(|e| InputError(format!("{}: not an evaluation report: {e}", path.display())))?;
    eval_markdown(&report, dir, &dir.display().to_string())?;
    println!("written: {}", dir.join("report.md").display());
    Ok(())
}

/// Writes `dir/report.md` (with `methods.png` and `retention.png`) for an
/// evaluation of `what`, and returns the markdown.
fn eval_markdown(report: &mac_eval::EvalReport, dir: &Path, what: &str) -> Result<String> {
    let mut md = write_markdown(report, &format!("Online adaptation: {what}"));
    md.push_str(&method_plots(
        dir,
        &report.methods,
        &[("MAC", &report.retention)],
    ));
    let path = dir.join("report.md");
    std::fs::write(&path, &md).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(md)
}

/// `mac eval`.
pub fn eval(a: EvalArgs, device: &mac_device::Device) -> Result<()> {
    let ckpt_dir = resolve_checkpoint(&a.io.checkpoint)?;
    let mut training = None;
    let dataset = match &a.io.data {
        Some(path) => load_data_file(path, a.io.format.as_deref(), a.io.skip_malformed)?,
        None => {
            let cfg = run_config(&a.io.checkpoint, &ckpt_dir).ok_or_else(|| {
                InputError(format!(
                    "{}: no run configuration found to take the test split from; pass --data",
                    a.io.checkpoint.display()
                ))
            })?;
            let splits = load_splits(&cfg.data)?;
            // Training documents (other entities; as many as the test stream)
            // make the unrelated-bank control, and fit the question-only baseline.
            training = Some(splits.train);
            splits.test
        }
    };
    let rt = MacRuntime::from_checkpoint(&ckpt_dir, None, None, device)?;
    let opts = EvalOptions {
        chunk: a.chunk,
        hierarchical: a.hierarchical,
        max_documents: a.max_documents,
        references: a.references,
        retrieval_k: (a.retrieval_k > 0).then_some(a.retrieval_k),
        similarity_prior: (a.similarity_prior > 0.0).then_some(a.similarity_prior),
        progress: !a.json,
        ..EvalOptions::default()
    };
    let report = evaluate(
        &rt,
        &dataset,
        training.as_ref(),
        training.as_ref(),
        &a.io.out,
        &opts,
    )?;
    let json = serde_json::to_string_pretty(&report)?;
    let path = a.io.out.join("report.json");
    std::fs::write(&path, &json).with_context(|| format!("{}: cannot write", path.display()))?;
    let md = eval_markdown(&report, &a.io.out, &ckpt_dir.display().to_string())?;
    if a.json {
        println!("{json}");
    } else {
        println!("{md}");
        println!("written: {}", a.io.out.display());
    }
    Ok(())
}

/// Arguments of `mac compare`.
pub struct CompareArgs {
    /// Checkpoint, data and output directory.
    pub io: EvalIo,
    pub max_documents: usize,
    pub ks: Vec<usize>,
    pub json: bool,
}

/// `mac compare`: MAC against fine-tuning and retrieval on one stream.
pub fn compare(a: CompareArgs, device: &mac_device::Device) -> Result<()> {
    let ckpt_dir = resolve_checkpoint(&a.io.checkpoint)?;
    let cfg = run_config(&a.io.checkpoint, &ckpt_dir).ok_or_else(|| {
        InputError(format!(
            "{}: compare needs the run directory (its config gives the validation stream for the learning-rate sweep)",
            a.io.checkpoint.display()
        ))
    })?;
    let splits = load_splits(&cfg.data)?;
    let test = match &a.io.data {
        Some(path) => load_data_file(path, a.io.format.as_deref(), a.io.skip_malformed)?,
        None => splits.test,
    };
    let rt = MacRuntime::from_checkpoint(&ckpt_dir, None, None, device)?;
    let lm_path = mac_model::Checkpoint::open(&ckpt_dir)?.meta.lm;
    let opts = mac_eval::CompareOptions {
        eval: EvalOptions {
            max_documents: Some(a.max_documents),
            progress: !a.json,
            ..EvalOptions::default()
        },
        ks: a.ks.clone(),
        ..mac_eval::CompareOptions::default()
    };
    let report = mac_eval::compare(&rt, &lm_path, &test, &splits.validation, &a.io.out, &opts)?;
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(a.io.out.join("report.json"), &json)?;
    let mut md = mac_eval::compare_markdown(&report);
    let retention: Vec<(&str, &[mac_eval::RetentionPoint])> = report
        .retention
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    md.push_str(&method_plots(&a.io.out, &report.methods, &retention));
    std::fs::write(a.io.out.join("report.md"), &md)?;
    if a.json {
        println!("{json}");
    } else {
        println!("{md}");
    }
    Ok(())
}
