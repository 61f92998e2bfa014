//! Per-layer prefix key/values (P-tuning v2 / prefix tuning): the interface
//! through which MAC's modulations reach the frozen LM.

use burn::tensor::Tensor;

use crate::error::{LmError, Result};

/// Shape facts a producer of prefixes needs: layers, KV heads, head size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    /// Number of transformer layers.
    pub n_layers: usize,
    /// Number of key/value heads (fewer than query heads under GQA).
    pub n_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
}

impl KvLayout {
    /// Width of one key (or value) vector across heads: `n_kv_heads * head_dim`.
    pub fn kv_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

/// Keys and values prepended to every layer's attention.
///
/// Each entry is `(keys, values)` of shape `[B, H_kv, p, d_h]`. Prefix
/// positions carry no rotary/absolute position: the real tokens keep positions
/// `0..T` whether or not a prefix is present (see `docs/paper.md`).
#[derive(Debug, Clone)]
pub struct PrefixKv {
    /// One `(keys, values)` pair per layer.
    pub layers: Vec<(Tensor<4>, Tensor<4>)>,
}

impl PrefixKv {
    /// Number of prefix slots `p` per layer.
    pub fn len(&self) -> usize {
        self.layers.first().map(|(k, _)| k.dims()[2]).unwrap_or(0)
    }

    /// Whether the prefix has no slots.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the prefix against a model's layout and a batch size.
    pub fn validate(&self, layout: &KvLayout, batch: usize) -> Result<()> {
        if self.layers.len() != layout.n_layers {
            return Err(LmError::Input(format!(
                "prefix has {} layers, the model has {}",
                self.layers.len(),
                layout.n_layers
            )));
        }
        let p = self.len();
        for (i, (k, v)) in self.layers.iter().enumerate() {
            let want = [batch, layout.n_kv_heads, p, layout.head_dim];
            if k.dims() != want || v.dims() != want {
                return Err(LmError::Input(format!(
                    "prefix layer {i}: keys {:?} / values {:?}, expected {want:?}",
                    k.dims(),
                    v.dims()
                )));
            }
        }
        Ok(())
    }
}
