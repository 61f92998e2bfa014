//! `cargo xtask bench`: the criterion benchmarks and the PyTorch reference
//! on the same shapes, in one run, with their ratios.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::fetch::fetch;
use crate::{cargo, target_dir, workspace_root};

/// A Python with torch + transformers + gguf: `MAC_PYTHON`, else a venv
/// under MAC_HOME created on first use.
pub(crate) fn torch_python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MAC_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = mac_assets::mac_home().join("torch-venv");
    let py = venv.join("bin/python");
    let ok = |py: &Path| imports(py, "torch, transformers, gguf");
    if ok(&py) {
        return Ok(py);
    }
    println!(
        "creating a PyTorch venv for the reference side in {} (once, a few GB) ...",
        venv.display()
    );
    new_venv(&venv)?;
    let installed = pip_install(&py, &["torch", "transformers", "gguf", "accelerate"], &[])?;
    if !installed || !ok(&py) {
        bail!(
            "installing torch/transformers/gguf into {} failed",
            venv.display()
        );
    }
    Ok(py)
}

/// The llama-cpp-python release the llama.cpp reference is built from.
const LLAMA_CPP_PYTHON: &str = "llama-cpp-python==0.3.36";

/// A Python with llama-cpp-python: `MAC_LLAMA_PYTHON`, else a venv under
/// MAC_HOME built on first use (from source, for this CPU's vector
/// extensions: about 10 minutes on 2 cores). A build for
/// `-DGGML_NATIVE=ON` dies on CPUs that advertise AMX, so the extensions
/// are named; a venv built for other extensions is rebuilt.
pub(crate) fn llama_python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MAC_LLAMA_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = mac_assets::mac_home().join("llama-venv");
    let py = venv.join("bin/python");
    let flags = llama_cmake_args();
    let stamp = venv.join("mac-cmake-args");
    if imports(&py, "llama_cpp") && fs::read_to_string(&stamp).is_ok_and(|s| s == flags) {
        return Ok(py);
    }
    println!(
        "building {LLAMA_CPP_PYTHON} into {} for the llama.cpp reference ({flags}) ...",
        venv.display()
    );
    let start = std::time::Instant::now();
    new_venv(&venv)?;
    let parallel = cores().to_string();
    let installed = pip_install(
        &py,
        &["--force-reinstall", "--no-cache-dir", LLAMA_CPP_PYTHON],
        &[
            ("CMAKE_ARGS", &flags),
            ("CMAKE_BUILD_PARALLEL_LEVEL", &parallel),
        ],
    )?;
    if !installed || !imports(&py, "llama_cpp") {
        bail!("building {LLAMA_CPP_PYTHON} into {} failed", venv.display());
    }
    fs::write(&stamp, &flags)?;
    println!("built in {:.0} s", start.elapsed().as_secs_f64());
    Ok(py)
}

/// Whether the Python `py` imports `modules` (comma-separated).
fn imports(py: &Path, modules: &str) -> bool {
    Command::new(py)
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success())
}

/// `pip install -q ARGS` with the Python `py`, in the environment `env`;
/// whether it succeeded.
fn pip_install(py: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<bool> {
    let st = Command::new(py)
        .args(["-m", "pip", "install", "-q"])
        .args(args)
        .envs(env.iter().copied())
        .status()?;
    Ok(st.success())
}

/// Creates (or reuses) the virtual environment `venv`.
fn new_venv(venv: &Path) -> Result<()> {
    let st = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv)
        .status()?;
    if !st.success() {
        bail!("python3 -m venv {} failed", venv.display());
    }
    Ok(())
}

/// [`llama_python`] with the server's extras (`llama_cpp.server`); the
/// library itself is not rebuilt.
pub(crate) fn llama_python_with_server() -> Result<PathBuf> {
    let py = llama_python()?;
    let extras = LLAMA_CPP_PYTHON.replacen("==", "[server]==", 1);
    if !imports(&py, "llama_cpp.server.app") && !pip_install(&py, &[extras.as_str()], &[])? {
        bail!("installing {extras} failed");
    }
    Ok(py)
}

/// llama.cpp's CMake flags for this CPU's vector extensions.
fn llama_cmake_args() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has = |f: &str| info.split_whitespace().any(|w| w == f);
    let mut args = vec!["-DGGML_NATIVE=OFF"];
    for (flag, cmake) in [
        ("avx", "-DGGML_AVX=ON"),
        ("avx2", "-DGGML_AVX2=ON"),
        ("fma", "-DGGML_FMA=ON"),
        ("f16c", "-DGGML_F16C=ON"),
        ("avx512f", "-DGGML_AVX512=ON"),
        ("avx512_vnni", "-DGGML_AVX512_VNNI=ON"),
    ] {
        if has(flag) {
            args.push(cmake);
        }
    }
    args.join(" ")
}

