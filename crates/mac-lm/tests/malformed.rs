//! Bad model files give errors that name the file and the cause.

mod common;

use std::fs;

use common::gguf_writer as writer;
use common::*;
use mac_lm::gguf::{GgufFile, GgufValue};
use mac_lm::tokenizer::TextTokenizer;
use mac_lm::{BaseLm, LmError};

fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

#[test]
fn truncated_gguf_names_file_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = fs::read(fixtures().join("tiny-llama.gguf")).unwrap();
    for cut in [10, 200, bytes.len() / 2, bytes.len() - 1] {
        let path = dir.path().join(format!("cut{cut}.gguf"));
        fs::write(&path, &bytes[..cut]).unwrap();
        let err = BaseLm::load(&path, &device()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LmError::Malformed { .. }), "{msg}");
        assert!(msg.contains(&format!("cut{cut}.gguf")), "{msg}");
        assert!(msg.contains("truncated"), "{msg}");
    }
}

#[test]
fn not_a_gguf_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    fs::write(&path, b"this is a text file, not a model").unwrap();
    let msg = BaseLm::load(&path, &device()).unwrap_err().to_string();
    assert!(
        msg.contains("model.gguf") && msg.contains("not a GGUF file"),
        "{msg}"
    );
}

#[test]
fn unknown_quantisation_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q4k.gguf");
    let bytes = writer::encode(
        &[(
            "general.architecture".into(),
            GgufValue::Str("llama".into()),
        )],
        &[writer::RawTensor {
            name: "blk.0.attn_q.weight".into(),
            shape: vec![256],
            type_id: 12, // Q4_K
            data: vec![0; 144],
        }],
    );
    fs::write(&path, bytes).unwrap();
    let gguf = GgufFile::open(&path).unwrap();
    let err = gguf.dequantize("blk.0.attn_q.weight").unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, mac_kernels::WeightError::UnsupportedDType { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("q4k.gguf") && msg.contains("ggml type id 12"),
        "{msg}"
    );
}

#[test]
fn writer_roundtrip_dequantises_q8_0() {
    // A Q8_0 block written by hand: scale 0.5, values -4..28 -> -2..14.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q8.gguf");
    let mut block = half::f16::from_f32(0.5).to_le_bytes().to_vec();
    block.extend((0..32).map(|i| (i as i8 - 4) as u8));
    let bytes = writer::encode(
        &[],
        &[writer::RawTensor {
            name: "t".into(),
            shape: vec![32],
            type_id: 8,
            data: block,
        }],
    );
    fs::write(&path, bytes).unwrap();
    let (shape, data) = GgufFile::open(&path).unwrap().dequantize("t").unwrap();
    assert_eq!(shape, vec![32]);
    let want: Vec<f32> = (0..32).map(|i| (i as f32 - 4.0) * 0.5).collect();
    assert_eq!(data, want);
}

#[test]
fn wrong_tensor_shape_names_tensor_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("bad-llama");
    copy_dir(&fixtures().join("tiny-llama"), &model_dir);
    let cfg_path = model_dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["intermediate_size"] = 96.into();
    fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = BaseLm::load(&model_dir, &device()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            LmError::Weights(mac_kernels::WeightError::ShapeMismatch { .. })
        ),
        "{msg}"
    );
    assert!(
        msg.contains("bad-llama")
            && msg.contains("mlp.gate_proj.weight")
            && msg.contains("[96, 64]"),
        "{msg}"
    );
}

#[test]
fn missing_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("nokey");
    copy_dir(&fixtures().join("tiny-gpt2"), &model_dir);
    let cfg_path = model_dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("n_layer");
    fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = BaseLm::load(&model_dir, &device()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, LmError::Config { ref key, .. } if key == "n_layer"),
        "{msg}"
    );
    assert!(msg.contains("config.json"), "{msg}");
}

#[test]
fn missing_gguf_metadata_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nometa.gguf");
    let bytes = writer::encode(
        &[(
            "general.architecture".into(),
            GgufValue::Str("llama".into()),
        )],
        &[],
    );
    fs::write(&path, bytes).unwrap();
    let msg = BaseLm::load(&path, &device()).unwrap_err().to_string();
    assert!(
        msg.contains("nometa.gguf") && msg.contains("llama."),
        "{msg}"
    );
}

#[test]
fn over_long_input_is_an_error_not_a_panic() {
    let model = BaseLm::load(fixtures().join("tiny-gpt2"), &device()).unwrap();
    let long = mac_lm::TokenBatch::single(vec![1; 65]).unwrap();
    let msg = model.forward(&long, None).unwrap_err().to_string();
    assert!(msg.contains("exceed"), "{msg}");
    let err = model
        .generate(&[vec![]], None, 0, 0, Default::default())
        .unwrap_err();
    assert!(err.to_string().contains("empty prompt"));
}

#[test]
fn impossible_config_numbers_are_named_before_anything_is_built() {
    let cases: [(&str, &str, serde_json::Value); 7] = [
        ("tiny-llama", "num_attention_heads", 0.into()),
        ("tiny-llama", "num_key_value_heads", 3.into()),
        ("tiny-llama", "num_hidden_layers", (1u64 << 40).into()),
        ("tiny-llama", "max_position_embeddings", 1.into()),
        ("tiny-llama", "vocab_size", 0.into()),
        ("tiny-gpt2", "n_head", 0.into()),
        ("tiny-gpt2", "n_layer", 0.into()),
    ];
    for (fixture, key, value) in cases {
        let dir = tempfile::tempdir().unwrap();
        let model_dir = dir.path().join("bad");
        copy_dir(&fixtures().join(fixture), &model_dir);
        let cfg_path = model_dir.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&cfg_path).unwrap()).unwrap();
        cfg[key] = value;
        fs::write(&cfg_path, cfg.to_string()).unwrap();
        let err = BaseLm::load(&model_dir, &device()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, LmError::Config { key: ref k, .. } if k == key),
            "{fixture} {key}: {msg}"
        );
        assert!(msg.contains("config.json"), "{msg}");
    }
}

#[test]
fn special_token_ids_outside_the_vocabulary_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = GgufValue::Array(vec![GgufValue::Str("a".into()), GgufValue::Str("b".into())]);
    for (key, id) in [
        ("tokenizer.ggml.eos_token_id", 2u64),
        ("tokenizer.ggml.bos_token_id", 7),
        ("tokenizer.ggml.padding_token_id", 1 << 33),
    ] {
        let mut metadata = vec![
            (
                "tokenizer.ggml.model".to_string(),
                GgufValue::Str("gpt2".into()),
            ),
            ("tokenizer.ggml.tokens".to_string(), tokens.clone()),
            ("tokenizer.ggml.eos_token_id".to_string(), GgufValue::U64(1)),
        ];
        metadata.retain(|(k, _)| k != key);
        metadata.push((key.to_string(), GgufValue::U64(id)));
        let path = dir.path().join("ids.gguf");
        fs::write(&path, writer::encode(&metadata, &[])).unwrap();
        let err = TextTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LmError::Config { .. }), "{msg}");
        assert!(msg.contains("ids.gguf") && msg.contains(key), "{msg}");
        assert!(msg.contains("outside the 2-token vocabulary"), "{msg}");
    }
}
