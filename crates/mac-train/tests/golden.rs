//! The golden test: span memory on the tiny random Llama, with a selector
//! checkpoint kept in `tests/fixtures/golden/` (trained once, seeded, on the
//! eight documents below), ingests a fixed stream and answers its questions;
//! its bank rows, the spans it chooses, its answers and their F1 must equal
//! those kept in `tests/fixtures/golden/golden.json`. Any unintended change
//! to reading a document into its bank entry, storing it, scoring the bank,
//! choosing the span, handing its key/values to the LM or generating fails
//! it. After an intended change, `MAC_BLESS=1 cargo test --test golden`
//! retrains the checkpoint and rewrites the fixture (and says so).
//!
//! Rows and shares are compared with a tolerance well above what a CPU's
//! kernels change; the chosen spans and the answers exactly.

use std::path::{Path, PathBuf};

use mac_data::{f1_score, Dataset, Document, QaPair};
use mac_lm::LoadedLm;
use mac_model::{AnswerFrame, AnswerGeneration, SpanExtent, SpanReader, SpanReading};
use mac_runtime::{AskOptions, Memory, NewDocument, SpanMemory};
use mac_train::span::{SpanFeatures, SpanRule, SpanTrainConfig, SpanTrainer};
use serde::{Deserialize, Serialize};

/// Largest difference allowed between a bank row's value and the fixture's.
const ROW_TOLERANCE: f64 = 1e-3;

fn tiny_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mac-lm/tests/fixtures/tiny-llama.gguf")
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

/// The fixed stream: eight documents of two facts each.
fn stream() -> Dataset {
    let people = ["Ann", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"];
    let towns = [
        "Oslo", "Lima", "Pune", "Kobe", "Bari", "Graz", "Nice", "Oulu",
    ];
    let jobs = ["law", "art", "tax", "math", "film", "oil", "wine", "gas"];
    let documents = (0..8)
        .map(|i| Document {
            id: people[i].into(),
            text: format!(
                "{} lives in {}. {} works in {}.",
                people[i], towns[i], people[i], jobs[i]
            ),
            qas: vec![
                QaPair {
                    question: format!("Where does {} live?", people[i]),
                    answers: vec![towns[i].into()],
                    stale: Vec::new(),
                },
                QaPair {
                    question: format!("What does {} work in?", people[i]),
                    answers: vec![jobs[i].into()],
                    stale: Vec::new(),
                },
            ],
        })
        .collect();
    Dataset { documents }
}

/// What the fixture keeps of a bank entry's rows.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct RowDigest {
    /// Floats stored.
    len: usize,
    /// Their sum and the sum of their squares.
    sum: f64,
    sum_sq: f64,
    /// The first ones.
    head: Vec<f32>,
}

impl RowDigest {
    fn of(rows: &[f32]) -> Self {
        Self {
            len: rows.len(),
            sum: rows.iter().map(|&x| x as f64).sum(),
            sum_sq: rows.iter().map(|&x| (x as f64) * (x as f64)).sum(),
            head: rows.iter().take(32).copied().collect(),
        }
    }

    /// The largest difference from `want` (relative for the sums).
    fn distance(&self, want: &Self) -> f64 {
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1.0);
        let head = self
            .head
            .iter()
            .zip(&want.head)
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(0.0, f64::max);
        rel(self.sum, want.sum)
            .max(rel(self.sum_sq, want.sum_sq))
            .max(head)
    }
}

/// What the fixture keeps.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Golden {
    /// Every bank entry's rows, in stream order.
    rows: Vec<RowDigest>,
    /// Per question: the chosen document's id, its span, the answer, its F1.
    answers: Vec<GoldenAnswer>,
    /// Mean F1 over the questions.
    f1: f64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct GoldenAnswer {
    question: String,
    document: u64,
    tokens: [usize; 2],
    text: String,
    f1: f64,
    /// The chosen document's share of the start distribution.
    share: f32,
}

