//! `cargo xtask serve-load`: a bounded load test of `mac serve` on
//! localhost. Concurrent askers and one ingester for a fixed time, then a
//! graceful stop and the bank checked: every acknowledged document stored
//! once. Reports errors, losses, latency percentiles and throughput; fails
//! when any request failed or any acknowledged document is missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::{run, target_dir};

/// Who asks `mac serve`, for how long, and what it answers from: the
/// load test's and `bench serve`'s options.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct LoadOptions {
    /// A trained run or checkpoint (default: the tiny preset, trained for 3 steps).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// How long the askers ask (each server, for `bench serve`).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Concurrent askers.
    #[arg(long, default_value_t = 8)]
    pub askers: usize,
    /// `mac serve --store-kv` with this precision (`f32`, `f16`): answers
    /// read the documents' stored key/values.
    #[arg(long, value_name = "PRECISION")]
    pub store_kv: Option<String>,
}

/// `mac serve` on a fresh bank in a temporary directory, the seed
/// documents ingested.
pub(crate) struct SeededServer {
    /// The server.
    pub server: Server,
    /// The `mac` binary.
    pub mac: PathBuf,
    /// What it answers from.
    pub checkpoint: PathBuf,
    /// Its bank.
    pub bank: PathBuf,
    /// The directory holding the bank (and the tiny checkpoint), removed when dropped.
    _work: tempfile::TempDir,
}

/// Fetches the models, builds `mac`, and starts [`SeededServer`] on
/// `opts.checkpoint` (or the tiny preset, trained for 3 steps).
pub(crate) fn seeded_server(opts: &LoadOptions) -> Result<SeededServer> {
    ensure!(
        opts.askers > 0 && opts.seconds > 0,
        "--askers and --seconds must be positive"
    );
    crate::fetch::fetch(false)?;
    run::build_mac()?;
    let mac = target_dir().join("debug/mac");
    let work = tempfile::tempdir()?;
    let checkpoint = match &opts.checkpoint {
        Some(c) => c.clone(),
        None => tiny_checkpoint(&mac, work.path())?,
    };
    let bank = work.path().join("bank");
    let store_kv: Vec<&str> = match &opts.store_kv {
        Some(p) => vec!["--store-kv", p],
        None => Vec::new(),
    };
    let server = start_server(&mac, &bank, &checkpoint, &store_kv)?;
    let seeds: Vec<Value> = (0..SEED_DOCUMENTS)
        .map(|i| json!({"text": fact("seed", i), "source": "seed"}))
        .collect();
    post(&format!("{}/v1/documents", server.url), &Value::from(seeds))
        .map_err(|e| anyhow::anyhow!("seeding the bank: {e}"))?;
    Ok(SeededServer {
        server,
        mac,
        checkpoint,
        bank,
        _work: work,
    })
}

/// Documents in the bank before the load starts (so every question has a bank).
pub(crate) const SEED_DOCUMENTS: usize = 16;

/// The `i`-th made-up document of a kind (`tag`).
pub(crate) fn fact(tag: &str, i: usize) -> String {
    format!(
        "Person {tag}-{i} was born in Town {i}. Person {tag}-{i} works for Company {tag}{i} and studies topic {}.",
        i % 7
    )
}

/// Latencies of one kind of request.
#[derive(Default)]
pub(crate) struct Samples {
    ok_ms: Vec<f64>,
    errors: Vec<String>,
}

impl Samples {
    /// Counts, errors, latency percentiles and requests per second.
    pub(crate) fn summary(&mut self, seconds: f64) -> Value {
        self.ok_ms.sort_by(f64::total_cmp);
        let pct = |p: f64| -> Value {
            if self.ok_ms.is_empty() {
                return Value::Null;
            }
            let i = ((p * self.ok_ms.len() as f64).ceil() as usize).clamp(1, self.ok_ms.len()) - 1;
            json!((self.ok_ms[i] * 10.0).round() / 10.0)
        };
        json!({
            "requests": self.ok_ms.len() + self.errors.len(),
            "errors": self.errors.len(),
            "first_errors": self.errors.iter().take(5).collect::<Vec<_>>(),
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "max_ms": self.ok_ms.last(),
            "per_second": self.ok_ms.len() as f64 / seconds,
        })
    }
}

