//! `mac` — the command line of mac-rs.
//!
//! ```text
//! mac generate --model PATH --prompt TEXT [--max-new-tokens N]
//! mac perplexity --model PATH --file TEXT_FILE
//! ```
//! PATH is a GGUF file or a Hugging Face model directory; without `--model`
//! the default model fetched by `cargo xtask fetch` is used. `--device`
//! (or `MAC_DEVICE`) picks a compiled backend: flex, wgpu, cuda.

use std::path::PathBuf;
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

#[derive(Subcommand)]
enum Cmd {
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

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
