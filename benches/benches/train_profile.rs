//! The default-preset training step broken into its parts (see
//! `mac_train::part`): one warm-up step, then the median of each part over
//! `MAC_PROFILE_STEPS` (default 3) profiled steps. Writes
//! `$CARGO_TARGET_DIR/bench-train-profile.json`; `cargo xtask bench train
//! --profile` prints it beside the PyTorch reference's parts.

use std::path::PathBuf;

use mac_train::{StepProfile, TrainConfig, Trainer};

fn main() {
    // As the `mac` binary does.
    mac_device::keep_freed_memory();
    if !mac_assets::default_lm_path().exists() || !mac_assets::default_encoder_dir().exists() {
        eprintln!("models missing: run `cargo xtask fetch`");
        std::process::exit(1);
    }
    let backend = std::env::var("MAC_DEVICE").unwrap_or_else(|_| "flex".into());
    let device = mac_device::select(&backend).expect("device");
    let steps: usize = std::env::var("MAC_PROFILE_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let run = tempfile::tempdir().expect("tempdir");
    let cfg = TrainConfig::preset("default").expect("preset");
    let mut trainer = Trainer::new(cfg, run.path(), &device).expect("trainer");
    trainer.train_step().expect("warm-up step");
    let profiles: Vec<StepProfile> = (0..steps)
        .map(|_| trainer.profile_step().expect("profiled step"))
        .collect();
    let profile = StepProfile::median(&profiles).expect("at least one profiled step");
    let report = serde_json::json!({"backend": backend, "steps": steps, "total": profile.total,
        "parts": profile.parts});
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("bench-train-profile.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json")).expect("write");
    println!("{report}");
}