/// A server process on localhost, killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_server(
    mac: &Path,
    bank: &Path,
    checkpoint: &Path,
    extra: &[&str],
) -> Result<Server> {
    let mut child = Command::new(mac)
        .args(["--device", "flex", "serve", "--bank"])
        .arg(bank)
        .arg("--checkpoint")
        .arg(checkpoint)
        .args(["--addr", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting mac serve")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .with_context(|| format!("mac serve did not say where it listens: `{line}`"))?
        .to_string();
    Ok(Server { child, url })
}

pub(crate) fn post(url: &str, body: &Value) -> std::result::Result<Value, String> {
    match ureq::post(url)
        .timeout(Duration::from_secs(300))
        .send_json(body)
    {
        Ok(resp) => resp.into_json().map_err(|e| e.to_string()),
        Err(ureq::Error::Status(code, resp)) => Err(format!(
            "{code}: {}",
            resp.into_string().unwrap_or_default()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Trains the tiny preset for 3 steps into `dir/run` (enough to time and
/// stress the serving path, not to answer well).
pub(crate) fn tiny_checkpoint(mac: &Path, dir: &Path) -> Result<PathBuf> {
    let run_dir = dir.join("run");
    let st = Command::new(mac)
        .args([
            "--device", "flex", "train", "--preset", "tiny", "--steps", "3", "--out",
        ])
        .arg(&run_dir)
        .stdout(Stdio::null())
        .status()?;
    ensure!(st.success(), "training the tiny preset failed");
    Ok(run_dir)
}

/// `mac bank verify` on `bank` (every record's checksum), then the bank
/// opened read-only for the caller's checks.
pub(crate) fn verified_bank(mac: &Path, bank: &Path) -> Result<mac_bank::MemoryBank> {
    let verify = Command::new(mac)
        .args(["bank", "verify", "--json", "--bank"])
        .arg(bank)
        .output()?;
    ensure!(
        verify.status.success(),
        "the bank does not verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    Ok(mac_bank::MemoryBank::open_read_only(bank)?)
}

/// The load test, its report also written to `out`.
pub(crate) fn serve_load(opts: &LoadOptions, out: Option<&Path>) -> Result<()> {
    let SeededServer {
        mut server,
        mac,
        checkpoint,
        bank,
        _work,
    } = seeded_server(opts)?;
    let docs_url = format!("{}/v1/documents", server.url);
    let chat_url = format!("{}/v1/chat/completions", server.url);
    let stop = Arc::new(AtomicBool::new(false));
    let asks = Arc::new(Mutex::new(Samples::default()));
    let ingests = Arc::new(Mutex::new(Samples::default()));
    let acknowledged = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
    let mut threads = Vec::new();
    for a in 0..opts.askers {
        let (stop, asks, url, askers) = (stop.clone(), asks.clone(), chat_url.clone(), opts.askers);
        threads.push(std::thread::spawn(move || {
            let request = |k| {
                let (q, _) = seed_question(k);
                json!({"model": "mac", "messages": [{"role": "user", "content": q}]})
            };
            ask_until(&stop, &asks, &url, (a, askers), &request)
        }));
    }
    {
        let (stop, ingests, acked, url) = (
            stop.clone(),
            ingests.clone(),
            acknowledged.clone(),
            docs_url.clone(),
        );
        threads.push(std::thread::spawn(move || {
            ingest_until(&stop, &ingests, &acked, &url)
        }));
    }
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(opts.seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let (questions, batches) = stop_server(&mut server)?;

    let stored = verified_bank(&mac, &bank)?;
    let acked = acknowledged.lock().unwrap().clone();
    let lost: Vec<u64> = acked
        .iter()
        .filter(|(id, text)| stored.find_text(text) != Some(*id))
        .map(|(id, _)| *id)
        .collect();
    let expected = SEED_DOCUMENTS + acked.len();
    let report = json!({
        "checkpoint": checkpoint.display().to_string(),
        "seconds": (seconds * 10.0).round() / 10.0,
        "askers": opts.askers,
        "ingesters": 1,
        "asks": asks.lock().unwrap().summary(seconds),
        "ingests": ingests.lock().unwrap().summary(seconds),
        "documents_acknowledged": acked.len(),
        "documents_acknowledged_lost": lost.len(),
        "bank_entries": stored.len(),
        "bank_entries_expected": expected,
        "mean_answer_batch": questions / batches,
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(out) = out {
        std::fs::write(out, &text).with_context(|| format!("{}: cannot write", out.display()))?;
    }
    let errors = report["asks"]["errors"].as_u64().unwrap_or(1)
        + report["ingests"]["errors"].as_u64().unwrap_or(1);
    if errors > 0 || !lost.is_empty() || stored.len() != expected {
        bail!(
            "load test failed: {errors} request errors, {} acknowledged documents lost, {} entries for {expected} expected",
            lost.len(),
            stored.len()
        );
    }
    Ok(())
}

/// Asker `a` of `askers`: the chat completions `request(k)` for its
/// share of `k = a, a + askers, …` until `stop`, each timed or its error kept.
pub(crate) fn ask_until(
    stop: &AtomicBool,
    asks: &Mutex<Samples>,
    url: &str,
    (a, askers): (usize, usize),
    request: &dyn Fn(usize) -> Value,
) {
    let mut k = a;
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let r = post(url, &request(k));
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut s = asks.lock().unwrap();
        match r {
            Ok(v) if v["choices"][0]["message"]["content"].is_string() => s.ok_ms.push(ms),
            Ok(v) => s.errors.push(format!("no answer in {v}")),
            Err(e) => s.errors.push(e),
        }
        k += askers;
    }
}

/// A question about seed document `k % SEED_DOCUMENTS`, and its document.
pub(crate) fn seed_question(k: usize) -> (String, String) {
    let i = k % SEED_DOCUMENTS;
    (format!("Where was Person seed-{i} born?"), fact("seed", i))
}

/// The ingester: two new documents a request until `stop`, each request
/// timed and each acknowledged document kept with its id.
fn ingest_until(
    stop: &AtomicBool,
    ingests: &Mutex<Samples>,
    acknowledged: &Mutex<Vec<(u64, String)>>,
    url: &str,
) {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let texts: Vec<String> = (i..i + 2).map(|j| fact("live", j)).collect();
        i += 2;
        let body = Value::from(
            texts
                .iter()
                .map(|t| json!({"text": t, "source": "load"}))
                .collect::<Vec<_>>(),
        );
        let t0 = Instant::now();
        let r = post(url, &body);
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut s = ingests.lock().unwrap();
        match r {
            Ok(v) => {
                s.ok_ms.push(ms);
                let mut acked = acknowledged.lock().unwrap();
                for (d, t) in v["documents"].as_array().into_iter().flatten().zip(&texts) {
                    match (d["status"].as_str(), d["id"].as_u64()) {
                        (Some("stored"), Some(id)) => acked.push((id, t.clone())),
                        _ => s.errors.push(format!("unexpected outcome {d}")),
                    }
                }
            }
            Err(e) => s.errors.push(e),
        }
    }
}

/// Reads the server's answer counters, then stops it with SIGTERM (it
/// must exit 0): (questions answered, answer batches).
pub(crate) fn stop_server(server: &mut Server) -> Result<(f64, f64)> {
    let metrics = ureq::get(&format!("{}/metrics", server.url))
        .call()?
        .into_string()?;
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(f64::NAN)
    };
    let counts = (
        metric("mac_questions_answered_total "),
        metric("mac_answer_batches_total "),
    );
    let pid = server.child.id().to_string();
    ensure!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()?
            .success(),
        "kill -TERM failed"
    );
    let exit = server.child.wait()?;
    ensure!(exit.success(), "mac serve exited with {exit} after SIGTERM");
    Ok(counts)
}
