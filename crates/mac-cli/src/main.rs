//! `mac` — the command line of mac-rs.
//!
//! ```text
//! mac train --preset default --out RUN_DIR          meta-train (resumable: --resume)
//! mac eval --checkpoint RUN_DIR [--data FILE] --out DIR
//! mac compare --checkpoint RUN_DIR [--data FILE] --out DIR   (vs fine-tuning, RAG@k, MAC+RAG@k)
//! mac ingest --bank DIR --checkpoint RUN_DIR FILES|DIRS|JSONL...
//! mac ask --bank DIR --checkpoint RUN_DIR "question"
//! mac serve --bank DIR --checkpoint RUN_DIR [--addr 127.0.0.1:8080] [--read-only]
//! mac bank info|verify --bank DIR
//! mac bank repair --bank DIR --out NEW
//! mac generate --model PATH --prompt TEXT [--max-new-tokens N]
//! mac perplexity --model PATH --file TEXT_FILE
//! ```
//! PATH is a GGUF file or a Hugging Face model directory; without `--model`
//! the default model fetched by `cargo xtask fetch` is used. `--device`
//! (or `MAC_DEVICE`) picks a compiled backend: flex, wgpu, cuda.
//!
//! Exit codes: 0 success; 1 failure while running; 2 bad command line;
//! 3 bad input (missing or corrupt bank, checkpoint or data file).

mod display;
mod memory_cmds;
mod plots;
mod run_cmds;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use mac_lm::{GenerateOptions, LoadedLm};

