//! Weights kept as a GGUF file stores them — blocks of 32 values with a
//! scale (Q8_0, Q4_0) or a scale and a minimum (Q4_1) — and the product of
//! a few rows of activations with them, as llama.cpp's CPU kernels compute
//! a decode step: each block is dequantised once, in registers, and used
//! by every row. A decode step reads each weight once; kept as blocks of
//! four or eight bits it reads a sixth to a quarter of the bytes of f32.
//!
//! Activations stay in f32, and each weight dequantises to exactly the
//! value [`QuantizedMatrix::dequantize`] gives (the GGUF reader's f32
//! weights come from it), so a product differs from the f32 path's only
//! in the order of its sums. The scales are widened to f32 once, when the
//! matrix is built.

use std::sync::Mutex;

use burn::tensor::{DType, Tensor, TensorData};
use half::f16;

mod q16;
mod q8;
mod rows;

pub use rows::{Level, QuantizedRows};

/// Values in a block, in every block format.
pub const BLOCK: usize = 32;

/// Rows of activations multiplied together, each block decoded once for
/// them all; more rows are taken this many at a time.
const ROW_GROUP: usize = 8;

/// Products of at most this many rows of activations (a decode step's
/// batch) take the quantized weights; longer ones (a prompt's prefill) the
/// f32 weights, whose BLAS product wins once enough rows share each weight.
pub const MAX_ROWS: usize = 8;

/// Fewest output rows a thread of the team computes.
const MIN_ROWS_PER_TASK: usize = 64;

/// What the activations of a product with the blocks are kept as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activations {
    /// f32: the product differs from the dequantised f32 path's only in
    /// the order of its sums.
    #[default]
    F32,
    /// Eight bits per value and a scale per block of 32, with integer dot
    /// products (as llama.cpp's decode): fewer operations per weight, at
    /// the cost of the activations' rounding ([`QuantizedRows`]).
    Q8,
    /// Sixteen bits per value and a scale per block of 32, with integer
    /// dot products of sixteen-bit pairs: a 256th of eight bits' rounding,
    /// at about half the operations per weight of f32.
    Q16,
}

/// How a GGUF block stores its 32 values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockFormat {
    /// An f16 scale and 32 signed bytes: `q · d`.
    Q8_0,
    /// An f16 scale and 32 four-bit values: `(q − 8) · d`.
    Q4_0,
    /// An f16 scale, an f16 minimum and 32 four-bit values: `q · d + m`.
    Q4_1,
}

impl BlockFormat {
    /// Bytes of one block in the file.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => 34,
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
        }
    }

    /// Bytes of one block's values (without its scale and minimum).
    fn quant_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => 32,
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => 16,
        }
    }
}

#[inline(always)]
fn decode_q8_0(q: &[u8], d: f32, out: &mut [f32; BLOCK]) {
    for (o, &q) in out.iter_mut().zip(&q[..BLOCK]) {
        *o = (q as i8) as f32 * d;
    }
}

#[inline(always)]
fn decode_q4_0(q: &[u8], d: f32, out: &mut [f32; BLOCK]) {
    let (lo, hi) = nibbles(q);
    for j in 0..16 {
        out[j] = (lo[j] as i32 - 8) as f32 * d;
        out[j + 16] = (hi[j] as i32 - 8) as f32 * d;
    }
}

#[inline(always)]
fn decode_q4_1(q: &[u8], d: f32, m: f32, out: &mut [f32; BLOCK]) {
    let (lo, hi) = nibbles(q);
    for j in 0..16 {
        out[j] = lo[j] as f32 * d + m;
        out[j + 16] = hi[j] as f32 * d + m;
    }
}

/// A block's 32 four-bit values: the low nibbles (values 0..16), then the high.
#[inline(always)]
fn nibbles(q: &[u8]) -> ([u8; 16], [u8; 16]) {
    let q: &[u8; 16] = q[..16].try_into().expect("16 bytes");
    let (mut lo, mut hi) = ([0u8; 16], [0u8; 16]);
    for j in 0..16 {
        lo[j] = q[j] & 0x0f;
        hi[j] = q[j] >> 4;
    }
    (lo, hi)
}

