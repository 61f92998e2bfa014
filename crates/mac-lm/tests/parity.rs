//! Logit parity against PyTorch `transformers` on tiny random models
//! (fixtures made by tools/fixtures/make_lm_fixtures.py), with and without
//! prefix key/values, right and left padding.

mod common;

use common::*;
use mac_lm::{BaseLm, PrefixKv, TokenBatch};

const ATOL: f32 = 1e-4;

fn check(model: &BaseLm, cases_name: &str, n_layers: usize) {
    let device = device();
    let cases = Cases::open(cases_name);
    let ids = cases.rows("ids");
    let prefix = PrefixKv {
        layers: (0..n_layers)
            .map(|i| {
                (
                    cases.tensor4(&format!("prefix.{i}.k"), &device),
                    cases.tensor4(&format!("prefix.{i}.v"), &device),
                )
            })
            .collect(),
    };
    for tag in ["right", "left"] {
        let valid: Vec<Vec<bool>> = cases
            .rows(&format!("mask_{tag}"))
            .into_iter()
            .map(|r| r.into_iter().map(|x| x == 1).collect())
            .collect();
        let batch = TokenBatch {
            ids: ids.clone(),
            valid: valid.clone(),
        };
        for (with_prefix, key) in [
            (false, format!("logits_{tag}")),
            (true, format!("logits_{tag}_prefix")),
        ] {
            let logits = model
                .forward(&batch, with_prefix.then_some(&prefix))
                .unwrap();
            let (_, want) = cases.get(&key);
            let diff = max_diff_valid(logits, &want, &valid);
            assert!(diff < ATOL, "{cases_name} {key}: max |diff| = {diff}");
            eprintln!("{cases_name} {key}: max |diff| = {diff:.2e}");
        }
    }
}

#[test]
fn tiny_llama_safetensors_matches_transformers() {
    let model = BaseLm::load(fixtures().join("tiny-llama"), &device()).unwrap();
    check(&model, "tiny-llama", 4);
}

#[test]
fn tiny_llama_gguf_matches_transformers_gguf_loader() {
    // Quantised (Q8_0/Q4_0/Q4_1/F16) weights with llama.cpp's Q/K permutation;
    // the reference is transformers' own GGUF loader on the same file.
    let model = BaseLm::load(fixtures().join("tiny-llama.gguf"), &device()).unwrap();
    check(&model, "tiny-llama-gguf", 4);
}

#[test]
fn tiny_gpt2_matches_transformers() {
    let model = BaseLm::load(fixtures().join("tiny-gpt2"), &device()).unwrap();
    check(&model, "tiny-gpt2", 3);
}

#[test]
fn cached_generation_matches_full_forward() {
    // Greedy decoding with the KV cache must pick the same tokens as argmax of
    // a full forward pass over the growing sequence.
    let device = device();
    let model = BaseLm::load(fixtures().join("tiny-llama"), &device).unwrap();
    let prompts = vec![vec![5u32, 17, 99, 3], vec![42u32, 7]];
    let opts = mac_lm::GenerateOptions {
        max_new_tokens: 6,
        stop_at_eos: false,
        ..Default::default()
    };
    let out = model.generate(&prompts, None, 0, 0, opts).unwrap();
    for (prompt, gen) in prompts.iter().zip(&out) {
        assert_eq!(gen.len(), 6);
        let mut seq = prompt.clone();
        for &tok in gen {
            let logits = model
                .forward(&TokenBatch::single(seq.clone()).unwrap(), None)
                .unwrap();
            let t = seq.len();
            let last: Vec<f32> = logits.narrow(1, t - 1, 1).try_to_vec_as::<f32>().unwrap();
            let best = last
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0 as u32;
            assert_eq!(best, tok);
            seq.push(tok);
        }
    }
}
