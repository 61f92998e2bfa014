//! A model's chat template is read from its files: GGUF
//! `tokenizer.chat_template`, or `chat_template` in the
//! `tokenizer_config.json` beside a `tokenizer.json` (a malformed one is an
//! error naming it).

use std::fs;
use std::path::PathBuf;

use mac_lm::{LoadedLm, TextTokenizer};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn from_the_tokenizer_config_beside_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("tokenizer.json");
    fs::copy(fixtures().join("tiny_tokenizer.json"), &json).unwrap();
    let load = || TextTokenizer::from_file(&json, 0, None, false);

    assert_eq!(
        load().unwrap().chat_template,
        None,
        "no config: no template"
    );

    let config = dir.path().join("tokenizer_config.json");
    fs::write(&config, r#"{"add_bos_token": false}"#).unwrap();
    assert_eq!(load().unwrap().chat_template, None, "a config without one");

    let template = "{% for m in messages %}<|im_start|>{{ m['role'] }}{% endfor %}";
    fs::write(
        &config,
        serde_json::json!({ "chat_template": template }).to_string(),
    )
    .unwrap();
    assert_eq!(load().unwrap().chat_template.as_deref(), Some(template));

    fs::write(&config, "{\"chat_template\": ").unwrap();
    let err = load().unwrap_err().to_string();
    assert!(
        err.contains("tokenizer_config.json") && err.contains("not valid JSON"),
        "{err}"
    );
}

#[test]
fn from_gguf_metadata_when_present() {
    let device = mac_device::select("flex").unwrap();
    let tiny = LoadedLm::load(fixtures().join("tiny-llama.gguf"), &device).unwrap();
    assert_eq!(tiny.tokenizer.chat_template, None, "the tiny GGUF has none");
    let real = mac_assets::default_lm_path();
    if !real.exists() {
        eprintln!(
            "skipped the real model's template: {} not fetched",
            real.display()
        );
        return;
    }
    let lm = LoadedLm::load(&real, &device).unwrap();
    let template = lm.tokenizer.chat_template.expect("SmolLM2 has a template");
    assert!(template.contains("<|im_start|>"), "{template}");
}
