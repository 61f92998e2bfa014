//! Peak resident memory of aggregation against bank size N = 100 .. 100k,
//! flat and hierarchical (chunks of 64 documents streamed from an on-disk
//! bank, as `mac ask` does). Each case runs once in this process after the
//! peak counter is reset (`/proc/self/clear_refs`); prints one JSON line per
//! case and writes target/bench-aggregation-rss.json. Not a criterion benchmark:
//! memory, not time, is the quantity.

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use mac_aggregation::AggregatorConfig;
use mac_bank::{BankShape, MemoryBank, NewEntry, Precision};

fn peak_mb() -> f64 {
    mac_eval::peak_rss_mb().unwrap_or(f64::NAN)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let backend = std::env::var("MAC_DEVICE").unwrap_or_else(|_| "flex".into());
    let device = mac_device::select(&backend).expect("device");
    let (n, d) = (12usize, 384usize);
    let agg = AggregatorConfig::new(d)
        .with_n_heads(6)
        .with_d_head(64)
        .init(&device);
    let q = Tensor::<3>::random([1, n, d], Distribution::Normal(0.0, 1.0), &device);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bank = MemoryBank::create(
        dir.path().join("bank"),
        BankShape {
            n_tokens: n,
            d_mod: d,
            key_dim: 0,
            rows_vary: false,
            precision: Precision::F32,
        },
        "bench",
    )
    .expect("bank");
    let mut rows = Vec::new();
    let max_n: usize = std::env::var("MAC_BENCH_MAX_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let mut filled = 0usize;
    for n_docs in [100usize, 1_000, 10_000, 100_000] {
        if n_docs > max_n {
            break;
        }
        // Grow the on-disk bank to n_docs entries.
        let modulation: Vec<f32> = (0..n * d)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) / 48.0)
            .collect();
        let texts: Vec<String> = (filled..n_docs).map(|i| format!("document {i}")).collect();
        for chunk in texts.chunks(1000) {
            let entries: Vec<NewEntry<'_>> = chunk
                .iter()
                .map(|t| NewEntry {
                    source: "bench",
                    text: t,
                    modulation: &modulation,
                    key: &[],
                })
                .collect();
            bank.append_batch(&entries).expect("append");
        }
        filled = n_docs;
        let base = {
            mac_eval::reset_peak_rss();
            peak_mb()
        };
        mac_eval::reset_peak_rss();
        let t0 = Instant::now();
        let memory = mac_runtime::BankMemory {
            bank: &bank,
            device: &device,
        };
        agg.aggregate_hierarchical_streamed(q.clone(), &memory, None, 64)
            .expect("aggregate")
            .modulation
            .into_data();
        let hier_s = t0.elapsed().as_secs_f64();
        let hier_peak = peak_mb() - base;
        // Flat: the whole bank as one tensor (what hierarchical aggregation avoids).
        let flat = if n_docs <= 10_000 || std::env::var_os("MAC_BENCH_FLAT_100K").is_some() {
            mac_eval::reset_peak_rss();
            let t0 = Instant::now();
            let all =
                Tensor::<3>::random([1, n_docs * n, d], Distribution::Normal(0.0, 1.0), &device);
            agg.aggregate(q.clone(), all).modulation.into_data();
            Some((t0.elapsed().as_secs_f64(), peak_mb() - base))
        } else {
            None
        };
        let row = serde_json::json!({
            "n_documents": n_docs,
            "hierarchical_s": hier_s,
            "hierarchical_peak_mb_over_baseline": hier_peak,
            "flat_s": flat.map(|f| f.0),
            "flat_peak_mb_over_baseline": flat.map(|f| f.1),
            "baseline_rss_mb": base,
        });
        println!("{row}");
        rows.push(row);
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(
        std::path::Path::new(&target).join("bench-aggregation-rss.json"),
        serde_json::to_string_pretty(&rows).unwrap_or_default(),
    );
}
