//! `mac eval` on span memory with the real SmolLM2: a `span-tiny` run
//! evaluated on its own stream's test split (every row of the fair
//! protocol: the memory, its unrelated-bank control, `rag@1`, the oracle
//! and the question alone in the memory's frame, the question-only
//! baseline, retention and bank sizes) and on a dataset file of the
//! user's.

use std::path::Path;

use common::{mac, models_fetched, ok, s};
use serde_json::Value;

mod common;

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// The row `name` answered `n` questions with scores in range, its F1 in
/// its bootstrap interval.
fn row(r: &Value, name: &str, n: u64) {
    let m = &r[name];
    assert_eq!(m["n_questions"], n, "{name}: {r}");
    let (em, f1) = (m["em"].as_f64().unwrap(), m["f1"].as_f64().unwrap());
    assert!(
        (0.0..=1.0).contains(&em) && em <= f1 + 1e-9 && f1 <= 1.0,
        "{name}: {m}"
    );
    let ci = &m["f1_ci95"];
    let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
    assert!(lo <= f1 + 1e-9 && f1 <= hi + 1e-9, "{name}: {m}");
}

#[test]
fn span_memory_is_evaluated_with_the_fair_protocol() {
    if !models_fetched() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("span");
    ok(&mac(&["train", "--preset", "span-tiny", "--out", s(&run)]));

    // The run's own stream: its test split, its training split as the
    // unrelated documents.
    let out = tmp.path().join("eval");
    ok(&mac(&[
        "eval",
        "--checkpoint",
        s(&run),
        "--max-documents",
        "6",
        "--bank-sizes",
        "1,8,20",
        "--out",
        s(&out),
    ]));
    let r = report(&out);
    assert_eq!(r["memory"], "span memory", "{r}");
    let n = r["span_memory"]["n_questions"].as_u64().unwrap();
    assert!(n >= 6, "{r}");
    for name in [
        "span_memory",
        "span_memory_unrelated_bank",
        "rag@1",
        "oracle_context",
        "no_adapt",
        "question_only",
    ] {
        row(&r, name, n);
    }
    // Rows of the paper's path only are absent.
    assert!(
        r.get("span_memory+prior").is_none() && r.get("mac+rag@1").is_none(),
        "{r}"
    );
    let retention = r["retention"].as_array().unwrap();
    assert!(!retention.is_empty(), "{r}");
    let sizes: Vec<u64> = r["bank_sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["documents"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [1, 8, 20], "{r}");
    // With its own document alone in the bank, every question is answered
    // from it.
    assert_eq!(r["bank_sizes"][0]["gold_top1"], 1.0, "{r}");
    // Every size asks the same questions; below the documents asked, of
    // one bank per group of that many.
    for p in r["bank_sizes"].as_array().unwrap() {
        assert_eq!(p["questions"], r["span_memory"]["n_questions"], "{r}");
    }
    let banks: Vec<u64> = r["bank_sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["banks"].as_u64().unwrap())
        .collect();
    assert_eq!(banks, [6, 1, 1], "{r}");
    // Each answer of each size is recorded with where it was read from,
    // its document counted in the stream (not within its group's bank).
    let sized: Vec<Value> = std::fs::read_to_string(out.join("bank-sizes.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sized.len() as u64, 3 * n, "{sized:?}");
    let of_one: Vec<&Value> = sized.iter().filter(|a| a["documents"] == 1).collect();
    assert!(
        of_one.iter().all(|a| a["own_document"] == true),
        "{sized:?}"
    );
    let mut asked: Vec<u64> = of_one
        .iter()
        .map(|a| a["document"].as_u64().unwrap())
        .collect();
    asked.dedup();
    assert_eq!(asked, (0..6).collect::<Vec<u64>>(), "{sized:?}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| span_memory |") && md.contains("## Bank size"),
        "{md}"
    );

    // A dataset file of the user's: the memory, rag@1 and the oracle.
    let data = tmp.path().join("mine.jsonl");
    let lines = [
        serde_json::json!({"document": "Ilsa Marrow lives in Quent. She repairs clocks.", "question": "Where does Ilsa Marrow live?", "answers": ["Quent"]}),
        serde_json::json!({"document": "The Tarn bridge opened in 1931 over the river Wend.", "question": "When did the Tarn bridge open?", "answers": ["1931"]}),
    ];
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&data, text.join("\n")).unwrap();
    let out = tmp.path().join("eval-file");
    ok(&mac(&[
        "eval",
        "--checkpoint",
        s(&run),
        "--data",
        s(&data),
        "--format",
        "jsonl",
        "--out",
        s(&out),
    ]));
    let r = report(&out);
    for name in ["span_memory", "rag@1", "oracle_context", "no_adapt"] {
        row(&r, name, 2);
    }
}
