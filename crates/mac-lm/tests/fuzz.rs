//! Mutation tests of the model-file parsers: GGUF (the
//! container, its tensors and tokenizer, and a whole model), safetensors,
//! a Hugging Face `config.json` and a `tokenizer.json`. Every truncation,
//! byte flip and extreme length field of a small valid file, and random
//! edits (`MAC_FUZZ_SECONDS` runs them longer: `cargo xtask fuzz`), must
//! give an error naming the file, never a panic or an allocation beyond a
//! bound proportional to the file's size.

mod common;

use std::fs;
use std::path::Path;

use common::gguf_writer::{self as writer, RawTensor};
use common::{device, fixtures};
use mac_fuzz::{Campaign, Kind};
use mac_kernels::weights::{SafetensorsSource, WeightSource};
use mac_lm::gguf::{GgufFile, GgufValue};
use mac_lm::tokenizer::TextTokenizer;
use mac_lm::{BaseLm, LoadedLm};

#[global_allocator]
static ALLOC: mac_fuzz::TrackingAllocator = mac_fuzz::TrackingAllocator;

fn s(v: &str) -> GgufValue {
    GgufValue::Str(v.into())
}

/// A small GGUF holding every value type, a byte-level BPE tokenizer and a
/// tensor of each supported storage type.
fn small_gguf() -> Vec<u8> {
    let tokens: Vec<GgufValue> = ["a", "b", "ab", "Ġ", "Ġa", "<|eos|>"]
        .iter()
        .map(|t| s(t))
        .collect();
    let metadata = vec![
        ("general.architecture".into(), s("llama")),
        ("general.name".into(), s("fuzz seed")),
        ("general.alignment".into(), GgufValue::U64(32)),
        ("some.signed".into(), GgufValue::I64(-3)),
        ("some.float".into(), GgufValue::F64(0.5)),
        ("some.flag".into(), GgufValue::Bool(true)),
        ("tokenizer.ggml.model".into(), s("gpt2")),
        ("tokenizer.ggml.pre".into(), s("smollm")),
        ("tokenizer.ggml.tokens".into(), GgufValue::Array(tokens)),
        (
            "tokenizer.ggml.merges".into(),
            GgufValue::Array(vec![s("a b"), s("Ġ a")]),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            GgufValue::Array(vec![
                GgufValue::U64(1),
                GgufValue::U64(1),
                GgufValue::U64(1),
                GgufValue::U64(1),
                GgufValue::U64(1),
                GgufValue::U64(3),
            ]),
        ),
        ("tokenizer.ggml.eos_token_id".into(), GgufValue::U64(5)),
        ("tokenizer.ggml.bos_token_id".into(), GgufValue::U64(5)),
    ];
    let f32s: Vec<u8> = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let tensors = vec![
        RawTensor {
            name: "t.f32".into(),
            shape: vec![2, 4],
            type_id: 0,
            data: f32s,
        },
        RawTensor {
            name: "t.f16".into(),
            shape: vec![4],
            type_id: 1,
            data: vec![0, 60, 0, 64, 0, 0, 0, 188],
        },
        RawTensor {
            name: "t.bf16".into(),
            shape: vec![2],
            type_id: 30,
            data: vec![128, 63, 0, 64],
        },
        RawTensor {
            name: "t.q8_0".into(),
            shape: vec![32],
            type_id: 8,
            data: (0..34).collect(),
        },
        RawTensor {
            name: "t.q4_0".into(),
            shape: vec![32],
            type_id: 2,
            data: (0..18).collect(),
        },
        RawTensor {
            name: "t.q4_1".into(),
            shape: vec![32],
            type_id: 3,
            data: (0..20).collect(),
        },
    ];
    writer::encode(&metadata, &tensors)
}

