//! Span memory through the `mac` binary: a selector trained on the
//! committed tiny model and saved as a checkpoint; `mac ingest` fills a
//! bank of one row per token and `mac ask` answers with the span it read
//! and the documents it drew on. A bank of the other memory is refused.

use std::path::PathBuf;
use std::process::{Command, Output};

use mac_data::{Dataset, Document, QaPair};
use mac_lm::LoadedLm;
use mac_model::{AnswerFrame, SentenceChecking, SpanExtent, SpanReader, SpanReading};
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

/// A selector trained briefly on the tiny model over `documents()`, saved
/// in `dir/span`.
fn trained_checkpoint(dir: &std::path::Path) -> PathBuf {
    checkpoint_checking(dir, None)
}

/// [`trained_checkpoint`] with the sentence check `sentence_check`.
fn checkpoint_checking(dir: &std::path::Path, sentence_check: Option<SentenceChecking>) -> PathBuf {
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
        copied: false,
    };
    let dataset = documents();
    let features = SpanFeatures::read(&lm, &reader, &dataset, 4, 4).unwrap();
    let mut trainer = SpanTrainer::new(config, &features, &device).unwrap();
    for _ in 0..20 {
        trainer.step(&features).unwrap();
    }
    let checkpoint = dir.join("span");
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
        sentence_check,
        beside_replaced: false,
        replaced_from_earlier: false,
    };
    trainer.save(&checkpoint, reading, tiny_llama()).unwrap();
    checkpoint
}

/// `documents()` (those from `from` on) as a JSONL file in `dir`.
fn documents_file(dir: &std::path::Path, from: usize) -> PathBuf {
    let docs = dir.join(format!("docs-{from}.jsonl"));
    let lines: Vec<String> = documents().documents[from..]
        .iter()
        .map(|d| serde_json::json!({ "document": d.text }).to_string())
        .collect();
    std::fs::write(&docs, lines.join("\n")).unwrap();
    docs
}

/// `mac ingest --json` of `docs` into `bank`, with `extra` arguments.
fn ingest(
    bank: &std::path::Path,
    checkpoint: &std::path::Path,
    docs: &std::path::Path,
    extra: &[&str],
) -> serde_json::Value {
    let out = mac()
        .args(["ingest", "--json", "--bank"])
        .arg(bank)
        .arg("--checkpoint")
        .arg(checkpoint)
        .args(extra)
        .arg(docs)
        .env("MAC_DEVICE", "flex")
        .output()
        .unwrap();
    serde_json::from_str(&succeeded(&out)).unwrap()
}

/// What `mac ask --json` of `question` from `bank` gave, however it ended.
fn ask_output(bank: &std::path::Path, checkpoint: &std::path::Path, question: &str) -> Output {
    mac()
        .args(["ask", "--json", "--bank"])
        .arg(bank)
        .arg("--checkpoint")
        .arg(checkpoint)
        .arg(question)
        .env("MAC_DEVICE", "flex")
        .output()
        .unwrap()
}

/// `mac ask --json` of `question` from `bank`, which must succeed.
fn ask(bank: &std::path::Path, checkpoint: &std::path::Path, question: &str) -> serde_json::Value {
    serde_json::from_str(&succeeded(&ask_output(bank, checkpoint, question))).unwrap()
}

#[test]
fn span_memory_ingests_and_answers_with_its_span() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = trained_checkpoint(dir.path());
    let bank = dir.path().join("bank");
    let summary = ingest(&bank, &checkpoint, &documents_file(dir.path(), 0), &[]);
    assert_eq!(summary["stored"], 4, "{summary}");
    assert!(summary.get("kv_store").is_none(), "{summary}");

    let answer = ask(&bank, &checkpoint, "Where does Bo live?");
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
    let out = ask_output(&other, &checkpoint, "Where does Bo live?");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("span memory reads"), "{err}");
}

#[test]
fn the_sentence_check_hands_the_sentence_matching_the_question() {
    let encoder = mac_assets::default_encoder_dir();
    if !mac_assets::fetched_or_skip(&encoder) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let check = |encoder: PathBuf| SentenceChecking {
        slack: Some(0.0),
        recency: None,
        recency_without_names: false,
        recency_restates: false,
        encoder,
    };
    let checkpoint = checkpoint_checking(dir.path(), Some(check(encoder)));
    let docs = dir.path().join("two-sentences.jsonl");
    let lines = [
        "Ann lives in Oslo. Ann plays the harp.",
        "Bo lives in Lima. Bo plays the drums.",
    ]
    .map(|d| serde_json::json!({ "document": d }).to_string());
    std::fs::write(&docs, lines.join("\n")).unwrap();
    let bank = dir.path().join("bank");
    ingest(&bank, &checkpoint, &docs, &[]);
    // Whichever sentence of its document the tiny selector's span lies in,
    // it is handed within the one the sentence encoder matches best with
    // the question (moved there whole where it lay elsewhere).
    let plays = ["Ann plays the harp.", "Bo plays the drums."];
    let lives = ["Ann lives in Oslo.", "Bo lives in Lima."];
    let mut moved = 0;
    for (question, sentences) in [
        ("What instrument does Ann play?", plays),
        ("Which instrument does Bo play?", plays),
        ("Which city does Bo live in?", lives),
        ("Where does Ann live?", lives),
    ] {
        let answer = ask(&bank, &checkpoint, question);
        let text = answer["span"]["text"].as_str().unwrap().trim();
        assert!(
            !text.is_empty() && sentences.iter().any(|s| s.contains(text)),
            "{question}: {answer}"
        );
        moved += usize::from(sentences.contains(&text));
    }
    // The tiny selector's spans (at most 8 tokens, shorter than any
    // sentence) lie in one sentence whatever is asked: a whole sentence
    // handed is the check's move.
    assert!(moved >= 1, "the check moved no span");
    // A checkpoint naming an encoder that is not there: an error naming it.
    let missing = dir.path().join("no-encoder");
    let broken = checkpoint_checking(&dir.path().join("broken"), Some(check(missing)));
    let out = ask_output(&bank, &broken, "Where does Ann live?");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-encoder"), "{err}");
}

