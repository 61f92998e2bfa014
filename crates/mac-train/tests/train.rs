//! Meta-training on the real SmolLM2 + MiniLM with the `tiny` preset: the QA
//! loss on a fixed batch drops, and a resumed run continues exactly.
//! (Over 500 lines: the tests share one set-up of the real models and
//! run directories.)

use mac_data::{FactStreamConfig, ValueVocabulary};
use mac_train::{CutShort, DataSource, SelectionConfig, TrainConfig, Trainer};

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
        values: ValueVocabulary::Closed,
        filler_sentences: 0,
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
    // Well inside the stable region on any CPU's kernels: a prefix that
    // starts at zero (the LM starts as itself), a short warm-up and a
    // learning rate a third of the tiny preset's. (With the preset's
    // random prefix and 3e-3 the loss swung from 3.5 to 5.2 and back, and
    // where it ended after 15 steps depended on the CPU.)
    let steps = 20;
    cfg.steps = steps;
    cfg.learning_rate = 1e-3;
    cfg.warmup_fraction = 0.1;
    cfg.model.zero_init_prefix = true;
    let mut t = Trainer::new(cfg, dir.path(), &device()).unwrap();
    let before = t.batch_loss(0, 0).unwrap().into_scalar::<f64>();
    let mut losses = Vec::new();
    for _ in 0..steps {
        losses.push(t.train_step().unwrap().loss);
    }
    let after = t.batch_loss(0, 0).unwrap().into_scalar::<f64>();
    eprintln!("fixed-batch loss {before:.3} -> {after:.3}; steps {losses:?}");
    assert!(
        (losses[0] - before).abs() < 1e-3 * before.max(1.0),
        "the first step sees the fixed batch"
    );
    // Measured: 3.345 -> 1.895, never above the first loss, on a Xeon
    // with AVX-512; 3.345 -> 2.061 with one step at 3.722 (1.11x) on an
    // AMD EPYC with AVX2. Diverging runs swung to 1.5x and more.
    assert!(after < 0.75 * before, "loss {before:.3} -> {after:.3}");
    let worst = losses.iter().copied().fold(f64::MIN, f64::max);
    assert!(
        worst < 1.3 * before,
        "unstable: a step's loss reached {worst:.3} from {before:.3}"
    );
}

#[test]
fn a_run_cut_short_by_its_time_budget_says_so() {
    if !models_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig::preset("tiny").unwrap();
    cfg.steps = 4;
    cfg.max_minutes = Some(0.0);
    let mut t = Trainer::new(cfg, dir.path(), &device()).unwrap();
    let s = t.run(false, None).unwrap();
    assert_eq!((s.steps, s.planned_steps), (0, 4));
    assert_eq!(s.cut_short, Some(CutShort::TimeBudget { minutes: 0.0 }));
    assert!(
        s.completion().starts_with("CUT SHORT") && s.completion().contains("0 of 4"),
        "{}",
        s.completion()
    );
    // Resumed without a budget, it finishes and says so.
    let mut t = Trainer::resume(dir.path(), &device()).unwrap();
    t.config.max_minutes = None;
    let s = t.run(false, Some(1)).unwrap();
    assert_eq!(s.cut_short, Some(CutShort::StopAfter { steps: 1 }));
    let s = t.run(false, None).unwrap();
    assert_eq!((s.steps, s.cut_short), (4, None));
    assert_eq!(s.completion(), "4 of 4 planned steps");
}