fn gguf_parse(path: &Path) -> Result<(), String> {
    let file = GgufFile::open(path).map_err(|e| e.to_string())?;
    for name in file.tensors.keys() {
        file.dequantize(name).map_err(|e| e.to_string())?;
    }
    let tokenizer = TextTokenizer::from_gguf(&file).map_err(|e| e.to_string())?;
    let ids = tokenizer.encode("ab a<|eos|>").map_err(|e| e.to_string())?;
    tokenizer.decode(&ids).map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn gguf_container_tensors_and_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.gguf");
    let seed = small_gguf();
    Campaign::new("gguf", &seed, Kind::Binary)
        .header_len(seed.len())
        .run(&["seed.gguf"], |bytes| {
            fs::write(&path, bytes).unwrap();
            gguf_parse(&path)
        })
        .assert_passed();
}

#[test]
fn gguf_model_and_its_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-llama.gguf");
    let seed = fs::read(fixtures().join("tiny-llama.gguf")).unwrap();
    let device = device();
    Campaign::new("gguf model", &seed, Kind::Binary)
        .header_len(160)
        .max_per_family(160)
        .budget(mac_fuzz::Budget::from_env(120))
        .run(&["tiny-llama.gguf"], |bytes| {
            fs::write(&path, bytes).unwrap();
            LoadedLm::load(&path, &device).map_err(|e| e.to_string())?;
            Ok(())
        })
        .assert_passed();
}

/// A small safetensors file with tensors of three types.
fn small_safetensors() -> Vec<u8> {
    use safetensors::tensor::{Dtype, TensorView};
    let a: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let b: Vec<u8> = vec![0, 60, 0, 64];
    let c: Vec<u8> = vec![128, 63, 0, 64, 0, 0];
    let views = vec![
        ("w.a", TensorView::new(Dtype::F32, vec![2, 3], &a).unwrap()),
        ("w.b", TensorView::new(Dtype::F16, vec![2], &b).unwrap()),
        ("w.c", TensorView::new(Dtype::BF16, vec![3], &c).unwrap()),
    ];
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn safetensors_header_and_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.safetensors");
    let seed = small_safetensors();
    Campaign::new("safetensors", &seed, Kind::Binary)
        .header_len(seed.len())
        .run(&["seed.safetensors"], |bytes| {
            fs::write(&path, bytes).unwrap();
            let source = SafetensorsSource::open(&path).map_err(|e| e.to_string())?;
            for name in source.names() {
                source.load(&name).map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .assert_passed();
}

#[test]
fn hugging_face_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    fs::create_dir(&model).unwrap();
    let src = fixtures().join("tiny-llama");
    fs::copy(
        src.join("model.safetensors"),
        model.join("model.safetensors"),
    )
    .unwrap();
    let seed = fs::read(src.join("config.json")).unwrap();
    let device = device();
    Campaign::new("config.json", &seed, Kind::Text)
        .max_per_family(240)
        .header_len(0)
        .budget(mac_fuzz::Budget::from_env(150))
        // A configuration that no longer matches the weights is named by
        // the model directory the weights were read from.
        .run(&["config.json", "/model:"], |bytes| {
            fs::write(model.join("config.json"), bytes).unwrap();
            BaseLm::load(&model, &device).map_err(|e| e.to_string())?;
            Ok(())
        })
        .assert_passed();
}

/// A small byte-level BPE tokenizer in the Hugging Face `tokenizer.json` format.
const TOKENIZER_JSON: &str = include_str!("fixtures/tiny_tokenizer.json");

#[test]
fn tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    let seed = TOKENIZER_JSON.as_bytes();
    Campaign::new("tokenizer.json", seed, Kind::Text)
        .header_len(0)
        .run(&["tokenizer.json"], |bytes| {
            fs::write(&path, bytes).unwrap();
            let t = TextTokenizer::from_file(&path, 0, None, false).map_err(|e| e.to_string())?;
            let ids = t.encode("ab a<|eos|>").map_err(|e| e.to_string())?;
            t.decode(&ids).map_err(|e| e.to_string())?;
            Ok(())
        })
        .assert_passed();
}
