//! The loss gradient with respect to a prefix is non-zero and matches finite
//! differences, while the frozen LM weights receive none.

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use mac_lm::{BaseLm, PrefixKv, TokenBatch};

fn prefix_from(values: &[Vec<f32>], shape: [usize; 4], device: &burn::tensor::Device) -> PrefixKv {
    PrefixKv {
        layers: values
            .chunks(2)
            .map(|kv| {
                (
                    Tensor::from_data(TensorData::new(kv[0].clone(), shape), device),
                    Tensor::from_data(TensorData::new(kv[1].clone(), shape), device),
                )
            })
            .collect(),
    }
}

#[test]
fn prefix_gradient_matches_finite_differences() {
    let device = device();
    let model = BaseLm::load(fixtures().join("tiny-llama"), &device).unwrap();
    let layout = model.kv_layout();
    let shape = [2, layout.n_kv_heads, 2, layout.head_dim];
    let numel: usize = shape.iter().product();
    // Deterministic pseudo-random prefix values.
    let mut seed = 12345u64;
    let mut rand = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let values: Vec<Vec<f32>> = (0..2 * layout.n_layers)
        .map(|_| (0..numel).map(|_| rand()).collect())
        .collect();
    let batch = TokenBatch::padded(
        &[vec![3, 9, 27, 81, 4], vec![8, 16, 32]],
        0,
        mac_lm::Padding::Right,
    )
    .unwrap();
    let targets = vec![vec![9, 27, 81, 4, 1], vec![16, 32, 64, 0, 0]];
    let weights = vec![vec![1.0, 1.0, 1.0, 1.0, 0.0], vec![1.0, 1.0, 1.0, 0.0, 0.0]];

    let loss_at = |vals: &[Vec<f32>]| -> f64 {
        let p = prefix_from(vals, shape, &device);
        model
            .weighted_nll(&batch, &targets, &weights, Some(&p))
            .unwrap()
            .into_scalar::<f64>()
    };

    // Analytic gradient on the autodiff device.
    let ad = device.clone().autodiff();
    let mut prefix = prefix_from(&values, shape, &ad);
    for (k, v) in prefix.layers.iter_mut() {
        *k = k.clone().require_grad();
        *v = v.clone().require_grad();
    }
    let loss = model
        .weighted_nll(&batch, &targets, &weights, Some(&prefix))
        .unwrap();
    let grads = loss.backward();
    let grad_of = |layer: usize, is_v: bool| -> Vec<f32> {
        let (k, v) = &prefix.layers[layer];
        let t = if is_v { v } else { k };
        t.grad(&grads)
            .expect("prefix has a gradient")
            .try_to_vec_as::<f32>()
            .unwrap()
    };
    // The frozen weights get no gradient.
    if let BaseLm::Llama(m) = &model {
        assert!(m.embed_tokens.val().grad(&grads).is_none());
        assert!(m.layers[0].self_attn.q_proj.val().grad(&grads).is_none());
    }

    let mut checked = 0;
    let mut nonzero = 0;
    for layer in [0, layout.n_layers - 1] {
        for is_v in [false, true] {
            let g = grad_of(layer, is_v);
            nonzero += g.iter().filter(|x| x.abs() > 1e-7).count();
            for idx in [0, numel / 3, numel - 1] {
                let slot = 2 * layer + is_v as usize;
                let eps = 1e-2f32;
                let mut plus = values.clone();
                plus[slot][idx] += eps;
                let mut minus = values.clone();
                minus[slot][idx] -= eps;
                let fd = (loss_at(&plus) - loss_at(&minus)) / (2.0 * eps as f64);
                let an = g[idx] as f64;
                let tol = 2e-3 + 2e-2 * fd.abs().max(an.abs());
                assert!(
                    (fd - an).abs() < tol,
                    "layer {layer} v={is_v} idx {idx}: analytic {an} vs finite diff {fd}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 12);
    assert!(nonzero > 0, "prefix gradient is identically zero");
}

/// `weighted_nll` reads logits only at weighted positions; it must equal
/// the weighted NLL computed by hand from the full `forward` logits.
#[test]
fn weighted_nll_matches_the_full_logits() {
    let device = device();
    let model = BaseLm::load(fixtures().join("tiny-llama"), &device).unwrap();
    let batch = TokenBatch::padded(
        &[vec![3, 9, 27, 81, 4], vec![8, 16, 32]],
        0,
        mac_lm::Padding::Right,
    )
    .unwrap();
    let targets = vec![vec![9, 27, 81, 4, 1], vec![16, 32, 64, 0, 0]];
    let weights = vec![vec![0.0, 0.5, 1.0, 2.0, 0.0], vec![1.0, 0.0, 1.0, 0.0, 0.0]];
    let loss = model
        .weighted_nll(&batch, &targets, &weights, None)
        .unwrap()
        .into_scalar::<f64>();
    let logits = model.forward(&batch, None).unwrap();
    let [b, t, v] = logits.dims();
    let logits = logits.try_to_vec_as::<f32>().unwrap();
    let (mut sum, mut total) = (0.0f64, 0.0f64);
    for r in 0..b {
        for c in 0..t {
            let w = weights[r][c] as f64;
            if w == 0.0 {
                continue;
            }
            let row = &logits[(r * t + c) * v..(r * t + c + 1) * v];
            let max = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            sum += w * (lse - row[targets[r][c] as usize] as f64);
            total += w;
        }
    }
    let expected = sum / total;
    assert!(
        (loss - expected).abs() < 1e-4 * expected.abs().max(1.0),
        "weighted_nll {loss} vs by hand {expected}"
    );
}

/// A virtual token whose hidden vector is a real token's input at position
/// 0 gets, in the first layer, exactly the keys and values the LM's own
/// forward pass caches for that token (Llama: rotary is the identity at 0;
/// GPT-2: its position-0 embedding is part of the input).
#[test]
fn virtual_token_kv_matches_the_lms_own_first_layer() {
    let device = device();
    for name in ["tiny-llama", "tiny-gpt2"] {
        let model = BaseLm::load(fixtures().join(name), &device).unwrap();
        let batch = TokenBatch::padded(&[vec![7]], 0, mac_lm::Padding::Right).unwrap();
        let mut cache = mac_lm::KvCache::new();
        model
            .forward_hidden(&batch, None, Some(&mut cache))
            .unwrap();
        let ids = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
            TensorData::new(vec![7i64], [1, 1]),
            &device,
        );
        let mut hidden = model.token_embeddings(ids);
        if let BaseLm::Gpt2(m) = &model {
            hidden = hidden + m.wpe.val().narrow(0, 0, 1).unsqueeze::<3>();
        }
        let prefix = model.virtual_token_prefix(hidden).unwrap();
        let (k, v) = &prefix.layers[0];
        let (ck, cv) = &cache.layers[0];
        let diff =
            |a: &Tensor<4>, b: &Tensor<4>| (a.clone() - b.clone()).abs().max().into_scalar::<f32>();
        assert_eq!(k.dims(), ck.dims(), "{name}");
        assert!(diff(k, ck) < 1e-5 && diff(v, cv) < 1e-5, "{name}");
        assert_eq!(prefix.layers.len(), model.kv_layout().n_layers);
        // A hidden vector of the wrong width is an error, not a panic.
        let wrong = Tensor::<3>::zeros([1, 1, model.hidden_width() + 1], &device);
        assert!(model.virtual_token_prefix(wrong).is_err());
    }
}

/// Soft-prompt tokens that are a text's own input embeddings give the
/// question exactly the logits it gets with that text in front of it as
/// real tokens (tiny Llama; rows of different lengths, padded on either
/// side). GPT-2 and a wrong width are errors.
#[test]
fn soft_prompt_prefix_equals_the_text_in_context() {
    let device = device();
    let model = BaseLm::load(fixtures().join("tiny-llama"), &device).unwrap();
    let context = [vec![5u32, 9, 14], vec![21u32, 3, 8]];
    let questions = [vec![11u32, 4, 17, 2, 30], vec![6u32, 12]];
    let ids: Vec<i64> = context.iter().flatten().map(|&t| t as i64).collect();
    let embeds = model.token_embeddings(Tensor::from_data(TensorData::new(ids, [2, 3]), &device));
    let prefix = model.soft_prompt_prefix(embeds).unwrap();
    assert_eq!(prefix.len(), 3);
    for side in [mac_lm::Padding::Left, mac_lm::Padding::Right] {
        let batch = TokenBatch::padded(&questions, 0, side).unwrap();
        let with_prefix = model.forward(&batch, Some(&prefix)).unwrap();
        let t = batch.seq_len();
        for (row, q) in questions.iter().enumerate() {
            let full: Vec<u32> = context[row].iter().chain(q).copied().collect();
            let reference = model
                .forward(&TokenBatch::padded(&[full], 0, side).unwrap(), None)
                .unwrap()
                .narrow(1, 3, q.len());
            let start = match side {
                mac_lm::Padding::Left => t - q.len(),
                mac_lm::Padding::Right => 0,
            };
            let ours = with_prefix
                .clone()
                .narrow(0, row, 1)
                .narrow(1, start, q.len());
            let diff = (ours - reference).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-4, "row {row} {side:?}: max logit diff {diff}");
        }
    }
    let gpt2 = BaseLm::load(fixtures().join("tiny-gpt2"), &device).unwrap();
    let e = Tensor::<3>::zeros([1, 2, gpt2.hidden_width()], &device);
    assert!(gpt2.soft_prompt_prefix(e).is_err());
    let wrong = Tensor::<3>::zeros([1, 2, model.hidden_width() + 1], &device);
    assert!(model.soft_prompt_prefix(wrong).is_err());
}

/// The residual stream: after 0 layers it is the input embeddings (Llama),
/// after every layer the model's final norm turns it into the hidden states
/// `forward_hidden` returns; asking for more layers than exist is an error.
#[test]
fn residual_stream_brackets_the_decoder() {
    let device = device();
    let model = BaseLm::load(fixtures().join("tiny-llama"), &device).unwrap();
    let batch = TokenBatch::padded(
        &[vec![5u32, 9, 14, 2], vec![7u32, 3]],
        0,
        mac_lm::Padding::Right,
    )
    .unwrap();
    let diff = |a: Tensor<3>, b: Tensor<3>| (a - b).abs().max().into_scalar::<f32>();
    let emb = model.token_embeddings(batch.ids_tensor(&device));
    assert!(diff(model.residual_stream(&batch, 0).unwrap(), emb) < 1e-6);
    let n = model.kv_layout().n_layers;
    let last = model.residual_stream(&batch, n).unwrap();
    let BaseLm::Llama(m) = &model else {
        unreachable!()
    };
    let hidden = model.forward_hidden(&batch, None, None).unwrap();
    assert!(diff(m.norm.forward(last.clone()), hidden) < 1e-5);
    // Each layer changes the stream.
    let mid = model.residual_stream(&batch, 1).unwrap();
    assert!(diff(mid, last) > 1e-3);
    assert!(model.residual_stream(&batch, n + 1).is_err());
}
