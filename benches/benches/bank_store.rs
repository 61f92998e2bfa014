//! The memory bank's own format against SQLite (WAL, `synchronous=FULL`,
//! the bundled library) for the same work, in one run (the
//! decision by measurement). The entries have the default preset's
//! shape: a modulation of 12 x 384 floats and a 384-float retrieval key.
//!
//! Measured: durable ingest (documents/s; one commit per batch of 8, as
//! `mac ingest` and the server commit, and per single document), streaming
//! every modulation in chunks of 256 (MB/s; each record's checksum checked
//! by the bank, SQLite's page checks by SQLite), and the size on disk.
//! Prints a table and writes target/bench-bank-store.json.
//! `cargo bench --profile dev --workspace --features mac-device/wgpu --bench bank_store`.

use std::path::Path;
use std::time::Instant;

use mac_bank::{BankShape, MemoryBank, NewEntry, Precision};
use rusqlite::{params, Connection};

const N_TOKENS: usize = 12;
const D_MOD: usize = 384;
const KEY_DIM: usize = 384;

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn document(i: usize) -> String {
    format!("Document {i}: a person was born in a town, worked for a company and won a prize.")
}

struct Data {
    modulation: Vec<f32>,
    key: Vec<f32>,
}

/// Seconds to ingest `n` documents in commits of `batch`.
fn ingest_bank(dir: &Path, data: &Data, n: usize, batch: usize) -> f64 {
    let shape = BankShape {
        n_tokens: N_TOKENS,
        d_mod: D_MOD,
        key_dim: KEY_DIM,
        rows_vary: false,
        precision: Precision::F32,
    };
    let mut bank = MemoryBank::create(dir, shape, "bench").unwrap();
    let texts: Vec<String> = (0..n).map(document).collect();
    let t0 = Instant::now();
    for chunk in texts.chunks(batch) {
        let entries: Vec<NewEntry<'_>> = chunk
            .iter()
            .map(|t| NewEntry {
                source: "bench",
                text: t,
                modulation: &data.modulation,
                key: &data.key,
            })
            .collect();
        bank.append_batch(&entries).unwrap();
    }
    t0.elapsed().as_secs_f64()
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn open_sqlite(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "FULL").unwrap();
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS entries (
            id INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, time_ms INTEGER NOT NULL,
            source TEXT NOT NULL, text TEXT NOT NULL, modulation BLOB NOT NULL, key BLOB NOT NULL)",
    )
    .unwrap();
    c
}

/// Seconds to ingest `n` documents into SQLite in transactions of `batch`
/// (deduplicated by content hash, like the bank).
fn ingest_sqlite(path: &Path, data: &Data, n: usize, batch: usize) -> f64 {
    let mut c = open_sqlite(path);
    let (m, k) = (bytes_of(&data.modulation), bytes_of(&data.key));
    let texts: Vec<String> = (0..n).map(document).collect();
    let t0 = Instant::now();
    for chunk in texts.chunks(batch) {
        let tx = c.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO entries (hash, time_ms, source, text, modulation, key)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .unwrap();
            for t in chunk {
                let hash = mac_bank::content_hash(t);
                st.execute(params![&hash[..], 0i64, "bench", t, &m, &k])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    t0.elapsed().as_secs_f64()
}

/// (seconds, bytes of modulation read) to stream every modulation in chunks of 256.
fn stream_bank(dir: &Path) -> (f64, usize) {
    let bank = MemoryBank::open_read_only(dir).unwrap();
    let t0 = Instant::now();
    let mut floats = 0usize;
    for chunk in bank.chunks(256) {
        let chunk = chunk.unwrap();
        floats += chunk.data.len();
        std::hint::black_box(&chunk.keys);
    }
    (t0.elapsed().as_secs_f64(), floats * 4)
}

fn stream_sqlite(path: &Path) -> (f64, usize) {
    let c = open_sqlite(path);
    let t0 = Instant::now();
    let mut floats = 0usize;
    let mut st = c
        .prepare("SELECT modulation, key FROM entries WHERE id > ?1 ORDER BY id LIMIT 256")
        .unwrap();
    let mut last = 0i64;
    loop {
        let mut chunk: Vec<f32> = Vec::new();
        let mut keys: Vec<f32> = Vec::new();
        let mut rows = st.query(params![last]).unwrap();
        let mut n = 0;
        while let Some(row) = rows.next().unwrap() {
            let m: Vec<u8> = row.get(0).unwrap();
            let k: Vec<u8> = row.get(1).unwrap();
            chunk.extend(
                m.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap())),
            );
            keys.extend(
                k.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap())),
            );
            n += 1;
        }
        drop(rows);
        if n == 0 {
            break;
        }
        last += n as i64;
        floats += chunk.len();
        std::hint::black_box(&keys);
    }
    (t0.elapsed().as_secs_f64(), floats * 4)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("MAC_BENCH_BANK_DOCS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let data = Data {
        modulation: (0..N_TOKENS * D_MOD)
            .map(|i| (i % 97) as f32 / 97.0)
            .collect(),
        key: (0..KEY_DIM).map(|i| (i % 13) as f32).collect(),
    };
    let root = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for batch in [8usize, 1] {
        let count = if batch == 1 { n / 8 } else { n };
        let bank_dir = root.path().join(format!("bank-{batch}"));
        let db = root.path().join(format!("bank-{batch}.sqlite"));
        let tb = ingest_bank(&bank_dir, &data, count, batch);
        let ts = ingest_sqlite(&db, &data, count, batch);
        rows.push(serde_json::json!({
            "case": format!("ingest, commits of {batch}"), "documents": count,
            "bank_docs_per_s": count as f64 / tb, "sqlite_docs_per_s": count as f64 / ts,
        }));
        if batch == 8 {
            let _ = stream_bank(&bank_dir); // warm the page cache for both
            let _ = stream_sqlite(&db);
            let (sb, bytes) = stream_bank(&bank_dir);
            let (ss, bytes_s) = stream_sqlite(&db);
            assert_eq!(bytes, bytes_s);
            rows.push(serde_json::json!({
                "case": "stream every modulation, chunks of 256", "documents": count,
                "bank_mb_per_s": bytes as f64 / sb / 1e6, "sqlite_mb_per_s": bytes as f64 / ss / 1e6,
            }));
            let c = open_sqlite(&db);
            c.pragma_update(None, "wal_checkpoint", "TRUNCATE").unwrap();
            drop(c);
            let sqlite_bytes: u64 = std::fs::read_dir(root.path())
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.file_name().to_string_lossy().starts_with("bank-8.sqlite"))
                .map(|e| e.metadata().unwrap().len())
                .sum();
            rows.push(serde_json::json!({
                "case": "size on disk", "documents": count,
                "bank_bytes": dir_size(&bank_dir), "sqlite_bytes": sqlite_bytes,
            }));
        }
    }
    for r in &rows {
        println!("{r}");
    }
    let out = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("target"))
        .join("bench-bank-store.json");
    std::fs::write(&out, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
    println!("wrote {}", out.display());
}