#[test]
fn a_save_interrupted_between_its_renames_still_resumes() {
    if !models_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig::preset("tiny").unwrap();
    cfg.steps = 4;
    let mut t = Trainer::new(cfg, dir.path(), &device()).unwrap();
    t.run(false, Some(2)).unwrap();
    let next = t.train_step().unwrap().loss;
    // The crash window of a save: `last` moved aside, the new one not yet in place.
    let checkpoints = dir.path().join("checkpoints");
    std::fs::rename(checkpoints.join("last"), checkpoints.join("last.old")).unwrap();
    std::fs::create_dir(checkpoints.join("last.partial")).unwrap();
    let resumed = mac_train::resumable_checkpoint(dir.path()).unwrap();
    assert!(resumed.ends_with("last.old"), "{}", resumed.display());
    let mut r = Trainer::resume(dir.path(), &device()).unwrap();
    assert_eq!(r.step(), 2);
    let again = r.train_step().unwrap().loss;
    assert!(
        (next - again).abs() <= 1e-5 * next.abs().max(1.0),
        "{next} vs {again}"
    );
    // Nothing complete at all: a clear error, not a panic.
    std::fs::remove_dir_all(checkpoints.join("last.old")).unwrap();
    let err = Trainer::resume(dir.path(), &device()).err().unwrap();
    assert!(err.to_string().contains("no complete checkpoint"), "{err}");
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

/// The tiny preset with a short selection phase after two content steps.
fn selection_config() -> TrainConfig {
    let mut cfg = TrainConfig::preset("tiny").unwrap();
    cfg.steps = 2;
    cfg.selection = Some(SelectionConfig {
        steps: 4,
        pool_documents: 12,
        bank_documents: 8,
        questions: 4,
        learning_rate: 1e-3,
        attention_loss_weight: 1.0,
    });
    cfg.model.aggregator_selector_dim = Some(16);
    cfg
}

#[test]
fn selection_phase_runs_after_the_content_steps_and_resumes_exactly() {
    if !models_present() {
        return;
    }
    let device = device();
    let whole = tempfile::tempdir().unwrap();
    let mut a = Trainer::new(selection_config(), whole.path(), &device).unwrap();
    let s = a.run(false, None).unwrap();
    assert_eq!(s.steps, 2);
    let sel = s.selection.expect("the run has a selection phase");
    assert_eq!(sel.steps, 4);
    assert!(sel.top1_before.is_some());
    assert!((0.0..=1.0).contains(&sel.top1_after));
    let metrics = std::fs::read_to_string(whole.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.matches("\"kind\":\"selection\"").count(), 4);
    assert!(metrics.contains("\"after_selection\":true"));

    // Stopped inside the phase (2 content + 1 selection step), resumed,
    // the next selection steps are those of the uninterrupted run.
    let cut = tempfile::tempdir().unwrap();
    let mut b = Trainer::new(selection_config(), cut.path(), &device).unwrap();
    let s = b.run(false, Some(3)).unwrap();
    assert!(s.cut_short.is_some());
    assert_eq!(b.selection_steps_done(), 1);
    let mut c = Trainer::resume(cut.path(), &device).unwrap();
    assert_eq!(c.selection_steps_done(), 1);
    let other = tempfile::tempdir().unwrap();
    let mut d = Trainer::new(selection_config(), other.path(), &device).unwrap();
    d.run(false, Some(3)).unwrap();
    for _ in 0..2 {
        let (x, y) = (c.selection_step().unwrap(), d.selection_step().unwrap());
        assert_eq!(x.step, y.step);
        assert!(
            (x.loss - y.loss).abs() <= 1e-5 * x.loss.abs().max(1.0),
            "resumed {} vs uninterrupted {}",
            x.loss,
            y.loss
        );
    }
}

/// A content-trained run without a selector is given a selection phase and
/// a selector afterwards: its checkpoint loads (the selector starts fresh)
/// and the phase runs.
#[test]
fn a_finished_run_can_be_given_a_selector_and_a_selection_phase() {
    if !models_present() {
        return;
    }
    let device = device();
    let dir = tempfile::tempdir().unwrap();
    let mut plain = selection_config();
    plain.selection = None;
    plain.model.aggregator_selector_dim = None;
    Trainer::new(plain, dir.path(), &device)
        .unwrap()
        .run(false, None)
        .unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(&selection_config()).unwrap(),
    )
    .unwrap();
    let mut resumed = Trainer::resume(dir.path(), &device).unwrap();
    assert!(resumed.model.aggregator().unwrap().selector.is_some());
    let s = resumed.run(false, None).unwrap();
    assert_eq!(s.selection.map(|s| s.steps), Some(4));
    // The new checkpoint has the selector and loads as it is.
    let again = Trainer::resume(dir.path(), &device).unwrap();
    assert_eq!(again.selection_steps_done(), 4);
}

