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
    pub(crate) fn options(&self) -> mac_model::AskOptions {
        mac_model::AskOptions {
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
    Train {
        /// Preset: span (span memory: the LM's own key/values of a span a learnt selector chooses), span-tiny, or the paper's path: default, open (test answers never seen in training), copy (open in copy mode; experimental) or tiny.
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
        io: eval_cmds::EvalIo,
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
        /// Also report the top-K BM25 documents in the prompt (`rag@K`, in
        /// the memory's frame) and, for the paper's path, MAC over only
        /// them (`mac+rag@K`); 0 = off.
        #[arg(long, default_value_t = 1)]
        retrieval_k: usize,
        /// Bank sizes at which the first documents' questions are asked
        /// again among unrelated documents (e.g. 10,100,1000; needs the
        /// run's own stream for the unrelated documents).
        #[arg(long, value_delimiter = ',')]
        bank_sizes: Vec<usize>,
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
        io: eval_cmds::EvalIo,
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