/// A matrix `[rows, cols]` (PyTorch's `[out, in]`) kept in blocks along
/// each row: the blocks' values, and their scales (and minimums) as f32.
#[derive(Clone, Debug)]
pub struct QuantizedMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    quants: Vec<u8>,
    scales: Vec<f32>,
    mins: Vec<f32>,
    activations: Activations,
}

impl QuantizedMatrix {
    /// The matrix whose rows are `blocks` as the file stores them; `None`
    /// when `cols` is not a whole number of blocks or the bytes do not hold
    /// `rows` rows of them.
    pub fn from_blocks(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        blocks: &[u8],
    ) -> Option<Self> {
        let per_row = cols / BLOCK;
        let n = rows.checked_mul(per_row)?;
        if !cols.is_multiple_of(BLOCK) || blocks.len() != n.checked_mul(format.block_bytes())? {
            return None;
        }
        let mut quants = Vec::with_capacity(n * format.quant_bytes());
        let mut scales = Vec::with_capacity(n);
        let mut mins = Vec::new();
        for b in blocks.chunks_exact(format.block_bytes()) {
            scales.push(f16::from_le_bytes([b[0], b[1]]).to_f32());
            let values = match format {
                BlockFormat::Q4_1 => {
                    mins.push(f16::from_le_bytes([b[2], b[3]]).to_f32());
                    &b[4..]
                }
                _ => &b[2..],
            };
            quants.extend_from_slice(values);
        }
        Some(Self {
            format,
            rows,
            cols,
            quants,
            scales,
            mins,
            activations: Activations::F32,
        })
    }

    /// The same matrix multiplying activations kept as `activations`.
    pub fn with_activations(self, activations: Activations) -> Self {
        Self {
            activations,
            ..self
        }
    }

    /// What its products keep the activations as.
    pub fn activations(&self) -> Activations {
        self.activations
    }

    /// The block format.
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Bytes a product reads: values, scales and minimums.
    pub fn size_bytes(&self) -> usize {
        self.quants.len() + 4 * (self.scales.len() + self.mins.len())
    }

    /// The same matrix with its rows reordered: row `i` of the result is
    /// row `order[i]` of this one.
    ///
    /// # Panics
    /// When `order` is not as long as the rows or names a row past them.
    pub fn with_rows(&self, order: &[usize]) -> Self {
        assert_eq!(order.len(), self.rows, "a row order for every row");
        let nb = self.cols / BLOCK;
        let qb = nb * self.format.quant_bytes();
        let pick = |v: &[f32]| -> Vec<f32> {
            if v.is_empty() {
                return Vec::new();
            }
            order
                .iter()
                .flat_map(|&r| &v[r * nb..(r + 1) * nb])
                .copied()
                .collect()
        };
        Self {
            quants: order
                .iter()
                .flat_map(|&r| &self.quants[r * qb..(r + 1) * qb])
                .copied()
                .collect(),
            scales: pick(&self.scales),
            mins: pick(&self.mins),
            ..*self
        }
    }

