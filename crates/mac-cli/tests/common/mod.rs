//! Helpers shared by the `mac` binary's end-to-end tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `mac --device flex ARGS…`.
pub fn mac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mac"))
        .args(["--device", "flex"])
        .args(args)
        .output()
        .unwrap()
}

/// The stdout of a run that must have succeeded (else a panic showing both streams).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Whether the real models are fetched (see [`mac_assets::fetched_or_skip`]).
pub fn models_fetched() -> bool {
    mac_assets::fetched_or_skip(&mac_assets::default_lm_path())
        && mac_assets::fetched_or_skip(&mac_assets::default_encoder_dir())
}

/// `mac train --preset tiny --steps 3 --out RUN`: a checkpoint in seconds
/// (it runs the real models; it does not answer well). Not every test
/// file trains the paper's path.
#[allow(dead_code)]
pub fn train_tiny(run: &Path) {
    ok(&mac(&[
        "train",
        "--preset",
        "tiny",
        "--steps",
        "3",
        "--out",
        s(run),
    ]));
}
