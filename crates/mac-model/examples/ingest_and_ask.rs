//! Ingest documents into a memory bank with a trained checkpoint and ask a
//! question: the answer and the documents it drew on.
//!
//! `cargo run --example ingest_and_ask -p mac-model -- CHECKPOINT BANK_DIR
//! "QUESTION" [DOCUMENT...]` — `CHECKPOINT` is a checkpoint directory (e.g.
//! `runs/default/checkpoints/best`); the bank is created if needed. This is
//! what `mac ingest` and `mac ask` do, in a few lines of the library.

use std::error::Error;
use std::path::PathBuf;

use mac_model::{AskOptions, MacRuntime, NewDocument};

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
    // The LM, both encoders and the trained parameters, read once.
    let runtime = MacRuntime::from_checkpoint(&checkpoint, None, None, &device)?;
    let mut bank = runtime.open_bank_writer(&bank_dir)?;
    // Each document amortized in one forward pass and appended durably.
    for done in runtime.ingest(&mut bank, &documents, |_| {})? {
        println!("{:?} ({} tokens cut)", done.outcome, done.truncated_tokens);
    }
    // The aggregation reads the whole bank; the answer comes with its sources.
    let answer = runtime
        .ask(&bank, &[question.as_str()], &AskOptions::default())?
        .remove(0);
    println!("{}", answer.text);
    for d in &answer.documents {
        println!("  {:5.1}%  #{} {}", 100.0 * d.weight, d.id, d.snippet);
    }
    Ok(())
}
