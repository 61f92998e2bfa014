//! End to end through the `mac` binary with the real SmolLM2 + MiniLM: train
//! a tiny checkpoint, ingest documents into a fresh bank, ask, evaluate, and
//! the errors (exit code 3) for corrupt or missing banks and checkpoints.

mod common;

use common::{mac, ok, s, train_tiny};

#[test]
fn train_ingest_ask_eval_and_clear_errors() {
    if !common::models_fetched() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train_tiny(&run);
    assert!(run.join("checkpoints/last/mac.json").is_file());
    assert!(run.join("train-report.md").is_file());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("train-report.json")).unwrap())
            .unwrap();
    assert_eq!(report["summary"]["steps"], 3);

    // Documents: three facts, a duplicate, an empty file and a non-UTF-8 file.
    let docs = tmp.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    let facts = [
        "Velra Quellington was born in Port Vessa. Velra Quellington works for Orvane Dynamics.",
        "Morrion Thrimsen specializes in glaciology. Morrion Thrimsen won the Ember Prize.",
        "Sabta Kessova was born on 3 May 1961. Sabta Kessova is a native of Zarnow.",
    ];
    for (i, f) in facts.iter().enumerate() {
        std::fs::write(docs.join(format!("{i}.txt")), f).unwrap();
    }
    std::fs::write(docs.join("3-copy.txt"), facts[0]).unwrap();
    std::fs::write(docs.join("4-empty.txt"), "  \n").unwrap();
    std::fs::write(docs.join("5-latin1.txt"), b"caf\xe9 au lait").unwrap();
    let bank = tmp.path().join("bank");
    let out = ok(&mac(&[
        "ingest",
        "--bank",
        s(&bank),
        "--checkpoint",
        s(&run),
        s(&docs),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stored"], 3, "{out}");
    assert_eq!(v["duplicates"], 1, "{out}");
    assert_eq!(v["bank_entries"], 3, "{out}");
    let skipped = v["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2, "{out}");
    assert!(
        out.contains("empty document") && out.contains("UTF-8"),
        "{out}"
    );
    // Ingesting again stores nothing new: everything acknowledged is kept once.
    let again: serde_json::Value = serde_json::from_str(&ok(&mac(&[
        "ingest",
        "--bank",
        s(&bank),
        "--checkpoint",
        s(&run),
        s(&docs.join("1.txt")),
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        (again["stored"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(1))
    );

    let out = ok(&mac(&[
        "ask",
        "--bank",
        s(&bank),
        "--checkpoint",
        s(&run),
        "Where was Velra Quellington born?",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["answer"].is_string(), "{out}");
    let attended = v["documents"].as_array().unwrap();
    assert_eq!(attended.len(), 3);
    let total: f64 = attended.iter().map(|d| d["weight"].as_f64().unwrap()).sum();
    assert!(
        (total - 1.0).abs() < 1e-3,
        "weights over the whole bank sum to {total}"
    );
    assert!(attended
        .iter()
        .all(|d| d["source"].as_str().unwrap().ends_with(".txt")));
    // With the similarity prior, the document about the entity asked after
    // (0.txt) takes most of the attention: the bank stored its key.
    let out = ok(&mac(&[
        "ask",
        "--bank",
        s(&bank),
        "--checkpoint",
        s(&run),
        "Where was Velra Quellington born?",
        "--similarity-prior",
        "50",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let top = &v["documents"][0];
    assert!(
        top["source"].as_str().unwrap().ends_with("0.txt") && top["weight"].as_f64().unwrap() > 0.5,
        "{out}"
    );

    let info: serde_json::Value =
        serde_json::from_str(&ok(&mac(&["bank", "info", "--bank", s(&bank), "--json"]))).unwrap();
    assert_eq!(info["entries"], 3);
    ok(&mac(&["bank", "verify", "--bank", s(&bank)]));

    // Evaluation on a JSONL file, with its three methods.
    let data = tmp.path().join("qa.jsonl");
    std::fs::write(
        &data,
        format!(
            "{}\n{}\n",
            serde_json::json!({"document": facts[0], "question": "Where was Velra Quellington born?", "answers": ["Port Vessa"]}),
            serde_json::json!({"document": facts[1], "question": "What does Morrion Thrimsen specialize in?", "answers": ["glaciology"]}),
        ),
    )
    .unwrap();
    let eval_dir = tmp.path().join("eval");
    ok(&mac(&[
        "eval",
        "--checkpoint",
        s(&run),
        "--data",
        s(&data),
        "--out",
        s(&eval_dir),
    ]));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_dir.join("report.json")).unwrap())
            .unwrap();
    for m in ["mac", "no_adapt", "oracle_context", "rag@1"] {
        assert_eq!(r[m]["n_questions"], 2, "{m}: {r}");
        let (em, f1) = (r[m]["em"].as_f64().unwrap(), r[m]["f1"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&em) && (0.0..=1.0).contains(&f1) && em <= f1 + 1e-9);
        // The bootstrap interval holds the F1.
        let ci = &r[m]["f1_ci95"];
        let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
        assert!(lo <= f1 + 1e-9 && f1 <= hi + 1e-9, "{m}: {ci} vs {f1}");
    }
    assert!(eval_dir.join("predictions.jsonl").is_file());
    // The report re-renders from report.json alone; a directory without one is named.
    std::fs::remove_file(eval_dir.join("report.md")).unwrap();
    ok(&mac(&["report", "--eval", s(&eval_dir)]));
    let md = std::fs::read_to_string(eval_dir.join("report.md")).unwrap();
    assert!(md.contains("| mac+prior |"), "{md}");
    let none = mac(&["report", "--eval", s(&tmp.path().join("noeval"))]);
    assert_eq!(none.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&none.stderr).contains("noeval"));
    // MAC over the top-1 BM25 document is reported beside them; over the
    // top 2 of a 2-document stream it is MAC itself (same answers).
    assert_eq!(r["mac+rag@1"]["n_questions"], 2, "{r}");
    assert_eq!(r["mac+prior"]["n_questions"], 2, "{r}");
    assert!(
        r["prior_attention"]["gold_weight_mean"].as_f64().unwrap() > 0.5,
        "{r}"
    );
    let eval_k2 = tmp.path().join("eval-k2");
    ok(&mac(&[
        "eval",
        "--checkpoint",
        s(&run),
        "--data",
        s(&data),
        "--no-references",
        "--retrieval-k",
        "2",
        "--out",
        s(&eval_k2),
    ]));
    let preds = std::fs::read_to_string(eval_k2.join("predictions.jsonl")).unwrap();
    let answers = |method: &str| -> Vec<String> {
        preds
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|p| p["method"] == method)
            .map(|p| p["prediction"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(answers("mac").len(), 2);
    assert_eq!(answers("mac"), answers("mac+rag@2"));
    // Its control moves each document one place along a 2-document bank:
    // the same two documents, so again MAC's answers.
    assert_eq!(r["mac+rag@1_unrelated"]["n_questions"], 2, "{r}");
    assert_eq!(answers("mac"), answers("mac+rag@2_unrelated"));

    // Errors: missing bank, missing checkpoint, corrupt bank, malformed data.
    let missing = mac(&[
        "ask",
        "--bank",
        s(&tmp.path().join("nobank")),
        "--checkpoint",
        s(&run),
        "Who?",
    ]);
    assert_eq!(
        missing.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nobank"));
    let nock = mac(&[
        "ask",
        "--bank",
        s(&bank),
        "--checkpoint",
        s(&tmp.path().join("nockpt")),
        "Who?",
    ]);
    assert_eq!(nock.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&nock.stderr).contains("nockpt"));
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"document\": \"x\"}\n").unwrap();
    let e = mac(&[
        "eval",
        "--checkpoint",
        s(&run),
        "--data",
        s(&bad),
        "--out",
        s(&eval_dir),
    ]);
    assert_eq!(e.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&e.stderr).contains("bad.jsonl:1"));
    // `compare` reads its data the same way (and takes --skip-malformed too).
    let c = mac(&[
        "compare",
        "--checkpoint",
        s(&run),
        "--data",
        s(&bad),
        "--out",
        s(&tmp.path().join("compare")),
    ]);
    assert_eq!(c.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&c.stderr).contains("bad.jsonl:1"));

    let seg = std::fs::read_dir(&bank)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&seg, bytes).unwrap();
    let v = mac(&["bank", "verify", "--bank", s(&bank)]);
    assert_eq!(v.status.code(), Some(3));
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(
        err.contains(seg.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    // `bank repair` copies every intact entry into a new bank that verifies.
    let entries = |dir: &std::path::Path| -> u64 {
        let info: serde_json::Value =
            serde_json::from_str(&ok(&mac(&["bank", "info", "--json", "--bank", s(dir)]))).unwrap();
        info["entries"].as_u64().unwrap()
    };
    let before = entries(&bank);
    let repaired = tmp.path().join("repaired");
    let r: serde_json::Value = serde_json::from_str(&ok(&mac(&[
        "bank",
        "repair",
        "--bank",
        s(&bank),
        "--out",
        s(&repaired),
        "--json",
    ])))
    .unwrap();
    assert_eq!(r["copied"].as_u64(), Some(before - 1), "{r}");
    assert!(
        r["dropped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("checksum"),
        "{r}"
    );
    ok(&mac(&["bank", "verify", "--bank", s(&repaired)]));
    assert_eq!(entries(&repaired), before - 1);
}
