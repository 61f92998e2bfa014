//! Meta-training on the real SmolLM2 + MiniLM with the `tiny` preset: the QA
//! loss on a fixed batch drops, and a resumed run continues exactly.

use mac_data::FactStreamConfig;
use mac_train::{DataSource, TrainConfig, Trainer};

fn device() -> burn::tensor::Device {
    mac_device::select("flex").unwrap()
}

fn models_present() -> bool {
    mac_assets::fetched_or_skip(&mac_assets::default_lm_path())
        && mac_assets::fetched_or_skip(&mac_assets::default_encoder_dir())
}

/// Four one-fact documents: every step's batch is the same fixed batch.
fn fixed_batch_config() -> TrainConfig {
    let mut cfg = TrainConfig::preset("tiny").unwrap();
    cfg.data = DataSource::FactStream(FactStreamConfig {
        seed: 11,
        n_train: 4,
        n_validation: 2,
        n_test: 2,
        facts_per_document: 1,
    });
    cfg.batch_documents = 4;
    cfg
}

#[test]
fn smoke_training_lowers_the_loss_on_a_fixed_batch() {
    if !models_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fixed_batch_config();
    cfg.steps = 15;
    let mut t = Trainer::new(cfg, dir.path(), &device()).unwrap();
    let before = t.batch_loss(0, 0).unwrap().into_scalar::<f64>();
    let mut losses = Vec::new();
    for _ in 0..15 {
        losses.push(t.train_step().unwrap().loss);
    }
    let after = t.batch_loss(0, 0).unwrap().into_scalar::<f64>();
    eprintln!("fixed-batch loss {before:.3} -> {after:.3}; steps {losses:?}");
    assert!(
        (losses[0] - before).abs() < 1e-3 * before.max(1.0),
        "the first step sees the fixed batch"
    );
    assert!(after < 0.6 * before, "loss {before:.3} -> {after:.3}");
}

#[test]
fn resume_gives_the_same_next_loss_as_an_uninterrupted_run() {
    if !models_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig::preset("tiny").unwrap();
    cfg.steps = 6;
    cfg.backprop_keep = 0.5; // exercise backprop dropout too
    let device = device();
    let mut a = Trainer::new(cfg, dir.path(), &device).unwrap();
    let s = a.run(false, Some(3)).unwrap();
    assert_eq!(s.steps, 3);
    assert!(dir.path().join("checkpoints/last/model.bpk").is_file());
    assert!(dir.path().join("checkpoints/last/optimizer.bpk").is_file());
    let next_a = a.train_step().unwrap();

    let mut b = Trainer::resume(dir.path(), &device).unwrap();
    assert_eq!(b.step(), 3);
    let next_b = b.train_step().unwrap();
    eprintln!(
        "step 4: uninterrupted {:.6}, resumed {:.6}",
        next_a.loss, next_b.loss
    );
    assert_eq!(next_a.step, next_b.step);
    assert!(
        (next_a.loss - next_b.loss).abs() <= 1e-5 * next_a.loss.abs().max(1.0),
        "uninterrupted {} vs resumed {}",
        next_a.loss,
        next_b.loss
    );
    // And the step after that too (the optimizer state was restored, not reset).
    let a5 = a.train_step().unwrap().loss;
    let b5 = b.train_step().unwrap().loss;
    assert!((a5 - b5).abs() <= 1e-5 * a5.abs().max(1.0), "{a5} vs {b5}");
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().count() >= 3);
}

#[test]
fn presets_and_config_errors() {
    assert!(TrainConfig::preset("nope")
        .unwrap_err()
        .contains("unknown preset"));
    let d = TrainConfig::preset("default").unwrap();
    assert!(d.lr_at(0) < d.learning_rate && (d.lr_at(d.steps - 1) - d.learning_rate).abs() < 1e-12);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.json");
    std::fs::write(&p, "{\"preset\": 3}").unwrap();
    let e = TrainConfig::from_file(&p).unwrap_err().to_string();
    assert!(e.contains("c.json"), "{e}");
    // A preset survives a round trip through its file form.
    std::fs::write(&p, serde_json::to_string(&d).unwrap()).unwrap();
    assert_eq!(TrainConfig::from_file(&p).unwrap(), d);
}
