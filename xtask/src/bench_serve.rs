//! `cargo xtask bench serve`: `mac serve` beside llama.cpp's own
//! OpenAI-compatible server (`llama_cpp.server`, from the llama-cpp-python
//! that `bench lm`'s reference builds) on the same GGUF file, one after the
//! other on the same cores: the same askers for the same time, asking the
//! same short questions about the same documents. `mac serve` answers from
//! its memory (the documents ingested first); llama.cpp reads each
//! question's document in its prompt (what a retriever would hand it).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::load::{self, ask_until, seed_question, LoadOptions, Samples, Server};
use crate::{bench, target_dir};

/// Most tokens an answer may take, on both sides.
const ANSWER_TOKENS: usize = 16;

pub(crate) fn bench_serve(args: &LoadOptions) -> Result<()> {
    let seeded = load::seeded_server(args)?;
    let mut server = seeded.server;
    let ours = load_of(&server.url, args, |k| {
        let (q, _) = seed_question(k);
        json!({"model": "mac", "messages": [{"role": "user", "content": q}],
               "max_tokens": ANSWER_TOKENS})
    })?;
    let (questions, batches) = load::stop_server(&mut server)?;
    drop(server);

    let llama = start_llama(&bench::llama_python_with_server()?)?;
    let theirs = load_of(&llama.url, args, |k| {
        let (q, doc) = seed_question(k);
        json!({"model": "llama", "temperature": 0.0, "max_tokens": ANSWER_TOKENS,
               "messages": [{"role": "user", "content": format!("{doc}\n\nAnswer briefly. {q}")}]})
    })?;
    drop(llama);
    report(args, &seeded.checkpoint, ours, theirs, questions / batches)
}

/// `args.askers` askers of `request(k)` at `url` for `args.seconds`.
fn load_of(
    url: &str,
    args: &LoadOptions,
    request: impl Fn(usize) -> Value + Send + Sync + Copy + 'static,
) -> Result<Value> {
    let chat = format!("{url}/v1/chat/completions");
    let stop = Arc::new(AtomicBool::new(false));
    let asks = Arc::new(Mutex::new(Samples::default()));
    let threads: Vec<_> = (0..args.askers)
        .map(|a| {
            let (stop, asks, chat, askers) =
                (stop.clone(), asks.clone(), chat.clone(), args.askers);
            std::thread::spawn(move || ask_until(&stop, &asks, &chat, (a, askers), &request))
        })
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(args.seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("an asker thread panicked"))?;
    }
    let summary = asks.lock().unwrap().summary(t0.elapsed().as_secs_f64());
    Ok(summary)
}

/// `llama_cpp.server` on the fetched GGUF file, on a free localhost port,
/// as many threads as cores, once it answers.
fn start_llama(py: &Path) -> Result<Server> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .to_string();
    let child = Command::new(py)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(mac_assets::default_lm_path())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--n_threads", &threads, "--n_threads_batch", &threads])
        .args(["--n_ctx", "2048"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting llama_cpp.server")?;
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while ureq::get(&format!("{}/v1/models", server.url))
        .call()
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("llama_cpp.server did not answer within 120 s");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(server)
}

/// Prints the table and writes target/bench-serve.json.
fn report(
    args: &LoadOptions,
    checkpoint: &Path,
    ours: Value,
    theirs: Value,
    mean_batch: f64,
) -> Result<()> {
    let row = |name: &str, v: &Value| {
        format!(
            "| {name} | {} | {:.2} | {} | {} | {} |",
            v["requests"],
            v["per_second"].as_f64().unwrap_or(f64::NAN),
            v["p50_ms"],
            v["p95_ms"],
            v["errors"]
        )
    };
    println!(
        "\n{} askers, {} s each, answers of at most {ANSWER_TOKENS} tokens\n",
        args.askers, args.seconds
    );
    println!(
        "| server | requests | per second | p50 ms | p95 ms | errors |\n|---|---|---|---|---|---|"
    );
    println!("{}", row("mac serve (memory)", &ours));
    println!(
        "{}",
        row("llama.cpp server (document in the prompt)", &theirs)
    );
    let json = json!({
        "checkpoint": checkpoint.display().to_string(),
        "askers": args.askers,
        "seconds": args.seconds,
        "cpu": bench::cpu_model(),
        "mac_serve": ours,
        "mac_serve_mean_answer_batch": mean_batch,
        "llama_cpp_server": theirs,
    });
    let path = target_dir().join("bench-serve.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("written {}", path.display());
    let errors = ours["errors"].as_u64().unwrap_or(1) + theirs["errors"].as_u64().unwrap_or(1);
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}
