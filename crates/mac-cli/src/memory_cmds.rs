//! `mac ingest`, `mac ask`, `mac bank info|verify`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mac_memory::{AppendOutcome, BankShape, MemoryBank, NewEntry};
use mac_model::{BankReading, Checkpoint, MacRuntime};
use serde::Serialize;

use crate::display::terminal_safe;
use crate::{resolve_checkpoint, InputError};

/// A document read from the inputs.
struct InputDoc {
    source: String,
    text: String,
}

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
    docs: &mut Vec<InputDoc>,
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
                    Some(t) if !t.trim().is_empty() => docs.push(InputDoc { source, text: t }),
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
            Ok(t) => docs.push(InputDoc {
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

/// Identifies the model that produced a bank's modulations.
fn producer(ckpt: &Checkpoint) -> String {
    let dir = ckpt.dir.canonicalize().unwrap_or_else(|_| ckpt.dir.clone());
    format!("mac-checkpoint {} step {}", dir.display(), ckpt.meta.step)
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
}

/// `mac ingest`.
pub fn ingest(
    bank_dir: &Path,
    checkpoint: &Path,
    inputs: &[PathBuf],
    device: &mac_device::Device,
    json: bool,
) -> Result<()> {
    let ckpt_dir = resolve_checkpoint(checkpoint)?;
    let ckpt = Checkpoint::open(&ckpt_dir).map_err(|e| InputError(e.to_string()))?;
    let mut docs = Vec::new();
    let mut skipped = Vec::new();
    collect_inputs(inputs, &mut docs, &mut skipped)?;
    let rt = MacRuntime::from_checkpoint(&ckpt_dir, None, None, device)?;
    let (n_tokens, d_mod) = ckpt.meta.config.memory_shape();
    let shape = BankShape {
        n_tokens,
        d_mod,
        key_dim: rt.key_dim(),
    };
    let producer = producer(&ckpt);
    let mut bank = MemoryBank::open_or_create(bank_dir, shape, &producer)
        .map_err(|e| InputError(e.to_string()))?;
    if bank.producer() != producer {
        return Err(InputError(format!(
            "{}: the bank was built by `{}`, not by {} — its modulations would not match; use a new --bank",
            bank_dir.display(),
            bank.producer(),
            ckpt_dir.display()
        ))
        .into());
    }
    let with_keys = bank.shape().key_dim > 0;
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
    let (mut stored, mut duplicates, mut truncated) = (0, 0, Vec::new());
    for chunk in docs.chunks(8) {
        let texts: Vec<&str> = chunk.iter().map(|d| d.text.as_str()).collect();
        let am = rt.amortize(&texts)?;
        for (d, &t) in chunk.iter().zip(&am.truncated) {
            if t > 0 {
                truncated.push(format!("{} ({t} tokens cut)", d.source));
            }
        }
        let entries: Vec<NewEntry<'_>> = chunk
            .iter()
            .zip(am.modulations.iter().zip(&am.keys))
            .map(|(d, (m, k))| NewEntry {
                source: &d.source,
                text: &d.text,
                modulation: m,
                key: if with_keys { k } else { &[] },
            })
            .collect();
        for outcome in bank.append_batch(&entries)? {
            match outcome {
                AppendOutcome::Stored(_) => stored += 1,
                AppendOutcome::Duplicate(_) => duplicates += 1,
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let summary = IngestSummary {
        stored,
        duplicates,
        skipped,
        truncated,
        bank_entries: bank.len(),
        docs_per_second: docs.len() as f64 / secs.max(1e-9),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "stored {} new documents ({} duplicates skipped) in {:.1}s, {:.1} docs/s; the bank holds {}",
            summary.stored, summary.duplicates, secs, summary.docs_per_second, summary.bank_entries
        );
        for s in &summary.skipped {
            println!(
                "skipped {}: {}",
                terminal_safe(&s.source),
                terminal_safe(&s.reason)
            );
        }
        for t in &summary.truncated {
            println!(
                "warning: truncated at the encoder's {} tokens: {}",
                rt.config.max_document_tokens,
                terminal_safe(t)
            );
        }
    }
    Ok(())
}

/// One document the answer drew on.
#[derive(Debug, Serialize)]
pub struct Attended {
    /// Bank entry id.
    pub id: u64,
    /// Its source.
    pub source: String,
    /// Share of the aggregator's attention.
    pub weight: f32,
    /// The start of its text.
    pub snippet: String,
}

/// How `mac ask` aggregates and what it shows.
pub struct AskOptions {
    /// Attended documents shown.
    pub top: usize,
    /// Documents read and attended at a time.
    pub chunk: usize,
    /// The paper's hierarchical approximation instead of exact aggregation.
    pub hierarchical: bool,
    /// Scale of the similarity prior (0 = off; `None` = the evaluation's
    /// default scale when the bank holds retrieval keys, off otherwise).
    pub similarity_prior: Option<f64>,
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
    let rt = MacRuntime::from_checkpoint(&ckpt_dir, None, None, device)?;
    let prior = match opts.similarity_prior {
        Some(scale) => (scale > 0.0).then_some(scale),
        None => (bank.shape().key_dim > 0).then_some(mac_eval::DEFAULT_PRIOR_SCALE),
    };
    let t0 = Instant::now();
    let answer = rt
        .answer_from_bank(
            &[question],
            &bank,
            &BankReading {
                chunk: opts.chunk,
                hierarchical: opts.hierarchical,
                prior_scale: prior,
            },
        )
        .map_err(|e| InputError(e.to_string()))?
        .remove(0);
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let mut order: Vec<usize> = (0..answer.doc_weights.len()).collect();
    order.sort_by(|&a, &b| answer.doc_weights[b].total_cmp(&answer.doc_weights[a]));
    let mut attended = Vec::new();
    for &i in order.iter().take(opts.top) {
        let e = bank.read(i)?;
        let snippet: String = e.text.chars().take(100).collect();
        attended.push(Attended {
            id: e.id,
            source: e.source,
            weight: answer.doc_weights[i],
            snippet,
        });
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "question": question,
                "answer": answer.text,
                "documents": attended,
                "bank_entries": bank.len(),
                "latency_ms": ms,
            }))?
        );
    } else {
        println!("{}", terminal_safe(&answer.text));
        println!("\ndocuments attended ({} in the bank):", bank.len());
        for a in &attended {
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
    let bank = MemoryBank::open_read_only(bank_dir).map_err(|e| InputError(e.to_string()))?;
    let r = bank.verify().map_err(|e| InputError(e.to_string()))?;
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": true, "entries": r.entries, "segments": r.segments, "bytes": r.bytes})
        );
    } else {
        println!(
            "ok: {} entries in {} segments, {} bytes verified",
            r.entries, r.segments, r.bytes
        );
    }
    Ok(())
}
