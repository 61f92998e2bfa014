//! The `mac` binary end to end on the committed tiny model and, when fetched,
//! on the real SmolLM2.

use std::path::PathBuf;
use std::process::Command;

fn mac() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mac"))
}

fn tiny_llama() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mac-lm/tests/fixtures/tiny-llama.gguf")
}

#[test]
fn perplexity_prints_one_number_on_the_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("text.txt");
    std::fs::write(&file, "abcabcabcabc hello hello").unwrap();
    let out = mac()
        .args(["perplexity", "--model"])
        .arg(tiny_llama())
        .arg("--file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last: f64 = stdout.lines().last().unwrap().trim().parse().unwrap();
    // A random 256-token model: perplexity near the vocabulary size, finite.
    assert!(last.is_finite() && last > 1.0 && last < 10_000.0, "{last}");
}

#[test]
fn missing_model_and_bad_file_fail_with_clear_errors() {
    let out = mac()
        .args([
            "generate",
            "--model",
            "/nonexistent/model.gguf",
            "--prompt",
            "hi",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bin.txt");
    std::fs::write(&file, [0xff, 0xfe, 0x00]).unwrap();
    let out = mac()
        .args(["perplexity", "--model"])
        .arg(tiny_llama())
        .arg("--file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid UTF-8"));

    let out = mac()
        .args(["--device", "tpu", "generate", "--prompt", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not compiled"));
}

#[test]
fn generate_with_the_real_model_says_paris() {
    if !mac_assets::fetched_or_skip(&mac_assets::default_lm_path()) {
        return;
    }
    let out = mac()
        .args([
            "generate",
            "--prompt",
            "The capital of France is",
            "--max-new-tokens",
            "4",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(" Paris"), "{text:?}");
}

#[test]
fn train_refuses_to_overwrite_a_run_without_resume_or_force() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, "{\"kept\": true}").unwrap();
    let out = mac()
        .args(["train", "--preset", "tiny", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "bad input");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already holds a training run") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "{\"kept\": true}"
    );
    let both = mac()
        .args(["train", "--resume", "--force", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        both.status.code(),
        Some(2),
        "--resume with --force is a usage error"
    );
}

#[test]
fn dataset_writes_the_update_stream_as_jsonl_that_eval_reads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("updates.jsonl");
    let out = mac()
        .args([
            "dataset",
            "--stream",
            "updates",
            "--documents",
            "30",
            "--out",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let options = mac_data::LoadOptions::default();
    let loaded = mac_data::load(&file, mac_data::Format::Jsonl, options).unwrap();
    let parts = |d: &mac_data::Dataset| {
        d.documents
            .iter()
            .map(|d| (d.text.clone(), d.qas.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        parts(&loaded.dataset),
        parts(&mac_data::update_stream(11, 30))
    );
    // The open stream's test split, as `mac train --preset span` evaluates it.
    let open = dir.path().join("open.jsonl");
    let out = mac()
        .args(["dataset", "--stream", "open", "--documents", "20", "--out"])
        .arg(&open)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let loaded = mac_data::load(&open, mac_data::Format::Jsonl, options).unwrap();
    let mut test = mac_data::FactStream::generate(&mac_data::FactStreamConfig::open()).test;
    test.documents.truncate(20);
    assert_eq!(parts(&loaded.dataset), parts(&test));
    let bad = mac()
        .args(["dataset", "--stream", "nonsense", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// A minimal `report.json` of an evaluation of `memory` with `rows`.
fn eval_report(dir: &std::path::Path, memory: &str, rows: &[&str], n_questions: usize) {
    let row = serde_json::json!({
        "em": 0.1, "f1": 0.25, "prefix_em": 0.1, "n_questions": n_questions,
        "adapt_ms_per_doc": 1.0, "answer_ms_per_question": 2.0,
        "storage_bytes_per_doc": 3.0
    });
    let mut json = serde_json::json!({
        "memory": memory, "retention": [],
        "attention": {"gold_top1": 0.0, "gold_weight_mean": 0.0, "uniform_weight": 0.1},
        "n_documents": 10, "bank": "b", "predictions": "p.jsonl",
        "options": mac_eval::EvalOptions::default(),
    });
    for r in rows {
        json[*r] = row.clone();
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("report.json"), json.to_string()).unwrap();
}

#[test]
fn report_sets_the_paper_paths_rows_beside_span_memorys() {
    let dir = tempfile::tempdir().unwrap();
    let (span, paper, other) = (
        dir.path().join("span"),
        dir.path().join("paper"),
        dir.path().join("other"),
    );
    eval_report(&span, "span memory", &["span_memory", "rag@1"], 30);
    eval_report(&paper, "mac", &["mac", "mac+prior", "rag@1"], 30);
    eval_report(&other, "mac", &["mac"], 12);
    let out = mac()
        .args(["report", "--eval"])
        .arg(&span)
        .arg("--beside")
        .arg(&paper)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(span.join("report.md")).unwrap();
    assert!(md.contains("| mac+prior |"), "{md}");
    assert!(md.contains("| span_memory |"), "{md}");
    let json = std::fs::read_to_string(span.join("report.json")).unwrap();
    assert!(json.contains("\"beside\""), "{json}");
    let bad = mac()
        .args(["report", "--eval"])
        .arg(&paper)
        .arg("--beside")
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("another memory"));
}