    /// The rows of `parts` one after the other, in one matrix (products
    /// that share their input, such as a layer's query, key and value
    /// projections, made in one pass over the threads); `None` when the
    /// parts differ in format or columns.
    pub fn stacked(parts: &[&QuantizedMatrix]) -> Option<Self> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.format != first.format || p.cols != first.cols)
        {
            return None;
        }
        Some(Self {
            format: first.format,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            quants: parts
                .iter()
                .flat_map(|p| p.quants.iter().copied())
                .collect(),
            scales: parts
                .iter()
                .flat_map(|p| p.scales.iter().copied())
                .collect(),
            mins: parts.iter().flat_map(|p| p.mins.iter().copied()).collect(),
            activations: first.activations,
        })
    }

    /// The whole matrix in f32, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        let mut w = [0f32; BLOCK];
        for (b, o) in out.chunks_exact_mut(BLOCK).enumerate() {
            self.decode(b, &mut w);
            o.copy_from_slice(&w);
        }
        out
    }

    #[inline(always)]
    fn decode(&self, block: usize, w: &mut [f32; BLOCK]) {
        let d = self.scales[block];
        match self.format {
            BlockFormat::Q8_0 => decode_q8_0(&self.quants[block * 32..], d, w),
            BlockFormat::Q4_0 => decode_q4_0(&self.quants[block * 16..], d, w),
            BlockFormat::Q4_1 => decode_q4_1(&self.quants[block * 16..], d, self.mins[block], w),
        }
    }

    /// `x [m, cols]` (row-major) times this matrix transposed: `[m, rows]`,
    /// the output rows spread over the thread pool; the activations kept
    /// as [`Self::activations`] says.
    ///
    /// # Panics
    /// When `x` does not hold `m` rows of `cols` values.
    pub fn mul_rows(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "x holds m rows of cols values");
        match self.activations {
            Activations::F32 => self.spread(m, |first, out| products(self, x, m, first, out)),
            Activations::Q8 => self.integer_products::<i8>(x, m),
            Activations::Q16 => self.integer_products::<i16>(x, m),
        }
    }

    /// [`Self::mul_rows`] with the activations quantized to `Q`.
    fn integer_products<Q: Level>(&self, x: &[f32], m: usize) -> Vec<f32> {
        let q = QuantizedRows::<Q>::quantize(x, self.cols);
        self.spread(m, |first, out| Q::products(self, &q, first, out))
    }

    /// `[m, rows]` whose output rows `first..` (transposed, `[rows, m]`)
    /// `part(first, out)` computes, the rows spread over the thread pool.
    fn spread(&self, m: usize, part: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
        let part = &part;
        // Transposed while computed: each task owns whole output rows.
        let mut out_t = vec![0f32; self.rows * m];
        if m == 0 {
            return out_t;
        }
        // One part per thread of the team (the first on the calling thread).
        let parts = crate::team::width()
            .min(self.rows.div_ceil(MIN_ROWS_PER_TASK))
            .max(1);
        let per_part = self.rows.div_ceil(parts);
        let chunks: Vec<Mutex<&mut [f32]>> =
            out_t.chunks_mut(per_part * m).map(Mutex::new).collect();
        crate::team::run(chunks.len(), &|t| {
            let mut out = chunks[t].lock().unwrap_or_else(|e| e.into_inner());
            part(t * per_part, &mut out)
        });
        drop(chunks);
        if m == 1 {
            return out_t;
        }
        let mut out = vec![0f32; m * self.rows];
        for (r, row) in out_t.chunks_exact(m).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                out[i * self.rows + r] = v;
            }
        }
        out
    }
}

/// `x [.., cols] · aᵀ` → `[.., rows]` on the quantized weights, when `x`
/// is at most [`MAX_ROWS`] rows of f32 on the CPU backend outside any
/// gradient graph; `None` otherwise (the caller takes the f32 path).
pub fn try_product<const D: usize>(x: &Tensor<D>, a: &QuantizedMatrix) -> Option<Tensor<D>> {
    let mut dims = x.dims();
    let rows: usize = dims[..D - 1].iter().product();
    let serves = x.dtype() == DType::F32
        && !x.is_tracked()
        && rows <= MAX_ROWS
        && dims[D - 1] == a.cols
        && crate::linear::accelerated(&x.device());
    if !serves {
        return None;
    }
    let values = x.clone().into_data().try_into_vec::<f32>().ok()?;
    dims[D - 1] = a.rows;
    Some(Tensor::from_data(
        TensorData::new(a.mul_rows(&values, rows), dims),
        &x.device(),
    ))
}

