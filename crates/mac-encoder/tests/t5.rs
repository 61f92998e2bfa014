//! T5-encoder parity with transformers' `T5EncoderModel` (ReLU and gated-GELU
//! variants, random weights, fixtures by tools/fixtures/make_t5_fixtures.py)
//! and padding invariance.
#![allow(clippy::needless_range_loop)] // index arithmetic over [B][T] grids reads clearer

mod common;

use common::{bool2, device, fixtures, int2};
use mac_encoder::{EncoderBackbone, T5Encoder, Trainable};
use mac_kernels::weights::{SafetensorsSource, WeightSource};

#[test]
fn tiny_t5_encoders_match_transformers_and_ignore_padding() {
    let device = device();
    let cases = SafetensorsSource::open(fixtures().join("tiny-t5-cases.safetensors")).unwrap();
    let (s, ids) = cases.load("ids").unwrap();
    let (_, mask) = cases.load("mask").unwrap();
    let (b, t, d) = (s[0], s[1], 32);
    let ids: Vec<Vec<u32>> = ids
        .chunks(t)
        .map(|r| r.iter().map(|&x| x as u32).collect())
        .collect();
    let valid: Vec<Vec<bool>> = mask
        .chunks(t)
        .map(|r| r.iter().map(|&x| x == 1.0).collect())
        .collect();
    for variant in ["relu", "gated"] {
        let dir = fixtures().join(format!("tiny-t5-{variant}"));
        let enc = T5Encoder::load(&dir, &device, Trainable::None).unwrap();
        // The generic loader picks T5 from config.json too.
        assert!(matches!(
            EncoderBackbone::load(&dir, &device, Trainable::None).unwrap(),
            EncoderBackbone::T5(_)
        ));
        let (_, want) = cases.load(&format!("hidden_{variant}")).unwrap();
        let got: Vec<f32> = enc
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
        eprintln!("tiny T5 ({variant}) max |diff| = {worst:.2e}");
        assert!(worst < 1e-4, "{variant}: max |diff| = {worst}");

        // The padded row alone, without its padding, gives the same states.
        let n_valid = valid[1].iter().filter(|v| **v).count();
        let alone: Vec<f32> = enc
            .forward(
                int2(&[ids[1][..n_valid].to_vec()], &device),
                bool2(&[vec![true; n_valid]], &device),
            )
            .try_to_vec_as::<f32>()
            .unwrap();
        for i in 0..n_valid {
            for k in 0..d {
                let a = alone[i * d + k];
                let p = got[(t + i) * d + k];
                assert!((a - p).abs() < 1e-5, "{variant} pos {i}: {a} vs {p}");
            }
        }
    }
}

#[test]
fn t5_config_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "t5", "vocab_size": 10, "d_model": 8, "d_kv": 2, "d_ff": 16, "num_layers": 1, "num_heads": 4, "feed_forward_proj": "swiglu"}"#,
    )
    .unwrap();
    let e = EncoderBackbone::load(dir.path(), &device(), Trainable::None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("config.json") && e.contains("swiglu"), "{e}");
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let e = EncoderBackbone::load(dir.path(), &device(), Trainable::None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a supported encoder"), "{e}");
}
