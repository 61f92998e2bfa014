//! Rows of activations quantized block by block, for integer dot products
//! with weight blocks: each block of 32 values becomes 32 integers of `Q`
//! (eight or sixteen bits) and a scale (`x ≈ q · d`, `d = max|x| / Q::MAX`).

use super::BLOCK;

/// An integer type activations are quantized to.
pub trait Level: Copy + Into<i32> + Send + Sync + 'static {
    /// The largest magnitude stored (the type's symmetric range).
    const MAX: f32;
    /// `v` (within `±MAX`, already rounded) as this type.
    fn from_rounded(v: f32) -> Self;
}

impl Level for i8 {
    const MAX: f32 = 127.0;
    fn from_rounded(v: f32) -> Self {
        v as i8
    }
}

impl Level for i16 {
    const MAX: f32 = 32767.0;
    fn from_rounded(v: f32) -> Self {
        v as i16
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

#[cfg(test)]
mod tests {
    use super::*;
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
}