#[test]
fn stored_key_values_answer_as_recomputed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = trained_checkpoint(dir.path());
    let recomputed = dir.path().join("recomputed");
    ingest(
        &recomputed,
        &checkpoint,
        &documents_file(dir.path(), 0),
        &[],
    );
    // Half the documents in first without a store: the store made later
    // reads them in, and the rest arrive with theirs.
    let mut stored = Vec::new();
    for precision in ["f32", "f16"] {
        let bank = dir.path().join(precision);
        ingest(&bank, &checkpoint, &documents_file(dir.path(), 2), &[]);
        let summary = ingest(
            &bank,
            &checkpoint,
            &documents_file(dir.path(), 0),
            &["--store-kv", precision],
        );
        assert_eq!(summary["stored"], 2, "{summary}");
        let kv = &summary["kv_store"];
        assert_eq!(kv["documents"], 4, "{summary}");
        assert_eq!(kv["precision"], precision, "{summary}");
        stored.push((bank, kv["bytes"].as_u64().unwrap()));
    }
    let (f32_bytes, f16_bytes) = (stored[0].1, stored[1].1);
    assert!(
        f16_bytes * 10 < f32_bytes * 6,
        "half floats take about half the bytes: {f16_bytes} against {f32_bytes}"
    );
    for doc in documents().documents {
        let question = &doc.qas[0].question;
        let want = ask(&recomputed, &checkpoint, question);
        assert_eq!(want["span"]["stored_kv"], false, "{want}");
        for (bank, _) in &stored {
            let got = ask(bank, &checkpoint, question);
            assert_eq!(got["span"]["stored_kv"], true, "{got}");
            assert_eq!(got["span"]["text"], want["span"]["text"], "{got}");
            if bank.ends_with("f32") {
                // The same floats as recomputed ones: the same answer.
                assert_eq!(got["answer"], want["answer"], "{got} against {want}");
            }
        }
    }
    // `mac bank verify` checks the store beside the bank; `repair` copies it.
    let bank = &stored[1].0;
    let verify = mac()
        .args(["bank", "verify", "--json", "--bank"])
        .arg(bank)
        .output()
        .unwrap();
    let verified: serde_json::Value = serde_json::from_str(&succeeded(&verify)).unwrap();
    assert_eq!(verified["kv_store"]["entries"], 4, "{verified}");
    let repaired = dir.path().join("repaired");
    let repair = mac()
        .args(["bank", "repair", "--json", "--bank"])
        .arg(bank)
        .arg("--out")
        .arg(&repaired)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&succeeded(&repair)).unwrap();
    assert_eq!(report["kv_store"]["copied"], 4, "{report}");
    let question = "Where does Cy live?";
    let got = ask(&repaired, &checkpoint, question);
    assert_eq!(got["span"]["stored_kv"], true, "{got}");
    assert_eq!(got["answer"], ask(bank, &checkpoint, question)["answer"]);

    // A store read by another frame or LM is refused, not misread.
    let bank = &stored[0].0;
    let manifest = bank.join("kv/MANIFEST");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("from position 0", "from elsewhere")).unwrap();
    let out = ask_output(bank, &checkpoint, "Where does Bo live?");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kv") && err.contains("this memory reads"),
        "{err}"
    );
}

#[test]
fn named_first_reads_the_entry_naming_the_question_and_copies_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = trained_checkpoint(dir.path());
    let bank = dir.path().join("bank");
    ingest(&bank, &checkpoint, &documents_file(dir.path(), 0), &[]);
    // The same selector, choosing among the entries that name what the
    // question names and copying its answer from the span it hands.
    let meta = checkpoint.join("span.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    json["reading"]["named_first"] = true.into();
    json["reading"]["reader"]["copied"] = true.into();
    std::fs::write(&meta, json.to_string()).unwrap();
    for (id, who) in ["Ann", "Bo", "Cy", "Di"].iter().enumerate() {
        let answer = ask(&bank, &checkpoint, &format!("Where does {who} live?"));
        let span = &answer["span"];
        assert_eq!(span["id"], id as u64, "{answer}");
        // Whole words of the span handed, the first letter in either case
        // (or nothing, where none of the tiny model's likeliest tokens
        // starts one).
        let text = span["text"].as_str().unwrap().to_lowercase();
        let said = answer["answer"].as_str().unwrap().to_lowercase();
        let words: Vec<&str> = text.split_whitespace().collect();
        let copied = said.split_whitespace().collect::<Vec<_>>();
        assert!(
            copied.is_empty() || words.windows(copied.len()).any(|w| w == copied),
            "{said:?} from {text:?}"
        );
    }
}