/// Output rows `first..` of `x · aᵀ` into `out [rows, m]`: in AVX2 where
/// the CPU has it, else in portable loops (the same values either way).
fn products(a: &QuantizedMatrix, x: &[f32], m: usize, first: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: the CPU has AVX2.
        unsafe { avx2::products(a, x, m, first, out) };
        return;
    }
    products_portable(a, x, m, first, out)
}

/// [`products`] in portable loops.
fn products_portable(a: &QuantizedMatrix, x: &[f32], m: usize, first: usize, out: &mut [f32]) {
    if m == 1 {
        for (r, o) in out.iter_mut().enumerate() {
            *o = row_dot(a, first + r, x);
        }
        return;
    }
    let (k, nb) = (a.cols, a.cols / BLOCK);
    let mut w = [0f32; BLOCK];
    for (r, out_r) in out.chunks_exact_mut(m).enumerate() {
        let row = first + r;
        for g in (0..m).step_by(ROW_GROUP) {
            let rows = ROW_GROUP.min(m - g);
            let mut acc = [[0f32; BLOCK]; ROW_GROUP];
            for b in 0..nb {
                a.decode(row * nb + b, &mut w);
                for (i, acc) in acc.iter_mut().enumerate().take(rows) {
                    let xb = &x[(g + i) * k + b * BLOCK..][..BLOCK];
                    for j in 0..BLOCK {
                        acc[j] += w[j] * xb[j];
                    }
                }
            }
            for (o, acc) in out_r[g..g + rows].iter_mut().zip(&acc) {
                *o = lanes_sum(acc);
            }
        }
    }
}

/// One output row's product with one row of activations (a decode step).
fn row_dot(a: &QuantizedMatrix, row: usize, x: &[f32]) -> f32 {
    let nb = a.cols / BLOCK;
    let mut acc = [0f32; BLOCK];
    let mut w = [0f32; BLOCK];
    for (b, xb) in x.chunks_exact(BLOCK).enumerate().take(nb) {
        a.decode(row * nb + b, &mut w);
        for j in 0..BLOCK {
            acc[j] += w[j] * xb[j];
        }
    }
    lanes_sum(&acc)
}

/// The products in AVX2 intrinsics: the same operations on the same lanes
/// as the portable loops (a multiply, then an add; the lanes summed
/// pairwise as [`lanes_sum`] does), so the same bits.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockFormat, QuantizedMatrix, BLOCK};

    /// Output rows `first..` of `x [m, cols] · aᵀ` into `out [rows, m]`,
    /// three rows of `x` at a time (their accumulators and a block's
    /// weights fill the sixteen vector registers).
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn products(
        a: &QuantizedMatrix,
        x: &[f32],
        m: usize,
        first: usize,
        out: &mut [f32],
    ) {
        assert!(
            x.len() >= m * a.cols && (first + out.len() / m) * (a.cols / BLOCK) <= a.scales.len()
        );
        for (r, out_r) in out.chunks_exact_mut(m).enumerate() {
            let mut g = 0;
            while g < m {
                let xg = &x[g * a.cols..];
                match m - g {
                    1 => out_r[g] = rows_dot::<1>(a, first + r, xg)[0],
                    2 => out_r[g..g + 2].copy_from_slice(&rows_dot::<2>(a, first + r, xg)),
                    _ => out_r[g..g + 3].copy_from_slice(&rows_dot::<3>(a, first + r, xg)),
                }
                g += 3;
            }
        }
    }

    /// Row `row` of `a` times `R` consecutive rows of `x`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn rows_dot<const R: usize>(a: &QuantizedMatrix, row: usize, x: &[f32]) -> [f32; R] {
        let (k, nb) = (a.cols, a.cols / BLOCK);
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        for b in 0..nb {
            let w = decode(a, row * nb + b);
            for (i, acc) in acc.iter_mut().enumerate() {
                let xp = x.as_ptr().add(i * k + b * BLOCK);
                for (l, acc) in acc.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(xp.add(8 * l));
                    *acc = _mm256_add_ps(*acc, _mm256_mul_ps(w[l], xv));
                }
            }
        }
        acc.map(|acc| lanes_sum(acc))
    }

    /// The 32 lanes summed pairwise in [`super::lanes_sum`]'s order.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn lanes_sum(acc: [__m256; 4]) -> f32 {
        let half = [_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3])];
        let eight = _mm256_add_ps(half[0], half[1]);
        let four = _mm_add_ps(
            _mm256_castps256_ps128(eight),
            _mm256_extractf128_ps(eight, 1),
        );
        let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
        _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)))
    }

    /// Block `block`'s 32 weights, lanes 0..8, 8..16, 16..24, 24..32.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn decode(a: &QuantizedMatrix, block: usize) -> [__m256; 4] {
        let d = _mm256_set1_ps(a.scales[block]);
        let to_f32 = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
        match a.format {
            BlockFormat::Q8_0 => {
                let q = a.quants.as_ptr().add(block * 32);
                let lane = |i: usize| {
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                        q.add(8 * i) as *const __m128i
                    )))
                };
                [0, 1, 2, 3].map(|i| _mm256_mul_ps(lane(i), d))
            }
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                let q = _mm_loadu_si128(a.quants.as_ptr().add(block * 16) as *const __m128i);
                let mask = _mm_set1_epi8(0x0f);
                let lo = _mm_and_si128(q, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
                let v = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
                if a.format == BlockFormat::Q4_0 {
                    let eight = _mm256_set1_epi32(8);
                    v.map(|v| {
                        let q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(v), eight);
                        _mm256_mul_ps(_mm256_cvtepi32_ps(q), d)
                    })
                } else {
                    let m = _mm256_set1_ps(a.mins[block]);
                    v.map(|v| _mm256_add_ps(_mm256_mul_ps(to_f32(v), d), m))
                }
            }
        }
    }
}

