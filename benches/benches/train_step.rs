//! One meta-training step of the default preset on the CPU: 8 fact
//! documents amortized by MiniLM (top 2 layers trainable) with the LM-token
//! channel (the frozen LM's first 12 layers over each document), 24
//! questions (3 per document), each aggregated over its own document (the
//! preset's own-document mode), prefix expansion, SmolLM2-135M answer NLL
//! plus the auxiliary answer-token loss, backward, Adam. `cargo xtask bench
//! train` runs it beside the PyTorch reference
//! (benches/reference/train_step.py) on the same shapes.

use criterion::{criterion_group, criterion_main, Criterion};
use mac_train::{TrainConfig, Trainer};

fn bench(c: &mut Criterion) {
    if !mac_assets::default_lm_path().exists() || !mac_assets::default_encoder_dir().exists() {
        eprintln!("models missing: run `cargo xtask fetch`");
        return;
    }
    let device = mac_benches::bench_device();
    let run = tempfile::tempdir().expect("tempdir");
    let cfg = TrainConfig::preset("default").expect("preset");
    let mut trainer = Trainer::new(cfg, run.path(), &device).expect("trainer");
    let mut g = c.benchmark_group("train");
    g.sample_size(10);
    g.bench_function("default_step", |b| {
        b.iter(|| trainer.train_step().expect("step").loss)
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