/// The CPU cores this process may use.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(crate) fn criterion_median_s(group: &str, name: &str) -> Result<f64> {
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
pub(crate) fn cargo_bench(target: &str) -> Result<()> {
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
pub(crate) fn torch_reference(script: &str, args: &[PathBuf]) -> Result<serde_json::Value> {
    torch_reference_with(script, args, &[])
}

/// [`torch_reference`] with extra flags after the paths.
pub(crate) fn torch_reference_with(
    script: &str,
    args: &[PathBuf],
    flags: &[&str],
) -> Result<serde_json::Value> {
    reference_with(&torch_python()?, script, args, flags)
}

/// Runs a reference script (benches/reference/NAME) with the Python `py`
/// and parses the JSON object on its last line.
fn reference_with(
    py: &Path,
    script: &str,
    args: &[PathBuf],
    flags: &[&str],
) -> Result<serde_json::Value> {
    let out = Command::new(py)
        .arg(workspace_root().join("benches/reference").join(script))
        .args(args)
        .args(flags)
        .output()?;
    if !out.status.success() {
        bail!(
            "reference {script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8(out.stdout)?;
    Ok(serde_json::from_str(stdout.lines().last().unwrap_or("{}"))?)
}

/// `bench mac`: ingest and aggregation against PyTorch, and the memory table.
pub(crate) fn bench_mac() -> Result<()> {
    fetch(false)?;
    cargo_bench("mac")?;
    cargo_bench("aggregation_rss")?;
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
    for n in [100, 200, 1000, 10000] {
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
        "written {} (peak memory table: target/bench-aggregation-rss.json)",
        path.display()
    );
    Ok(())
}

/// `bench train`: one default-preset training step against PyTorch.
pub(crate) fn bench_train() -> Result<()> {
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
pub(crate) fn bench_train_profile() -> Result<()> {
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
pub(crate) fn cpu_model() -> String {
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
    let cores = cores();
    format!("{name} ({simd}, {cores} cores)")
}

pub(crate) fn bench(which: &str, profile: bool, references: &[String]) -> Result<()> {
    if profile && which != "train" {
        bail!("--profile is for `bench train` only");
    }
    match which {
        "mac" => bench_mac(),
        "train" if profile => bench_train_profile(),
        "train" => bench_train(),
        "lm" => bench_lm(references),
        _ => bail!("unknown benchmark `{which}` (known: lm, serve, mac, train)"),
    }
}

/// `bench lm`: prefill and decode against each reference named
/// (`torch`: transformers on the GGUF dequantised to f32; `llama.cpp`:
/// llama-cpp-python on the file as stored), with as many threads as
/// cores on every side.
fn bench_lm(references: &[String]) -> Result<()> {
    fetch(false)?;
    cargo_bench("lm")?;
    let lm = [mac_assets::default_lm_path()];
    let threads = cores().to_string();
    let mut sides: Vec<(String, serde_json::Value)> = Vec::new();
    for r in references {
        let flags = ["--threads", threads.as_str()];
        let value = match r.as_str() {
            "torch" => torch_reference_with("lm_speed.py", &lm, &flags)?,
            "llama.cpp" => reference_with(&llama_python()?, "llama_cpp_speed.py", &lm, &flags)?,
            other => bail!("unknown reference `{other}` (known: torch, llama.cpp)"),
        };
        sides.push((r.clone(), value));
    }
    let backend = std::env::var("MAC_DEVICE").unwrap_or_else(|_| "flex".into());
    let mut header = format!("\n| benchmark | mac-rs ({backend}) |");
    for (name, _) in &sides {
        header += &format!(" {name} | mac/{name} time |");
    }
    println!("{header}\n|---|---|{}", "---|---|".repeat(sides.len()));
    let rows = [
        ("prefill_128", "prefill_128_s", 128.0),
        ("decode_1_after_128", "decode_1_after_128_s", 1.0),
        (
            "decode_1_after_128_host_buffers",
            "decode_1_after_128_s",
            1.0,
        ),
        (
            "decode_1_after_128_host_buffers_q16_activations",
            "decode_1_after_128_s",
            1.0,
        ),
        (
            "decode_1_after_128_f32_weights",
            "decode_1_after_128_s",
            1.0,
        ),
        (
            "decode_1_after_128_q8_activations",
            "decode_1_after_128_s",
            1.0,
        ),
        ("generate_64_after_128", "generate_64_after_128_s", 64.0),
        (
            "generate_64_after_128_tensor_steps",
            "generate_64_after_128_s",
            64.0,
        ),
        (
            "generate_64_after_128_q16_activations",
            "generate_64_after_128_s",
            64.0,
        ),
        (
            "generate_64_after_128_q8_activations",
            "generate_64_after_128_s",
            64.0,
        ),
    ];
    let mut report = serde_json::Map::new();
    let cell = |s: f64, tokens: f64| format!("{:.1} ms ({:.0} tok/s)", s * 1e3, tokens / s);
    for (name, key, tokens) in rows {
        let ours = criterion_median_s("smollm2_135m", name)?;
        let mut line = format!("| {name} | {} |", cell(ours, tokens));
        let mut row = serde_json::json!({"mac_s": ours, "tokens": tokens});
        for (side, value) in &sides {
            // A reference may not measure every row (PyTorch: no generation).
            let Some(theirs) = value[key].as_f64() else {
                line += " – | – |";
                continue;
            };
            line += &format!(" {} | {:.2} |", cell(theirs, tokens), ours / theirs);
            row[format!("{side}_s")] = theirs.into();
        }
        println!("{line}");
        report.insert(name.into(), row);
    }
    for (side, value) in sides {
        report.insert(side, value);
    }
    report.insert("cpu".into(), cpu_model().into());
    let path = target_dir().join("bench-lm.json");
    fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("written {}", path.display());
    Ok(())
}
