//! Train a tiny MAC for a few steps, then ingest a document and ask about
//! it with the trained weights.
//!
//! `cargo run --example train_tiny -p mac-train -- RUN_DIR` (needs the
//! models: `cargo xtask fetch`). The run directory gets the configuration,
//! metrics and checkpoints, as `mac train --preset tiny` writes them.

use std::error::Error;
use std::path::PathBuf;

use mac_runtime::{AskOptions, Memory, NewDocument};
use mac_train::{TrainConfig, Trainer};

fn main() -> Result<(), Box<dyn Error>> {
    let run_dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: train_tiny RUN_DIR")?);
    let device = mac_device::select("flex")?;

    let mut config = TrainConfig::preset("tiny")?;
    config.steps = 3;
    let mut trainer = Trainer::new(config, &run_dir, &device)?;
    let summary = trainer.run(false, None)?;
    println!(
        "trained {} steps in {:.1} s",
        summary.steps, summary.seconds
    );

    // The trained weights answer from a bank of documents they never saw.
    let runtime = trainer.runtime()?;
    let mut bank = runtime.open_bank_writer(&run_dir.join("example-bank"))?;
    let document = NewDocument {
        source: "example".into(),
        text: "Velra Quellington was born in Port Vessa and works for Hollow Pine Labs.".into(),
    };
    runtime.ingest(&mut bank, &[document], &mut |_| {})?;
    let answer = runtime
        .ask(
            &bank,
            &["Where was Velra Quellington born?"],
            &AskOptions::default(),
        )?
        .remove(0);
    println!(
        "answer: {:?} (from {} documents)",
        answer.text, answer.bank_entries
    );
    Ok(())
}
