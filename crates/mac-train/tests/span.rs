//! Span memory's training on the tiny random Llama: features read once,
//! the span loss falls on a fixed set of documents, and the trained
//! selector finds the spans it was trained on far above chance; a training
//! saved and resumed takes the steps an uninterrupted one takes, and its
//! checkpoint loads the selector it trained.

use burn::tensor::{Tensor, TensorData};
use mac_data::{Dataset, Document, QaPair};
use mac_lm::LoadedLm;
use mac_model::{AnswerFrame, SpanCheckpoint, SpanExtent, SpanReader, SpanReading};
use mac_runtime::{AskOptions, Memory, NewDocument, SpanMemory};
use mac_train::span::{
    choose_spans, choose_spans_each, Choosing, SpanFeatures, SpanRule, SpanTrainConfig, SpanTrainer,
};

fn tiny_path() -> &'static str {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../mac-lm/tests/fixtures/tiny-llama.gguf"
    )
}

fn tiny_lm(device: &burn::tensor::Device) -> LoadedLm {
    LoadedLm::load(tiny_path(), device).unwrap()
}

/// Eight short documents of two facts each (the tiny model has 128
/// positions and a small vocabulary).
fn eight_documents() -> Dataset {
    let people = ["Ann", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"];
    let towns = [
        "Oslo", "Lima", "Pune", "Kobe", "Bari", "Graz", "Nice", "Oulu",
    ];
    let jobs = ["law", "art", "tax", "math", "film", "oil", "wine", "gas"];
    Dataset {
        documents: (0..8)
            .map(|i| Document {
                id: people[i].into(),
                text: format!(
                    "{} lives in {}. {} works in {}.",
                    people[i],
                    towns[i],
                    people[i],
                    jobs[(i + 3) % 8]
                ),
                qas: vec![
                    QaPair {
                        question: format!("Where does {} live?", people[i]),
                        answers: vec![towns[i].into()],
                        stale: Vec::new(),
                    },
                    QaPair {
                        question: format!("What does {} work in?", people[i]),
                        answers: vec![jobs[(i + 3) % 8].into()],
                        stale: Vec::new(),
                    },
                ],
            })
            .collect(),
    }
}

#[test]
fn span_training_learns_where_answers_lie() {
    let device = mac_device::select("flex").unwrap();
    let lm = tiny_lm(&device);
    let dataset = eight_documents();
    let config = SpanTrainConfig {
        layer: 1,
        d_key: 32,
        bank_documents: 8,
        questions: 8,
        steps: 150,
        learning_rate: 3e-3,
        ..SpanTrainConfig::default()
    };
    let reader = SpanReader {
        layer: config.layer,
        sink_tokens: 2,
        extent: SpanExtent::Span,
        copied: false,
    };
    let features = SpanFeatures::read(&lm, &reader, &dataset, 8, 3).unwrap();
    assert_eq!(features.documents.len(), 8);
    assert_eq!(features.questions.len(), dataset.n_questions());
    let found: Vec<usize> = (0..features.questions.len())
        .filter(|&q| features.questions[q].span.is_some())
        .collect();
    let lens: Vec<usize> = features.documents.iter().map(Vec::len).collect();
    assert!(
        found.len() * 10 >= features.questions.len() * 9,
        "answers are found in their documents: {} of {} ({lens:?})",
        found.len(),
        features.questions.len()
    );
    for &q in &found {
        let (s, e) = features.questions[q].span.unwrap();
        let doc = &features.documents[features.questions[q].document];
        assert!(s <= e && e < doc.len());
    }

    let mut trainer = SpanTrainer::new(config.clone(), &features, &device).unwrap();
    let first = trainer.step(&features).unwrap().loss;
    let mut last = 0.0;
    for _ in 1..config.steps {
        last = trainer.step(&features).unwrap().loss;
    }
    assert!(last < 0.5 * first, "span loss {first:.3} -> {last:.3}");

    // Over the bank of all 8 documents (chance: one token in ~300), by
    // either rule.
    let bank: Vec<usize> = (0..8).collect();
    let selector = trainer.selector();
    for rule in [SpanRule::Joint, SpanRule::DocumentFirst] {
        let chosen = choose_spans(
            &selector, &features, &bank, &features, &found, None, rule, &device,
        )
        .unwrap();
        let starts = chosen
            .iter()
            .zip(&found)
            .filter(|(c, &q)| {
                let fq = &features.questions[q];
                bank[c.span.document] == fq.document && Some(c.span.start) == fq.span.map(|s| s.0)
            })
            .count();
        eprintln!(
            "{rule:?}: span loss {first:.3} -> {last:.3}; starts found {starts} of {}",
            found.len()
        );
        assert!(
            starts * 2 >= found.len(),
            "{rule:?}: {starts} of {} starts found",
            found.len()
        );

        // Scored a few documents at a time, with and without a prior, the
        // choice and the shares are those over the whole bank.
        let prior = || {
            let values: Vec<f32> = (0..found.len() * 8)
                .map(|i| (i as f32 * 0.37 + 0.5).sin() * 2.0)
                .collect();
            Tensor::<2>::from_data(TensorData::new(values, [found.len(), 8]), &device)
        };
        let chosen = |with_prior: bool, chunk: usize| {
            choose_spans_each(
                &selector,
                &features,
                &bank,
                &features,
                &found,
                with_prior.then(prior),
                Choosing {
                    chunk,
                    ..Choosing::by(rule)
                },
                &[mac_aggregation::Recency::NONE],
                &device,
            )
            .unwrap()
            .remove(0)
        };
        for with_prior in [false, true] {
            let whole = chosen(with_prior, 8);
            for chunk in [1, 3, 64] {
                let streamed = chosen(with_prior, chunk);
                for (a, b) in streamed.iter().zip(&whole) {
                    assert_eq!(
                        a.span, b.span,
                        "{rule:?}, chunk {chunk}, prior {with_prior}"
                    );
                    assert!((a.gold_share - b.gold_share).abs() < 1e-5);
                }
            }
        }
    }

    // The same selector as the product runs it: saved, loaded beside the
    // LM, the documents ingested into a bank, the questions asked.
    let dir = tempfile::tempdir().unwrap();
    let reading = SpanReading {
        reader,
        rule: SpanRule::Joint,
        frame: AnswerFrame::Plain,
        recency: 0.0,
        agreement: None,
        recency_same_names: false,
        recency_answers: None,
        recency_either: false,
        named_first: false,
        whole_below: None,
        sentence_check: None,
        beside_replaced: false,
        replaced_from_earlier: false,
    };
    trainer
        .save(&dir.path().join("checkpoint"), reading, tiny_path().into())
        .unwrap();
    let memory =
        SpanMemory::from_checkpoint(&dir.path().join("checkpoint"), None, &device).unwrap();
    let mut bank = memory.open_bank_writer(&dir.path().join("bank")).unwrap();
    let docs: Vec<NewDocument> = dataset
        .documents
        .iter()
        .map(|d| NewDocument {
            source: d.id.clone(),
            text: d.text.clone(),
        })
        .collect();
    let ingested = memory.ingest(&mut bank, &docs, &mut |_| {}).unwrap();
    assert_eq!(ingested.len(), 8);
    assert_eq!(bank.len(), 8);
    let questions: Vec<&str> = found
        .iter()
        .map(|&q| features.questions[q].text.as_str())
        .collect();
    let trained = choose_spans(
        &selector,
        &features,
        &bank_order(8),
        &features,
        &found,
        None,
        SpanRule::Joint,
        &device,
    )
    .unwrap();
    let whole = memory.choose(&bank, &questions, 8).unwrap();
    for chunk in [1, 3] {
        let streamed = memory.choose(&bank, &questions, chunk).unwrap();
        for (a, b) in streamed.iter().zip(&whole) {
            assert_eq!(a.span, b.span, "chunk {chunk}");
        }
    }
    let agree = whole
        .iter()
        .zip(&trained)
        .filter(|(a, b)| a.span == b.span)
        .count();
    assert!(
        agree * 10 >= found.len() * 9,
        "the bank's choice is the training side's: {agree} of {}",
        found.len()
    );
    // Answers come with their span and the documents drawn on.
    let opts = AskOptions {
        chunk: 8,
        top: 2,
        ..AskOptions::default()
    };
    let answers = memory.ask(&bank, &questions[..4], &opts).unwrap();
    for (answer, choice) in answers.iter().zip(&whole) {
        let span = answer.span.as_ref().unwrap();
        assert_eq!(span.id, bank.entries()[choice.span.document].id);
        assert_eq!(span.tokens, [choice.span.start, choice.span.end]);
        assert!(!span.text.is_empty());
        assert_eq!(answer.documents.len(), 2);
        assert!(answer.documents[0].weight >= answer.documents[1].weight);
        assert_eq!(answer.bank_entries, 8);
    }
    // A bank of the paper's path is not read as span memory's.
    let other = dir.path().join("other");
    let shape = mac_bank::BankShape {
        n_tokens: 2,
        d_mod: 3,
        key_dim: 0,
        rows_vary: false,
        precision: mac_bank::Precision::F32,
    };
    drop(mac_bank::MemoryBank::create(&other, shape, "test").unwrap());
    let other = mac_bank::MemoryBank::open_read_only(&other).unwrap();
    let err = memory
        .ask(&other, &questions[..1], &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("span memory reads"), "{err}");
}

fn bank_order(n: usize) -> Vec<usize> {
    (0..n).collect()
}

#[test]
fn span_training_saved_and_resumed_takes_the_uninterrupted_steps() {
    let device = mac_device::select("flex").unwrap();
    let lm = tiny_lm(&device);
    let config = SpanTrainConfig {
        layer: 1,
        d_key: 16,
        bank_documents: 4,
        questions: 4,
        steps: 6,
        learning_rate: 3e-3,
        // Banks with hard negatives resume as exactly as random ones.
        hard_negatives: 1,
        ..SpanTrainConfig::default()
    };
    let reader = SpanReader {
        layer: config.layer,
        sink_tokens: 2,
        extent: SpanExtent::Span,
        copied: false,
    };
    let features = SpanFeatures::read(&lm, &reader, &eight_documents(), 8, 4).unwrap();
    let losses = |trainer: &mut SpanTrainer, n: usize| -> Vec<f64> {
        (0..n)
            .map(|_| trainer.step(&features).unwrap().loss)
            .collect()
    };

    let mut straight = SpanTrainer::new(config.clone(), &features, &device).unwrap();
    let expected = losses(&mut straight, 6);

    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("last");
    let mut first = SpanTrainer::new(config, &features, &device).unwrap();
    let mut got = losses(&mut first, 3);
    let saved = first
        .save(
            &checkpoint,
            SpanReading {
                reader,
                rule: SpanRule::Joint,
                frame: AnswerFrame::Plain,
                recency: 0.0,
                agreement: None,
                recency_same_names: false,
                recency_answers: None,
                recency_either: false,
                named_first: false,
                whole_below: None,
                sentence_check: None,
                beside_replaced: false,
                replaced_from_earlier: false,
            },
            "tiny-llama.gguf".into(),
        )
        .unwrap();
    assert_eq!(saved.meta.step, 3);
    assert_eq!(saved.meta.reading.reader, reader);
    drop(first);
    let mut resumed = SpanTrainer::resume(&checkpoint, &features, &device).unwrap();
    assert_eq!(resumed.steps_done(), 3);
    got.extend(losses(&mut resumed, 3));
    for (step, (a, b)) in expected.iter().zip(&got).enumerate() {
        assert!(
            (a - b).abs() < 1e-6,
            "step {step}: {a} uninterrupted, {b} resumed"
        );
    }
    // Training moved the loss: the resumed steps are not a fixed point.
    assert!(expected[0] != expected[5], "{expected:?}");

    // The checkpoint, opened for answering, holds the selector trained to it.
    let states = features.bank_states(&[0, 1], &device);
    let keys = |s: &mac_aggregation::SpanSelector| s.token_keys(states.clone());
    let at_save = SpanCheckpoint::open(&checkpoint)
        .unwrap()
        .load_selector(&device)
        .unwrap();
    let mut again = SpanTrainer::resume(&checkpoint, &features, &device).unwrap();
    let diff = (keys(&at_save) - keys(&again.selector()))
        .abs()
        .max()
        .into_scalar::<f32>();
    assert_eq!(diff, 0.0);
    again.step(&features).unwrap();
    let moved = (keys(&at_save) - keys(&again.selector()))
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(moved > 0.0, "a step after resuming changes the selector");
}
