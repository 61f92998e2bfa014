//! `cargo xtask test`, `train`, `eval`, `demo`: the suite, and the `mac`
//! binary run on the CPU backend.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::fetch::fetch;
use crate::{cargo, layering, target_dir, workspace_root};

/// Whether a Vulkan driver is installed (lavapipe counts), so wgpu can run.
pub(crate) fn vulkan_available() -> bool {
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .any(|d| {
            fs::read_dir(d)
                .map(|mut it| it.next().is_some())
                .unwrap_or(false)
        })
}

/// The suite: every crate on the CPU (flex) with the real models required;
/// the base-LM and encoder parity tests again on wgpu when Vulkan is present.
/// One build serves both (wgpu is compiled in, flex is the default device).
pub(crate) fn test(args: &[String]) -> Result<()> {
    fetch(false)?;
    layering::check(&workspace_root(), &cargo())?;
    let run = |extra: &[&str], env: &[(&str, &str)]| -> Result<()> {
        let mut cmd = Command::new(cargo());
        cmd.args(["test", "--workspace", "--features", "mac-device/wgpu"])
            .args(extra)
            .args(args)
            .env("MAC_REQUIRE_MODELS", "1")
            .current_dir(workspace_root());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if !cmd.status()?.success() {
            bail!("tests failed");
        }
        Ok(())
    };
    run(&[], &[])?;
    run_examples()?;
    if vulkan_available() {
        println!("== parity tests again on wgpu ==");
        let xdg = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp/mac-rs-xdg".into());
        fs::create_dir_all(&xdg)?;
        run(
            &[
                "--test",
                "parity",
                "--test",
                "bert",
                "--test",
                "t5",
                "--",
                "--test-threads=1",
            ],
            &[("MAC_TEST_DEVICE", "wgpu"), ("XDG_RUNTIME_DIR", &xdg)],
        )?;
    } else if std::env::var_os("MAC_REQUIRE_WGPU").is_some() {
        bail!(
            "MAC_REQUIRE_WGPU is set but no Vulkan driver is installed (scripts/setup-system.sh)"
        );
    } else {
        println!("no Vulkan driver found: skipping the wgpu run (install mesa-vulkan-drivers)");
    }
    Ok(())
}

/// `scripts/device-check.sh pack`: the cuda+wgpu build and its packed parts.
pub(crate) fn device_pack() -> Result<()> {
    let st = Command::new("bash")
        .args(["scripts/device-check.sh", "pack"])
        .current_dir(workspace_root())
        .status()?;
    if !st.success() {
        bail!("scripts/device-check.sh pack failed");
    }
    Ok(())
}

/// Builds examples (`--examples`, or `--example NAME`) with the test
/// suite's feature set.
fn build_examples(which: &[&str]) -> Result<()> {
    let st = Command::new(cargo())
        .args(["build", "--workspace", "--features", "mac-device/wgpu"])
        .args(which)
        .current_dir(workspace_root())
        .status()?;
    if !st.success() {
        bail!("building the examples ({}) failed", which.join(" "));
    }
    Ok(())
}

/// Builds the examples with the test suite's feature set and runs them:
/// `train_tiny` into a temporary run directory, then `ingest_and_ask` on
/// its checkpoint.
fn run_examples() -> Result<()> {
    println!("== examples ==");
    build_examples(&["--examples"])?;
    let examples = target_dir().join("debug/examples");
    let tmp = tempfile::tempdir()?;
    let run_dir = tmp.path().join("run");
    let example = |name: &str, args: &[&OsStr]| -> Result<()> {
        let st = Command::new(examples.join(name)).args(args).status()?;
        if !st.success() {
            bail!("the example {name} failed");
        }
        Ok(())
    };
    let (checkpoint, bank) = (run_dir.join("checkpoints/last"), tmp.path().join("bank"));
    example("train_tiny", &[run_dir.as_os_str()])?;
    example(
        "ingest_and_ask",
        &[
            checkpoint.as_os_str(),
            bank.as_os_str(),
            OsStr::new("Where was Ada born?"),
            OsStr::new("Ada Lovelace was born in London."),
        ],
    )
}

