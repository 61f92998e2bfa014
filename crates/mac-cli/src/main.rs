//! `mac` — the command line of mac-rs.
//!
//! ```text
//! mac train --preset default --out RUN_DIR          meta-train (resumable: --resume)
//! mac eval --checkpoint RUN_DIR [--data FILE] --out DIR [--beside OTHER_EVAL_DIR]
//! mac compare --checkpoint RUN_DIR [--data FILE] --out DIR   (vs fine-tuning, RAG@k, MAC+RAG@k)
//! mac dataset --stream novel|updates --documents N --out FILE.jsonl
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

mod args;
mod display;
mod eval_cmds;
mod memory_cmds;
mod plots;
mod train_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use args::{BankCmd, Cli, Cmd};
use clap::Parser;
use mac_lm::{GenerateOptions, LoadedLm};

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
    let is_checkpoint = |p: &Path| {
        p.join(mac_model::META_FILE).is_file() || mac_model::SpanCheckpoint::is_span_checkpoint(p)
    };
    if is_checkpoint(path) {
        return Ok(path.to_path_buf());
    }
    let run = mac_train::RunDir::new(path);
    let span_run = path.join("checkpoint");
    for p in [run.checkpoint("best"), run.checkpoint("last"), span_run] {
        if is_checkpoint(&p) {
            return Ok(p);
        }
    }
    Err(InputError(format!(
        "{}: not a checkpoint (no {} or {}) nor a run directory with checkpoints/best, checkpoints/last or checkpoint",
        path.display(),
        mac_model::META_FILE,
        mac_model::SPAN_META_FILE
    ))
    .into())
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
        Cmd::Train(args) => train_cmd::train(args, &device)?,
        Cmd::Report { eval, beside } => eval_cmds::rerender(&eval, &beside)?,
        Cmd::Eval(args) => eval_cmds::eval(args, &device)?,
        Cmd::Compare(args) => eval_cmds::compare(args, &device)?,
        Cmd::Dataset(args) => eval_cmds::dataset(&args)?,
        Cmd::Ingest {
            bank,
            checkpoint,
            inputs,
            store_kv,
            json,
        } => memory_cmds::ingest(&bank, &checkpoint, &inputs, store_kv, &device, json)?,
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
            store_kv,
        } => memory_cmds::serve(
            &bank,
            &checkpoint,
            addr,
            mac_serve::ServeOptions {
                read_only,
                model_name,
                ask: reading.options(),
                max_batch,
                store_kv,
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
        } => generate(&load(model, &device)?, &prompt, max_new_tokens)?,
        Cmd::Perplexity {
            model,
            file,
            window,
        } => perplexity(model, &file, window, &device)?,
    }
    Ok(())
}

/// `mac generate`: a greedy continuation of `prompt`.
fn generate(lm: &LoadedLm, prompt: &str, max_new_tokens: usize) -> Result<()> {
    let ids = lm.tokenizer.encode(prompt)?;
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
            ..Default::default()
        },
    )?;
    println!("{}", lm.tokenizer.decode(&out[0])?);
    Ok(())
}

/// `mac perplexity`: the LM's perplexity on a text file.
fn perplexity(
    model: Option<PathBuf>,
    file: &Path,
    window: usize,
    device: &mac_device::Device,
) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("{} is not valid UTF-8", file.display()))?;
    let lm = load(model, device)?;
    let ids = lm.tokenizer.encode(&text)?;
    if ids.len() < 2 {
        bail!("{} has fewer than two tokens", file.display());
    }
    let ppl = lm.model.perplexity(&ids, window)?;
    eprintln!("{} tokens", ids.len());
    println!("{ppl:.4}");
    Ok(())
}

/// Whether an error is about the user's input (exit code 3).
fn is_input_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<InputError>()
            || c.is::<mac_bank::BankError>()
            || c.is::<mac_data::DataError>()
            || matches!(
                c.downcast_ref::<mac_model::ModelError>(),
                Some(mac_model::ModelError::Checkpoint { .. })
            )
            || c.downcast_ref::<mac_runtime::RuntimeError>()
                .is_some_and(mac_runtime::RuntimeError::is_bad_file)
    })
}

fn main() -> ExitCode {
    mac_device::keep_freed_memory();
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
