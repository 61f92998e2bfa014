//! Scaled dot-product attention over `[prefix | cached | new]` keys, shared by
//! the LM's Llama and GPT-2 blocks (and, through [`masked_attention`], the BERT encoder).

use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};

use crate::linear::batched_matmul;

/// Repeats key/value heads for grouped-query attention:
/// `[B, H_kv, S, d] -> [B, H_kv * n_rep, S, d]`, head `h` using KV head `h / n_rep`.
pub fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, h, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, h, n_rep, s, d])
        .reshape([b, h * n_rep, s, d])
}

/// Attention of queries `[B, H, T, d]` over keys/values `[B, H_kv, S, d]`,
/// with optional prefix keys/values `[B, H_kv, p, d]` in front. Returns
/// `[B, T, H * d]`.
pub fn attend(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    prefix: Option<&(Tensor<4>, Tensor<4>)>,
    mask: &Tensor<4, Bool>,
) -> Tensor<3> {
    let [b, h, t, d] = q.dims();
    let n_rep = h / k.dims()[1];
    let (k, v) = match prefix {
        Some((pk, pv)) => (
            Tensor::cat(vec![pk.clone(), k], 2),
            Tensor::cat(vec![pv.clone(), v], 2),
        ),
        None => (k, v),
    };
    #[cfg(feature = "blas")]
    if cpu::serves(&q, &k, &v) {
        // Grouped-query heads read their KV head in place, no repeat.
        return cpu::attention(q, k, v, mask.clone()).reshape([b, t, h * d]);
    }
    let k = repeat_kv(k, n_rep);
    let v = repeat_kv(v, n_rep);
    masked_attention(q, k, v, mask.clone())
        .swap_dims(1, 2)
        .reshape([b, t, h * d])
}

