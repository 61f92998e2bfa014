//! The real SmolLM2-135M-Instruct (fetched by `cargo xtask fetch`) against
//! the values PyTorch `transformers` gives on the same GGUF file
//! (tests/fixtures/smollm2.json, made by tools/fixtures/make_lm_fixtures.py).
//! Also tokenizer parity for a `tokenizer.json` (MiniLM's WordPiece).

mod common;

use std::collections::BTreeMap;

use common::*;
use mac_kernels::quantized::Activations;
use mac_lm::gguf::GgufFile;
use mac_lm::{BaseLm, GenerateOptions, KvCache, LoadedLm, TextTokenizer, TokenBatch};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("smollm2.json")).unwrap())
        .unwrap()
}

fn ids_table(v: &Value) -> BTreeMap<String, Vec<u32>> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn gguf_tokenizer_matches_reference_ids() {
    let Some(path) = smollm_path() else { return };
    let tok = TextTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let r = reference();
    for table in ["tokenizer_ids", "transformers_gguf_tokenizer_ids"] {
        for (text, want) in ids_table(&r[table]) {
            assert_eq!(tok.encode(&text).unwrap(), want, "{table}: {text:?}");
        }
    }
    // Special tokens stay whole, and decoding drops them.
    let ids = tok.encode("<|im_start|>user").unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(
        tok.decode(&tok.encode("Grüße, 日本!").unwrap()).unwrap(),
        "Grüße, 日本!"
    );
}

#[test]
fn tokenizer_json_matches_transformers() {
    let Some(smol) = smollm_path() else { return };
    let dir = smol
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("all-minilm-l6-v2");
    let tok = TextTokenizer::from_file(dir.join("tokenizer.json"), 102, Some(101), false).unwrap();
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("minilm_tokenizer.json")).unwrap(),
    )
    .unwrap();
    for (text, want) in ids_table(&r["tokenizer_ids"]) {
        assert_eq!(tok.encode(&text).unwrap(), want, "{text:?}");
    }
}

#[test]
fn greedy_paris_and_perplexity_within_two_percent() {
    let Some(path) = smollm_path() else { return };
    let lm = LoadedLm::load(&path, &device()).unwrap();
    let r = reference();
    let prompt = lm.tokenizer.encode("The capital of France is").unwrap();
    let out = lm
        .model
        .generate(
            &[prompt],
            None,
            lm.tokenizer.pad_id,
            lm.tokenizer.eos_id,
            GenerateOptions {
                max_new_tokens: 3,
                stop_at_eos: true,
                ..Default::default()
            },
        )
        .unwrap();
    let text = lm.tokenizer.decode(&out[0]).unwrap();
    assert!(text.starts_with(" Paris"), "continuation was {text:?}");
    let want: Vec<u32> = serde_json::from_value(r["greedy_ids"].clone()).unwrap();
    assert_eq!(out[0][..], want[..3], "greedy ids differ from transformers");

    let ids = lm
        .tokenizer
        .encode(r["paragraph"].as_str().unwrap())
        .unwrap();
    let want_ids: Vec<u32> = serde_json::from_value(r["paragraph_ids"].clone()).unwrap();
    assert_eq!(ids, want_ids);
    let ppl = lm.model.perplexity(&ids, 512).unwrap();
    let reference = r["perplexity"].as_f64().unwrap();
    let rel = (ppl - reference).abs() / reference;
    eprintln!("perplexity: mac-lm {ppl:.4}, transformers {reference:.4}, rel diff {rel:.2e}");
    assert!(rel < 0.02, "perplexity {ppl} vs transformers {reference}");
}

/// The paragraph's logits decoded one token at a time after its first
/// eight, `[steps, V]` flattened.
fn decoded_logits(lm: &LoadedLm, ids: &[u32], steps: usize) -> Vec<f32> {
    let mut cache = KvCache::new();
    let prompt = TokenBatch::single(ids[..8].to_vec()).unwrap();
    lm.model
        .forward_hidden(&prompt, None, Some(&mut cache))
        .unwrap();
    let mut out = Vec::new();
    for &id in &ids[8..8 + steps] {
        let step = TokenBatch::single(vec![id]).unwrap();
        let h = lm
            .model
            .forward_hidden(&step, None, Some(&mut cache))
            .unwrap();
        out.extend(lm.model.logits(h).try_to_vec_as::<f32>().unwrap());
    }
    out
}

#[test]
fn decode_on_the_files_quantized_weights_equals_the_f32_path() {
    let Some(path) = smollm_path() else { return };
    let mut lm = LoadedLm::load(&path, &device()).unwrap();
    let BaseLm::Llama(llama) = &lm.model else {
        panic!("SmolLM2 is a Llama")
    };
    let stored = llama
        .quantized()
        .expect("the Q4_1 file's projections kept in blocks");
    // Q4_1 layers and a Q8_0 head: far fewer bytes per token than f32's.
    assert!(
        stored.size_bytes() < 150 << 20,
        "{} bytes",
        stored.size_bytes()
    );
    let ids = lm
        .tokenizer
        .encode(reference()["paragraph"].as_str().unwrap())
        .unwrap();
    let steps = 12;
    let quantized = decoded_logits(&lm, &ids, steps);
    lm.model.set_quantized_decode(false);
    let f32_path = decoded_logits(&lm, &ids, steps);
    let vocab = quantized.len() / steps;
    let mut worst = 0f32;
    for (q, f) in quantized.chunks(vocab).zip(f32_path.chunks(vocab)) {
        let argmax = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b]));
        assert_eq!(argmax(q), argmax(f), "the next token differs");
        for (a, b) in q.iter().zip(f) {
            worst = worst.max((a - b).abs());
        }
    }
    // The same weights, summed in another order: rounding, not a change.
    eprintln!("largest logit difference, quantized vs f32 weights: {worst:.2e}");
    assert!(worst < 2e-3, "logits differ by {worst}");
}

