//! `mac ingest`, `mac ask`, `mac bank info|verify|repair`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mac_bank::{AppendOutcome, MemoryBank, Precision};
use mac_runtime::{load_memory, AskOptions, KvStore, NewDocument};
use serde::Serialize;

use crate::display::terminal_safe;
use crate::{resolve_checkpoint, InputError};

/// Why an input was not stored.
#[derive(Debug, Serialize)]
pub struct Skipped {
    /// File (and line) of the input.
    pub source: String,
    /// Why.
    pub reason: String,
}

fn collect_inputs(
    inputs: &[PathBuf],
    docs: &mut Vec<NewDocument>,
    skipped: &mut Vec<Skipped>,
) -> Result<()> {
    for input in inputs {
        if input.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("{}: cannot list", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let files: Vec<PathBuf> = entries
                .into_iter()
                .filter(|p| {
                    p.is_dir()
                        || matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("txt" | "md" | "jsonl")
                        )
                })
                .collect();
            collect_inputs(&files, docs, skipped)?;
            continue;
        }
        let bytes = std::fs::read(input)
            .map_err(|e| InputError(format!("{}: cannot read: {e}", input.display())))?;
        let name = input.display().to_string();
        if input.extension().and_then(|e| e.to_str()) == Some("jsonl") {
            for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
                let source = format!("{name}:{}", i + 1);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let Ok(line) = std::str::from_utf8(line) else {
                    skipped.push(Skipped {
                        source,
                        reason: "not valid UTF-8".into(),
                    });
                    continue;
                };
                let text = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| {
                        v.get("document")
                            .or_else(|| v.get("text"))
                            .and_then(|t| t.as_str().map(str::to_string))
                    });
                match text {
                    Some(t) if !t.trim().is_empty() => docs.push(NewDocument { source, text: t }),
                    Some(_) => skipped.push(Skipped {
                        source,
                        reason: "empty document".into(),
                    }),
                    None => skipped.push(Skipped {
                        source,
                        reason: "not a JSON object with a `document` (or `text`) string".into(),
                    }),
                }
            }
            continue;
        }
        match String::from_utf8(bytes) {
            Ok(t) if t.trim().is_empty() => skipped.push(Skipped {
                source: name,
                reason: "empty document".into(),
            }),
            Ok(t) => docs.push(NewDocument {
                source: name,
                text: t,
            }),
            Err(e) => skipped.push(Skipped {
                source: name,
                reason: format!(
                    "not valid UTF-8 (first bad byte at offset {}); convert it to UTF-8 first",
                    e.utf8_error().valid_up_to()
                ),
            }),
        }
    }
    Ok(())
}

/// A bank's key/value store, summed up.
#[derive(Debug, Serialize)]
pub struct KvStoreSummary {
    /// Documents whose key/values it holds.
    pub documents: usize,
    /// How its values are stored (`f32`, `f16`).
    pub precision: &'static str,
    /// Its bytes on disk.
    pub bytes: u64,
    /// Bytes a document, on average.
    pub bytes_per_document: f64,
}

impl KvStoreSummary {
    fn of(store: &MemoryBank) -> Self {
        Self {
            documents: store.len(),
            precision: store.shape().precision.name(),
            bytes: store.size_bytes(),
            bytes_per_document: store.size_bytes() as f64 / store.len().max(1) as f64,
        }
    }
}

/// Summary of an ingest.
#[derive(Debug, Serialize)]
pub struct IngestSummary {
    /// New documents stored.
    pub stored: usize,
    /// Documents already in the bank (same content hash).
    pub duplicates: usize,
    /// Inputs not stored and why.
    pub skipped: Vec<Skipped>,
    /// Documents cut at the encoder's token limit (stored truncated).
    pub truncated: Vec<String>,
    /// Entries in the bank now.
    pub bank_entries: usize,
    /// Documents per second (encoding + durable append).
    pub docs_per_second: f64,
    /// The bank's key/value store, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_store: Option<KvStoreSummary>,
}

