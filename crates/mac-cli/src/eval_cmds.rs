//! `mac eval`, `mac compare` and `mac report`: evaluations, their
//! reports and plots.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mac_data::{
    load, unrelated_documents, Dataset, FactStream, FactStreamConfig, Format, LoadOptions,
};
use mac_eval::{evaluate, write_markdown, EvalOptions};
use mac_model::SpanCheckpoint;
use mac_runtime::load_memory;
use mac_train::span::{SpanRunReport, SPAN_RUN_FILE};
use mac_train::{load_splits, RunDir, TrainConfig};

use crate::{resolve_checkpoint, InputError};

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
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub io: EvalIo,
    /// Evaluate only the first N documents.
    #[arg(long)]
    pub max_documents: Option<usize>,
    /// Documents read and attended at a time (memory grows with it;
    /// exact aggregation answers the same for any chunk size).
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
    /// Aggregate a bank larger than one chunk with the paper's
    /// hierarchical approximation instead of exactly.
    #[arg(long)]
    pub hierarchical: bool,
    /// Skip the no-adaptation and oracle-context references.
    #[arg(long)]
    pub no_references: bool,
    /// Also report the top-K BM25 documents in the prompt (`rag@K`, in
    /// the memory's frame) and, for the paper's path, MAC over only
    /// them (`mac+rag@K`); 0 = off.
    #[arg(long, default_value_t = 1)]
    pub retrieval_k: usize,
    /// Bank sizes at which the first documents' questions are asked
    /// again, each of a bank of that size holding its own document
    /// (e.g. 10,100,1000,5000; larger banks need the run's own stream for
    /// unrelated documents).
    #[arg(long, value_delimiter = ',')]
    pub bank_sizes: Vec<usize>,
    /// The leading documents whose questions the bank sizes ask.
    #[arg(long, default_value_t = 100)]
    pub bank_size_documents: usize,
    /// Keep the stream's key/values beside its bank (`f32` or `f16`; span
    /// memory): the answers read them instead of recomputing them.
    #[arg(long, value_name = "PRECISION")]
    pub store_kv: Option<mac_bank::Precision>,
    /// Also report MAC with the question–document similarity prior of
    /// this scale (`mac+prior`; 0 = off).
    #[arg(long, default_value_t = mac_eval::DEFAULT_PRIOR_SCALE)]
    pub similarity_prior: f64,
    /// Another memory's evaluation directory on the same documents and
    /// questions (say the paper's path's): its rows join this report.
    #[arg(long)]
    pub beside: Vec<PathBuf>,
    /// Print report.json to stdout.
    #[arg(long)]
    pub json: bool,
}

/// The evaluations in `dirs`, read (a bad one is the user's error).
fn read_reports(dirs: &[PathBuf]) -> Result<Vec<(PathBuf, mac_eval::EvalReport)>> {
    dirs.iter()
        .map(|dir| {
            let report =
                mac_eval::EvalReport::read(dir).map_err(|e| InputError(format!("{e:#}")))?;
            Ok((dir.clone(), report))
        })
        .collect()
}

/// Sets the memory rows of `others` beside `report`'s.
fn add_beside(
    report: &mut mac_eval::EvalReport,
    others: &[(PathBuf, mac_eval::EvalReport)],
) -> Result<()> {
    for (dir, other) in others {
        report
            .add_beside(other, dir)
            .map_err(|e| InputError(format!("{e:#}")))?;
    }
    Ok(())
}

/// A generated stream `mac dataset` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StreamName {
    /// Written apart from the training generator: other names, wording,
    /// values and kinds of fact.
    Novel,
    /// The novel stream's wording, where every third document changes an
    /// earlier person's fact (its replaced answer kept as `stale`).
    Updates,
    /// The test split of the training generator's `open` stream (the one
    /// `mac train --preset span` evaluates on), for runs trained on
    /// another stream.
    Open,
}

