//! Dataset generator, loaders and metrics.

use std::collections::HashSet;
use std::io::Write;

use mac_data::facts::{held_out_templates, matches_template};
use mac_data::{
    exact_match, f1_score, load, normalize_answer, prefix_exact_match, unrelated_documents,
    DataError, FactStream, FactStreamConfig, Format, LoadOptions, ValueVocabulary,
};

fn refs(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

/// Hand-checked against the official SQuAD v1.1 `evaluate-v1.1.py` definitions.
#[test]
fn squad_metrics_match_hand_checked_cases() {
    // (prediction, references, EM, F1)
    let cases: &[(&str, &[&str], f64, f64)] = &[
        ("Paris", &["Paris"], 1.0, 1.0),
        ("the Paris", &["Paris"], 1.0, 1.0), // article dropped
        ("An apple.", &["apple"], 1.0, 1.0), // article + punctuation
        ("PARIS!!", &["paris"], 1.0, 1.0),   // case + punctuation
        ("  New   York ", &["New York"], 1.0, 1.0), // whitespace
        ("New York City", &["New York"], 0.0, 0.8), // p=2/3 r=1 -> 0.8
        ("York", &["New York"], 0.0, 2.0 / 3.0), // p=1 r=1/2
        ("Berlin", &["Paris", "Berlin"], 1.0, 1.0), // best of several references
        ("in Paris France", &["Paris", "France"], 0.0, 0.5),
        ("", &["Paris"], 0.0, 0.0),
        ("the the", &["a"], 1.0, 0.0), // both normalise to "" : EM 1, F1 0 (no common tokens)
        ("12 March 1987", &["12 March 1987"], 1.0, 1.0),
        ("1987 March 12", &["12 March 1987"], 0.0, 1.0), // bag of tokens
        ("rock-and-roll", &["rock and roll"], 0.0, 0.0), // hyphen removed, tokens joined
    ];
    for (pred, r, em, f1) in cases {
        let r = refs(r);
        assert_eq!(exact_match(pred, &r), *em, "EM of {pred:?} vs {r:?}");
        assert!(
            (f1_score(pred, &r) - f1).abs() < 1e-9,
            "F1 of {pred:?} vs {r:?}: {}",
            f1_score(pred, &r)
        );
    }
    assert_eq!(
        normalize_answer("The  Quick, brown fox."),
        "quick brown fox"
    );
    assert_eq!(
        prefix_exact_match("Paris is the capital", &refs(&["Paris"])),
        1.0
    );
    assert_eq!(exact_match("Paris is the capital", &refs(&["Paris"])), 0.0);
}

#[test]
fn fact_stream_is_deterministic_and_split_by_entity() {
    for values in [
        ValueVocabulary::Closed,
        ValueVocabulary::Open,
        ValueVocabulary::Broad,
    ] {
        check_split_by_entity(values);
    }
}

fn check_split_by_entity(values: ValueVocabulary) {
    let cfg = FactStreamConfig {
        seed: 7,
        n_train: 300,
        n_validation: 40,
        n_test: 60,
        facts_per_document: 3,
        values,
        filler_sentences: 2,
    };
    let a = FactStream::generate(&cfg);
    let b = FactStream::generate(&cfg);
    assert_eq!(a, b, "same seed, same stream");
    let c = FactStream::generate(&FactStreamConfig {
        seed: 8,
        ..cfg.clone()
    });
    assert_ne!(a.train, c.train, "another seed, another stream");

    let names = |d: &mac_data::Dataset| {
        d.documents
            .iter()
            .map(|x| x.id.clone())
            .collect::<HashSet<_>>()
    };
    let (tr, va, te) = (names(&a.train), names(&a.validation), names(&a.test));
    assert_eq!(tr.len(), 300);
    assert_eq!(va.len(), 40);
    assert_eq!(te.len(), 60);
    for (a, b) in [(&tr, &va), (&tr, &te), (&va, &te)] {
        assert!(a.is_disjoint(b), "{:?}", a.intersection(b).next());
    }

    for d in a.train.documents.iter().chain(&a.test.documents) {
        assert_eq!(d.qas.len(), 3);
        assert!(d.text.contains(&d.id));
        for q in &d.qas {
            assert!(q.question.contains(&d.id), "{}", q.question);
            // The answer is a span of the document.
            assert!(
                d.text.contains(&q.answers[0]),
                "{} / {}",
                d.text,
                q.answers[0]
            );
        }
    }
    // Held-out templates never appear in training, and do appear in test.
    let held = held_out_templates(values);
    let train_text: Vec<String> = a
        .train
        .documents
        .iter()
        .flat_map(|d| {
            std::iter::once(d.text.clone()).chain(d.qas.iter().map(|q| q.question.clone()))
        })
        .collect();
    let test_text: Vec<String> = a
        .test
        .documents
        .iter()
        .flat_map(|d| {
            std::iter::once(d.text.clone()).chain(d.qas.iter().map(|q| q.question.clone()))
        })
        .collect();
    let mut seen_in_test = 0;
    for t in &held {
        assert!(
            !train_text.iter().any(|x| matches_template(t, x)),
            "held-out template {t:?} in training"
        );
        if test_text.iter().any(|x| matches_template(t, x)) {
            seen_in_test += 1;
        }
    }
    assert!(
        seen_in_test >= held.len() / 2,
        "held-out templates used in test: {seen_in_test}/{}",
        held.len()
    );
}

/// Every answer of a split, with how many questions ask for it.
fn answer_counts(d: &mac_data::Dataset) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for q in d.documents.iter().flat_map(|d| &d.qas) {
        *counts.entry(q.answers[0].clone()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn the_broad_stream_asks_fourteen_kinds_and_none_of_the_novel_streams() {
    let s = FactStream::generate(&FactStreamConfig {
        seed: 5,
        n_train: 2000,
        n_validation: 100,
        n_test: 200,
        ..FactStreamConfig::broad()
    });
    let (tr, va, te) = (
        answer_counts(&s.train),
        answer_counts(&s.validation),
        answer_counts(&s.test),
    );
    let keys =
        |m: &std::collections::HashMap<String, usize>| m.keys().cloned().collect::<HashSet<_>>();
    let (tr, va, te) = (keys(&tr), keys(&va), keys(&te));
    for (a, b) in [(&tr, &va), (&tr, &te), (&va, &te)] {
        assert!(a.is_disjoint(b), "{:?}", a.intersection(b).next());
    }
    let questions: Vec<String> = [&s.train, &s.test]
        .iter()
        .flat_map(|d| d.documents.iter().flat_map(|d| d.qas.iter()))
        .map(|qa| qa.question.to_lowercase())
        .collect();
    // The seven further kinds are asked...
    for cue in [
        "mentor",
        "book",
        "tall",
        "start work",
        "language",
        "pet",
        "car",
    ] {
        assert!(
            questions.iter().any(|q| q.contains(cue)),
            "no question with {cue:?}"
        );
    }
    // ...and none of the novel stream's own.
    for kind in [
        "instrument",
        "spouse",
        " marry",
        "marathon",
        "universit",
        "degree",
        "raised",
    ] {
        assert!(
            !questions.iter().any(|q| q.contains(kind)),
            "{kind:?} asked"
        );
    }
    // Answers of one to many words, dates in several forms.
    let words = |v: &String| v.split_whitespace().count();
    assert!(tr.iter().any(|v| words(v) == 1) && tr.iter().any(|v| words(v) >= 7));
    let dash = tr.iter().any(|v| v.len() == 10 && v.as_bytes()[4] == b'-');
    let slash = tr.iter().any(|v| v.matches('/').count() == 2);
    let ordinal = tr
        .iter()
        .any(|v| v.starts_with("the ") && v.contains(" of "));
    assert!(dash && slash && ordinal, "date forms");
}

#[test]
fn open_values_are_rare_and_never_cross_splits() {
    let s = FactStream::generate(&FactStreamConfig {
        seed: 11,
        n_train: 3000,
        n_validation: 200,
        n_test: 300,
        facts_per_document: 4,
        values: ValueVocabulary::Open,
        filler_sentences: 3,
    });
    let (train, val, test) = (
        answer_counts(&s.train),
        answer_counts(&s.validation),
        answer_counts(&s.test),
    );
    let keys =
        |m: &std::collections::HashMap<String, usize>| m.keys().cloned().collect::<HashSet<_>>();
    let (tr, va, te) = (keys(&train), keys(&val), keys(&test));
    assert!(tr.is_disjoint(&va), "{:?}", tr.intersection(&va).next());
    assert!(tr.is_disjoint(&te), "{:?}", tr.intersection(&te).next());
    assert!(va.is_disjoint(&te), "{:?}", va.intersection(&te).next());
    // Rare: no training value answers more than 1% of the training
    // questions (the closed pools put one value in ~3% of an attribute's).
    let questions = s.train.n_questions();
    let (top, count) = train.iter().max_by_key(|(_, c)| **c).unwrap();
    assert!(
        count * 100 < questions,
        "{top:?} answers {count} of {questions}"
    );
    // Seven attribute kinds, and documents of varied length.
    assert!(tr
        .iter()
        .any(|v| v.ends_with("Lane") || v.ends_with("Road")));
    assert!(tr.iter().any(|v| v.parse::<u32>().is_ok()));
    let lengths: HashSet<usize> = s
        .train
        .documents
        .iter()
        .map(|d| d.text.matches(". ").count())
        .collect();
    assert!(lengths.len() >= 4, "sentence counts {lengths:?}");

    // The closed pools, by contrast, share values between splits.
    let closed = FactStream::generate(&FactStreamConfig {
        values: ValueVocabulary::Closed,
        seed: 11,
        n_train: 3000,
        n_validation: 200,
        n_test: 300,
        facts_per_document: 4,
        filler_sentences: 0,
    });
    assert!(!keys(&answer_counts(&closed.train)).is_disjoint(&keys(&answer_counts(&closed.test))));
}

fn write(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(content)
        .unwrap();
    p
}

#[test]
fn jsonl_loader_groups_documents_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        &dir,
        "d.jsonl",
        br#"{"document": "A was born in X.", "question": "Where was A born?", "answers": ["X"]}
{"document": "A was born in X.", "question": "Who was born in X?", "answers": ["A", "a"]}

{"document": "B works at Y.", "question": "Where does B work?", "answers": ["Y"]}
"#,
    );
    let l = load(&good, Format::Jsonl, LoadOptions::default()).unwrap();
    assert_eq!(l.dataset.documents.len(), 2);
    assert_eq!(l.dataset.n_questions(), 3);
    assert_eq!(l.dataset.documents[0].qas[1].answers, refs(&["A", "a"]));

    let bad = write(
        &dir,
        "bad.jsonl",
        b"{\"document\": \"D\", \"question\": \"Q?\", \"answers\": [\"x\"]}\n{\"document\": \"D\", \"question\": \"Q?\"}\n{\"document\": \"\", \"question\": \"Q?\", \"answers\": [\"x\"]}\n\xff\xfe\n",
    );
    let err = load(&bad, Format::Jsonl, LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::Malformed { line: 2, .. }), "{msg}");
    assert!(msg.contains("bad.jsonl:2:"), "{msg}");
    let l = load(
        &bad,
        Format::Jsonl,
        LoadOptions {
            skip_malformed: true,
        },
    )
    .unwrap();
    assert_eq!(l.dataset.n_questions(), 1);
    let lines: Vec<usize> = l.skipped.iter().map(|s| s.0).collect();
    assert_eq!(lines, vec![2, 3, 4]);
    assert!(l.skipped[1].1.contains("empty document"));
    assert!(l.skipped[2].1.contains("UTF-8"));
}

