//! Products of weight blocks with activations quantized to sixteen bits
//! ([`QuantizedRows<i16>`]): each block of 32 activations is 32 `i16`s and a
//! scale, rounded to a 256th of eight bits' step, and a block's dot product
//! with a weight block is an integer sum, exact, times the two scales (plus
//! the weight block's minimum or offset times the activations' sum).
//!
//! The integer sums are gathered in eight lanes, as AVX2's `madd` of the
//! block's two halves leaves them (lane `l` holds values `2l`, `2l + 1`,
//! `16 + 2l`, `17 + 2l`), each at most 4 · 127 · 32767 < 2²⁴ and so an
//! exact f32, and each lane is accumulated in f32 by a fused multiply-add,
//! in a fixed order: the AVX2 kernel and the portable loops give the same
//! bits.

use super::q8::{lanes8_sum, offset_term, weight_values};
use super::rows::QuantizedRows;
use super::{QuantizedMatrix, BLOCK};

/// Sixteen-bit rows of activations.
pub(super) type Rows16 = QuantizedRows<i16>;

/// Output rows `first..` of `x · aᵀ` into `out [rows, m]`: in AVX2 where
/// the CPU has it, else in portable loops (the same bits either way).
pub(super) fn products(a: &QuantizedMatrix, x: &Rows16, first: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { avx2::products(a, x, first, out) };
        return;
    }
    products_portable(a, x, first, out)
}

/// The lane of a block's value `j` (see the module).
#[inline(always)]
fn lane(j: usize) -> usize {
    (j % 16) / 2
}

/// [`products`] in portable loops.
pub(super) fn products_portable(a: &QuantizedMatrix, x: &Rows16, first: usize, out: &mut [f32]) {
    let (nb, m) = (x.blocks, x.rows());
    for (r, out_r) in out.chunks_exact_mut(m).enumerate() {
        let row = first + r;
        for (i, o) in out_r.iter_mut().enumerate() {
            let (mut lanes, mut offset) = ([0f32; 8], 0f32);
            for b in 0..nb {
                let (wb, xb) = (row * nb + b, i * nb + b);
                let w = weight_values(a, wb);
                let xq = &x.quants[xb * BLOCK..][..BLOCK];
                let mut sums = [0i32; 8];
                for j in 0..BLOCK {
                    sums[lane(j)] += i32::from(w[j]) * i32::from(xq[j]);
                }
                let scale = a.scales[wb] * x.scales[xb];
                for (lane, &s) in lanes.iter_mut().zip(&sums) {
                    *lane = (s as f32).mul_add(scale, *lane);
                }
                offset = offset_term(a, wb, x, xb, offset);
            }
            *o = lanes8_sum(&lanes) + offset;
        }
    }
}