/// `mac ingest`.
pub fn ingest(
    bank_dir: &Path,
    checkpoint: &Path,
    inputs: &[PathBuf],
    store_kv: Option<Precision>,
    device: &mac_device::Device,
    json: bool,
) -> Result<()> {
    let ckpt_dir = resolve_checkpoint(checkpoint)?;
    let mut docs = Vec::new();
    let mut skipped = Vec::new();
    collect_inputs(inputs, &mut docs, &mut skipped)?;
    let memory = load_memory(&ckpt_dir, device)?;
    let mut bank = memory
        .open_bank_writer(bank_dir)
        .map_err(|e| InputError(e.to_string()))?;
    if let Some(precision) = store_kv {
        let report = memory.store_key_values(&bank, precision, &mut |_| {})?;
        if report.added > 0 && !json {
            println!(
                "read the key/values of {} documents already in the bank into its store",
                report.added
            );
        }
    }
    let bar = if json {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(docs.len() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "ingest [{bar:30}] {pos}/{len} docs  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let t0 = Instant::now();
    let done = memory.ingest(&mut bank, &docs, &mut |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let kv_store = match KvStore::exists(bank_dir) {
        true => Some(KvStoreSummary::of(&MemoryBank::open_read_only(
            KvStore::dir(bank_dir),
        )?)),
        false => None,
    };
    let mut summary = IngestSummary {
        stored: 0,
        duplicates: 0,
        skipped,
        truncated: Vec::new(),
        bank_entries: bank.len(),
        docs_per_second: docs.len() as f64 / secs.max(1e-9),
        kv_store,
    };
    for (doc, ingested) in docs.iter().zip(&done) {
        match ingested.outcome {
            AppendOutcome::Stored(_) => summary.stored += 1,
            AppendOutcome::Duplicate(_) => summary.duplicates += 1,
        }
        if ingested.truncated_tokens > 0 {
            summary.truncated.push(format!(
                "{} ({} tokens cut)",
                doc.source, ingested.truncated_tokens
            ));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_ingested(&summary, secs, memory.document_token_limit());
    }
    Ok(())
}

/// What `mac ingest` did, for a person: counts, the key/value store, the
/// inputs skipped and the documents cut at `token_limit` tokens.
fn print_ingested(summary: &IngestSummary, secs: f64, token_limit: usize) {
    println!(
        "stored {} new documents ({} duplicates skipped) in {:.1}s, {:.1} docs/s; the bank holds {}",
        summary.stored, summary.duplicates, secs, summary.docs_per_second, summary.bank_entries
    );
    if let Some(kv) = &summary.kv_store {
        println!(
            "key/values stored for {} documents in {}: {:.1} MB, {:.0} KB a document",
            kv.documents,
            kv.precision,
            kv.bytes as f64 / 1e6,
            kv.bytes_per_document / 1e3
        );
    }
    for s in &summary.skipped {
        println!(
            "skipped {}: {}",
            terminal_safe(&s.source),
            terminal_safe(&s.reason)
        );
    }
    for t in &summary.truncated {
        println!(
            "warning: truncated at the {} tokens the memory reads: {}",
            token_limit,
            terminal_safe(t)
        );
    }
}

/// `mac ask`.
pub fn ask(
    bank_dir: &Path,
    checkpoint: &Path,
    question: &str,
    opts: &AskOptions,
    device: &mac_device::Device,
    json: bool,
) -> Result<()> {
    if question.trim().is_empty() {
        return Err(InputError("the question is empty".into()).into());
    }
    let ckpt_dir = resolve_checkpoint(checkpoint)?;
    let bank = MemoryBank::open_read_only(bank_dir).map_err(|e| InputError(e.to_string()))?;
    let memory = load_memory(&ckpt_dir, device)?;
    let t0 = Instant::now();
    let answer = memory
        .ask(&bank, &[question], opts)
        .map_err(|e| InputError(e.to_string()))?
        .remove(0);
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "question": question,
                "answer": answer.text,
                "documents": answer.documents,
                "span": answer.span,
                "memory": memory.name(),
                "bank_entries": answer.bank_entries,
                "latency_ms": ms,
                "timings": answer.timings,
            }))?
        );
    } else {
        println!("{}", terminal_safe(&answer.text));
        if let Some(span) = &answer.span {
            println!(
                "\nread from #{} tokens {}..={}: {}",
                span.id,
                span.tokens[0],
                span.tokens[1],
                terminal_safe(&span.text)
            );
        }
        println!(
            "\ndocuments attended ({} in the bank; bank read in {:.0} ms, answer in {:.0} ms):",
            answer.bank_entries, answer.timings.read_bank_ms, answer.timings.generate_ms
        );
        for a in &answer.documents {
            println!(
                "  {:5.1}%  #{} {}  {}",
                100.0 * a.weight,
                a.id,
                terminal_safe(&a.source),
                terminal_safe(&a.snippet)
            );
        }
    }
    Ok(())
}