/// Trains the fixture's selector (seeded) and saves it as a checkpoint.
fn bless_checkpoint(dir: &Path, device: &burn::tensor::Device) {
    let lm = LoadedLm::load(tiny_path(), device).unwrap();
    let config = SpanTrainConfig {
        layer: 1,
        d_key: 16,
        bank_documents: 8,
        questions: 8,
        steps: 60,
        learning_rate: 3e-3,
        ..SpanTrainConfig::default()
    };
    let reader = SpanReader {
        layer: 1,
        sink_tokens: 2,
        extent: SpanExtent::Span,
        copied: false,
    };
    let features = SpanFeatures::read(&lm, &reader, &stream(), 8, 8).unwrap();
    let mut trainer = SpanTrainer::new(config, &features, device).unwrap();
    for _ in 0..60 {
        trainer.step(&features).unwrap();
    }
    let reading = SpanReading {
        reader,
        rule: SpanRule::DocumentFirst,
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
        .save(dir, reading, "tiny-llama.gguf".into())
        .unwrap();
    // The optimizer state is not part of the fixture.
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name != "span.json" && name != "selector.bpk" {
            std::fs::remove_file(path).unwrap();
        }
    }
}

/// Ingests the stream with the fixture's checkpoint and answers every question.
fn run(device: &burn::tensor::Device) -> Golden {
    let memory = SpanMemory::from_checkpoint(&fixture_dir(), Some(&tiny_path()), device).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut bank = memory.open_bank_writer(&tmp.path().join("bank")).unwrap();
    let data = stream();
    let docs: Vec<NewDocument> = data
        .documents
        .iter()
        .map(|d| NewDocument {
            source: d.id.clone(),
            text: d.text.clone(),
        })
        .collect();
    memory.ingest(&mut bank, &docs, &mut |_| {}).unwrap();
    let rows = (0..bank.len())
        .map(|i| RowDigest::of(&bank.read(i).unwrap().modulation))
        .collect();
    let qas: Vec<&QaPair> = data.documents.iter().flat_map(|d| &d.qas).collect();
    let questions: Vec<&str> = qas.iter().map(|q| q.question.as_str()).collect();
    // Two documents a chunk: the choice is the whole bank's for any chunk.
    let opts = AskOptions {
        chunk: 2,
        ..AskOptions::default()
    };
    // Four tokens an answer: a random model's greedy choices are compared
    // exactly, and fewer of them leave fewer near-ties a CPU's kernels
    // could tip.
    let generation = vec![
        AnswerGeneration {
            max_tokens: 4,
            ..AnswerGeneration::default()
        };
        questions.len()
    ];
    let answers: Vec<GoldenAnswer> = memory
        .ask_with(&bank, &questions, &generation, &opts, &mut |_, _| {})
        .unwrap()
        .into_iter()
        .zip(&qas)
        .map(|(a, qa)| {
            let span = a.span.clone().unwrap();
            GoldenAnswer {
                question: qa.question.clone(),
                document: span.id,
                tokens: span.tokens,
                f1: f1_score(&a.text, &qa.answers),
                text: a.text,
                share: a.shares[span.id as usize],
            }
        })
        .collect();
    let f1 = answers.iter().map(|a| a.f1).sum::<f64>() / answers.len() as f64;
    Golden { rows, answers, f1 }
}

#[test]
fn span_memory_ingests_and_answers_as_its_fixture_says() {
    let device = mac_device::select("flex").unwrap();
    let golden_path = fixture_dir().join("golden.json");
    if std::env::var("MAC_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(fixture_dir()).unwrap();
        bless_checkpoint(&fixture_dir(), &device);
        let golden = run(&device);
        std::fs::write(&golden_path, serde_json::to_string(&golden).unwrap()).unwrap();
        eprintln!("blessed {}", golden_path.display());
        return;
    }
    let want: Golden =
        serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap()).unwrap();
    let got = run(&device);
    assert_eq!(got.rows.len(), want.rows.len());
    for (i, (g, w)) in got.rows.iter().zip(&want.rows).enumerate() {
        assert_eq!(g.len, w.len, "entry {i}: row length");
        let off = g.distance(w);
        assert!(off <= ROW_TOLERANCE, "entry {i}: rows differ by {off}");
    }
    for (g, w) in got.answers.iter().zip(&want.answers) {
        assert_eq!(
            (&g.question, g.document, g.tokens, &g.text),
            (&w.question, w.document, w.tokens, &w.text),
            "{g:?} vs {w:?}"
        );
        assert!((g.share - w.share).abs() < 1e-3, "{g:?} vs {w:?}");
    }
    assert!(
        (got.f1 - want.f1).abs() < 1e-9,
        "F1 {} vs {}",
        got.f1,
        want.f1
    );
}