/// The integer products in AVX2: each half of a weight block widened to
/// sixteen bits, `madd` with the activations' half, the halves added.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::q8::avx2::lanes8_sum;
    use super::{offset_term, Rows16};
    use crate::quantized::{BlockFormat, QuantizedMatrix, BLOCK};

    /// Output rows `first..` of `x · aᵀ` into `out [rows, m]`, up to four
    /// rows of `x` per decoded weight block.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn products(a: &QuantizedMatrix, x: &Rows16, first: usize, out: &mut [f32]) {
        let (nb, m) = (x.blocks, x.rows());
        assert!(x.quants.len() >= m * nb * BLOCK && (first + out.len() / m) * nb <= a.scales.len());
        for (r, out_r) in out.chunks_exact_mut(m).enumerate() {
            let mut g = 0;
            while g < m {
                let take = match m - g {
                    1 => {
                        out_r[g] = rows_dot::<1>(a, first + r, x, g)[0];
                        1
                    }
                    2 | 3 => {
                        out_r[g..g + 2].copy_from_slice(&rows_dot::<2>(a, first + r, x, g));
                        2
                    }
                    _ => {
                        out_r[g..g + 4].copy_from_slice(&rows_dot::<4>(a, first + r, x, g));
                        4
                    }
                };
                g += take;
            }
        }
    }

    /// Weight row `row` times rows `g..g + R` of `x`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_dot<const R: usize>(
        a: &QuantizedMatrix,
        row: usize,
        x: &Rows16,
        g: usize,
    ) -> [f32; R] {
        let nb = x.blocks;
        let mut acc = [_mm256_setzero_ps(); R];
        let mut offset = [0f32; R];
        for b in 0..nb {
            let wb = row * nb + b;
            let (lo, hi) = weights(a, wb);
            for i in 0..R {
                let xb = (g + i) * nb + b;
                let xp = x.quants.as_ptr().add(xb * BLOCK) as *const __m256i;
                let sums = _mm256_add_epi32(
                    _mm256_madd_epi16(lo, _mm256_loadu_si256(xp)),
                    _mm256_madd_epi16(hi, _mm256_loadu_si256(xp.add(1))),
                );
                let scale = _mm256_set1_ps(a.scales[wb] * x.scales[xb]);
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[i]);
                offset[i] = offset_term(a, wb, x, xb, offset[i]);
            }
        }
        let mut out = [0f32; R];
        for i in 0..R {
            out[i] = lanes8_sum(acc[i]) + offset[i];
        }
        out
    }

    /// Block `wb`'s values as sixteen-bit integers: values 0..16, then
    /// 16..32 (four-bit values unsigned, their offset [`offset_term`]'s).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn weights(a: &QuantizedMatrix, wb: usize) -> (__m256i, __m256i) {
        match a.format {
            BlockFormat::Q8_0 => {
                let q = a.quants.as_ptr().add(wb * 32) as *const __m128i;
                (
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(q)),
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(q.add(1))),
                )
            }
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                let q = _mm_loadu_si128(a.quants.as_ptr().add(wb * 16) as *const __m128i);
                let mask = _mm_set1_epi8(0x0f);
                let lo = _mm_and_si128(q, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
                (_mm256_cvtepu8_epi16(lo), _mm256_cvtepu8_epi16(hi))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantized::q8::tests::random_matrix;
    use crate::quantized::BlockFormat;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn integer_products_equal_the_dequantised_operands_product() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let (n, k) = (37, 128);
        for (s, format) in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1]
            .into_iter()
            .enumerate()
        {
            let a = random_matrix(format, n, k, 30 + s as u64);
            let w = a.dequantize();
            for m in [1, 2, 3, 5, 8] {
                let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-2.0..2.0)).collect();
                let q = Rows16::quantize(&x, k);
                let xd = q.dequantize();
                let mut out = vec![0f32; n * m];
                products(&a, &q, 0, &mut out);
                for i in 0..m {
                    for r in 0..n {
                        let (want, scale) = (0..k).fold((0f64, 0f64), |(s, t), j| {
                            let p = f64::from(xd[i * k + j]) * f64::from(w[r * k + j]);
                            (s + p, t + p.abs())
                        });
                        let got = f64::from(out[r * m + i]);
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + scale),
                            "{format:?} m={m} row {r}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_cpu_variant_gives_the_same_bits() {
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (s, format) in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1]
            .into_iter()
            .enumerate()
        {
            let a = random_matrix(format, 6, 96, 40 + s as u64);
            for m in [1, 2, 3, 4, 7] {
                let x: Vec<f32> = (0..m * 96).map(|_| rng.random_range(-1.0..1.0)).collect();
                let q = Rows16::quantize(&x, 96);
                let (mut dispatched, mut portable) = (vec![0f32; 6 * m], vec![0f32; 6 * m]);
                products(&a, &q, 0, &mut dispatched);
                products_portable(&a, &q, 0, &mut portable);
                assert_eq!(bits(&dispatched), bits(&portable), "{format:?}, {m} rows");
            }
        }
    }
}