/// `mac serve`.
pub fn serve(
    bank_dir: &Path,
    checkpoint: &Path,
    addr: std::net::SocketAddr,
    opts: mac_serve::ServeOptions,
    device: &mac_device::Device,
) -> Result<()> {
    if opts.max_batch == 0 || opts.ask.chunk == 0 {
        return Err(InputError("--max-batch and --chunk must be at least 1".into()).into());
    }
    let ckpt_dir = resolve_checkpoint(checkpoint)?;
    let memory = load_memory(&ckpt_dir, device)?;
    let name = memory.name();
    let read_only = opts.read_only;
    let server = mac_serve::Server::start(memory, bank_dir, opts).map_err(|e| match e {
        mac_serve::ServeError::Bank(e) => anyhow::Error::from(InputError(e.to_string())),
        other => other.into(),
    })?;
    let entries = server.bank_entries();
    server.run_until_signal(addr, |bound| {
        use std::io::Write;
        println!(
            "mac serve: listening on http://{bound} ({name}, bank {}, {entries} documents{})",
            bank_dir.display(),
            if read_only { ", read-only" } else { "" }
        );
        let _ = std::io::stdout().flush();
    })?;
    eprintln!("mac serve: stopped");
    Ok(())
}

/// `mac bank info`.
pub fn info(bank_dir: &Path, json: bool) -> Result<()> {
    let bank = MemoryBank::open_read_only(bank_dir).map_err(|e| InputError(e.to_string()))?;
    let shape = bank.shape();
    let v = serde_json::json!({
        "bank": bank_dir.display().to_string(),
        "entries": bank.len(),
        "n_tokens": shape.n_tokens,
        "d_mod": shape.d_mod,
        "bytes": bank.size_bytes(),
        "producer": bank.producer(),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("bank      {}", bank_dir.display());
        println!("entries   {}", bank.len());
        println!(
            "shape     [{}, {}] per document",
            shape.n_tokens, shape.d_mod
        );
        println!("size      {} bytes", bank.size_bytes());
        println!("producer  {}", terminal_safe(bank.producer()));
    }
    Ok(())
}

/// `mac bank verify`: every record's checksum; exit code 3 on corruption.
pub fn verify(bank_dir: &Path, json: bool) -> Result<()> {
    let check = |dir: &Path| {
        MemoryBank::open_read_only(dir)
            .and_then(|b| b.verify())
            .map_err(|e| InputError(e.to_string()))
    };
    let r = check(bank_dir)?;
    // The key/value store beside it, a bank of its own, when there is one.
    let kv = match KvStore::exists(bank_dir) {
        true => Some(check(&KvStore::dir(bank_dir))?),
        false => None,
    };
    let kv_json = kv.as_ref().map(
        |k| serde_json::json!({"entries": k.entries, "segments": k.segments, "bytes": k.bytes}),
    );
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": true, "entries": r.entries, "segments": r.segments, "bytes": r.bytes, "kv_store": kv_json})
        );
    } else {
        println!(
            "ok: {} entries in {} segments, {} bytes verified",
            r.entries, r.segments, r.bytes
        );
        if let Some(k) = kv {
            println!(
                "ok: the key/value store's {} entries in {} segments, {} bytes verified",
                k.entries, k.segments, k.bytes
            );
        }
    }
    Ok(())
}

/// `mac bank repair`: every intact committed entry of a damaged bank copied
/// into a new bank; what was left behind is listed.
pub fn repair(bank_dir: &Path, out: &Path, json: bool) -> Result<()> {
    let report = mac_bank::repair(bank_dir, out).map_err(|e| InputError(e.to_string()))?;
    // The key/value store is repaired beside it; it may be lost whole (an
    // answer recomputes what the store lacks).
    let kv = KvStore::dir(bank_dir).is_dir().then(|| {
        mac_bank::repair(&KvStore::dir(bank_dir), &KvStore::dir(out))
            .map(|r| r.copied.len())
            .map_err(|e| e.to_string())
    });
    if json {
        let dropped: Vec<serde_json::Value> = report
            .dropped
            .iter()
            .map(|d| serde_json::json!({"file": d.file, "offset": d.offset, "bytes": d.bytes, "reason": d.reason}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "copied": report.copied.len(),
                "ids": report.copied,
                "dropped": dropped,
                "manifest_used": report.manifest_used,
                "kv_store": kv.as_ref().map(|k| match k {
                    Ok(copied) => serde_json::json!({"copied": copied}),
                    Err(e) => serde_json::json!({"lost": e}),
                }),
                "out": out,
            })
        );
    } else {
        println!(
            "copied {} entries into {}{}",
            report.copied.len(),
            out.display(),
            if report.manifest_used {
                ""
            } else {
                " (the MANIFEST was unusable: shape taken from the records)"
            }
        );
        match &kv {
            Some(Ok(copied)) => println!("copied {copied} entries of the key/value store"),
            Some(Err(e)) => println!(
                "the key/value store was not copied (answers recompute it): {}",
                terminal_safe(e)
            ),
            None => {}
        }
        for d in &report.dropped {
            println!(
                "dropped {} bytes at {}:{}: {}",
                d.bytes,
                d.file,
                d.offset,
                terminal_safe(&d.reason)
            );
        }
    }
    Ok(())
}