#[derive(Parser)]
#[command(
    name = "mac",
    version,
    about = "MAC: a memory of amortized contexts for a frozen LM"
)]
struct Cli {
    /// Backend to run on (flex, wgpu, cuda); default: MAC_DEVICE or the best compiled one.
    #[arg(long, global = true)]
    device: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// An error in what the user gave us (exit code 3).
#[derive(Debug)]
pub struct InputError(pub String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// A checkpoint directory, or a run directory holding `checkpoints/best` or `checkpoints/last`.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join(mac_model::META_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    let run = mac_train::RunDir::new(path);
    for name in ["best", "last"] {
        let p = run.checkpoint(name);
        if p.join(mac_model::META_FILE).is_file() {
            return Ok(p);
        }
    }
    Err(InputError(format!(
        "{}: not a checkpoint (no {}) nor a run directory with checkpoints/best or checkpoints/last",
        path.display(),
        mac_model::META_FILE
    ))
    .into())
}

/// How a question reads the bank and what comes back with the answer
/// (`ask` and `serve`).
#[derive(clap::Args)]
struct ReadingArgs {
    /// How many attended documents to show with an answer.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Documents read and attended at a time (memory grows with it;
    /// exact aggregation answers the same for any chunk size).
    #[arg(long, default_value_t = 256)]
    chunk: usize,
    /// Aggregate a bank larger than one chunk with the paper's
    /// hierarchical approximation instead of exactly.
    #[arg(long)]
    hierarchical: bool,
    /// Scale of the question–document similarity prior added to the
    /// aggregator's attention (0 = off; default: 50 when the bank holds
    /// retrieval keys, off otherwise).
    #[arg(long)]
    similarity_prior: Option<f64>,
}

impl ReadingArgs {
    fn options(&self) -> mac_model::AskOptions {
        mac_model::AskOptions {
            top: self.top,
            chunk: self.chunk,
            hierarchical: self.hierarchical,
            similarity_prior: self.similarity_prior,
        }
    }
}

#[derive(Subcommand)]
enum BankCmd {
    /// Entries, shape, size and producer of a bank.
    Info {
        /// The bank directory.
        #[arg(long)]
        bank: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Checks every record's checksum (exit code 3 on corruption, listing
    /// every damaged entry).
    Verify {
        /// The bank directory.
        #[arg(long)]
        bank: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Copies every intact committed entry of a damaged bank into a new
    /// bank and reports what it left behind (the damaged bank is only read;
    /// entries are renumbered from 0).
    Repair {
        /// The damaged bank directory.
        #[arg(long)]
        bank: PathBuf,
        /// Where the new bank is created (must not hold one).
        #[arg(long)]
        out: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Meta-trains MAC into a run directory (config, metrics, checkpoints, report).
    Train {
        /// Preset: default, open (test answers never seen in training), copy (open in copy mode; experimental) or tiny.
        #[arg(long, default_value = "default")]
        preset: String,
        /// A JSON configuration file instead of a preset.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The run directory.
        #[arg(long)]
        out: PathBuf,
        /// Continue the run in --out from its last checkpoint.
        #[arg(long)]
        resume: bool,
        /// Start a new run in --out even if it holds one (its configuration,
        /// metrics and checkpoints are replaced).
        #[arg(long, conflicts_with = "resume")]
        force: bool,
        /// Override the number of steps.
        #[arg(long)]
        steps: Option<usize>,
        /// Override the time budget in minutes.
        #[arg(long)]
        max_minutes: Option<f64>,
        /// Stop this invocation after N steps (the run can be resumed).
        #[arg(long)]
        stop_after: Option<usize>,
    },
    /// Online-adaptation evaluation: stream documents into a fresh bank, answer every question.
    Eval {
        #[command(flatten)]
        io: run_cmds::EvalIo,
        /// Evaluate only the first N documents.
        #[arg(long)]
        max_documents: Option<usize>,
        /// Documents read and attended at a time (memory grows with it;
        /// exact aggregation answers the same for any chunk size).
        #[arg(long, default_value_t = 256)]
        chunk: usize,
        /// Aggregate a bank larger than one chunk with the paper's
        /// hierarchical approximation instead of exactly.
        #[arg(long)]
        hierarchical: bool,
        /// Skip the no-adaptation and oracle-context references.
        #[arg(long)]
        no_references: bool,
        /// Also report MAC over the top-K BM25 documents only (`mac+rag@K`; 0 = off).
        #[arg(long, default_value_t = 1)]
        retrieval_k: usize,
        /// Also report MAC with the question–document similarity prior of
        /// this scale (`mac+prior`; 0 = off).
        #[arg(long, default_value_t = mac_eval::DEFAULT_PRIOR_SCALE)]
        similarity_prior: f64,
        /// Print report.json to stdout.
        #[arg(long)]
        json: bool,
    },
    /// Re-renders an evaluation's report.md and plots from its report.json
    /// (e.g. after installing the plot fonts).
    Report {
        /// The evaluation's output directory (holds report.json).
        #[arg(long)]
        eval: PathBuf,
    },
    /// The paper's comparison: MAC vs online fine-tuning, RAG@k and MAC+RAG@k.
    Compare {
        #[command(flatten)]
        io: run_cmds::EvalIo,
        /// Documents of the stream used (fine-tuning is slow on a CPU).
        #[arg(long, default_value_t = 60)]
        max_documents: usize,
        /// Retrieval depths.
        #[arg(long, value_delimiter = ',', default_value = "1,3,5")]
        k: Vec<usize>,
        /// Print report.json to stdout.
        #[arg(long)]
        json: bool,
    },
    /// Amortizes documents into a memory bank (created if needed).
    Ingest {
        /// The bank directory.
        #[arg(long)]
        bank: PathBuf,
        /// A checkpoint or run directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Text files, directories of .txt/.md/.jsonl, or JSONL files with a `document` field.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Machine-readable summary.
        #[arg(long)]
        json: bool,
    },
    /// Answers a question from the memory bank and shows the documents it drew on.
    Ask {
        /// The bank directory.
        #[arg(long)]
        bank: PathBuf,
        /// A checkpoint or run directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The question.
        question: String,
        #[command(flatten)]
        reading: ReadingArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Serves the memory over HTTP: OpenAI-compatible answers and a
    /// document-ingest endpoint (docs/serving.md). Stops on SIGINT/SIGTERM
    /// after finishing the requests in flight.
    Serve {
        /// The bank directory (created when absent, unless --read-only).
        #[arg(long)]
        bank: PathBuf,
        /// A checkpoint or run directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Address to listen on (port 0: any free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Serve the bank without ingest (no lock taken; another process may write it).
        #[arg(long)]
        read_only: bool,
        /// The model id clients name.
        #[arg(long, default_value = "mac")]
        model_name: String,
        #[command(flatten)]
        reading: ReadingArgs,
        /// Most questions answered in one LM batch.
        #[arg(long, default_value_t = 8)]
        max_batch: usize,
    },
    /// Inspects a memory bank.
    Bank {
        #[command(subcommand)]
        cmd: BankCmd,
    },
    /// Greedy continuation of a prompt.
    Generate {
        /// GGUF file or Hugging Face directory (default: the fetched SmolLM2).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Text to continue.
        #[arg(long)]
        prompt: String,
        /// Most new tokens.
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
    },
    /// Perplexity of a text file (the number is on the last line).
    Perplexity {
        /// GGUF file or Hugging Face directory (default: the fetched SmolLM2).
        #[arg(long)]
        model: Option<PathBuf>,
        /// UTF-8 text file.
        #[arg(long)]
        file: PathBuf,
        /// Tokens per evaluation window.
        #[arg(long, default_value_t = 512)]
        window: usize,
    },
}

fn load(model: Option<PathBuf>, device: &mac_device::Device) -> Result<LoadedLm> {
    let path = model.unwrap_or_else(mac_assets::default_lm_path);
    if !path.exists() {
        bail!(
            "model {} does not exist (run `cargo xtask fetch` for the default model, or pass --model)",
            path.display()
        );
    }
    Ok(LoadedLm::load(&path, device)?)
}

fn run(cli: Cli) -> Result<()> {
    let device = match &cli.device {
        Some(name) => mac_device::select(name),
        None => mac_device::default_device(),
    }
    .map_err(anyhow::Error::msg)?;
    match cli.cmd {
        Cmd::Train {
            preset,
            config,
            out,
            resume,
            force,
            steps,
            max_minutes,
            stop_after,
        } => run_cmds::train(
            run_cmds::TrainArgs {
                preset,
                config,
                out,
                resume,
                force,
                steps,
                max_minutes,
                stop_after,
            },
            &device,
        )?,
        Cmd::Report { eval } => run_cmds::rerender(&eval)?,
        Cmd::Eval {
            io,
            max_documents,
            chunk,
            hierarchical,
            no_references,
            retrieval_k,
            similarity_prior,
            json,
        } => run_cmds::eval(
            run_cmds::EvalArgs {
                io,
                max_documents,
                chunk,
                hierarchical,
                references: !no_references,
                retrieval_k,
                similarity_prior,
                json,
            },
            &device,
        )?,
        Cmd::Compare {
            io,
            max_documents,
            k,
            json,
        } => run_cmds::compare(
            run_cmds::CompareArgs {
                io,
                max_documents,
                ks: k,
                json,
            },
            &device,
        )?,
        Cmd::Ingest {
            bank,
            checkpoint,
            inputs,
            json,
        } => memory_cmds::ingest(&bank, &checkpoint, &inputs, &device, json)?,
        Cmd::Ask {
            bank,
            checkpoint,
            question,
            reading,
            json,
        } => memory_cmds::ask(
            &bank,
            &checkpoint,
            &question,
            &reading.options(),
            &device,
            json,
        )?,
        Cmd::Serve {
            bank,
            checkpoint,
            addr,
            read_only,
            model_name,
            reading,
            max_batch,
        } => memory_cmds::serve(
            &bank,
            &checkpoint,
            addr,
            mac_serve::ServeOptions {
                read_only,
                model_name,
                ask: reading.options(),
                max_batch,
            },
            &device,
        )?,
        Cmd::Bank { cmd } => match cmd {
            BankCmd::Info { bank, json } => memory_cmds::info(&bank, json)?,
            BankCmd::Verify { bank, json } => memory_cmds::verify(&bank, json)?,
            BankCmd::Repair { bank, out, json } => memory_cmds::repair(&bank, &out, json)?,
        },
        Cmd::Generate {
            model,
            prompt,
            max_new_tokens,
        } => {
            let lm = load(model, &device)?;
            let ids = lm.tokenizer.encode(&prompt)?;
            if ids.is_empty() {
                bail!("the prompt is empty");
            }
            let out = lm.model.generate(
                &[ids],
                None,
                lm.tokenizer.pad_id,
                lm.tokenizer.eos_id,
                GenerateOptions {
                    max_new_tokens,
                    stop_at_eos: true,
                },
            )?;
            println!("{}", lm.tokenizer.decode(&out[0])?);
        }
        Cmd::Perplexity {
            model,
            file,
            window,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{} is not valid UTF-8", file.display()))?;
            let lm = load(model, &device)?;
            let ids = lm.tokenizer.encode(&text)?;
            if ids.len() < 2 {
                bail!("{} has fewer than two tokens", file.display());
            }
            let ppl = lm.model.perplexity(&ids, window)?;
            eprintln!("{} tokens", ids.len());
            println!("{ppl:.4}");
        }
    }
    Ok(())
}

/// Whether an error is about the user's input (exit code 3).
fn is_input_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<InputError>()
            || c.is::<mac_memory::BankError>()
            || c.is::<mac_data::DataError>()
            || matches!(
                c.downcast_ref::<mac_model::ModelError>(),
                Some(mac_model::ModelError::Checkpoint { .. } | mac_model::ModelError::Bank(_))
            )
    })
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if is_input_error(&e) {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
