//! BERT parity with transformers, padding invariance, and the real MiniLM's
//! sentence similarities against sentence-transformers.
#![allow(clippy::needless_range_loop)] // index arithmetic over [B][T] grids reads clearer

mod common;

use common::{bool2, device, fixtures, int2};
use mac_encoder::{Bert, EncoderTokenizer, Trainable};
use mac_kernels::weights::{SafetensorsSource, WeightSource};

#[test]
fn tiny_bert_matches_transformers_and_ignores_padding() {
    let device = device();
    let bert = Bert::load(fixtures().join("tiny-bert"), &device, Trainable::None).unwrap();
    let cases = SafetensorsSource::open(fixtures().join("tiny-bert-cases.safetensors")).unwrap();
    let (s, ids) = cases.load("ids").unwrap();
    let (_, mask) = cases.load("mask").unwrap();
    let (_, want) = cases.load("hidden").unwrap();
    let (b, t, d) = (s[0], s[1], 32);
    let ids: Vec<Vec<u32>> = ids
        .chunks(t)
        .map(|r| r.iter().map(|&x| x as u32).collect())
        .collect();
    let valid: Vec<Vec<bool>> = mask
        .chunks(t)
        .map(|r| r.iter().map(|&x| x == 1.0).collect())
        .collect();
    let got: Vec<f32> = bert
        .forward(int2(&ids, &device), bool2(&valid, &device))
        .try_to_vec_as::<f32>()
        .unwrap();
    let mut worst = 0f32;
    for r in 0..b {
        for i in 0..t {
            if valid[r][i] {
                for k in 0..d {
                    let idx = (r * t + i) * d + k;
                    worst = worst.max((got[idx] - want[idx]).abs());
                }
            }
        }
    }
    eprintln!("tiny BERT max |diff| = {worst:.2e}");
    assert!(worst < 1e-4, "max |diff| = {worst}");

    // Padding invariance: five more pad positions change no valid output.
    let ids_p: Vec<Vec<u32>> = ids
        .iter()
        .map(|r| [r.clone(), vec![0; 5]].concat())
        .collect();
    let valid_p: Vec<Vec<bool>> = valid
        .iter()
        .map(|r| [r.clone(), vec![false; 5]].concat())
        .collect();
    let got_p: Vec<f32> = bert
        .forward(int2(&ids_p, &device), bool2(&valid_p, &device))
        .try_to_vec_as::<f32>()
        .unwrap();
    for r in 0..b {
        for i in 0..t {
            if valid[r][i] {
                for k in 0..d {
                    let a = got[(r * t + i) * d + k];
                    let p = got_p[(r * (t + 5) + i) * d + k];
                    assert!((a - p).abs() < 1e-5, "row {r} pos {i}: {a} vs {p}");
                }
            }
        }
    }
}

#[test]
fn minilm_sentence_similarities_match_sentence_transformers() {
    let dir = mac_assets::default_encoder_dir();
    if !mac_assets::fetched_or_skip(&dir.join("model.safetensors")) {
        return;
    }
    let device = device();
    let bert = Bert::load(&dir, &device, Trainable::None).unwrap();
    let tok = EncoderTokenizer::from_file(dir.join("tokenizer.json"), 256).unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("minilm.json")).unwrap())
            .unwrap();
    let pairs: Vec<[String; 2]> = serde_json::from_value(r["pairs"].clone()).unwrap();
    let want: Vec<f64> = serde_json::from_value(r["cosine"].clone()).unwrap();
    for (pair, want) in pairs.iter().zip(want) {
        // Both sentences in one padded batch: padding must not matter.
        let batch = tok.encode_batch(&[&pair[0], &pair[1]]).unwrap();
        let e: Vec<f32> = bert
            .sentence_embedding(batch.ids_tensor(&device), batch.valid_tensor(&device))
            .try_to_vec_as::<f32>()
            .unwrap();
        let d = e.len() / 2;
        let cos: f64 = (0..d).map(|i| e[i] as f64 * e[d + i] as f64).sum();
        eprintln!(
            "{:?}: mac {cos:.5} vs sentence-transformers {want:.5}",
            pair
        );
        assert!((cos - want).abs() < 1e-3, "{pair:?}: {cos} vs {want}");
    }
}

#[test]
fn over_long_input_is_truncated_and_reported() {
    let dir = mac_assets::default_encoder_dir();
    if !mac_assets::fetched_or_skip(&dir.join("tokenizer.json")) {
        return;
    }
    let tok = EncoderTokenizer::from_file(dir.join("tokenizer.json"), 16).unwrap();
    let long = "word ".repeat(40);
    let b = tok.encode_batch(&[&long, "short"]).unwrap();
    assert_eq!(b.seq_len(), 16);
    assert_eq!(b.truncated, vec![40 - 14, 0]);
    assert_eq!(b.valid[1].iter().filter(|&&v| v).count(), 3);
}
