//! Span memory's checkpoint: a selector written and read back gives the
//! same keys and queries; what `span.json` describes is checked against
//! its parameters file before anything is built, and every refusal names
//! the file at fault.

use std::fs;

use burn::tensor::{Distribution, Tensor};
use mac_aggregation::{Recency, SpanRule, SpanSelectorConfig};
use mac_model::{
    AnswerFrame, FrameExample, SentenceChecking, SpanCheckpoint, SpanCheckpointMeta, SpanExtent,
    SpanReader, SpanReading, SELECTOR_FILE, SPAN_META_FILE,
};

fn small() -> SpanSelectorConfig {
    SpanSelectorConfig::new(16)
        .with_d_key(8)
        .with_d_match(8)
        .with_max_span(4)
}

fn meta(config: &SpanSelectorConfig) -> SpanCheckpointMeta {
    let frame = AnswerFrame::Chat {
        examples: vec![FrameExample {
            document: "Ada lives in Porto.".into(),
            question: "Where does Ada live?".into(),
            answer: "Porto".into(),
        }],
    };
    let reader = SpanReader {
        layer: 2,
        sink_tokens: 4,
        extent: SpanExtent::Span,
        copied: false,
    };
    SpanCheckpointMeta::new(
        config,
        SpanReading {
            reader,
            rule: SpanRule::DocumentFirst,
            frame,
            recency: 1.5,
            agreement: Some(0.25),
            recency_same_names: true,
            recency_answers: Some(3.0),
            recency_either: true,
            named_first: false,
            whole_below: Some(0.3),
            sentence_check: Some(SentenceChecking {
                slack: Some(0.1),
                recency: Some(0.05),
                recency_without_names: true,
                recency_restates: false,
                encoder: "minilm".into(),
            }),
            beside_replaced: true,
            replaced_from_earlier: true,
        },
        "lm.gguf".into(),
    )
}

fn max_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn a_selector_read_back_scores_as_the_one_written() {
    let device = mac_device::select("flex").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = small();
    let selector = config.init(&device);
    let written = SpanCheckpoint::save(dir.path(), &selector, &meta(&config)).unwrap();

    let opened = SpanCheckpoint::open(dir.path()).unwrap();
    assert_eq!(opened.meta, written.meta);
    assert!(SpanCheckpoint::is_span_checkpoint(dir.path()));
    // A fresh selector has other weights; the loaded one has the written ones.
    let fresh = config.init(&device);
    let loaded = opened.load_selector(&device).unwrap();
    let states = Tensor::<2>::random([12, 16], Distribution::Normal(0.0, 1.0), &device);
    let summaries = Tensor::<2>::random([3, 32], Distribution::Normal(0.0, 1.0), &device);
    let keys = |s: &mac_aggregation::SpanSelector| s.token_keys(states.clone());
    assert!(
        max_diff(keys(&fresh), keys(&selector)) > 1e-3,
        "a fresh draw differs"
    );
    assert_eq!(max_diff(keys(&loaded), keys(&selector)), 0.0);
    assert_eq!(
        max_diff(
            loaded.match_keys(states.clone()),
            selector.match_keys(states.clone())
        ),
        0.0
    );
    assert_eq!(
        max_diff(
            loaded.question_queries(summaries.clone()),
            selector.question_queries(summaries)
        ),
        0.0
    );
    assert_eq!(loaded.max_span, 4);
}

