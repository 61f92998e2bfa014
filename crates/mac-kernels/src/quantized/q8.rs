//! Activations quantized to eight bits for the products with weight
//! blocks, as llama.cpp's CPU kernels compute a decode step: each block of
//! 32 activations becomes 32 signed bytes and a scale (`x ≈ q · d`, `d =
//! max|x| / 127`), and a block's dot product with a weight block is an
//! integer sum, exact, times the two scales (plus the weight block's
//! minimum or offset times the activations' sum).
//!
//! The integer sums are gathered in eight lanes of four products each, as
//! AVX2's `maddubs`/`madd` pair leaves them, and each lane is accumulated
//! in f32 by a fused multiply-add, in a fixed order: the AVX2 kernel and
//! the portable loops give the same bits.

use super::{BlockFormat, QuantizedMatrix, BLOCK};

/// Rows of activations quantized block by block.
#[derive(Debug, Clone)]
pub struct QuantizedRows {
    /// Blocks per row.
    blocks: usize,
    /// 32 values per block, the rows one after another.
    quants: Vec<i8>,
    /// Each block's scale.
    scales: Vec<f32>,
    /// Each block's scale times the sum of its values.
    sums: Vec<f32>,
}

impl QuantizedRows {
    /// `x [m, cols]` (row-major, `cols` a multiple of 32) quantized.
    pub fn quantize(x: &[f32], cols: usize) -> Self {
        let n = x.len() / BLOCK;
        let (mut quants, mut scales, mut sums) = (
            Vec::with_capacity(x.len()),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for block in x.chunks_exact(BLOCK) {
            let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for &v in block {
                let q = (v * inv).round().clamp(-127.0, 127.0) as i8;
                sum += i32::from(q);
                quants.push(q);
            }
            scales.push(d);
            sums.push(d * sum as f32);
        }
        Self {
            blocks: cols / BLOCK,
            quants,
            scales,
            sums,
        }
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.scales.len() / self.blocks.max(1)
    }

    /// The values, dequantised (`q · d`), row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        self.quants
            .chunks_exact(BLOCK)
            .zip(&self.scales)
            .flat_map(|(q, &d)| q.iter().map(move |&q| f32::from(q) * d))
            .collect()
    }
}

/// Weight block `wb`'s term beside its integer sum with activation block
/// `xb`: the minimum (Q4_1) or the offset of 8 (Q4_0) times the
/// activations' sum, accumulated into `offset`.
#[inline(always)]
fn offset_term(a: &QuantizedMatrix, wb: usize, x: &QuantizedRows, xb: usize, offset: f32) -> f32 {
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
fn weight_values(a: &QuantizedMatrix, wb: usize) -> [i16; BLOCK] {
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
fn lanes8_sum(v: &[f32; 8]) -> f32 {
    let four = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    let two = [four[0] + four[2], four[1] + four[3]];
    two[0] + two[1]
}

/// The integer products in AVX2: `maddubs` of the weights' unsigned bytes
/// (a Q8_0 block's magnitudes, its signs moved onto the activations) with
/// the activations' signed ones, `madd` into eight lanes of four.
#[cfg(target_arch = "x86_64")]
mod avx2 {
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
    unsafe fn lanes8_sum(v: __m256) -> f32 {
        let four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
        _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random blocks of `format` with finite f16 scales.
    fn random_matrix(format: BlockFormat, rows: usize, cols: usize, seed: u64) -> QuantizedMatrix {
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
    fn quantized_activations_round_to_within_half_a_step() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut x: Vec<f32> = (0..3 * 64).map(|_| rng.random_range(-3.0..3.0)).collect();
        x[40..72].fill(0.0); // a block of zeros keeps a zero scale
        let q = QuantizedRows::quantize(&x, 64);
        assert_eq!(q.rows(), 3);
        let back = q.dequantize();
        for (b, (xs, ys)) in x.chunks(BLOCK).zip(back.chunks(BLOCK)).enumerate() {
            let step = q.scales[b];
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            assert!((step - amax / 127.0).abs() <= f32::EPSILON * amax);
            for (x, y) in xs.iter().zip(ys) {
                assert!((x - y).abs() <= 0.5 * step * (1.0 + 1e-5), "{x} vs {y}");
            }
        }
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