/// Perplexity of `ids[8..]` read one decode step at a time (each token's
/// logits from a step over the cache of those before it), and each step's
/// most probable next token.
fn decoded_perplexity(lm: &LoadedLm, ids: &[u32]) -> (f64, Vec<usize>) {
    let steps = ids.len() - 9;
    let logits = decoded_logits(lm, ids, steps);
    let vocab = logits.len() / steps;
    let mut nll = 0f64;
    let mut argmax = Vec::new();
    for (step, row) in logits.chunks(vocab).enumerate() {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let log_sum = row
            .iter()
            .map(|&v| f64::from(v - max).exp())
            .sum::<f64>()
            .ln();
        let next = ids[9 + step] as usize;
        nll += log_sum - f64::from(row[next] - max);
        argmax.push(
            (0..vocab)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap(),
        );
    }
    ((nll / steps as f64).exp(), argmax)
}

#[test]
fn quantized_activations_keep_the_decode_perplexity_within_one_percent() {
    let Some(path) = smollm_path() else { return };
    let mut lm = LoadedLm::load(&path, &device()).unwrap();
    let ids = lm
        .tokenizer
        .encode(reference()["paragraph"].as_str().unwrap())
        .unwrap();
    let (exact, exact_next) = decoded_perplexity(&lm, &ids);
    // Eight bits: the next token may differ at one step in twenty;
    // sixteen: at one in a hundred.
    for (activations, per_hundred) in [(Activations::Q8, 95), (Activations::Q16, 99)] {
        lm.model.set_decode_activations(activations);
        let (ppl, next) = decoded_perplexity(&lm, &ids);
        let rel = (ppl - exact).abs() / exact;
        let same = exact_next.iter().zip(&next).filter(|(a, b)| a == b).count();
        eprintln!(
            "decode perplexity over {} tokens: f32 activations {exact:.4}, {activations:?} {ppl:.4} ({rel:.2e}); next token the same at {same} of {}",
            exact_next.len(),
            exact_next.len()
        );
        assert!(
            rel < 0.01,
            "{activations:?}: perplexity {ppl} against {exact}"
        );
        assert!(
            same * 100 >= exact_next.len() * per_hundred,
            "{activations:?}: the next token differs at {} of {} steps",
            exact_next.len() - same,
            exact_next.len()
        );
    }
    // Back to f32 activations: the exact path again.
    lm.model.set_decode_activations(Activations::F32);
    assert_eq!(decoded_perplexity(&lm, &ids).0, exact);
}

/// Every live row's logits at every step of a generation (in the order
/// the rows are asked), the decoding left to greedy picks.
#[derive(Default)]
struct Recorded(Vec<(usize, usize, Vec<f32>)>);

impl mac_lm::TokenChoice for Recorded {
    fn choose(&mut self, row: usize, so_far: &[u32], logits: &[f32]) -> Option<u32> {
        self.0.push((row, so_far.len(), logits.to_vec()));
        None
    }
}

#[test]
fn host_buffer_decode_steps_equal_the_tensor_steps() {
    let Some(path) = smollm_path() else { return };
    let mut lm = LoadedLm::load(&path, &device()).unwrap();
    let tok = &lm.tokenizer;
    let before = tok.encode("Notes kept for the reader:").unwrap();
    let prompts = [
        tok.encode("The capital of France is").unwrap(),
        tok.encode("Water boils at a temperature of one hundred")
            .unwrap(),
    ];
    let (pad, eos) = (tok.pad_id, tok.eos_id);
    // A prefix in front of both rows, and rows that stop at different steps
    // (the shorter one padded on).
    let one = lm.model.cache_of(&before).unwrap();
    let prefix = mac_lm::PrefixKv {
        layers: one
            .layers
            .iter()
            .map(|(k, v)| {
                let two = |t: &burn::tensor::Tensor<4>| {
                    burn::tensor::Tensor::cat(vec![t.clone(), t.clone()], 0)
                };
                (two(k), two(v))
            })
            .collect(),
    };
    let opts = [6, 3].map(|n| GenerateOptions {
        max_new_tokens: n,
        stop_at_eos: false,
        ..Default::default()
    });
    let run = |lm: &LoadedLm| {
        let mut recorded = Recorded::default();
        let start = mac_lm::Generation {
            prefix: Some(&prefix),
            cache: KvCache::new(),
        };
        let tokens = lm
            .model
            .generate_choosing(
                start,
                &prompts,
                &opts,
                (pad, eos),
                &mut |_, _| true,
                Some(&mut recorded),
            )
            .unwrap();
        (tokens, recorded.0)
    };
    let (host_tokens, host) = run(&lm);
    lm.model.set_host_decode(false);
    let (tensor_tokens, tensor) = run(&lm);
    assert_eq!(host_tokens, tensor_tokens);
    assert_eq!((host_tokens[0].len(), host_tokens[1].len()), (6, 3));
    assert_eq!(host.len(), 9);
    let mut worst = 0f32;
    for (a, b) in host.iter().zip(&tensor) {
        assert_eq!((a.0, a.1), (b.0, b.1));
        for (x, y) in a.2.iter().zip(&b.2) {
            worst = worst.max((x - y).abs());
        }
    }
    // The same products on the same blocks; norms, softmax and sums in
    // another order: rounding only.
    eprintln!("largest logit difference, host buffers vs tensor steps: {worst:.2e}");
    assert!(worst < 2e-3, "logits differ by {worst}");
}
