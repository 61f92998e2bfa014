//! Ingest documents into a memory bank with a trained checkpoint and ask a
//! question: the answer and the documents it drew on.
//!
//! `cargo run --example ingest_and_ask -p mac-model -- CHECKPOINT BANK_DIR
//! "QUESTION" [DOCUMENT...]` — `CHECKPOINT` is a checkpoint directory of
//! either memory (span memory's `runs/demo/checkpoint`, the paper's path's
//! `runs/default/checkpoints/best`); the bank is created if needed. This is
//! what `mac ingest` and `mac ask` do, in a few lines of the library.

use std::error::Error;
use std::path::PathBuf;

use mac_runtime::{load_memory, AskOptions, NewDocument};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: ingest_and_ask CHECKPOINT BANK_DIR QUESTION [DOCUMENT...]";
    let checkpoint = PathBuf::from(args.next().ok_or(usage)?);
    let bank_dir = PathBuf::from(args.next().ok_or(usage)?);
    let question = args.next().ok_or(usage)?;
    let documents: Vec<NewDocument> = args
        .enumerate()
        .map(|(i, text)| NewDocument {
            source: format!("argument {i}"),
            text,
        })
        .collect();

    let device = mac_device::select("flex")?;
    // The LM and the trained parameters, read once.
    let memory = load_memory(&checkpoint, &device)?;
    let mut bank = memory.open_bank_writer(&bank_dir)?;
    // Each document read once into its bank entry and appended durably.
    for done in memory.ingest(&mut bank, &documents, &mut |_| {})? {
        println!("{:?} ({} tokens cut)", done.outcome, done.truncated_tokens);
    }
    // The whole bank is read; the answer comes with its sources.
    let answer = memory
        .ask(&bank, &[question.as_str()], &AskOptions::default())?
        .remove(0);
    println!("{}", answer.text);
    for d in &answer.documents {
        println!("  {:5.1}%  #{} {}", 100.0 * d.weight, d.id, d.snippet);
    }
    if let Some(span) = &answer.span {
        println!("  read from #{}: {:?}", span.id, span.text);
    }
    Ok(())
}
