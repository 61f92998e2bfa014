//! Matrix products and linear layers (OpenBLAS on the CPU backend) against
//! Burn's own: values for row-major, transposed, sliced and broadcast
//! operands, and gradients for exactly the operands that require them;
//! batched products (attention's) against Burn's batched matmul, and the
//! masked attention built on them against Burn's fused attention.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Distribution, Tensor, TensorData};
use mac_kernels::attention::masked_attention;
use mac_kernels::linear::{batched_matmul, linear, matmul};

fn device() -> Device {
    mac_device::select(&std::env::var("MAC_TEST_DEVICE").unwrap_or_else(|_| "flex".into())).unwrap()
}

fn max_abs_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn matmul_equals_burns_for_every_layout() {
    let device = device();
    if cfg!(feature = "blas") && device == mac_device::select("flex").unwrap() {
        assert!(
            mac_kernels::linear::accelerated(&device),
            "flex must take the BLAS path"
        );
        assert!(mac_kernels::linear::accelerated(&device.clone().autodiff()));
    }
    let r = |s: [usize; 2]| Tensor::<2>::random(s, Distribution::Normal(0.0, 1.0), &device);
    let (m, k, n) = (37, 19, 23);
    let cases: Vec<(&str, Tensor<2>, Tensor<2>)> = vec![
        ("row-major", r([m, k]), r([k, n])),
        ("transposed input", r([k, m]).transpose(), r([k, n])),
        ("transposed weight", r([m, k]), r([n, k]).transpose()),
        (
            "both transposed",
            r([k, m]).transpose(),
            r([n, k]).transpose(),
        ),
        (
            "column slices",
            r([m, k + 5]).narrow(1, 3, k),
            r([k, n + 4]).narrow(1, 2, n),
        ),
        ("row slice", r([m + 6, k]).narrow(0, 4, m), r([k, n])),
        ("broadcast rows", r([1, k]).expand([m, k]), r([k, n])),
        ("one row", r([1, k]), r([k, n])),
        (
            "one row, transposed weight",
            r([1, k]),
            r([n, k]).transpose(),
        ),
        (
            "one row stored as a column",
            r([k, 1]).transpose(),
            r([k, n]),
        ),
        (
            "one row, wide sliced weight split by columns",
            r([1, k]),
            r([k, 205]).narrow(1, 2, 200),
        ),
        (
            "one row, wide transposed weight split by columns",
            r([1, k + 3]).narrow(1, 1, k),
            r([200, k]).transpose(),
        ),
        ("one column", r([m, k]), r([k, 1])),
        ("few rows, split by columns", r([3, k]), r([k, 101])),
        (
            "few rows, transposed weight",
            r([3, k]),
            r([101, k]).transpose(),
        ),
    ];
    for (name, x, w) in cases {
        let want = x.clone().matmul(w.clone());
        let got = matmul(x, w);
        assert_eq!(got.dims(), want.dims(), "{name}");
        let diff = max_abs_diff(got, want);
        assert!(diff < 1e-4, "{name}: {diff}");
    }
    let empty = matmul(
        Tensor::<2>::zeros([3, 0], &device),
        Tensor::zeros([0, 4], &device),
    );
    assert_eq!(empty.dims(), [3, 4]);
    assert_eq!(empty.abs().sum().into_scalar::<f32>(), 0.0);
}

