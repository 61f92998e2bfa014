//! Products of weight blocks with activations quantized to eight bits
//! ([`QuantizedRows`]), as llama.cpp's CPU kernels compute a decode step:
//! each block of 32 activations is 32 signed bytes and a scale, and a
//! block's dot product with a weight block is an integer sum, exact, times the two scales (plus the weight block's
//! minimum or offset times the activations' sum).
//!
//! The integer sums are gathered in eight lanes of four products each, as
//! AVX2's `maddubs`/`madd` pair leaves them, and each lane is accumulated
//! in f32 by a fused multiply-add, in a fixed order: the AVX2 kernel and
//! the portable loops give the same bits.

use super::rows::{products_portable, QuantizedRows};
use super::QuantizedMatrix;

/// Output rows `first..` of `x · aᵀ` into `out [rows, m]`: in AVX2 where
/// the CPU has it, else in portable loops (the same bits either way).
pub(super) fn products(a: &QuantizedMatrix, x: &QuantizedRows, first: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { avx2::products(a, x, first, out) };
        return;
    }
    products_portable(a, x, first, out)
}

/// The integer products in AVX2: `maddubs` of the weights' unsigned bytes
/// (a Q8_0 block's magnitudes, its signs moved onto the activations) with
/// the activations' signed ones, `madd` into eight lanes of four.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::QuantizedRows;
    use crate::quantized::rows::offset_term;
    use crate::quantized::{BlockFormat, QuantizedMatrix, BLOCK};

    /// Output rows `first..` of `x · aᵀ` into `out [rows, m]`, up to four
    /// rows of `x` per decoded weight block.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn products(
        a: &QuantizedMatrix,
        x: &QuantizedRows,
        first: usize,
        out: &mut [f32],
    ) {
        let (nb, m) = (x.blocks, x.rows());
        assert!(x.quants.len() >= m * nb * BLOCK && (first + out.len() / m) * nb <= a.scales.len());
        for (r, out_r) in out.chunks_exact_mut(m).enumerate() {
            let mut g = 0;
            while g < m {
                match m - g {
                    1 => out_r[g] = rows_dot::<1>(a, first + r, x, g)[0],
                    2 | 3 => {
                        out_r[g..g + 2].copy_from_slice(&rows_dot::<2>(a, first + r, x, g));
                        g += 2;
                        continue;
                    }
                    _ => {
                        out_r[g..g + 4].copy_from_slice(&rows_dot::<4>(a, first + r, x, g));
                        g += 4;
                        continue;
                    }
                }
                g += 1;
            }
        }
    }

    /// Weight row `row` times rows `g..g + R` of `x`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_dot<const R: usize>(
        a: &QuantizedMatrix,
        row: usize,
        x: &QuantizedRows,
        g: usize,
    ) -> [f32; R] {
        let nb = x.blocks;
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut offset = [0f32; R];
        for b in 0..nb {
            let wb = row * nb + b;
            let (w, signs) = weights(a, wb);
            for i in 0..R {
                let xb = (g + i) * nb + b;
                let mut xq =
                    _mm256_loadu_si256(x.quants.as_ptr().add(xb * BLOCK) as *const __m256i);
                if let Some(signs) = signs {
                    xq = _mm256_sign_epi8(xq, signs);
                }
                let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(w, xq), ones);
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

    /// Block `wb`'s values as 32 unsigned bytes, and (Q8_0) the signs to
    /// move onto the activations.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn weights(a: &QuantizedMatrix, wb: usize) -> (__m256i, Option<__m256i>) {
        match a.format {
            BlockFormat::Q8_0 => {
                let w = _mm256_loadu_si256(a.quants.as_ptr().add(wb * 32) as *const __m256i);
                (_mm256_sign_epi8(w, w), Some(w))
            }
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                let q = _mm_loadu_si128(a.quants.as_ptr().add(wb * 16) as *const __m128i);
                let mask = _mm_set1_epi8(0x0f);
                let lo = _mm_and_si128(q, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
                (_mm256_set_m128i(hi, lo), None)
            }
        }
    }

    /// The eight lanes summed in [`super::lanes8_sum`]'s order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(in crate::quantized) unsafe fn lanes8_sum(v: __m256) -> f32 {
        let four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
        _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)))
    }
}
