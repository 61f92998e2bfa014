//! `device-check`: the Rust half of scripts/device-check.sh, which times
//! mac-rs on a GPU machine that cannot receive the real weights.
//!
//! * `prepare --out PACK`: from the real models in `MAC_HOME`, the files a
//!   model of their shapes needs besides its weights (see `mac_benches::synth`).
//! * `synthesize --pack PACK --out MODELS`: random-weight models of those
//!   shapes, as Hugging Face directories that mac-rs and `transformers` load.
//! * `time --models MODELS [--device cuda] [--steps N] [--profile-steps N]
//!   [--out FILE]`: the default preset's training step (median of N after a
//!   warm-up, and the step by part), prefill of 128 tokens and one decode
//!   step after them, as JSON — the same measurements as `cargo xtask bench
//!   train --profile` and `bench lm`, on the models of `MODELS`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use mac_benches::synth;
use mac_lm::{KvCache, LoadedLm, TokenBatch};
use mac_train::{StepProfile, TrainConfig, Trainer};

#[derive(Parser)]
#[command(about = "mac-rs timings on models of the real shapes with random weights")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write configs, tokenizers and tensor lists of the real models (no weights).
    Prepare {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build random-weight model directories from a prepared pack.
    Synthesize {
        /// The directory `prepare` wrote.
        #[arg(long)]
        pack: PathBuf,
        /// Output directory (gets `smollm2/` and `minilm/`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Time the training step, prefill and decode on synthesized models.
    Time {
        /// The directory `synthesize` wrote.
        #[arg(long)]
        models: PathBuf,
        /// Backend: cuda, wgpu or flex.
        #[arg(long, default_value = "cuda")]
        device: String,
        /// Timed training steps (after one warm-up step).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Profiled training steps (the step by part).
        #[arg(long, default_value_t = 2)]
        profile_steps: usize,
        /// Repetitions of prefill and decode.
        #[arg(long, default_value_t = 10)]
        reps: usize,
        /// Also write the JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median of `reps` timed calls of `f`, after one untimed call.
fn timed<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

fn time_training(
    models: &Path,
    device: &mac_device::Device,
    steps: usize,
    profile_steps: usize,
) -> Result<serde_json::Value> {
    let run = tempfile::tempdir()?;
    let mut cfg = TrainConfig::preset("default").map_err(|e| anyhow!("{e}"))?;
    cfg.lm = Some(models.join(synth::LM_DIR));
    cfg.encoder = Some(models.join(synth::ENCODER_DIR));
    let t = Instant::now();
    let mut trainer = Trainer::new(cfg, run.path(), device)?;
    let load_s = t.elapsed().as_secs_f64();
    let step_s = timed(steps, || Ok(trainer.train_step()?.loss))?;
    let profiles: Vec<StepProfile> = (0..profile_steps)
        .map(|_| trainer.profile_step())
        .collect::<std::result::Result<_, _>>()?;
    let profile = StepProfile::median(&profiles);
    Ok(serde_json::json!({
        "load_s": load_s,
        "train_step_s": step_s,
        "profile": {
            "steps": profile_steps,
            "total": profile.as_ref().map(|p| p.total),
            "parts": profile.map(|p| p.parts).unwrap_or_default(),
        },
    }))
}

fn time_lm(models: &Path, device: &mac_device::Device, reps: usize) -> Result<serde_json::Value> {
    const PROMPT_TOKENS: usize = 128;
    let lm = LoadedLm::load(models.join(synth::LM_DIR), device)?;
    let model = &lm.model;
    let mut ids = lm
        .tokenizer
        .encode(&"The history of the printing press begins in Mainz. ".repeat(20))?;
    ids.truncate(PROMPT_TOKENS);
    let prompt = TokenBatch::single(ids)?;
    let prefill = timed(reps, || {
        let h = model.forward_hidden(&prompt, None, Some(&mut KvCache::new()))?;
        let last = h.narrow(1, PROMPT_TOKENS - 1, 1);
        Ok(model.logits(last).argmax(2).into_data())
    })?;
    let mut warm = KvCache::new();
    model.forward_hidden(&prompt, None, Some(&mut warm))?;
    let _ = device.sync();
    let step = TokenBatch::single(vec![42])?;
    // The cache is cloned outside the timed region, as criterion's
    // iter_batched does in `bench lm` and `copy.deepcopy` in lm_speed.py.
    let mut decode_times = Vec::with_capacity(reps);
    for rep in 0..=reps.max(1) {
        let mut cache = warm.clone();
        let _ = device.sync();
        let t = Instant::now();
        let h = model.forward_hidden(&step, None, Some(&mut cache))?;
        model.logits(h).argmax(2).into_data();
        if rep > 0 {
            decode_times.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(serde_json::json!({
        "prefill_128_s": prefill,
        "decode_1_after_128_s": median(decode_times),
    }))
}

fn main() -> Result<()> {
    mac_device::keep_freed_memory();
    match Cli::parse().cmd {
        Cmd::Prepare { out } => {
            synth::prepare(
                &mac_assets::default_lm_path(),
                &mac_assets::default_encoder_dir(),
                &out,
            )?;
            println!("prepared {}", out.display());
        }
        Cmd::Synthesize { pack, out } => {
            let (lm, encoder) = synth::synthesize(&pack, &out)?;
            println!("synthesized {} and {}", lm.display(), encoder.display());
        }
        Cmd::Time {
            models,
            device,
            steps,
            profile_steps,
            reps,
            out,
        } => {
            let dev = mac_device::select(&device).map_err(|e| anyhow!(e))?;
            let mut report = serde_json::json!({"backend": device});
            let lm = time_lm(&models, &dev, reps).context("timing prefill and decode")?;
            let train = time_training(&models, &dev, steps, profile_steps)
                .context("timing the training step")?;
            for part in [lm, train] {
                if let (Some(into), Some(from)) = (report.as_object_mut(), part.as_object()) {
                    into.extend(from.clone());
                }
            }
            let text = serde_json::to_string_pretty(&report)?;
            if let Some(path) = out {
                std::fs::write(&path, &text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            println!("{text}");
        }
    }
    Ok(())
}