#[test]
fn presets_and_config_errors() {
    assert!(TrainConfig::preset("nope")
        .unwrap_err()
        .contains("unknown preset"));
    for name in ["default", "open", "copy", "tiny"] {
        let p = TrainConfig::preset(name).unwrap();
        p.validate().unwrap();
        p.model.validate().unwrap();
    }
    let copy = TrainConfig::preset("copy").unwrap();
    assert_eq!(copy.model.memory_shape(), (16, 64 + 576));
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
    // A selection phase whose bank is larger than its pool is refused.
    let mut bad = selection_config();
    if let Some(s) = bad.selection.as_mut() {
        s.bank_documents = 20;
    }
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("selection.bank_documents"), "{e}");
    // Reading steps train by the answer-token loss: without it they are refused.
    let mut bad = fixed_batch_config();
    bad.reading_steps = 2;
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("reading_steps"), "{e}");
}

/// Reading steps train the encoders, the aggregator and the probe by the
/// answer-token loss alone: the LM-facing expansion gets no gradient, the
/// steps are logged as `reading`, and validation reports the probe's loss
/// with each question's own document and with another one.
#[test]
fn reading_steps_train_the_reader_without_the_lm() {
    if !models_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fixed_batch_config();
    cfg.model.answer_probe_width = Some(576);
    cfg.answer_token_loss_weight = 1.0;
    cfg.reading_steps = 2;
    cfg.steps = 3;
    let mut t = Trainer::new(cfg, dir.path(), &device()).unwrap();
    let values = |p: &burn::module::Param<burn::tensor::Tensor<3>>| -> Vec<f32> {
        p.val().try_to_vec_as::<f32>().unwrap()
    };
    let probe = |t: &Trainer| -> Vec<f32> {
        let p = t
            .model
            .aggregation_path()
            .unwrap()
            .answer_probe
            .as_ref()
            .unwrap();
        p.val().try_to_vec_as::<f32>().unwrap()
    };
    let (expansion0, probe0) = (
        values(&t.model.aggregation_path().unwrap().expansion.w2),
        probe(&t),
    );
    let e = t.batch_loss(0, 0).unwrap_err().to_string();
    assert!(e.contains("reading step"), "{e}");
    t.run(false, Some(2)).unwrap();
    assert_eq!(t.step(), 2);
    assert_eq!(
        values(&t.model.aggregation_path().unwrap().expansion.w2),
        expansion0,
        "reading steps leave the expansion as it was"
    );
    assert_ne!(probe(&t), probe0, "reading steps train the probe");
    let s = t.train_step().unwrap();
    assert!(!s.reading && s.step == 3);
    assert_ne!(
        values(&t.model.aggregation_path().unwrap().expansion.w2),
        expansion0,
        "an LM step trains the expansion"
    );
    let v = t.validate().unwrap();
    let (own, other) = (
        v.probe_loss_own_document.unwrap(),
        v.probe_loss_other_document.unwrap(),
    );
    assert!(own.is_finite() && other.is_finite() && own > 0.0);
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let kinds: Vec<String> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
        .collect();
    assert_eq!(kinds, ["\"reading\"", "\"reading\""], "{metrics}");
}

