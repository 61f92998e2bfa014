//! Mutation tests of a checkpoint's metadata: `mac.json` (the paper's
//! path) and `span.json` (span memory) cut at every byte, flipped, with numbers made huge, zero or negative and
//! random edits (`MAC_FUZZ_SECONDS` runs them longer: `cargo xtask fuzz`).
//! Opening the checkpoint returns an error naming its file, or metadata
//! that passed validation (no zero-sized module, no zero KV layout) —
//! never a panic or an allocation beyond a bound proportional to its size.

use std::fs;

use mac_aggregation::{SpanRule, SpanSelectorConfig};
use mac_fuzz::{Campaign, Kind};
use mac_lm::KvLayout;
use mac_model::{
    AnswerFrame, Checkpoint, CheckpointMeta, FrameExample, MacConfig, SpanCheckpoint,
    SpanCheckpointMeta, SpanExtent, SpanReader, SpanReading, META_FILE, MODEL_FILE, SELECTOR_FILE,
    SPAN_META_FILE,
};

#[global_allocator]
static ALLOC: mac_fuzz::TrackingAllocator = mac_fuzz::TrackingAllocator;

#[test]
fn checkpoint_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let config = MacConfig {
        aggregator_selector_dim: Some(16),
        ..MacConfig::default()
    };
    let layout = KvLayout {
        n_layers: 2,
        n_kv_heads: 2,
        head_dim: 8,
    };
    let meta = CheckpointMeta::new(config, "lm.gguf".into(), "encoder".into(), layout);
    let seed = serde_json::to_vec_pretty(&meta).unwrap();
    fs::write(dir.path().join(MODEL_FILE), b"parameters").unwrap();
    let path = dir.path().join(META_FILE);
    Campaign::new("checkpoint mac.json", &seed, Kind::Text)
        .header_len(0)
        .run(&[META_FILE], |bytes| {
            fs::write(&path, bytes).unwrap();
            let checkpoint = Checkpoint::open(dir.path()).map_err(|e| e.to_string())?;
            let layout = checkpoint.meta.layout();
            if layout.n_layers == 0 || layout.n_kv_heads == 0 || layout.head_dim == 0 {
                return Err("accepted an empty KV layout".into());
            }
            checkpoint
                .meta
                .config
                .validate()
                .map_err(|e| format!("accepted but invalid: {e}"))
        })
        .assert_passed();
}

#[test]
fn span_checkpoint_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpanSelectorConfig::new(8).with_d_key(4).with_d_match(4);
    let frame = AnswerFrame::Chat {
        examples: vec![FrameExample {
            document: "Bo lives in Lima.".into(),
            question: "Where does Bo live?".into(),
            answer: "Lima".into(),
        }],
    };
    let reader = SpanReader {
        layer: 1,
        sink_tokens: 2,
        extent: SpanExtent::Span,
        copied: false,
    };
    let meta = SpanCheckpointMeta::new(
        &config,
        SpanReading {
            reader,
            rule: SpanRule::Joint,
            frame,
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
        "lm.gguf".into(),
    );
    let seed = serde_json::to_vec_pretty(&meta).unwrap();
    fs::write(dir.path().join(SELECTOR_FILE), vec![0u8; 4096]).unwrap();
    let path = dir.path().join(SPAN_META_FILE);
    Campaign::new("checkpoint span.json", &seed, Kind::Text)
        .header_len(0)
        .run(&[SPAN_META_FILE, SELECTOR_FILE], |bytes| {
            fs::write(&path, bytes).unwrap();
            let checkpoint = SpanCheckpoint::open(dir.path()).map_err(|e| e.to_string())?;
            let s = checkpoint.meta.selector;
            if [s.d_lm, s.d_key, s.d_match, s.max_span].contains(&0) {
                // (Not naming the file: the harness takes that for a refusal.)
                return Err(format!("accepted an empty selector: {s:?}"));
            }
            Ok(())
        })
        .assert_passed();
}

#[test]
fn a_checkpoint_claiming_more_parameters_than_its_file_holds_is_refused_before_building() {
    let dir = tempfile::tempdir().unwrap();
    let config = MacConfig {
        d_mod: 1 << 16,
        aggregator_heads: 1 << 10,
        aggregator_head_dim: 1 << 10,
        ..MacConfig::default()
    };
    config.validate().unwrap();
    let layout = KvLayout {
        n_layers: 2,
        n_kv_heads: 2,
        head_dim: 8,
    };
    let meta = CheckpointMeta::new(config, "lm.gguf".into(), "no-encoder".into(), layout);
    fs::write(
        dir.path().join(META_FILE),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
    fs::write(dir.path().join(MODEL_FILE), vec![0u8; 1 << 20]).unwrap();
    let checkpoint = Checkpoint::open(dir.path()).unwrap();
    let device = mac_device::select("flex").unwrap();
    let err = checkpoint
        .load_model(None, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(MODEL_FILE) && err.contains("at least") && err.contains("parameters"),
        "{err}"
    );
}