#[test]
fn squad_streamingqa_archivalqa_loaders() {
    let dir = tempfile::tempdir().unwrap();
    let squad = write(
        &dir,
        "s.json",
        br#"{"version": "1.1", "data": [{"title": "T", "paragraphs": [
  {"context": "Paris is in France.", "qas": [
     {"id": "1", "question": "Where is Paris?", "answers": [{"answer_start": 12, "text": "France"}, {"answer_start": 9, "text": "in France"}]},
     {"id": "2", "question": "What is in France?", "answers": [{"answer_start": 0, "text": "Paris"}]}]}]}]}"#,
    );
    let l = load(&squad, Format::Squad, LoadOptions::default()).unwrap();
    assert_eq!(l.dataset.documents.len(), 1);
    assert_eq!(
        l.dataset.documents[0].qas[0].answers,
        refs(&["France", "in France"])
    );

    let broken = write(&dir, "broken.json", b"{\"data\": [\n{\"paragraphs\": 3}]}");
    let msg = load(&broken, Format::Squad, LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("broken.json:2:"), "{msg}");

    let sqa = write(
        &dir,
        "s.csv",
        b"question,answers,text,extra\nWho won?,Ann\\Ann Smith,\"Ann won, again.\",1\nWhen?,,\"Ann won, again.\",2\nWhere?,Rome,\"In Rome, it rained.\",3\n",
    );
    let err = load(&sqa, Format::StreamingQa, LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("s.csv:3:") && err.contains("no non-empty answer"),
        "{err}"
    );
    let l = load(
        &sqa,
        Format::StreamingQa,
        LoadOptions {
            skip_malformed: true,
        },
    )
    .unwrap();
    assert_eq!(l.dataset.documents.len(), 2);
    assert_eq!(
        l.dataset.documents[0].qas[0].answers,
        refs(&["Ann", "Ann Smith"])
    );
    assert_eq!(l.skipped.len(), 1);

    let arch = write(
        &dir,
        "a.csv",
        b"doc_id,para_num,question,answer,ans_paragraph\n7,1,Who?,Bob,Bob came.\n",
    );
    let l = load(&arch, Format::ArchivalQa, LoadOptions::default()).unwrap();
    assert_eq!(l.dataset.documents[0].text, "Bob came.");
    let missing = load(&arch, Format::StreamingQa, LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("a.csv:1:") && missing.contains("missing column `text`"),
        "{missing}"
    );

    let empty = write(&dir, "e.jsonl", b"\n\n");
    assert!(matches!(
        load(&empty, Format::Jsonl, LoadOptions::default()),
        Err(DataError::Empty { .. })
    ));
    let nofile = load(
        dir.path().join("nope.jsonl"),
        Format::Jsonl,
        LoadOptions::default(),
    )
    .unwrap_err();
    assert!(nofile.to_string().contains("nope.jsonl"));
}