#[test]
fn batches_ask_several_questions_and_the_curriculum_restricts_the_bank() {
    if !models_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig::preset("tiny").unwrap();
    cfg.data = DataSource::FactStream(FactStreamConfig {
        seed: 4,
        n_train: 12,
        n_validation: 4,
        n_test: 2,
        facts_per_document: 3,
        values: ValueVocabulary::Closed,
        filler_sentences: 0,
    });
    cfg.batch_documents = 3;
    cfg.questions_per_document = 2;
    cfg.own_document_steps = 1;
    cfg.retrieval_loss_weight = 0.5;
    cfg.validation_documents = 4;
    let t = Trainer::new(cfg, dir.path(), &device()).unwrap();
    let b = t.batch(0, 0);
    assert_eq!(b.documents.len(), 3);
    assert_eq!(b.questions.len(), 6, "two questions per document");
    for pos in 0..3 {
        let mut asked: Vec<usize> = b
            .questions
            .iter()
            .filter(|(p, _)| *p == pos)
            .map(|(_, q)| *q)
            .collect();
        asked.dedup();
        assert_eq!(asked.len(), 2, "distinct questions of document {pos}");
    }
    assert_eq!(t.batch(0, 0), b, "batches are a pure function of the step");
    // The curriculum is wired: the same batch at step 0 gives another loss
    // when every question sees only its own document.
    let mut cfg_bank = t.config.clone();
    cfg_bank.own_document_steps = 0;
    let dir2 = tempfile::tempdir().unwrap();
    let t_bank = Trainer::new(cfg_bank, dir2.path(), &device()).unwrap();
    assert_eq!(t_bank.batch(0, 0), b);
    let own = t.batch_loss(0, 0).unwrap().into_scalar::<f64>();
    let bank = t_bank.batch_loss(0, 0).unwrap().into_scalar::<f64>();
    eprintln!("own-document loss {own:.5}, whole-bank loss {bank:.5}");
    assert!(own.is_finite() && bank.is_finite());
    assert!((own - bank).abs() > 1e-6, "own {own} vs bank {bank}");
    // The retrieval loss exists only when the bank holds other documents:
    // minus the log of the gold share, so between 0 and -ln(1e-6).
    assert!(t.batch_losses(0, 0).unwrap().retrieval.is_none());
    let r = t_bank
        .batch_losses(0, 0)
        .unwrap()
        .retrieval
        .expect("retrieval loss over a bank of three")
        .into_scalar::<f64>();
    assert!(r > 0.0 && r < 13.9, "retrieval loss {r}");
    // After the curriculum, `own_document_share` keeps that share of the
    // questions on their own document: all of them = the curriculum's
    // loss; half = a mix, with the retrieval loss from the other half.
    let with_share = |share: f64| {
        let mut c = t_bank.config.clone();
        c.own_document_share = share;
        let dir = tempfile::tempdir().unwrap();
        let tr = Trainer::new(c, dir.path(), &device()).unwrap();
        tr.batch_losses(0, 0).unwrap()
    };
    let all_own = with_share(1.0);
    assert!(all_own.retrieval.is_none());
    let all_own = all_own.answer_nll.unwrap().into_scalar::<f64>();
    assert!(
        (all_own - own).abs() < 1e-5,
        "share 1: {all_own} vs own {own}"
    );
    let half = with_share(0.5);
    assert!(half.retrieval.is_some());
    let half = half.answer_nll.unwrap().into_scalar::<f64>();
    assert!(half.is_finite() && (half - own).abs() > 1e-6 && (half - bank).abs() > 1e-6);
    let mut bad = t_bank.config.clone();
    bad.own_document_share = 1.5;
    assert!(bad.validate().is_err());
    // Validation: four documents in banks of three make two banks (3 + 1),
    // so the unrelated-bank loss exists.
    let v = t.validate().unwrap();
    assert_eq!(v.n_questions, 12);
    let unrelated = v.loss_unrelated_bank.expect("two validation banks");
    assert!(unrelated.is_finite() && v.loss.is_finite());
    assert!((0.0..=1.0).contains(&v.gold_weight));
    // Each question with one document alone (the banks of several only):
    // its own, or another; different documents give different losses.
    let own = v.loss_own_document.expect("a bank of three");
    let other = v.loss_other_document.expect("a bank of three");
    assert!(own.is_finite() && other.is_finite());
    assert!((own - other).abs() > 1e-7, "own {own} vs other {other}");
    // 9 questions over a bank of 3, 3 questions over a bank of 1.
    assert!((v.uniform_weight - (9.0 / 3.0 + 3.0) / 12.0).abs() < 1e-9);
}

