//! Rows of activations quantized block by block, for integer dot products
//! with weight blocks: each block of 32 values becomes 32 integers of `Q`
//! (eight or sixteen bits) and a scale (`x ≈ q · d`, `d = max|x| / Q::MAX`).

use super::{BlockFormat, QuantizedMatrix, BLOCK};

/// An integer type activations are quantized to.
pub trait Level: Copy + Into<i32> + Send + Sync + 'static {
    /// The largest magnitude stored (the type's symmetric range).
    const MAX: f32;
    /// `v` (within `±MAX`, already rounded) as this type.
    fn from_rounded(v: f32) -> Self;
    /// The lane (of eight) whose integer sum takes a block's value `j`,
    /// as this level's AVX2 kernel gathers them.
    fn lane(j: usize) -> usize;
    /// Output rows `first..` of `x · aᵀ` into `out [rows, m]`: in AVX2
    /// where the CPU has it, else in portable loops (the
    /// same bits either way).
    fn products(a: &QuantizedMatrix, x: &QuantizedRows<Self>, first: usize, out: &mut [f32]);
}

impl Level for i8 {
    const MAX: f32 = 127.0;
    fn from_rounded(v: f32) -> Self {
        v as i8
    }
    /// `maddubs` and `madd` sum four neighbours.
    fn lane(j: usize) -> usize {
        j / 4
    }
    fn products(a: &QuantizedMatrix, x: &QuantizedRows<Self>, first: usize, out: &mut [f32]) {
        super::q8::products(a, x, first, out)
    }
}

impl Level for i16 {
    const MAX: f32 = 32767.0;
    fn from_rounded(v: f32) -> Self {
        v as i16
    }
    /// `madd` of each half of the block, the halves added: values `2l`,
    /// `2l + 1`, `16 + 2l`, `17 + 2l`.
    fn lane(j: usize) -> usize {
        (j % 16) / 2
    }
    fn products(a: &QuantizedMatrix, x: &QuantizedRows<Self>, first: usize, out: &mut [f32]) {
        super::q16::products(a, x, first, out)
    }
}

/// Rows of activations quantized block by block (eight bits by default).
#[derive(Debug, Clone)]
pub struct QuantizedRows<Q = i8> {
    /// Blocks per row.
    pub(super) blocks: usize,
    /// 32 values per block, the rows one after another.
    pub(super) quants: Vec<Q>,
    /// Each block's scale.
    pub(super) scales: Vec<f32>,
    /// Each block's scale times the sum of its values.
    pub(super) sums: Vec<f32>,
}

impl<Q: Level> QuantizedRows<Q> {
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
            let d = amax / Q::MAX;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for &v in block {
                let q = Q::from_rounded((v * inv).round().clamp(-Q::MAX, Q::MAX));
                sum += q.into();
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
            .flat_map(|(q, &d)| q.iter().map(move |&q| q.into() as f32 * d))
            .collect()
    }
}

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

/// Output rows `first..` of `x · aᵀ` into `out [rows, m]` in portable
/// loops: the bits of each level's AVX2 kernel ([`Level::products`]),
/// each lane's integer sum gathered as [`Level::lane`] says.
pub(super) fn products_portable<Q: Level>(
    a: &QuantizedMatrix,
    x: &QuantizedRows<Q>,
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
                let mut sums = [0i32; 8];
                for j in 0..BLOCK {
                    sums[Q::lane(j)] += i32::from(w[j]) * xq[j].into();
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use half::f16;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn rounds_to_within_half_a_step<Q: Level>() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut x: Vec<f32> = (0..3 * 64).map(|_| rng.random_range(-3.0..3.0)).collect();
        x[40..72].fill(0.0); // a block of zeros keeps a zero scale
        let q = QuantizedRows::<Q>::quantize(&x, 64);
        assert_eq!(q.rows(), 3);
        let back = q.dequantize();
        for (b, (xs, ys)) in x.chunks(BLOCK).zip(back.chunks(BLOCK)).enumerate() {
            let step = q.scales[b];
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            assert!((step - amax / Q::MAX).abs() <= f32::EPSILON * amax);
            for (x, y) in xs.iter().zip(ys) {
                assert!((x - y).abs() <= 0.5 * step * (1.0 + 1e-5), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn quantized_activations_round_to_within_half_a_step() {
        rounds_to_within_half_a_step::<i8>();
        rounds_to_within_half_a_step::<i16>();
    }

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

    fn products_equal_the_dequantised_operands_product<Q: Level>(seeds: [u64; 2]) {
        // The integer sums are exact: the product equals that of the
        // dequantised weights with the dequantised activations, up to f32
        // rounding of the scaled sums.
        let mut rng = ChaCha8Rng::seed_from_u64(seeds[0]);
        let (n, k) = (37, 128);
        for (s, format) in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1]
            .into_iter()
            .enumerate()
        {
            let a = random_matrix(format, n, k, seeds[1] + s as u64);
            let w = a.dequantize();
            for m in [1, 2, 3, 5, 8] {
                let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-2.0..2.0)).collect();
                let q = QuantizedRows::<Q>::quantize(&x, k);
                let xd = q.dequantize();
                let mut out = vec![0f32; n * m];
                Q::products(&a, &q, 0, &mut out);
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

    fn variants_give_the_same_bits<Q: Level>(seeds: [u64; 2]) {
        let mut rng = ChaCha8Rng::seed_from_u64(seeds[0]);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (s, format) in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1]
            .into_iter()
            .enumerate()
        {
            let a = random_matrix(format, 6, 96, seeds[1] + s as u64);
            for m in [1, 2, 3, 4, 7] {
                let x: Vec<f32> = (0..m * 96).map(|_| rng.random_range(-1.0..1.0)).collect();
                let q = QuantizedRows::<Q>::quantize(&x, 96);
                let (mut dispatched, mut portable) = (vec![0f32; 6 * m], vec![0f32; 6 * m]);
                Q::products(&a, &q, 0, &mut dispatched);
                products_portable(&a, &q, 0, &mut portable);
                assert_eq!(bits(&dispatched), bits(&portable), "{format:?}, {m} rows");
            }
        }
    }

    #[test]
    fn integer_products_equal_the_dequantised_operands_product() {
        products_equal_the_dequantised_operands_product::<i8>([2, 10]);
        products_equal_the_dequantised_operands_product::<i16>([12, 30]);
    }

    #[test]
    fn every_cpu_variant_gives_the_same_bits() {
        variants_give_the_same_bits::<i8>([4, 20]);
        variants_give_the_same_bits::<i16>([14, 40]);
    }
}