#[test]
fn a_constant_weight_gives_the_input_its_gradient_and_gets_none() {
    let device = device().autodiff();
    let x = Tensor::<2>::random([9, 7], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let w = Tensor::<2>::random([7, 5], Distribution::Normal(0.0, 1.0), &device);
    let target = Tensor::<2>::random([9, 5], Distribution::Normal(0.0, 1.0), &device);
    let loss = |y: Tensor<2>| (y - target.clone()).powi_scalar(2).sum();
    let grads = loss(matmul(x.clone(), w.clone())).backward();
    assert!(
        w.grad(&grads).is_none(),
        "a constant weight gets no gradient"
    );
    let g_frozen = x.grad(&grads).unwrap();
    let grads = loss(x.clone().matmul(w.clone())).backward();
    let g_burn = x.grad(&grads).unwrap();
    let diff = (g_frozen - g_burn).abs().max().into_scalar::<f32>();
    assert!(diff < 1e-4, "input gradient differs by {diff}");
}

#[test]
fn linear_gradients_match_burns_for_input_weight_and_bias() {
    let device = device().autodiff();
    let r = |s: [usize; 2]| Tensor::<2>::random(s, Distribution::Normal(0.0, 1.0), &device);
    let x = Tensor::<3>::random([2, 5, 7], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let w = r([7, 4]).require_grad();
    let b = Tensor::<1>::random([4], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let target = Tensor::<3>::random([2, 5, 4], Distribution::Normal(0.0, 1.0), &device);
    let loss = |y: Tensor<3>| (y - target.clone()).powi_scalar(2).sum();
    let ours = loss(linear(x.clone(), w.clone(), Some(b.clone()))).backward();
    let burns = loss(burn::tensor::module::linear(
        x.clone(),
        w.clone(),
        Some(b.clone()),
    ))
    .backward();
    let d3 = |a: Tensor<3>, b: Tensor<3>| (a - b).abs().max().into_scalar::<f32>();
    let d2 = |a: Tensor<2>, b: Tensor<2>| (a - b).abs().max().into_scalar::<f32>();
    let d1 = |a: Tensor<1>, b: Tensor<1>| (a - b).abs().max().into_scalar::<f32>();
    let dx = d3(x.grad(&ours).unwrap(), x.grad(&burns).unwrap());
    let dw = d2(w.grad(&ours).unwrap(), w.grad(&burns).unwrap());
    let db = d1(b.grad(&ours).unwrap(), b.grad(&burns).unwrap());
    assert!(
        dx < 1e-4 && dw < 1e-4 && db < 1e-4,
        "x {dx}, w {dw}, bias {db}"
    );
    // A frozen (untracked) weight: the input still gets its gradient.
    let frozen = r([7, 4]);
    let grads = loss(linear(x.clone(), frozen.clone(), None)).backward();
    let reference = loss(burn::tensor::module::linear(x.clone(), frozen, None)).backward();
    let dx = d3(x.grad(&grads).unwrap(), x.grad(&reference).unwrap());
    assert!(dx < 1e-4, "x {dx}");
}

#[test]
fn an_lm_weight_trains_only_when_unfrozen() {
    use burn::module::Param;
    let device = device().autodiff();
    let x = Tensor::<3>::random([2, 3, 6], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let w = Tensor::<2>::random([6, 4], Distribution::Normal(0.0, 1.0), &device);
    let frozen = mac_kernels::weights::frozen(w.clone());
    let trainable = Param::from_tensor(w.clone());
    assert!(trainable.is_require_grad());
    let y = linear(x.clone(), frozen.val(), None);
    let want = burn::tensor::module::linear(x.clone(), w, None);
    assert!((y.clone() - want).abs().max().into_scalar::<f32>() < 1e-4);
    let grads = y.sum().backward();
    assert!(
        frozen.val().grad(&grads).is_none(),
        "a frozen weight gets no gradient"
    );
    let grads = linear(x, trainable.val(), None).sum().backward();
    let g = trainable
        .val()
        .grad(&grads)
        .expect("an unfrozen weight gets a gradient");
    assert!(g.abs().sum().into_scalar::<f32>() > 0.0);
}

fn max_abs_diff_4(a: Tensor<4>, b: Tensor<4>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn batched_matmul_equals_burns_for_every_layout() {
    let device = device();
    let r = |s: [usize; 4]| Tensor::<4>::random(s, Distribution::Normal(0.0, 1.0), &device);
    let (b, h, m, k, n) = (2, 3, 17, 8, 29);
    let cases: Vec<(&str, Tensor<4>, Tensor<4>)> = vec![
        ("row-major", r([b, h, m, k]), r([b, h, k, n])),
        // q·kᵀ as attention writes it.
        (
            "swapped right",
            r([b, h, m, k]),
            r([b, h, n, k]).swap_dims(2, 3),
        ),
        (
            "swapped left",
            r([b, h, k, m]).swap_dims(2, 3),
            r([b, h, k, n]),
        ),
        // Heads split off a [B, T, H·d] projection.
        (
            "heads view",
            r([b, m, h, k]).swap_dims(1, 2),
            r([b, n, h, k]).swap_dims(1, 2).swap_dims(2, 3),
        ),
        (
            "broadcast batch",
            r([1, h, m, k]).expand([b, h, m, k]),
            r([b, h, k, n]),
        ),
        // A batch smaller than the thread pool: each product split on its own.
        ("single matrix", r([1, 1, 64, k]), r([1, 1, k, n])),
        ("one query row", r([b, h, 1, k]), r([b, h, k, n])),
    ];
    for (name, x, w) in cases {
        let want = x.clone().matmul(w.clone());
        let got = batched_matmul(x, w);
        assert_eq!(got.dims(), want.dims(), "{name}");
        let diff = max_abs_diff_4(got, want);
        assert!(diff < 1e-4, "{name}: {diff}");
    }
    let three = batched_matmul(
        Tensor::<3>::ones([4, 2, 3], &device),
        Tensor::<3>::ones([4, 3, 5], &device),
    );
    assert_eq!(three.dims(), [4, 2, 5]);
    assert_eq!(three.sum().into_scalar::<f32>(), 4.0 * 2.0 * 5.0 * 3.0);
    let empty = batched_matmul(
        Tensor::<3>::zeros([2, 3, 0], &device),
        Tensor::<3>::zeros([2, 0, 4], &device),
    );
    assert_eq!(empty.dims(), [2, 3, 4]);
    assert_eq!(empty.abs().sum().into_scalar::<f32>(), 0.0);
}

#[test]
fn batched_matmul_gradients_match_burns() {
    let device = device().autodiff();
    let r = |s: [usize; 4]| Tensor::<4>::random(s, Distribution::Normal(0.0, 1.0), &device);
    let (a0, b0, target) = (r([2, 3, 5, 7]), r([2, 3, 4, 7]), r([2, 3, 5, 4]));
    let loss = |y: Tensor<4>| (y - target.clone()).powi_scalar(2).sum();
    let run = |ours: bool| {
        let (a, b) = (a0.clone().require_grad(), b0.clone().require_grad());
        let bt = b.clone().swap_dims(2, 3);
        let y = if ours {
            batched_matmul(a.clone(), bt)
        } else {
            a.clone().matmul(bt)
        };
        let grads = loss(y).backward();
        (a.grad(&grads).unwrap(), b.grad(&grads).unwrap())
    };
    let ((ga, gb), (wa, wb)) = (run(true), run(false));
    for (name, got, want) in [("a", ga, wa), ("b", gb, wb)] {
        let diff = (got - want).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-3, "gradient of {name}: {diff}");
    }
}

/// Burn's fused attention, the reference.
fn burn_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4, Bool>) -> Tensor<4> {
    attention(
        q,
        k,
        v,
        Some(mask),
        None,
        AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        },
    )
}

/// Inference (no gradient: one fused pass per head on the CPU) and
/// training (tracked queries: BLAS products around Burn's softmax) both
/// equal Burn's fused attention, with padded keys masked.
#[test]
fn masked_attention_equals_burns_fused_attention() {
    for device in [device(), device().autodiff()] {
        let r = |s: [usize; 4]| Tensor::<4>::random(s, Distribution::Normal(0.0, 1.0), &device);
        let (b, h, t, s, d) = (2, 4, 9, 13, 16);
        let (q, k, v) = (r([b, h, t, d]), r([b, h, s, d]), r([b, h, s, d]));
        let q = if device.is_autodiff() {
            q.require_grad()
        } else {
            q
        };
        // Padding: the second sequence's last 5 keys are masked for every query.
        let mask: Vec<bool> = (0..b * h * t * s)
            .map(|i| i / (h * t * s) == 1 && i % s >= s - 5)
            .collect();
        let mask = Tensor::<4, Bool>::from_bool(TensorData::new(mask, [b, h, t, s]), &device);
        let want = burn_attention(q.clone(), k.clone(), v.clone(), mask.clone());
        let got = masked_attention(q, k, v, mask);
        let diff = max_abs_diff_4(got, want);
        assert!(diff < 1e-4, "autodiff {}: {diff}", device.is_autodiff());
    }
}

/// A query whose every key is masked reads the mean of the values (uniform
/// weights), never NaN.
#[test]
fn a_query_with_every_key_masked_reads_the_mean_value() {
    let device = device();
    let r = |s: [usize; 4]| Tensor::<4>::random(s, Distribution::Normal(0.0, 1.0), &device);
    let (q, k, v) = (r([1, 2, 3, 4]), r([1, 2, 5, 4]), r([1, 2, 5, 4]));
    let mask = Tensor::<4, Bool>::from_bool(TensorData::new(vec![true; 30], [1, 2, 3, 5]), &device);
    let got = masked_attention(q, k, v.clone(), mask);
    let mean = v.mean_dim(2).expand([1, 2, 3, 4]);
    let diff = max_abs_diff_4(got, mean);
    assert!(diff < 1e-5, "{diff}");
}
