//! The command line: `mac`'s subcommands and their arguments (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::eval_cmds;

#[derive(Parser)]
#[command(
    name = "mac",
    version,
    about = "MAC: a memory of amortized contexts for a frozen LM"
)]
pub(crate) struct Cli {
    /// Backend to run on (flex, wgpu, cuda); default: MAC_DEVICE or the best compiled one.
    #[arg(long, global = true)]
    pub(crate) device: Option<String>,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

/// An error in what the user gave us (exit code 3).
/// How a question reads the bank and what comes back with the answer
/// (`ask` and `serve`).
#[derive(clap::Args)]
pub(crate) struct ReadingArgs {
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
    pub(crate) fn options(&self) -> mac_runtime::AskOptions {
        mac_runtime::AskOptions {
            top: self.top,
            chunk: self.chunk,
            hierarchical: self.hierarchical,
            similarity_prior: self.similarity_prior,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum BankCmd {
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
pub(crate) enum Cmd {
    /// Meta-trains MAC into a run directory (config, metrics, checkpoints, report).
    Train(crate::train_cmd::TrainArgs),
    /// Online-adaptation evaluation: stream documents into a fresh bank, answer every question.
    Eval(eval_cmds::EvalArgs),
    /// Re-renders an evaluation's report.md and plots from its report.json
    /// (e.g. after installing the plot fonts).
    Report {
        /// The evaluation's output directory (holds report.json).
        #[arg(long)]
        eval: PathBuf,
        /// Another memory's evaluation of the same documents and questions:
        /// its rows join the report (report.json is rewritten with them).
        #[arg(long)]
        beside: Vec<PathBuf>,
    },
    /// Writes a generated stream as JSONL (document, question, answers, and
    /// stale answers where a fact changed), for `mac eval --data`.
    Dataset(eval_cmds::DatasetArgs),
    /// The paper's comparison: MAC vs online fine-tuning, RAG@k and MAC+RAG@k.
    Compare(eval_cmds::CompareArgs),
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
        /// Keep each document's key/values beside the bank (`f32` or `f16`;
        /// span memory), read by answers instead of recomputed; a bank's
        /// documents already there are read into the store first, and
        /// every later ingest fills it.
        #[arg(long, value_name = "PRECISION")]
        store_kv: Option<mac_bank::Precision>,
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
        /// Keep the documents' key/values beside the bank (`f32` or `f16`;
        /// span memory; as `mac ingest --store-kv`).
        #[arg(long, value_name = "PRECISION")]
        store_kv: Option<mac_bank::Precision>,
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
