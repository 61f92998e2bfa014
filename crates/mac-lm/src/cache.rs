//! Key/value cache for incremental decoding.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{LmError, Result};
use crate::prefix::KvLayout;

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

    /// Number of rows (0 before the first pass).
    pub fn rows(&self) -> usize {
        self.valid.len()
    }

    /// A one-row cache holding only `positions` (ascending, each a real
    /// token) of row `row`, with the row's next position unchanged: tokens
    /// that follow keep the positions they would have after the whole row,
    /// and attend only to the kept keys and values (which keep the
    /// positions they were computed at). A memory of a few of a document's
    /// key/values is this.
    pub fn keep(&self, row: usize, positions: &[usize]) -> Result<KvCache> {
        let rows = self.rows();
        if row >= rows {
            return Err(LmError::Input(format!(
                "row {row} of a cache of {rows} rows"
            )));
        }
        if positions.is_empty() {
            return Err(LmError::Input("no cached position to keep".into()));
        }
        let valid = &self.valid[row];
        for pair in positions.windows(2) {
            if pair[0] >= pair[1] {
                return Err(LmError::Input(format!(
                    "cached positions to keep must ascend; {} then {}",
                    pair[0], pair[1]
                )));
            }
        }
        if let Some(&bad) = positions
            .iter()
            .find(|&&p| !valid.get(p).copied().unwrap_or(false))
        {
            return Err(LmError::Input(format!(
                "cached position {bad} of row {row} is padding or beyond the {} cached",
                valid.len()
            )));
        }
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| {
                let device = k.device();
                let idx = Tensor::<1, Int>::from_data(
                    TensorData::new(
                        positions.iter().map(|&p| p as i64).collect::<Vec<_>>(),
                        [positions.len()],
                    ),
                    &device,
                );
                let pick = |t: &Tensor<4>| t.clone().narrow(0, row, 1).select(2, idx.clone());
                (pick(k), pick(v))
            })
            .collect();
        Ok(KvCache {
            layers,
            valid: vec![vec![true; positions.len()]],
            next_pos: vec![self.next_pos[row]],
        })
    }

    /// Cached positions `from..` of row `row`, one row of floats per
    /// position: every layer's key then value, each `[H_kv · d_h]` head by
    /// head (`layout.n_layers · 2 · H_kv · d_h` floats a position). What a
    /// store of key/values keeps; [`Self::from_token_rows`] reads it back.
    ///
    /// # Shapes
    /// - returns `[len - from, 2 · n_layers · H_kv · d_h]`, row-major
    pub fn token_rows(&self, row: usize, from: usize) -> Result<Tensor<2>> {
        if row >= self.rows() || from >= self.len() || self.layers.is_empty() {
            return Err(LmError::Input(format!(
                "positions {from}.. of row {row} of a cache of {} rows and {} positions",
                self.rows(),
                self.len()
            )));
        }
        if let Some(p) = (from..self.len()).find(|&p| !self.valid[row][p]) {
            return Err(LmError::Input(format!(
                "cached position {p} of row {row} is padding"
            )));
        }
        let n = self.len() - from;
        let flat = |t: &Tensor<4>| {
            let [_, h, _, d] = t.dims();
            t.clone()
                .narrow(0, row, 1)
                .narrow(2, from, n)
                .reshape([h, n, d])
                .swap_dims(0, 1)
                .reshape([n, h * d])
        };
        let parts = self
            .layers
            .iter()
            .flat_map(|(k, v)| [flat(k), flat(v)])
            .collect();
        Ok(Tensor::cat(parts, 1))
    }

    /// A one-row cache of the positions in `rows` (as
    /// [`Self::token_rows`] lays them out), all real tokens, the next
    /// position `next_pos`: keys and values kept elsewhere, read back.
    ///
    /// # Shapes
    /// - `rows`: `[S, 2 · n_layers · H_kv · d_h]`
    pub fn from_token_rows(
        rows: Tensor<2>,
        layout: KvLayout,
        next_pos: usize,
        device: &Device,
    ) -> Result<KvCache> {
        let [s, width] = rows.dims();
        let w = layout.kv_width();
        if width != 2 * layout.n_layers * w || s == 0 || s > next_pos {
            return Err(LmError::Input(format!(
                "{s} stored positions of {width} floats for a model of {} layers of {w}-wide keys, before position {next_pos}",
                layout.n_layers
            )));
        }
        let rows = rows.to_device(device);
        let head = |i: usize| {
            rows.clone()
                .narrow(1, i * w, w)
                .reshape([s, layout.n_kv_heads, layout.head_dim])
                .swap_dims(0, 1)
                .unsqueeze_dim::<4>(0)
        };
        Ok(KvCache {
            layers: (0..layout.n_layers)
                .map(|l| (head(2 * l), head(2 * l + 1)))
                .collect(),
            valid: vec![vec![true; s]],
            next_pos: vec![next_pos],
        })
    }

    /// Two one-row caches one after the other: `self`'s positions, then
    /// `later`'s, the next position `later`'s (a preamble's cache before a
    /// document's stored key/values).
    pub fn then(&self, later: &KvCache) -> Result<KvCache> {
        if self.rows() != 1 || later.rows() != 1 || self.layers.len() != later.layers.len() {
            return Err(LmError::Input(format!(
                "joining caches of {} and {} rows, {} and {} layers (one row each, as many layers)",
                self.rows(),
                later.rows(),
                self.layers.len(),
                later.layers.len()
            )));
        }
        let layers = self
            .layers
            .iter()
            .zip(&later.layers)
            .map(|((k0, v0), (k1, v1))| {
                (
                    Tensor::cat(vec![k0.clone(), k1.clone()], 2),
                    Tensor::cat(vec![v0.clone(), v1.clone()], 2),
                )
            })
            .collect();
        let mut valid = self.valid[0].clone();
        valid.extend_from_slice(&later.valid[0]);
        Ok(KvCache {
            layers,
            valid: vec![valid],
            next_pos: later.next_pos.clone(),
        })
    }

    /// One-row caches stacked into one batch: shorter rows are padded in
    /// front with masked, zero keys and values; every row keeps its next
    /// position.
    pub fn stack(rows: &[KvCache]) -> Result<KvCache> {
        if rows.is_empty() {
            return Err(LmError::Input("no cache to stack".into()));
        }
        if let Some(bad) = rows
            .iter()
            .position(|c| c.rows() != 1 || c.layers.is_empty())
        {
            return Err(LmError::Input(format!(
                "cache {bad} to stack is not one row with cached layers"
            )));
        }
        let n_layers = rows[0].layers.len();
        if rows.iter().any(|c| c.layers.len() != n_layers) {
            return Err(LmError::Input(
                "caches to stack have different numbers of layers".into(),
            ));
        }
        let longest = rows.iter().map(KvCache::len).max().unwrap_or(0);
        let mut layers = Vec::with_capacity(n_layers);
        for layer in 0..n_layers {
            let (mut ks, mut vs) = (
                Vec::with_capacity(rows.len()),
                Vec::with_capacity(rows.len()),
            );
            for c in rows {
                let (k, v) = &c.layers[layer];
                let [_, h, s, d] = k.dims();
                let pad = longest - s;
                let padded = |t: &Tensor<4>| {
                    if pad == 0 {
                        t.clone()
                    } else {
                        Tensor::cat(
                            vec![Tensor::zeros([1, h, pad, d], &t.device()), t.clone()],
                            2,
                        )
                    }
                };
                ks.push(padded(k));
                vs.push(padded(v));
            }
            layers.push((Tensor::cat(ks, 0), Tensor::cat(vs, 0)));
        }
        let valid = rows
            .iter()
            .map(|c| {
                let mut v = vec![false; longest - c.len()];
                v.extend_from_slice(&c.valid[0]);
                v
            })
            .collect();
        Ok(KvCache {
            layers,
            valid,
            next_pos: rows.iter().map(|c| c.next_pos[0]).collect(),
        })
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
