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

use super::rows::{products_portable, QuantizedRows};
use super::QuantizedMatrix;

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

/// The integer products in AVX2: each half of a weight block widened to
/// sixteen bits, `madd` with the activations' half, the halves added.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::q8::avx2::lanes8_sum;
    use super::Rows16;
    use crate::quantized::rows::offset_term;
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
