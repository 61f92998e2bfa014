//! `cargo xtask soak`: the bank under a writer that gets killed. Rounds of
//! `mac ingest` append to one bank while reader processes (`mac bank
//! verify`, which checks every record's checksum, and `mac ask`) read it,
//! and every other round the writer is SIGKILLed at a random moment. Then
//! the bank must verify and hold every acknowledged document once (an
//! ingest that exited 0 acknowledged its documents), and no reader may have
//! failed. Fails otherwise.

use std::path::{Path, PathBuf};
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
    mac_bank::MemoryBank::open_read_only(bank).map_or(0, |b| b.len())
}

pub(crate) fn soak(seconds: u64, readers: usize, seed: Option<u64>) -> Result<()> {
    ensure!(seconds > 0, "--seconds must be positive");
    crate::fetch::fetch(false)?;
    run::build_mac()?;
    let mac = target_dir().join("debug/mac");
    let work = tempfile::tempdir()?;
    let setup = Setup {
        checkpoint: tiny_checkpoint(&mac, work.path())?,
        bank: work.path().join("bank"),
        work: work.path().to_path_buf(),
        mac,
    };
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    println!("soak: seed {seed}, {seconds} s, {readers} readers");
    let mut rng = Rng(seed);
    let readers = Readers::start(readers, &setup);
    let t0 = Instant::now();
    let (mut rounds, mut kills, mut kills_mid_ingest) = (0usize, 0usize, 0usize);
    let mut acknowledged: Vec<String> = Vec::new();
    let mut writer_errors = Vec::new();
    while t0.elapsed() < Duration::from_secs(seconds) {
        // Every other round is killed somewhere between start-up and the end of its ingest.
        let kill_at = (rounds % 2 == 1).then(|| rng.millis(500, 9000));
        let (end, texts) = writer_round(&setup, rounds, kill_at)?;
        match end {
            RoundEnd::Acknowledged => {
                acknowledged.extend(texts);
                readers.committed.store(true, Ordering::Relaxed);
            }
            RoundEnd::Failed(e) => writer_errors.push(format!("round {rounds}: {e}")),
            RoundEnd::Killed { mid_ingest, stored } => {
                kills += 1;
                kills_mid_ingest += usize::from(mid_ingest);
                if stored {
                    readers.committed.store(true, Ordering::Relaxed);
                }
            }
        }
        rounds += 1;
    }
    let ((verifies, asks), reader_errors) = readers.finish()?;

    let stored = verified_bank(&setup.mac, &setup.bank)?;
    let mut texts = std::collections::HashMap::<String, usize>::new();
    for i in 0..stored.len() {
        *texts.entry(stored.read(i)?.text).or_default() += 1;
    }
    let lost = acknowledged
        .iter()
        .filter(|t| texts.get(*t) != Some(&1))
        .count();
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

/// The binary, the checkpoint, the bank and the scratch directory.
#[derive(Clone)]
struct Setup {
    mac: PathBuf,
    checkpoint: PathBuf,
    bank: PathBuf,
    work: PathBuf,
}

/// How a writer round ended.
enum RoundEnd {
    /// `mac ingest` exited 0: its documents are acknowledged.
    Acknowledged,
    /// It failed on its own (an error: the soak fails).
    Failed(String),
    /// It was SIGKILLed; some but not all of its documents were stored
    /// (`mid_ingest`); the bank holds anything (`stored`).
    Killed { mid_ingest: bool, stored: bool },
}

/// One round: `mac ingest` of [`ROUND_DOCS`] new documents, SIGKILLed
/// `kill_at` after it starts; how it ended and the texts it was given.
fn writer_round(
    setup: &Setup,
    round: usize,
    kill_at: Option<Duration>,
) -> Result<(RoundEnd, Vec<String>)> {
    let texts: Vec<String> = (0..ROUND_DOCS).map(|i| round_text(round, i)).collect();
    let file = setup.work.join(format!("round-{round}.jsonl"));
    let lines: Vec<String> = texts
        .iter()
        .map(|t| json!({"document": t}).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n"))?;
    let before = bank_len(&setup.bank);
    let mut child = Command::new(&setup.mac)
        .args(["--device", "flex", "ingest", "--json", "--bank"])
        .arg(&setup.bank)
        .arg("--checkpoint")
        .arg(&setup.checkpoint)
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting mac ingest")?;
    let started = Instant::now();
    let end = loop {
        if let Some(st) = child.try_wait()? {
            if st.success() {
                break RoundEnd::Acknowledged;
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            break RoundEnd::Failed(format!("{st}: {}", err.trim()));
        }
        if kill_at.is_some_and(|at| started.elapsed() >= at) {
            child.kill()?; // SIGKILL
            child.wait()?;
            let after = bank_len(&setup.bank);
            break RoundEnd::Killed {
                mid_ingest: after > before && after < before + ROUND_DOCS,
                stored: after > 0,
            };
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok((end, texts))
}

/// Reader processes beside the writer (`mac bank verify`, and every fourth
/// run `mac ask`), once the bank holds a commit, until told to stop.
struct Readers {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicBool>,
    runs: Arc<Mutex<(usize, usize)>>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    fn start(n: usize, setup: &Setup) -> Self {
        let mut readers = Self {
            stop: Arc::new(AtomicBool::new(false)),
            committed: Arc::new(AtomicBool::new(false)),
            runs: Arc::new(Mutex::new((0, 0))),
            errors: Arc::new(Mutex::new(Vec::new())),
            threads: Vec::new(),
        };
        for r in 0..n {
            let (stop, committed) = (readers.stop.clone(), readers.committed.clone());
            let (runs, errors) = (readers.runs.clone(), readers.errors.clone());
            let setup = setup.clone();
            readers.threads.push(std::thread::spawn(move || {
                let mut k = r;
                while !stop.load(Ordering::Relaxed) {
                    if !committed.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    let ask = k % 4 == 3;
                    match read_once(&setup, ask) {
                        Ok(()) if ask => runs.lock().unwrap().1 += 1,
                        Ok(()) => runs.lock().unwrap().0 += 1,
                        Err(e) => errors.lock().unwrap().push(e),
                    }
                    k += 1;
                }
            }));
        }
        readers
    }

    /// Stops the readers: (verify runs, ask runs) and their errors.
    fn finish(self) -> Result<((usize, usize), Vec<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join()
                .map_err(|_| anyhow::anyhow!("a reader thread panicked"))?;
        }
        let runs = *self.runs.lock().unwrap();
        let errors = self.errors.lock().unwrap().clone();
        Ok((runs, errors))
    }
}

/// One reader run: `mac ask` or `mac bank verify` on the bank.
fn read_once(setup: &Setup, ask: bool) -> Result<(), String> {
    let mut cmd = Command::new(&setup.mac);
    cmd.args(["--device", "flex"]);
    if ask {
        cmd.arg("ask")
            .arg("--bank")
            .arg(&setup.bank)
            .arg("--checkpoint")
            .arg(&setup.checkpoint);
        cmd.args(["Where was Soak entity 0-1 born?", "--json"]);
    } else {
        cmd.args(["bank", "verify", "--json", "--bank"])
            .arg(&setup.bank);
    }
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{}: {}",
            if ask { "ask" } else { "verify" },
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(e.to_string()),
    }
}
