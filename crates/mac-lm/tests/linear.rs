//! Matrix products and linear layers (OpenBLAS on the CPU backend) against
//! Burn's own: values for row-major, transposed, sliced and broadcast
//! operands, and gradients for exactly the operands that require them.

use burn::tensor::{Device, Distribution, Tensor};
use mac_lm::linear::{linear, matmul};

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
            mac_lm::linear::accelerated(&device),
            "flex must take the BLAS path"
        );
        assert!(mac_lm::linear::accelerated(&device.clone().autodiff()));
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
    let frozen = mac_lm::weights::frozen(w.clone());
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