/// Arguments of `mac dataset`.
#[derive(Debug, clap::Args)]
pub struct DatasetArgs {
    /// Which stream.
    #[arg(long, value_enum)]
    pub stream: StreamName,
    /// How many documents.
    #[arg(long, default_value_t = 200)]
    pub documents: usize,
    /// The generator's seed (default: 11, or the `open` preset's own for
    /// `--stream open`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The JSONL file written.
    #[arg(long)]
    pub out: PathBuf,
}

/// `mac dataset`: writes a generated stream as JSONL.
pub fn dataset(args: &DatasetArgs) -> Result<()> {
    let seed = args.seed.unwrap_or(11);
    let mut data = match args.stream {
        StreamName::Novel => mac_data::novel_stream(seed, args.documents),
        StreamName::Updates => mac_data::update_stream(seed, args.documents),
        StreamName::Open => {
            let open = FactStreamConfig::open();
            let config = FactStreamConfig {
                seed: args.seed.unwrap_or(open.seed),
                n_test: open.n_test.max(args.documents),
                ..open
            };
            FactStream::generate(&config).test
        }
    };
    data.documents.truncate(args.documents);
    std::fs::write(&args.out, data.to_jsonl())
        .with_context(|| format!("{}: cannot write", args.out.display()))?;
    println!(
        "{}: {} documents, {} questions",
        args.out.display(),
        data.documents.len(),
        data.n_questions()
    );
    Ok(())
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
pub fn rerender(dir: &Path, beside: &[PathBuf]) -> Result<()> {
    let mut report = mac_eval::EvalReport::read(dir).map_err(|e| InputError(format!("{e:#}")))?;
    if !beside.is_empty() {
        add_beside(&mut report, &read_reports(beside)?)?;
        write_report_json(&report, dir)?;
    }
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
        &[(report.memory.as_str(), &report.retention)],
    ));
    let path = dir.join("report.md");
    std::fs::write(&path, &md).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(md)
}

/// The splits of the stream a run trained on.
struct RunStream {
    /// Evaluated on.
    test: Dataset,
    /// Other entities: the unrelated bank and the question-only baseline.
    train: Dataset,
    /// Chooses the fine-tuning baselines' learning rate.
    validation: Dataset,
    /// The generated stream's configuration, where the run names one: more
    /// unrelated documents can be made from it.
    generated: Option<FactStreamConfig>,
}

impl RunStream {
    /// The unrelated documents: the training split, and beyond it as many
    /// more of the generator's as `needed` asks (where it is known).
    fn unrelated(&self, needed: usize) -> Dataset {
        let mut control = self.train.clone();
        if let Some(config) = self.generated.as_ref() {
            let more = needed.saturating_sub(control.documents.len());
            control
                .documents
                .extend(unrelated_documents(config, more).documents);
        }
        control
    }
}

/// The stream of the run `checkpoint_arg` names (or holds `ckpt_dir`).
fn run_stream(checkpoint_arg: &Path, ckpt_dir: &Path) -> Result<RunStream> {
    let span_run = [checkpoint_arg, ckpt_dir.parent().unwrap_or(ckpt_dir)]
        .map(|dir| dir.join(SPAN_RUN_FILE))
        .into_iter()
        .find(|p| p.is_file());
    if let Some(path) = span_run {
        let report: SpanRunReport = serde_json::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("{}: cannot read", path.display()))?,
        )
        .map_err(|e| InputError(format!("{}: not a span memory run: {e}", path.display())))?;
        let stream = FactStream::generate(&report.config.stream);
        return Ok(RunStream {
            test: stream.test,
            train: stream.train,
            validation: stream.validation,
            generated: Some(report.config.stream),
        });
    }
    let cfg = run_config(checkpoint_arg, ckpt_dir).ok_or_else(|| {
        InputError(format!(
            "{}: no run configuration found to take the streams from; pass --data (compare needs the run)",
            checkpoint_arg.display()
        ))
    })?;
    let splits = load_splits(&cfg.data)?;
    Ok(RunStream {
        test: splits.test,
        train: splits.train,
        validation: splits.validation,
        generated: None,
    })
}