#[test]
fn jsonl_round_trip() {
    let s = FactStream::generate(&FactStreamConfig {
        seed: 1,
        n_train: 5,
        n_validation: 1,
        n_test: 3,
        facts_per_document: 2,
        ..FactStreamConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "t.jsonl", s.test.to_jsonl().as_bytes());
    let l = load(&p, Format::Jsonl, LoadOptions::default()).unwrap();
    assert_eq!(l.dataset.n_questions(), s.test.n_questions());
    assert_eq!(
        l.dataset
            .documents
            .iter()
            .map(|d| &d.text)
            .collect::<Vec<_>>(),
        s.test.documents.iter().map(|d| &d.text).collect::<Vec<_>>()
    );
}

#[test]
fn the_update_stream_round_trips_through_jsonl_with_its_stale_answers() {
    let s = mac_data::update_stream(5, 30);
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "u.jsonl", s.to_jsonl().as_bytes());
    let l = load(&p, Format::Jsonl, LoadOptions::default()).unwrap();
    let stale = |d: &mac_data::Dataset| {
        d.questions()
            .map(|(_, q)| q.stale.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(stale(&l.dataset), stale(&s));
    assert_eq!(stale(&s).iter().filter(|x| !x.is_empty()).count(), 10);
    assert_eq!(l.dataset.documents.len(), 30);
}

#[test]
fn unrelated_documents_name_no_entity_of_the_stream() {
    let config = FactStreamConfig {
        n_train: 300,
        n_validation: 20,
        n_test: 40,
        ..FactStreamConfig::open()
    };
    let stream = FactStream::generate(&config);
    let named: HashSet<&str> = [&stream.train, &stream.validation, &stream.test]
        .into_iter()
        .flat_map(|d| d.documents.iter().map(|d| d.id.as_str()))
        .collect();
    let more = unrelated_documents(&config, 500);
    assert_eq!(more, unrelated_documents(&config, 500));
    assert_eq!(more.documents.len(), 500);
    let mut seen = HashSet::new();
    for d in &more.documents {
        assert!(
            !named.contains(d.id.as_str()) && seen.insert(&d.id),
            "{}",
            d.id
        );
        assert_eq!(d.qas.len(), config.facts_per_document);
        for qa in &d.qas {
            assert!(d.text.contains(&qa.answers[0]), "{}", d.text);
        }
    }
}