/// `softmax(q kᵀ / √d + mask) v` over `[B, H, T, d]` queries and `[B, H, S, d]`
/// keys/values; `mask` is `[B, H, T, S]` with `true` = not attended.
///
/// On the CPU backend, for tensors in no gradient graph (inference), each
/// head's scores, masked softmax and weighted sum run as one pass on BLAS
/// and both cores, without intermediate tensors; with a gradient, the two
/// products run on BLAS ([`crate::linear::batched_matmul`]) and the softmax
/// between them as Burn's operations; elsewhere this is Burn's fused
/// attention.
pub fn masked_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Tensor<4, Bool>,
) -> Tensor<4> {
    #[cfg(feature = "blas")]
    if cpu::serves(&q, &k, &v) {
        return cpu::attention(q, k, v, mask).swap_dims(1, 2);
    }
    if crate::linear::accelerated(&q.device()) {
        let scale = 1.0 / (q.dims()[3] as f64).sqrt();
        let scores = batched_matmul(q, k.swap_dims(2, 3)) * scale;
        // The lowest finite value, not -inf: a row with every key masked
        // then gets uniform weights, never NaN.
        let probs = softmax(scores.mask_fill(mask, f32::MIN), 3);
        return batched_matmul(probs, v);
    }
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

#[cfg(feature = "blas")]
mod cpu {
    use burn::tensor::{Bool, DType, Tensor, TensorData};
    use rayon::prelude::*;

    use crate::activation::exp_non_positive;
    use crate::linear::{accelerated, sgemm_slices};

    /// f32 tensors on the CPU backend, none of them in a gradient graph.
    pub(super) fn serves(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>) -> bool {
        [q, k, v]
            .iter()
            .all(|x| x.dtype() == DType::F32 && !x.is_tracked())
            && accelerated(&q.device())
    }

    /// A pointer to the output, shared by the heads, each of which writes
    /// its own columns.
    struct Output(*mut f32);
    // SAFETY: every (batch, head) task writes a disjoint set of elements
    // (its head's `d` columns of its batch row's `t` rows), and the buffer
    // outlives the parallel loop.
    unsafe impl Sync for Output {}

    impl Output {
        /// `len` elements from `start`.
        ///
        /// # Safety
        /// The range is inside the buffer and no other task touches it.
        #[allow(clippy::mut_from_ref)]
        unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
            std::slice::from_raw_parts_mut(self.0.add(start), len)
        }
    }

    /// `softmax(q kᵀ / √d, masked) v` for queries `[B, H, T, d]` over keys
    /// and values `[B, H_kv, S, d]` (`H` a multiple of `H_kv`: query head
    /// `h` reads KV head `h / (H / H_kv)`), `mask [B, H, T, S]` with `true`
    /// = not attended (a query with every key masked attends uniformly).
    /// Returns `[B, T, H, d]`.
    pub(super) fn attention(
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Tensor<4, Bool>,
    ) -> Tensor<4> {
        let [b, h, t, d] = q.dims();
        let [_, h_kv, s, _] = k.dims();
        let n_rep = h / h_kv.max(1);
        let device = q.device();
        let vec = |x: Tensor<4>| x.into_data().try_into_vec::<f32>().expect("f32 tensor");
        let (q, k, v) = (vec(q), vec(k), vec(v));
        let mask = mask
            .into_data()
            .try_into_vec::<bool>()
            .expect("bool tensor");
        let mut out = vec![0f32; b * t * h * d];
        let target = &Output(out.as_mut_ptr());
        let scale = 1.0 / (d as f32).sqrt();
        (0..b * h).into_par_iter().for_each_init(
            || vec![0f32; t * s],
            |scores, bh| {
                let (bi, hi) = (bh / h, bh % h);
                let kv = (bi * h_kv + hi / n_rep) * s * d;
                let qs = &q[bh * t * d..(bh + 1) * t * d];
                let (ks, vs) = (&k[kv..kv + s * d], &v[kv..kv + s * d]);
                sgemm_slices((qs, false), (ks, true), scores, s, (t, s, d), scale);
                let masks = &mask[bh * t * s..(bh + 1) * t * s];
                for (row, masked) in scores.chunks_mut(s).zip(masks.chunks(s)) {
                    softmax_row(row, masked);
                }
                let start = bi * t * h * d + hi * d;
                let len = (t - 1) * h * d + d;
                // SAFETY: rows `0..t`, columns `hi·d..(hi+1)·d` of this
                // batch row's `[t, h·d]` block belong to this task alone.
                let dst = unsafe { target.slice(start, len) };
                sgemm_slices((scores, false), (vs, false), dst, h * d, (t, d, s), 1.0);
            },
        );
        Tensor::from_data(TensorData::new(out, [b, t, h, d]), &device)
    }

    /// Lanes of the reductions below: independent accumulators, so that
    /// the loops vectorize.
    const LANES: usize = 16;

    /// The largest value of `xs`.
    #[inline(always)]
    fn max_of(xs: &[f32]) -> f32 {
        let mut acc = [f32::MIN; LANES];
        let chunks = xs.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a = if x > *a { x } else { *a };
            }
        }
        rest.iter()
            .chain(&acc)
            .fold(f32::MIN, |m, &x| if x > m { x } else { m })
    }

    /// The sum of `xs`.
    #[inline(always)]
    fn sum_of(xs: &[f32]) -> f32 {
        let mut acc = [0.0f32; LANES];
        let chunks = xs.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += x;
            }
        }
        rest.iter().chain(&acc).sum()
    }

    crate::simd::widest! {
        /// The masked softmax of one row of scores, in place: masked entries
        /// get exactly 0; a row with every entry masked gets uniform weights.
        fn softmax_row(row: &mut [f32], masked: &[bool]) = softmax_row_body;
    }

    #[inline(always)]
    fn softmax_row_body(row: &mut [f32], masked: &[bool]) {
        if masked.iter().all(|&m| m) {
            let uniform = 1.0 / row.len() as f32;
            row.iter_mut().for_each(|x| *x = uniform);
            return;
        }
        for (x, &m) in row.iter_mut().zip(masked) {
            *x = if m { f32::MIN } else { *x };
        }
        let max = max_of(row);
        for (x, &m) in row.iter_mut().zip(masked) {
            *x = exp_non_positive(*x - max) * f32::from(u8::from(!m));
        }
        let inv = 1.0 / sum_of(row);
        row.iter_mut().for_each(|x| *x *= inv);
    }
}
