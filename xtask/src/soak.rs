//! `cargo xtask soak`: the bank under a writer that gets killed. Rounds of
//! `mac ingest` append to one bank while reader processes (`mac bank
//! verify`, which checks every record's checksum, and `mac ask`) read it,
//! and every other round the writer is SIGKILLed at a random moment. Then
//! the bank must verify and hold every acknowledged document once (an
//! ingest that exited 0 acknowledged its documents), and no reader may have
//! failed. Fails otherwise.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;

use crate::load::{tiny_checkpoint, verified_bank};
use crate::{run, target_dir};

/// Documents per ingest round (several encoder batches, so a kill can land
/// between commits).
const ROUND_DOCS: usize = 48;

/// A small xorshift generator: the soak's kill moments, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `[lo, hi)` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

fn round_text(round: usize, i: usize) -> String {
    format!("Soak entity {round}-{i} was born in Place {i}. It works for Maker {round}.")
}

fn bank_len(bank: &Path) -> usize {
    mac_memory::MemoryBank::open_read_only(bank).map_or(0, |b| b.len())
}

pub(crate) fn soak(seconds: u64, readers: usize, seed: Option<u64>) -> Result<()> {
    ensure!(seconds > 0, "--seconds must be positive");
    crate::fetch::fetch(false)?;
    run::build_mac()?;
    let mac = target_dir().join("debug/mac");
    let work = tempfile::tempdir()?;
    let checkpoint = tiny_checkpoint(&mac, work.path())?;
    let bank = work.path().join("bank");
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    println!("soak: seed {seed}, {seconds} s, {readers} readers");
    let mut rng = Rng(seed);

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicBool::new(false));
    let reader_runs = Arc::new(Mutex::new((0usize, 0usize)));
    let reader_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut threads = Vec::new();
    for r in 0..readers {
        let (stop, committed, runs, errors) = (
            stop.clone(),
            committed.clone(),
            reader_runs.clone(),
            reader_errors.clone(),
        );
        let (mac, bank, checkpoint) = (mac.clone(), bank.clone(), checkpoint.clone());
        threads.push(std::thread::spawn(move || {
            let mut k = r;
            while !stop.load(Ordering::Relaxed) {
                if !committed.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                let ask = k % 4 == 3;
                let mut cmd = Command::new(&mac);
                cmd.args(["--device", "flex"]);
                if ask {
                    cmd.arg("ask")
                        .arg("--bank")
                        .arg(&bank)
                        .arg("--checkpoint")
                        .arg(&checkpoint);
                    cmd.args(["Where was Soak entity 0-1 born?", "--json"]);
                } else {
                    cmd.args(["bank", "verify", "--json", "--bank"]).arg(&bank);
                }
                match cmd.output() {
                    Ok(out) if out.status.success() => {
                        let mut runs = runs.lock().unwrap();
                        if ask {
                            runs.1 += 1;
                        } else {
                            runs.0 += 1;
                        }
                    }
                    Ok(out) => errors.lock().unwrap().push(format!(
                        "{}: {}",
                        if ask { "ask" } else { "verify" },
                        String::from_utf8_lossy(&out.stderr).trim()
                    )),
                    Err(e) => errors.lock().unwrap().push(e.to_string()),
                }
                k += 1;
            }
        }));
    }

    let t0 = Instant::now();
    let (mut rounds, mut kills, mut kills_mid_ingest) = (0usize, 0usize, 0usize);
    let mut acknowledged: Vec<String> = Vec::new();
    let mut writer_errors = Vec::new();
    while t0.elapsed() < Duration::from_secs(seconds) {
        let texts: Vec<String> = (0..ROUND_DOCS).map(|i| round_text(rounds, i)).collect();
        let file = work.path().join(format!("round-{rounds}.jsonl"));
        let lines: Vec<String> = texts
            .iter()
            .map(|t| json!({"document": t}).to_string())
            .collect();
        std::fs::write(&file, lines.join("\n"))?;
        let before = bank_len(&bank);
        let mut child = Command::new(&mac)
            .args(["--device", "flex", "ingest", "--json", "--bank"])
            .arg(&bank)
            .arg("--checkpoint")
            .arg(&checkpoint)
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting mac ingest")?;
        // Every other round is killed somewhere between start-up and the end of its ingest.
        let kill_at = (rounds % 2 == 1).then(|| rng.millis(500, 9000));
        let started = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break Some(st);
            }
            if kill_at.is_some_and(|at| started.elapsed() >= at) {
                child.kill()?; // SIGKILL
                child.wait()?;
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        match status {
            Some(st) if st.success() => {
                acknowledged.extend(texts);
                committed.store(true, Ordering::Relaxed);
            }
            Some(st) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                writer_errors.push(format!("round {rounds}: {st}: {}", err.trim()));
            }
            None => {
                kills += 1;
                let after = bank_len(&bank);
                if after > before && after < before + ROUND_DOCS {
                    kills_mid_ingest += 1;
                }
                if after > 0 {
                    committed.store(true, Ordering::Relaxed);
                }
            }
        }
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a reader thread panicked"))?;
    }

    let stored = verified_bank(&mac, &bank)?;
    let mut texts = std::collections::HashMap::<String, usize>::new();
    for i in 0..stored.len() {
        *texts.entry(stored.read(i)?.text).or_default() += 1;
    }
    let lost = acknowledged
        .iter()
        .filter(|t| texts.get(*t) != Some(&1))
        .count();
    let (verifies, asks) = *reader_runs.lock().unwrap();
    let reader_errors = reader_errors.lock().unwrap().clone();
    let report = json!({
        "seed": seed,
        "seconds": (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "rounds": rounds,
        "kills": kills,
        "kills_between_commits": kills_mid_ingest,
        "documents_acknowledged": acknowledged.len(),
        "documents_acknowledged_lost": lost,
        "bank_entries": stored.len(),
        "reader_runs": {"verify": verifies, "ask": asks},
        "reader_errors": reader_errors.len(),
        "first_reader_errors": reader_errors.iter().take(5).collect::<Vec<_>>(),
        "writer_errors": writer_errors,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if lost > 0
        || !reader_errors.is_empty()
        || !writer_errors.is_empty()
        || kills == 0
        || acknowledged.is_empty()
    {
        bail!(
            "soak failed: {lost} acknowledged documents lost or repeated, {} reader errors, {} writer errors, {kills} kills, {} acknowledged",
            reader_errors.len(),
            writer_errors.len(),
            acknowledged.len()
        );
    }
    Ok(())
}
