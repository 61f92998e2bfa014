//! Span memory through the `mac` binary: a selector trained on the
//! committed tiny model and saved as a checkpoint; `mac ingest` fills a
//! bank of one row per token and `mac ask` answers with the span it read
//! and the documents it drew on. A bank of the other memory is refused.

use std::path::PathBuf;
use std::process::{Command, Output};

use mac_data::{Dataset, Document, QaPair};
use mac_lm::LoadedLm;
use mac_model::{AnswerFrame, SpanExtent, SpanReader, SpanReading};
use mac_train::span::{SpanFeatures, SpanRule, SpanTrainConfig, SpanTrainer};

fn mac() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mac"))
}

fn tiny_llama() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mac-lm/tests/fixtures/tiny-llama.gguf")
}

fn documents() -> Dataset {
    let facts = [
        ("Ann", "Oslo"),
        ("Bo", "Lima"),
        ("Cy", "Pune"),
        ("Di", "Kobe"),
    ];
    Dataset {
        documents: facts
            .iter()
            .map(|(who, town)| Document {
                id: who.to_string(),
                text: format!("{who} lives in {town}."),
                qas: vec![QaPair {
                    question: format!("Where does {who} live?"),
                    answers: vec![town.to_string()],
                    stale: Vec::new(),
                }],
            })
            .collect(),
    }
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn span_memory_ingests_and_answers_with_its_span() {
    let device = mac_device::select("flex").unwrap();
    let lm = LoadedLm::load(tiny_llama(), &device).unwrap();
    let config = SpanTrainConfig {
        layer: 1,
        d_key: 16,
        bank_documents: 4,
        questions: 4,
        steps: 20,
        ..SpanTrainConfig::default()
    };
    let reader = SpanReader {
        layer: 1,
        sink_tokens: 2,
        extent: SpanExtent::Span,
    };
    let dataset = documents();
    let features = SpanFeatures::read(&lm, &reader, &dataset, 4, 4).unwrap();
    let mut trainer = SpanTrainer::new(config, &features, &device).unwrap();
    for _ in 0..20 {
        trainer.step(&features).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("span");
    let reading = SpanReading {
        reader,
        rule: SpanRule::Joint,
        frame: AnswerFrame::Plain,
        recency: 0.0,
        agreement: None,
        recency_same_names: false,
        whole_below: None,
    };
    trainer.save(&checkpoint, reading, tiny_llama()).unwrap();

    let docs = dir.path().join("docs.jsonl");
    let lines: Vec<String> = dataset
        .documents
        .iter()
        .map(|d| serde_json::json!({ "document": d.text }).to_string())
        .collect();
    std::fs::write(&docs, lines.join("\n")).unwrap();
    let bank = dir.path().join("bank");
    let out = mac()
        .args(["ingest", "--json", "--bank"])
        .arg(&bank)
        .arg("--checkpoint")
        .arg(&checkpoint)
        .arg(&docs)
        .env("MAC_DEVICE", "flex")
        .output()
        .unwrap();
    let summary: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert_eq!(summary["stored"], 4, "{summary}");

    let out = mac()
        .args(["ask", "--json", "--bank"])
        .arg(&bank)
        .arg("--checkpoint")
        .arg(&checkpoint)
        .arg("Where does Bo live?")
        .env("MAC_DEVICE", "flex")
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&succeeded(&out)).unwrap();
    assert_eq!(answer["memory"], "span memory", "{answer}");
    let span = &answer["span"];
    let id = span["id"].as_u64().unwrap();
    assert!(id < 4, "{answer}");
    let [start, end] = [0, 1].map(|i| span["tokens"][i].as_u64().unwrap());
    assert!(start <= end && end - start < 8, "{answer}");
    assert!(!span["text"].as_str().unwrap().is_empty(), "{answer}");
    assert_eq!(answer["bank_entries"], 4);
    assert!(
        !answer["documents"].as_array().unwrap().is_empty(),
        "{answer}"
    );

    // A bank of another shape: a clear error and the bad-input exit code.
    let other = dir.path().join("other");
    let shape = mac_bank::BankShape {
        n_tokens: 2,
        d_mod: 3,
        key_dim: 0,
        rows_vary: false,
        precision: mac_bank::Precision::F32,
    };
    drop(mac_bank::MemoryBank::create(&other, shape, "test").unwrap());
    let out = mac()
        .args(["ask", "--bank"])
        .arg(&other)
        .arg("--checkpoint")
        .arg(&checkpoint)
        .arg("Where does Bo live?")
        .env("MAC_DEVICE", "flex")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("span memory reads"), "{err}");
}
