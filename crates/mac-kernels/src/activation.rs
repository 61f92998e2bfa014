//! Activations on the fastest path the device has.
//!
//! Burn's CPU backend evaluates the exact GELU's `erf` one element at a time
//! on one core: for MiniLM's feed-forward (8 documents × 256 tokens × 1536
//! per layer) it took a quarter of the encoder's forward pass. On the CPU
//! backend, for tensors in no gradient graph (a frozen encoder, any
//! inference), [`gelu`] computes the same function on every core with a
//! rational approximation of `erf` (absolute error below 1.5e-7); everywhere
//! else, and whenever a gradient must flow, it is Burn's own.

use burn::tensor::Tensor;

/// The exact (erf) GELU, `x · Φ(x)`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "blas")]
    if cpu::serves(&x) {
        return cpu::gelu(x);
    }
    burn::tensor::activation::gelu(x)
}

/// `erf(x)` by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7),
/// branch-free so that a loop over it vectorizes.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    (1.0 - poly * exp_non_positive(-ax * ax)).copysign(x)
}

/// `e^x` for `x ≤ 0` (inputs below -87 give e^-87), branch-free: `x = n·ln2
/// + r` with `|r| ≤ ln2/2`, `e^r` by its Taylor polynomial to degree 7
/// (relative error below 2e-7), `2^n` written into the exponent bits.
#[inline(always)]
pub(crate) fn exp_non_positive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and taking away 1.5·2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    // 2^n through the same rounding trick: n + 127 (an integer in [1, 127])
    // sits in the low mantissa bits of ROUND + n + 127, and moves into the
    // exponent field. No float-to-int conversion (Rust's saturating `as`
    // compiles to scalar code), so a loop over this function vectorizes.
    let biased = (n + (127.0 + ROUND))
        .to_bits()
        .wrapping_sub(ROUND.to_bits());
    p * f32::from_bits(biased.wrapping_shl(23))
}

#[cfg(feature = "blas")]
mod cpu {
    use burn::tensor::{DType, Tensor, TensorData};
    use rayon::prelude::*;

    crate::simd::widest! {
        /// The exact GELU of every value, in place.
        fn gelu_in_place(values: &mut [f32]) = gelu_in_place_body;
    }

    #[inline(always)]
    fn gelu_in_place_body(values: &mut [f32]) {
        for v in values {
            *v *= 0.5 * (1.0 + super::erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }

    /// An f32 tensor on the CPU backend that is in no gradient graph.
    pub(super) fn serves<const D: usize>(x: &Tensor<D>) -> bool {
        x.dtype() == DType::F32 && !x.is_tracked() && crate::linear::accelerated(&x.device())
    }

    pub(super) fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
        let (shape, device) = (x.shape(), x.device());
        let mut values: Vec<f32> = match x.clone().into_data().try_into_vec::<f32>() {
            Ok(v) => v,
            Err(_) => return burn::tensor::activation::gelu(x),
        };
        values.par_chunks_mut(1 << 14).for_each(gelu_in_place);
        Tensor::from_data(TensorData::new(values, shape), &device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn exp_matches_std_to_f32_precision() {
        for i in 0..=8700 {
            let x = -(i as f32) / 100.0;
            let (ours, std) = (exp_non_positive(x), x.exp());
            assert!((ours - std).abs() <= 4e-7 * std, "e^{x}: {ours} vs {std}");
        }
    }

    #[test]
    fn erf_matches_a_reference_to_f32_precision() {
        // erf at points from a table (Abramowitz & Stegun, table 7.1).
        let table: [(f32, f64); 7] = [
            (0.0, 0.0),
            (0.1, 0.112_462_916),
            (0.5, 0.520_499_878),
            (1.0, 0.842_700_793),
            (1.5, 0.966_105_146),
            (2.0, 0.995_322_265),
            (3.0, 0.999_977_910),
        ];
        for (x, want) in table {
            assert!(
                (f64::from(erf(x)) - want).abs() < 2e-7,
                "erf({x}) = {}",
                erf(x)
            );
            assert!((f64::from(erf(-x)) + want).abs() < 2e-7);
        }
    }

    #[test]
    fn gelu_equals_burns_gelu_on_the_cpu_backend() {
        let device = mac_device::select("flex").expect("flex");
        let x = Tensor::<3>::random([3, 64, 97], Distribution::Normal(0.0, 3.0), &device);
        let ours: Vec<f32> = gelu(x.clone()).into_data().try_into_vec::<f32>().unwrap();
        let burns: Vec<f32> = burn::tensor::activation::gelu(x)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let max = ours
            .iter()
            .zip(&burns)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(max < 2e-6, "max |ours - burn| = {max}");
        // The shape and the values at known points.
        let pts = Tensor::<1>::from_data(
            TensorData::new(vec![-3.0f32, -1.0, 0.0, 1.0, 3.0], [5]),
            &device,
        );
        let got: Vec<f32> = gelu(pts).into_data().try_into_vec::<f32>().unwrap();
        let want = [-0.004_049_7, -0.158_655_25, 0.0, 0.841_344_8, 2.995_950_3];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn a_gradient_still_flows_through_gelu() {
        let device = mac_device::select("flex").expect("flex").autodiff();
        let x = Tensor::<1>::from_data(TensorData::new(vec![-1.0f32, 0.5, 2.0], [3]), &device)
            .require_grad();
        // Through an intermediate: tracked, though it is not a leaf that keeps its gradient.
        let grads = gelu(x.clone().mul_scalar(1.0)).sum().backward();
        let g: Vec<f32> = x
            .grad(&grads)
            .expect("a gradient")
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        // d/dx x·Φ(x) = Φ(x) + x·φ(x)
        let d = |x: f32| {
            0.5 * (1.0 + erf(x / 2f32.sqrt()))
                + x * (-x * x / 2.0).exp() / (2.0 * std::f32::consts::PI).sqrt()
        };
        for (gi, xi) in g.iter().zip([-1.0f32, 0.5, 2.0]) {
            assert!((gi - d(xi)).abs() < 1e-5, "{g:?}");
        }
    }
}
