//! MAC's own costs on the CPU (default `MacConfig`: 12 tokens x 384 over
//! all-MiniLM-L6-v2; aggregator 4 blocks x 6 heads x 64):
//!
//! * `ingest/encode_8_docs_256`: the amortization encoder on 8 documents of
//!   256 tokens (documents/s = 8 / time);
//! * `aggregate/{flat,hier}_N`: one question over a bank of N documents,
//!   flat (all N·n tokens at once) and hierarchical (chunks of 64).
//!
//! `cargo xtask bench mac` runs this, the PyTorch reference on the same
//! shapes (benches/reference/mac_speed.py) and the peak-memory table
//! (benches/benches/aggregation_rss.rs).

use burn::tensor::{Distribution, Tensor, TensorData};
use criterion::{criterion_group, criterion_main, Criterion};
use mac_lm::KvLayout;
use mac_model::{MacConfig, MacModel};

/// SmolLM2-135M's KV layout (the expansion is not benchmarked here).
const LAYOUT: KvLayout = KvLayout {
    n_layers: 30,
    n_kv_heads: 3,
    head_dim: 64,
};

fn bench(c: &mut Criterion) {
    let enc = mac_assets::default_encoder_dir();
    if !enc.exists() {
        eprintln!("{} missing: run `cargo xtask fetch`", enc.display());
        return;
    }
    let device = mac_benches::bench_device();
    let cfg = MacConfig::default();
    let model = MacModel::init(&cfg, &enc, LAYOUT, &device).expect("model");
    let (n, d) = (cfg.n_tokens, cfg.d_mod);

    let mut g = c.benchmark_group("ingest");
    g.sample_size(10);
    let (b, t) = (8usize, 256usize);
    // Token ids of real vocabulary words (ids 2000..), all valid.
    let ids: Vec<i64> = (0..b * t)
        .map(|i| 2000 + (i as i64 * 7919) % 20000)
        .collect();
    let ids = Tensor::<2, burn::tensor::Int>::from_data(TensorData::new(ids, [b, t]), &device);
    let valid = Tensor::<2, burn::tensor::Bool>::from_data(
        TensorData::new(vec![true; b * t], [b, t]),
        &device,
    );
    g.bench_function("encode_8_docs_256", |bench| {
        bench.iter(|| {
            model
                .amortizer()
                .expect("the paper's path")
                .forward(ids.clone(), valid.clone(), None)
                .into_data()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("aggregate");
    g.sample_size(10);
    let q = Tensor::<3>::random([1, n, d], Distribution::Normal(0.0, 1.0), &device);
    for n_docs in [100usize, 200, 1000, 10000] {
        let docs = Tensor::<4>::random([1, n_docs, n, d], Distribution::Normal(0.0, 1.0), &device);
        g.bench_function(format!("flat_{n_docs}"), |bench| {
            bench.iter(|| {
                model
                    .aggregator()
                    .expect("the paper's path")
                    .aggregate(q.clone(), docs.clone().reshape([1, n_docs * n, d]))
                    .modulation
                    .into_data()
            })
        });
        g.bench_function(format!("hier_{n_docs}"), |bench| {
            bench.iter(|| {
                model
                    .aggregator()
                    .expect("the paper's path")
                    .aggregate_hierarchical(q.clone(), docs.clone(), None, 64)
                    .modulation
                    .into_data()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
