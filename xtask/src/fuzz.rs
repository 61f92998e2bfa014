//! `cargo xtask fuzz --minutes N`: the parsers' mutation tests (every
//! crate's `tests/fuzz.rs`, run by the test suite with a fixed number of
//! random cases) given N minutes of random cases in all, shared among the
//! targets; prints and optionally writes each target's case counts.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, workspace_root};

/// The crates with a `tests/fuzz.rs`.
const FUZZED: [&str; 5] = ["mac-lm", "mac-bank", "mac-data", "mac-model", "mac-encoder"];

/// `cargo test --test fuzz -p CRATE...` in the workspace root.
fn fuzz_tests() -> Command {
    let mut cmd = Command::new(cargo());
    cmd.args(["test", "--test", "fuzz"])
        .current_dir(workspace_root());
    for krate in FUZZED {
        cmd.args(["-p", krate]);
    }
    cmd
}

/// How many fuzz targets (tests) the `fuzz` binaries hold.
fn count_targets() -> Result<usize> {
    let out = fuzz_tests()
        .args(["--", "--list"])
        .output()
        .context("listing the fuzz targets")?;
    if !out.status.success() {
        bail!(
            "could not list the fuzz targets:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.ends_with(": test"))
        .count())
}

/// Runs every fuzz target for its share of `minutes`.
pub(crate) fn fuzz(minutes: f64, seed: Option<u64>, out: Option<&Path>) -> Result<()> {
    let targets = count_targets()?;
    if targets == 0 {
        bail!("no fuzz targets found");
    }
    let per_target = minutes * 60.0 / targets as f64;
    println!("fuzz: {targets} targets, {per_target:.0} s of random cases each");
    let output = fuzz_tests()
        .args(["--", "--nocapture", "--test-threads", "1"])
        .env("MAC_FUZZ_SECONDS", format!("{per_target}"))
        .envs(seed.map(|s| ("MAC_FUZZ_SEED", s.to_string())))
        .output()
        .context("running the fuzz targets")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // A target's summary line starts with "fuzz " (after "test NAME ... "
    // when the harness printed that on the same line).
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" cases ("))
        .filter_map(|l| l.find("fuzz ").map(|at| &l[at..]))
        .collect();
    for line in &summary {
        println!("{line}");
    }
    if let Some(path) = out {
        let text = format!(
            "`cargo xtask fuzz --minutes {minutes}{}` ({targets} targets, {per_target:.0} s of random cases each):\n\n{}\n",
            seed.map(|s| format!(" --seed {s}")).unwrap_or_default(),
            summary
                .iter()
                .map(|l| format!("- {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::fs::write(path, text).with_context(|| path.display().to_string())?;
    }
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        bail!("a fuzz target failed (its cases are listed above)");
    }
    Ok(())
}
