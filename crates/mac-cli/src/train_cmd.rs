//! `mac train`: the run, its report and plots.

use std::path::PathBuf;

use anyhow::{Context, Result};
use mac_train::span::{train_span_memory, SpanRunConfig, SPAN_RUN_FILE};
use mac_train::{MetricsLine, RunDir, TrainConfig, Trainer};

use crate::InputError;

/// Arguments of `mac train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Preset: span (span memory: the LM's own key/values of a span a learnt selector chooses), span-hard (the same with two hard negatives, BM25's top other documents, per question in each training bank), span-hard-updates (span-hard with training-worded knowledge that changes joined), span-unseen (the same as span, its answering also chosen on kinds training never states), span-broad (the same trained on fourteen kinds of facts), span-tiny, or the paper's path: default, open (test answers never seen in training), copy (open in copy mode; experimental) or tiny.
    #[arg(long, default_value = "default")]
    pub preset: String,
    /// A JSON configuration file instead of a preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The run directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Start a new run in --out even if it holds one (its configuration,
    /// metrics and checkpoints are replaced).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Override the number of steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Override the time budget in minutes.
    #[arg(long)]
    pub max_minutes: Option<f64>,
    /// Stop this invocation after N steps (the run can be resumed).
    #[arg(long)]
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

/// `mac train --preset span…`: span memory's selector, chosen on
/// validation and saved as `RUN/checkpoint`.
fn train_span(a: &TrainArgs, device: &mac_device::Device) -> Result<()> {
    if a.resume || a.config.is_some() || a.max_minutes.is_some() || a.stop_after.is_some() {
        return Err(
            InputError("a span memory run takes --out, --steps and --force only".into()).into(),
        );
    }
    let mut config = SpanRunConfig::preset(&a.preset).map_err(InputError)?;
    if let Some(steps) = a.steps {
        config.selector.steps = steps;
    }
    if !a.force && a.out.join(SPAN_RUN_FILE).exists() {
        return Err(InputError(format!(
            "{} already holds a span memory run: pass --force to start over in it",
            a.out.display()
        ))
        .into());
    }
    let lm = config.lm_path();
    if !lm.exists() {
        return Err(InputError(format!(
            "{} does not exist: run `cargo xtask fetch`",
            lm.display()
        ))
        .into());
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("{}: cannot create", a.out.display()))?;
    let report = train_span_memory(&config, &a.out, device, &mut |line| eprintln!("{line}"))?;
    println!(
        "span memory: step {} and the {:?} rule chosen on validation, the {} frame, handing the {}, recency margin {} (agreement {:?}, same names {}, answers {:?}), whole document below span probability {:?}, sentence check slack {:?} (recency {:?}, either test {}); checkpoint {}",
        report.chosen_step,
        report.rule,
        report.frame,
        report.extent.name(),
        report.recency,
        report.agreement,
        report.recency_same_names,
        report.recency_answers,
        report.whole_below,
        report.sentence_check.as_ref().and_then(|c| c.slack),
        report.recency_sentences,
        report.recency_either,
        report.checkpoint.display()
    );
    Ok(())
}

/// `mac train`.
pub fn train(a: TrainArgs, device: &mac_device::Device) -> Result<()> {
    if a.preset.starts_with("span") && a.config.is_none() {
        return train_span(&a, device);
    }
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
