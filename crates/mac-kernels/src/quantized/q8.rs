//! Products of weight blocks with activations quantized to eight bits
//! ([`QuantizedRows`]), as llama.cpp's CPU kernels compute a decode step:
//! each block of 32 activations is 32 signed bytes and a scale, and a block's dot product with a weight block is an
//! integer sum, exact, times the two scales (plus the weight block's
//! minimum or offset times the activations' sum).
//!
//! The integer sums are gathered in eight lanes of four products each, as
//! AVX2's `maddubs`/`madd` pair leaves them, and each lane is accumulated
//! in f32 by a fused multiply-add, in a fixed order: the AVX2 kernel and
//! the portable loops give the same bits.

use super::rows::QuantizedRows;
use super::{BlockFormat, QuantizedMatrix, BLOCK};

/// Weight block `wb`'s term beside its integer sum with activation block
/// `xb`: the minimum (Q4_1) or the offset of 8 (Q4_0) times the
/// activations' sum, accumulated into `offset`.
#[inline(always)]
pub(super) fn offset_term<Q>(
    a: &QuantizedMatrix,
    wb: usize,
    x: &QuantizedRows<Q>,
    xb: usize,
    offset: f32,
) -> f32 {
    match a.format {
        BlockFormat::Q4_1 => a.mins[wb].mul_add(x.sums[xb], offset),
        BlockFormat::Q4_0 => (-8.0 * a.scales[wb]).mul_add(x.sums[xb], offset),
        BlockFormat::Q8_0 => offset,
    }
}

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

/// [`products`] in portable loops.
pub(super) fn products_portable(
    a: &QuantizedMatrix,
    x: &QuantizedRows,
    first: usize,
    out: &mut [f32],
) {
    let (nb, m) = (x.blocks, x.rows());
    for (r, out_r) in out.chunks_exact_mut(m).enumerate() {
        let row = first + r;
        for (i, o) in out_r.iter_mut().enumerate() {
            let (mut lanes, mut offset) = ([0f32; 8], 0f32);
            for b in 0..nb {
                let (wb, xb) = (row * nb + b, i * nb + b);
                let w = weight_values(a, wb);
                let xq = &x.quants[xb * BLOCK..][..BLOCK];
                let scale = a.scales[wb] * x.scales[xb];
                for (l, lane) in lanes.iter_mut().enumerate() {
                    let s: i32 = (4 * l..4 * l + 4)
                        .map(|j| i32::from(w[j]) * i32::from(xq[j]))
                        .sum();
                    *lane = (s as f32).mul_add(scale, *lane);
                }
                offset = offset_term(a, wb, x, xb, offset);
            }
            *o = lanes8_sum(&lanes) + offset;
        }
    }
}

/// Block `wb`'s 32 stored values as integers: signed bytes (Q8_0) or the
/// four-bit values 0..16 (Q4_0, Q4_1; their offset is [`offset_term`]'s).
#[inline(always)]
pub(super) fn weight_values(a: &QuantizedMatrix, wb: usize) -> [i16; BLOCK] {
    let mut w = [0i16; BLOCK];
    match a.format {
        BlockFormat::Q8_0 => {
            for (w, &q) in w.iter_mut().zip(&a.quants[wb * 32..][..32]) {
                *w = i16::from(q as i8);
            }
        }
        BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
            for (j, &q) in a.quants[wb * 16..][..16].iter().enumerate() {
                w[j] = i16::from(q & 0x0f);
                w[j + 16] = i16::from(q >> 4);
            }
        }
    }
    w
}

/// Eight lanes summed pairwise: `l + (l + 4)`, then `+ (l + 2)`, then the two.
#[inline(always)]
pub(super) fn lanes8_sum(v: &[f32; 8]) -> f32 {
    let four = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    let two = [four[0] + four[2], four[1] + four[3]];
    two[0] + two[1]
}

/// The integer products in AVX2: `maddubs` of the weights' unsigned bytes
/// (a Q8_0 block's magnitudes, its signs moved onto the activations) with
/// the activations' signed ones, `madd` into eight lanes of four.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::{offset_term, QuantizedRows};
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use half::f16;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random blocks of `format` with finite f16 scales.
    pub(in crate::quantized) fn random_matrix(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        seed: u64,
    ) -> QuantizedMatrix {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            bytes.extend_from_slice(&f16::from_f32(rng.random_range(0.001..0.05)).to_le_bytes());
            if format == BlockFormat::Q4_1 {
                bytes.extend_from_slice(&f16::from_f32(rng.random_range(-0.2..0.0)).to_le_bytes());
            }
            let n = if format == BlockFormat::Q8_0 { 32 } else { 16 };
            bytes.extend((0..n).map(|_| rng.random::<u8>()));
        }
        QuantizedMatrix::from_blocks(format, rows, cols, &bytes).unwrap()
    }

    #[test]
    fn integer_products_equal_the_dequantised_operands_product() {
        // The integer sums are exact: the product equals that of the
        // dequantised weights with the dequantised activations, up to f32
        // rounding of the scaled sums.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (n, k) = (37, 128);
        for (s, format) in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1]
            .into_iter()
            .enumerate()
        {
            let a = random_matrix(format, n, k, 10 + s as u64);
            let w = a.dequantize();
            for m in [1, 2, 3, 5, 8] {
                let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-2.0..2.0)).collect();
                let q = QuantizedRows::quantize(&x, k);
                let xd = q.dequantize();
                let mut out = vec![0f32; n * m];
                products(&a, &q, 0, &mut out);
                for i in 0..m {
                    for r in 0..n {
                        let want: f64 = (0..k)
                            .map(|j| f64::from(xd[i * k + j]) * f64::from(w[r * k + j]))
                            .sum();
                        let scale: f64 = (0..k)
                            .map(|j| f64::from(xd[i * k + j] * w[r * k + j]).abs())
                            .sum();
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
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (s, format) in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1]
            .into_iter()
            .enumerate()
        {
            let a = random_matrix(format, 6, 96, 20 + s as u64);
            for m in [1, 2, 3, 4, 7] {
                let x: Vec<f32> = (0..m * 96).map(|_| rng.random_range(-1.0..1.0)).collect();
                let q = QuantizedRows::quantize(&x, 96);
                let (mut dispatched, mut portable) = (vec![0f32; 6 * m], vec![0f32; 6 * m]);
                products(&a, &q, 0, &mut dispatched);
                products_portable(&a, &q, 0, &mut portable);
                assert_eq!(bits(&dispatched), bits(&portable), "{format:?}, {m} rows");
            }
        }
    }
}