#[test]
fn what_span_json_describes_is_checked_before_anything_is_built() {
    let device = mac_device::select("flex").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = small();
    SpanCheckpoint::save(dir.path(), &config.init(&device), &meta(&config)).unwrap();
    let json = dir.path().join(SPAN_META_FILE);
    let good = fs::read_to_string(&json).unwrap();
    let refused = |text: &str| {
        fs::write(&json, text).unwrap();
        SpanCheckpoint::open(dir.path()).unwrap_err().to_string()
    };

    // A huge selector: refused by the bound on its sizes.
    let err = refused(&good.replace("\"d_lm\": 16", "\"d_lm\": 100000000"));
    assert!(
        err.contains(SPAN_META_FILE) && err.contains("d_lm"),
        "{err}"
    );
    // Within the bounds but more than the parameters file can hold.
    let err = refused(&good.replace("\"d_lm\": 16", "\"d_lm\": 60000"));
    assert!(
        err.contains(SELECTOR_FILE) && err.contains("more than"),
        "{err}"
    );
    // Unknown fields, another format, a frame of no known kind.
    let err = refused(&good.replace("\"step\"", "\"stepz\""));
    assert!(
        err.contains(SPAN_META_FILE) && err.contains("malformed"),
        "{err}"
    );
    let err = refused(&good.replace("\"format_version\": 1", "\"format_version\": 9"));
    assert!(err.contains("format version 9"), "{err}");
    let err = refused(&good.replace("\"chat\"", "\"karaoke\""));
    assert!(err.contains(SPAN_META_FILE), "{err}");
    let err = refused(&good.replace("\"recency\": 1.5", "\"recency\": -2.0"));
    assert!(
        err.contains(SPAN_META_FILE) && err.contains("reading.recency is -2"),
        "{err}"
    );
    let err = refused(&good.replace("\"agreement\": 0.25", "\"agreement\": -0.5"));
    assert!(
        err.contains(SPAN_META_FILE) && err.contains("reading.agreement is -0.5"),
        "{err}"
    );
    let err = refused(&good.replace("\"recency_answers\": 3.0", "\"recency_answers\": -1.0"));
    assert!(
        err.contains(SPAN_META_FILE) && err.contains("reading.recency_answers is -1"),
        "{err}"
    );
    let err = refused(&good.replace("\"whole_below\": 0.3", "\"whole_below\": 1.5"));
    assert!(
        err.contains(SPAN_META_FILE) && err.contains("reading.whole_below is 1.5"),
        "{err}"
    );
    let err = refused(&good.replace("\"slack\": 0.1", "\"slack\": -0.1"));
    assert!(
        err.contains(SPAN_META_FILE) && err.contains("reading.sentence_check.slack is -0.1"),
        "{err}"
    );
    let err = refused(&good.replace("\"recency\": 0.05", "\"recency\": -1.0"));
    assert!(
        err.contains("reading.sentence_check.recency is -1"),
        "{err}"
    );
    let err = refused(&good.replace("\"recency\": 0.05,", ""));
    assert!(
        err.contains("recency_without_names is set without its recency slack"),
        "{err}"
    );
    // Without names is read with the restating test too, slack or not.
    let restating = good.replace("\"recency\": 0.05,", "").replace(
        "\"recency_without_names\": true",
        "\"recency_without_names\": true,\n      \"recency_restates\": true",
    );
    fs::write(&json, &restating).unwrap();
    let opened = SpanCheckpoint::open(dir.path()).unwrap();
    let recency = opened.meta.reading.recency();
    assert!(recency.restates && recency.without_names);
    assert_eq!(recency.sentence_answers, None);
    // The sentence tests read back, the recency's within the recency.
    fs::write(&json, &good).unwrap();
    let opened = SpanCheckpoint::open(dir.path()).unwrap();
    assert_eq!(opened.meta.reading.recency().sentence_answers, Some(0.05));
    assert!(opened.meta.reading.recency().either_answers);
    assert!(opened.meta.reading.recency().without_names);
    assert!(!opened.meta.reading.recency().restates);
    assert!(opened.meta.reading.beside_replaced);
    assert!(opened.meta.reading.replaced_from_earlier);
    let err = refused(&good.replace(",\n    \"beside_replaced\": true", ""));
    assert!(
        err.contains("replaced_from_earlier is set without beside_replaced"),
        "{err}"
    );
    fs::write(&json, &good).unwrap();
    // A record written before the margin existed reads as no margin.
    let at = good.find(",\n    \"sentence_check\"").unwrap();
    let end = at + good[at..].find('}').unwrap() + 1;
    let good = format!("{}{}", &good[..at], &good[end..]);
    let old = good
        .replace(",\n    \"whole_below\": 0.3", "")
        .replace(",\n    \"recency_answers\": 3.0", "")
        .replace(",\n    \"recency_either\": true", "")
        .replace(",\n    \"beside_replaced\": true", "")
        .replace(",\n    \"replaced_from_earlier\": true", "")
        .replace(",\n    \"recency_same_names\": true", "")
        .replace(",\n    \"agreement\": 0.25", "")
        .replace(",\n    \"recency\": 1.5", "");
    assert!(
        !old.contains("recency") && !old.contains("agreement"),
        "{old}"
    );
    fs::write(&json, old).unwrap();
    let opened = SpanCheckpoint::open(dir.path()).unwrap();
    assert_eq!(opened.meta.reading.recency(), Recency::NONE);
    assert_eq!(opened.meta.reading.whole_below, None);
    assert!(!opened.meta.reading.beside_replaced);
    assert!(!opened.meta.reading.replaced_from_earlier);

    // A shape the file's parameters do not fit: refused when loading.
    fs::write(&json, good.replace("\"d_key\": 8", "\"d_key\": 4")).unwrap();
    let err = SpanCheckpoint::open(dir.path())
        .unwrap()
        .load_selector(&device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(SELECTOR_FILE) && err.contains("w_token"),
        "{err}"
    );

    // No metadata, or no parameters.
    fs::remove_file(&json).unwrap();
    let err = SpanCheckpoint::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a span memory checkpoint"), "{err}");
    assert!(!SpanCheckpoint::is_span_checkpoint(dir.path()));
    fs::write(&json, &good).unwrap();
    fs::remove_file(dir.path().join(SELECTOR_FILE)).unwrap();
    let err = SpanCheckpoint::open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains(SELECTOR_FILE) && err.contains("missing"),
        "{err}"
    );
}