/// The LM a checkpoint of either memory reads.
fn checkpoint_lm(ckpt_dir: &Path) -> Result<PathBuf> {
    Ok(if SpanCheckpoint::is_span_checkpoint(ckpt_dir) {
        SpanCheckpoint::open(ckpt_dir)?.meta.lm
    } else {
        mac_model::Checkpoint::open(ckpt_dir)?.meta.lm
    })
}

/// `mac eval`.
pub fn eval(a: EvalArgs, device: &mac_device::Device) -> Result<()> {
    let ckpt_dir = resolve_checkpoint(&a.io.checkpoint)?;
    let (mut training, mut control) = (None, None);
    let dataset = match &a.io.data {
        Some(path) => load_data_file(path, a.io.format.as_deref(), a.io.skip_malformed)?,
        None => {
            let stream = run_stream(&a.io.checkpoint, &ckpt_dir)?;
            control = Some(stream.unrelated(a.bank_sizes.iter().copied().max().unwrap_or(0)));
            training = Some(stream.train);
            stream.test
        }
    };
    let memory = load_memory(&ckpt_dir, device)?;
    let opts = EvalOptions {
        chunk: a.chunk,
        hierarchical: a.hierarchical,
        max_documents: a.max_documents,
        references: !a.no_references,
        retrieval_k: (a.retrieval_k > 0).then_some(a.retrieval_k),
        similarity_prior: (a.similarity_prior > 0.0).then_some(a.similarity_prior),
        bank_sizes: a.bank_sizes.clone(),
        bank_size_documents: a.bank_size_documents,
        store_kv: a.store_kv,
        progress: !a.json,
        ..EvalOptions::default()
    };
    let beside = read_reports(&a.beside)?;
    let mut report = evaluate(
        memory.as_ref(),
        &dataset,
        control.as_ref(),
        training.as_ref(),
        &a.io.out,
        &opts,
    )?;
    add_beside(&mut report, &beside)?;
    let json = write_report_json(&report, &a.io.out)?;
    let md = eval_markdown(&report, &a.io.out, &ckpt_dir.display().to_string())?;
    if a.json {
        println!("{json}");
    } else {
        println!("{md}");
        println!("written: {}", a.io.out.display());
    }
    Ok(())
}

/// Writes `dir/report.json`; returns its text.
fn write_report_json(report: &mac_eval::EvalReport, dir: &Path) -> Result<String> {
    let json = serde_json::to_string_pretty(report)?;
    let path = dir.join("report.json");
    std::fs::write(&path, &json).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(json)
}

/// Arguments of `mac compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub io: EvalIo,
    /// Documents of the stream used (fine-tuning is slow on a CPU).
    #[arg(long, default_value_t = 60)]
    pub max_documents: usize,
    /// Retrieval depths.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5")]
    pub k: Vec<usize>,
    /// Print report.json to stdout.
    #[arg(long)]
    pub json: bool,
}

/// `mac compare`: MAC against fine-tuning and retrieval on one stream.
pub fn compare(a: CompareArgs, device: &mac_device::Device) -> Result<()> {
    let ckpt_dir = resolve_checkpoint(&a.io.checkpoint)?;
    let stream = run_stream(&a.io.checkpoint, &ckpt_dir)?;
    let test = match &a.io.data {
        Some(path) => load_data_file(path, a.io.format.as_deref(), a.io.skip_malformed)?,
        None => stream.test,
    };
    let memory = load_memory(&ckpt_dir, device)?;
    let lm_path = checkpoint_lm(&ckpt_dir)?;
    let opts = mac_eval::CompareOptions {
        eval: EvalOptions {
            max_documents: Some(a.max_documents),
            progress: !a.json,
            ..EvalOptions::default()
        },
        ks: a.k.clone(),
        ..mac_eval::CompareOptions::default()
    };
    let report = mac_eval::compare(
        memory.as_ref(),
        &lm_path,
        device,
        &test,
        &stream.validation,
        &a.io.out,
        &opts,
    )?;
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
