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
