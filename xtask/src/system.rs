//! The system packages the build needs, checked before anything is built.
//!
//! `scripts/setup-system.sh --check` names what is missing. With the rights
//! to install (root, or sudo without a password) the script is run; without
//! them the task stops at once with the one command to run, instead of a
//! build that fails on a missing library half an hour in.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::workspace_root;

const SCRIPT: &str = "scripts/setup-system.sh";

/// Installs the missing system packages when it may, or stops naming the
/// command that would.
pub(crate) fn ensure_packages() -> Result<()> {
    if Command::new("dpkg")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("no dpkg here: not checking system packages (see {SCRIPT})");
        return Ok(());
    }
    let root = workspace_root();
    let check = Command::new("bash")
        .args([SCRIPT, "--check"])
        .current_dir(&root)
        .output()
        .with_context(|| format!("running {SCRIPT} --check"))?;
    if check.status.success() {
        return Ok(());
    }
    let missing = String::from_utf8_lossy(&check.stdout).trim().to_string();
    let Some(mut cmd) = installer() else {
        bail!("{missing}\nrun this once, then the same cargo xtask command again:\n    sudo bash {SCRIPT}");
    };
    println!("{missing}: installing them ({SCRIPT})");
    let st = cmd
        .arg(SCRIPT)
        .current_dir(&root)
        .status()
        .with_context(|| format!("running {SCRIPT}"))?;
    if !st.success() {
        bail!("{SCRIPT} failed; run it by hand: sudo bash {SCRIPT}");
    }
    Ok(())
}

/// The installer's command without its script: `bash` as we are (root),
/// through `sudo -n` (sudo that asks no password), or none.
fn installer() -> Option<Command> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        return Some(Command::new("bash"));
    }
    let sudo = Command::new("sudo")
        .args(["-n", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    sudo.success().then(|| {
        let mut cmd = Command::new("sudo");
        cmd.args(["-n", "bash"]);
        cmd
    })
}