/// `fetch`, then the `span_memory` example (built with the test suite's
/// feature set) writing its report to `out`.
pub(crate) fn span(
    train_documents: usize,
    test_documents: usize,
    steps: usize,
    out: &Path,
) -> Result<()> {
    fetch(false)?;
    build_examples(&["--example", "span_memory"])?;
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir)?;
    }
    let st = Command::new(target_dir().join("debug/examples/span_memory"))
        .args([train_documents, test_documents, steps].map(|n| n.to_string()))
        .arg(out)
        .env("MAC_DEVICE", "flex")
        .status()?;
    if !st.success() {
        bail!("the span_memory example failed");
    }
    println!("report: {}", out.display());
    Ok(())
}

/// Builds and runs the `mac` binary. It is built by `cargo test --no-run`
/// with the test suite's feature set, so the pipelines share the test build
/// instead of compiling Burn a second time; the CPU backend is used unless
/// `MAC_DEVICE` says otherwise.
pub(crate) fn mac(args: &[String]) -> Result<()> {
    build_mac()?;
    let target = target_dir();
    let mut cmd = Command::new(target.join("debug/mac"));
    cmd.args(args);
    if std::env::var_os("MAC_DEVICE").is_none() {
        cmd.env("MAC_DEVICE", "flex");
    }
    if !cmd.status()?.success() {
        bail!(
            "mac {} failed",
            args.first().map(String::as_str).unwrap_or("")
        );
    }
    Ok(())
}

/// Builds `target/debug/mac` with the test suite's feature set.
pub(crate) fn build_mac() -> Result<()> {
    let st = Command::new(cargo())
        .args([
            "test",
            "--workspace",
            "--features",
            "mac-device/wgpu",
            "--no-run",
            "--quiet",
        ])
        .current_dir(workspace_root())
        .status()?;
    if !st.success() {
        bail!("building the `mac` binary failed");
    }
    Ok(())
}

pub(crate) fn train(preset: &str, out: &Path, extra: &[String]) -> Result<()> {
    fetch(false)?;
    let out = std::env::current_dir()?.join(out);
    let mut args = vec![
        "train".to_string(),
        "--preset".into(),
        preset.into(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend_from_slice(extra);
    mac(&args)
}

pub(crate) fn eval(checkpoint: &Path, out: Option<PathBuf>, extra: &[String]) -> Result<()> {
    mac_on_checkpoint("eval", checkpoint, out, extra)
}

/// `mac COMMAND --checkpoint CHECKPOINT --out OUT EXTRA…` after fetching the
/// models; `OUT` defaults to `CHECKPOINT/COMMAND`.
pub(crate) fn mac_on_checkpoint(
    command: &str,
    checkpoint: &Path,
    out: Option<PathBuf>,
    extra: &[String],
) -> Result<()> {
    fetch(false)?;
    let checkpoint = std::env::current_dir()?.join(checkpoint);
    let out = std::env::current_dir()?.join(out.unwrap_or_else(|| checkpoint.join(command)));
    let mut args = vec![
        command.to_string(),
        "--checkpoint".into(),
        checkpoint.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend_from_slice(extra);
    mac(&args)
}

pub(crate) fn demo(preset: &str, out: Option<PathBuf>, force: bool) -> Result<()> {
    let t0 = std::time::Instant::now();
    let out = out.unwrap_or_else(|| PathBuf::from("runs").join(preset));
    let extra = if force {
        vec!["--force".to_string()]
    } else {
        vec![]
    };
    train(preset, &out, &extra)?;
    let span = preset.starts_with("span");
    // Span memory's evaluation: the test split's first documents, and the
    // first 30 documents' questions in banks of 10 to 1,000 documents.
    let eval_extra: Vec<String> = if span {
        [
            "--max-documents",
            "100",
            "--bank-sizes",
            "10,100,1000",
            "--bank-size-documents",
            "30",
        ]
        .map(String::from)
        .to_vec()
    } else {
        Vec::new()
    };
    eval(&out, None, &eval_extra)?;
    println!(
        "done in {:.1} min: {}/{}, {}/eval/report.md",
        t0.elapsed().as_secs_f64() / 60.0,
        out.display(),
        if span {
            "span-run.json"
        } else {
            "train-report.md"
        },
        out.display()
    );
    Ok(())
}
