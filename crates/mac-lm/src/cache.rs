//! Key/value cache for incremental decoding.

use burn::tensor::Tensor;

/// Cached keys and values of the real (non-prefix) tokens seen so far, per layer,
/// with the padding mask and the next position of every row.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// `(keys, values)` per layer, `[B, H_kv, S, d_h]`; empty before the first pass.
    pub layers: Vec<(Tensor<4>, Tensor<4>)>,
    /// `valid[b][s]`: whether cached position `s` of row `b` is a real token.
    pub valid: Vec<Vec<bool>>,
    /// Next position id of every row (number of real tokens seen).
    pub next_pos: Vec<usize>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached positions (including padding).
    pub fn len(&self) -> usize {
        self.valid.first().map(Vec::len).unwrap_or(0)
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one layer's new keys/values (called by the model, layer by layer).
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor<4>,
        v: Tensor<4>,
    ) -> (Tensor<4>, Tensor<4>) {
        if layer < self.layers.len() {
            let (old_k, old_v) = self.layers[layer].clone();
            let k = Tensor::cat(vec![old_k, k], 2);
            let v = Tensor::cat(vec![old_v, v], 2);
            self.layers[layer] = (k.clone(), v.clone());
            (k, v)
        } else {
            self.layers.push((k.clone(), v.clone()));
            (k, v)
        }
    }
}