/// The sum of a block's lanes, pairwise in a fixed order.
#[inline(always)]
fn lanes_sum(v: &[f32; BLOCK]) -> f32 {
    let mut s = *v;
    let mut n = BLOCK;
    while n > 1 {
        n /= 2;
        for j in 0..n {
            s[j] += s[j + n];
        }
    }
    s[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random blocks of `format`, with finite f16 scales.
    fn random_blocks(format: BlockFormat, n: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
        let mut out = Vec::with_capacity(n * format.block_bytes());
        for _ in 0..n {
            let d = f16::from_f32(rng.random_range(0.001..0.05)).to_le_bytes();
            out.extend_from_slice(&d);
            if format == BlockFormat::Q4_1 {
                let m = f16::from_f32(rng.random_range(-0.2..0.0)).to_le_bytes();
                out.extend_from_slice(&m);
            }
            for _ in 0..format.quant_bytes() {
                out.push(rng.random());
            }
        }
        out
    }

    /// `x [m, k] · w [n, k]ᵀ` in f64.
    fn reference(w: &[f32], x: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for r in 0..n {
                out[i * n + r] = (0..k)
                    .map(|j| f64::from(x[i * k + j]) * f64::from(w[r * k + j]))
                    .sum();
            }
        }
        out
    }

    #[test]
    fn dequantises_as_the_gguf_block_formula_says() {
        // One Q4_1 block: d = 0.5, m = -1, values 0..16 then 15..0.
        let mut block = Vec::new();
        block.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        block.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let a = QuantizedMatrix::from_blocks(BlockFormat::Q4_1, 1, 32, &block).unwrap();
        let w = a.dequantize();
        assert_eq!(w[3], 3.0 * 0.5 - 1.0);
        assert_eq!(w[16 + 3], 12.0 * 0.5 - 1.0);
        // Q8_0 and Q4_0 read their values signed and offset by 8.
        let mut q8 = f16::from_f32(0.25).to_le_bytes().to_vec();
        q8.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let a = QuantizedMatrix::from_blocks(BlockFormat::Q8_0, 1, 32, &q8).unwrap();
        assert_eq!(a.dequantize()[0], -4.0);
        let mut q4 = f16::from_f32(2.0).to_le_bytes().to_vec();
        q4.extend([0x0fu8; 16]);
        let a = QuantizedMatrix::from_blocks(BlockFormat::Q4_0, 1, 32, &q4).unwrap();
        assert_eq!((a.dequantize()[0], a.dequantize()[16]), (14.0, -16.0));
    }

    #[test]
    fn products_equal_the_dequantised_matrix_product() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (n, k) = (70, 96);
        for format in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1] {
            let blocks = random_blocks(format, n * k / BLOCK, &mut rng);
            let a = QuantizedMatrix::from_blocks(format, n, k, &blocks).unwrap();
            let w = a.dequantize();
            for m in [1, 3, 11] {
                let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-2.0..2.0)).collect();
                let ours = a.mul_rows(&x, m);
                let want = reference(&w, &x, m, n, k);
                for (o, r) in ours.iter().zip(&want) {
                    assert!(
                        (f64::from(*o) - r).abs() < 1e-5 * (1.0 + r.abs()),
                        "{format:?} m={m}: {o} vs {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_cpu_variant_gives_the_same_bits() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        // The AVX2 kernels where the CPU has them, for one row and for
        // groups of rows with a remainder.
        let x: Vec<f32> = (0..5 * 96).map(|_| rng.random_range(-1.0..1.0)).collect();
        for format in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1] {
            let blocks = random_blocks(format, 4 * 3, &mut rng);
            let a = QuantizedMatrix::from_blocks(format, 4, 96, &blocks).unwrap();
            for m in [1, 2, 5] {
                let mut dispatched = vec![0f32; 4 * m];
                let mut portable = vec![0f32; 4 * m];
                products(&a, &x[..m * 96], m, 0, &mut dispatched);
                products_portable(&a, &x[..m * 96], m, 0, &mut portable);
                assert_eq!(bits(&dispatched), bits(&portable), "{format:?}, {m} rows");
            }
        }
    }

    #[test]
    fn reordered_rows_carry_their_blocks() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let blocks = random_blocks(BlockFormat::Q4_1, 3 * 2, &mut rng);
        let a = QuantizedMatrix::from_blocks(BlockFormat::Q4_1, 3, 64, &blocks).unwrap();
        let b = a.with_rows(&[2, 0, 1]);
        let (wa, wb) = (a.dequantize(), b.dequantize());
        assert_eq!(wb[..64], wa[128..]);
        assert_eq!(wb[64..128], wa[..64]);
    }

    #[test]
    fn stacked_matrices_hold_their_parts_rows_in_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let a = QuantizedMatrix::from_blocks(
            BlockFormat::Q4_1,
            2,
            64,
            &random_blocks(BlockFormat::Q4_1, 4, &mut rng),
        )
        .unwrap();
        let b = a.with_rows(&[1, 0]);
        let ab = QuantizedMatrix::stacked(&[&a, &b]).unwrap();
        assert_eq!(ab.dims(), [4, 64]);
        assert_eq!(ab.dequantize(), [a.dequantize(), b.dequantize()].concat());
        let q8 = QuantizedMatrix::from_blocks(
            BlockFormat::Q8_0,
            1,
            64,
            &random_blocks(BlockFormat::Q8_0, 2, &mut rng),
        )
        .unwrap();
        assert!(QuantizedMatrix::stacked(&[&a, &q8]).is_none());
    }

    #[test]
    fn refuses_bytes_that_are_not_whole_rows_of_blocks() {
        let blocks = vec![0u8; 20 * 3];
        assert!(QuantizedMatrix::from_blocks(BlockFormat::Q4_1, 2, 64, &blocks).is_none());
        assert!(QuantizedMatrix::from_blocks(BlockFormat::Q4_1, 3, 33, &blocks).is_none());
        assert!(QuantizedMatrix::from_blocks(BlockFormat::Q4_1, 3, 32, &blocks).is_some());
    }
}
