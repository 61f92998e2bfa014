//! Span memory's training on the tiny random Llama: features read once,
//! the span loss falls on a fixed set of documents, and the trained
//! selector finds the spans it was trained on far above chance.

use burn::tensor::{Tensor, TensorData};
use mac_data::{Dataset, Document, QaPair};
use mac_lm::LoadedLm;
use mac_model::SpanReader;
use mac_train::span::{
    choose_spans, choose_spans_chunked, SpanFeatures, SpanRule, SpanTrainConfig, SpanTrainer,
};

#[test]
fn span_training_learns_where_answers_lie() {
    let device = mac_device::select("flex").unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../mac-lm/tests/fixtures/tiny-llama.gguf"
    );
    let lm = LoadedLm::load(path, &device).unwrap();
    // Short documents: the tiny model has 128 positions and a small vocabulary.
    let people = ["Ann", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"];
    let towns = [
        "Oslo", "Lima", "Pune", "Kobe", "Bari", "Graz", "Nice", "Oulu",
    ];
    let jobs = ["law", "art", "tax", "math", "film", "oil", "wine", "gas"];
    let dataset = Dataset {
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
                    },
                    QaPair {
                        question: format!("What does {} work in?", people[i]),
                        answers: vec![jobs[(i + 3) % 8].into()],
                    },
                ],
            })
            .collect(),
    };
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
            choose_spans_chunked(
                &selector,
                &features,
                &bank,
                &features,
                &found,
                with_prior.then(prior),
                rule,
                chunk,
                &device,
            )
            .unwrap()
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
}