/// Copy mode end to end: reading and LM steps train the copy head, a
/// resumed run continues from the same weights, validation reports the
/// probe, and a checkpoint amortizes documents into a bank of the copy
/// shape and answers from it, with and without the similarity prior.
#[test]
fn copy_mode_trains_resumes_and_answers_from_a_bank() {
    if !models_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fixed_batch_config();
    cfg.model.copy = Some(mac_model::CopyConfig {
        slots: 4,
        key_dim: 8,
        context_layer: 2,
        prefix_tokens: 2,
        lm_width: 576,
        hard: true,
        format_tokens: 1,
    });
    cfg.answer_token_loss_weight = 1.0;
    cfg.reading_steps = 1;
    cfg.steps = 3;
    let queries = |t: &Trainer| -> Vec<f32> {
        let c = t.model.copy_path().unwrap();
        c.head.queries.val().try_to_vec_as::<f32>().unwrap()
    };
    let mut t = Trainer::new(cfg, dir.path(), &device()).unwrap();
    let before = queries(&t);
    t.run(false, Some(2)).unwrap();
    assert_ne!(queries(&t), before, "the steps train the copy head");
    let mut resumed = Trainer::resume(dir.path(), &device()).unwrap();
    assert_eq!(resumed.step(), 2);
    assert_eq!(queries(&resumed), queries(&t));
    let summary = resumed.run(false, None).unwrap();
    let v = summary.last_validation.unwrap();
    assert!(v.loss.is_finite() && v.probe_loss_own_document.unwrap().is_finite());
    // Copy mode builds its own modules and none of the paper's path.
    assert!(resumed.model.amortizer().is_none() && resumed.model.aggregator().is_none());
    let params = resumed.model.param_summary();
    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    assert!(names.contains(&"copy mode (document head + question reader)"));
    assert!(!names.contains(&"aggregation network"), "{names:?}");

    let rt = mac_model::MacRuntime::from_checkpoint(
        &dir.path().join("checkpoints").join("last"),
        None,
        None,
        &device(),
    )
    .unwrap();
    let (n, d) = rt.config.memory_shape();
    assert_eq!((n, d), (4, 8 + 576));
    let docs = [
        "Velra Quellington was born in Port Vessa.",
        "Morrion Thrimsen works for Orvane Dynamics.",
    ];
    let am = rt.amortize(&docs).unwrap();
    assert!(am.modulations.iter().all(|m| m.len() == n * d));
    let bank_dir = dir.path().join("bank");
    let shape = mac_bank::BankShape {
        n_tokens: n,
        d_mod: d,
        key_dim: rt.key_dim(),
        rows_vary: false,
        precision: mac_bank::Precision::F32,
    };
    let mut bank = mac_bank::MemoryBank::create(&bank_dir, shape, "copy-mode test").unwrap();
    let entries: Vec<mac_bank::NewEntry> = docs
        .iter()
        .enumerate()
        .map(|(i, text)| mac_bank::NewEntry {
            source: "test",
            text,
            modulation: &am.modulations[i],
            key: &am.keys[i],
        })
        .collect();
    bank.append_batch(&entries).unwrap();
    for prior_scale in [None, Some(5.0)] {
        let reading = mac_model::BankReading {
            prior_scale,
            ..Default::default()
        };
        let memory = mac_runtime::BankMemory {
            bank: &bank,
            device: &device(),
        };
        let question = ["Where was Velra Quellington born?"];
        let generation = [mac_model::AnswerGeneration::default()];
        let answers = rt
            .answer_from_memory(&question, &generation, &memory, &reading, &mut |_, _| {})
            .unwrap();
        let shares = &answers[0].doc_weights;
        assert_eq!(shares.len(), 2);
        assert!(
            (shares.iter().sum::<f32>() - 1.0).abs() < 1e-4,
            "{shares:?}"
        );
    }
}
