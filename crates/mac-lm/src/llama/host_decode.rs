//! A Llama decode step over plain host buffers: one new token a row, every
//! layer's norms, rotary positions, attention and residual sums in loops
//! over `f32` slices, and its products on the file's quantized blocks
//! ([`mac_kernels::quantized`]). The keys and values of the prefix and the
//! prompt's cache are copied out of their tensors once, when decoding
//! starts, and each step appends to them in place — no tensor operation,
//! allocation of a graph or concatenation of the cache per step.
//!
//! It computes what [`Llama::residual`] computes for a one-token pass (the
//! same products on the same blocks; norms, softmax and sums in another
//! order, so logits agree to rounding: see the decode tests of mac-lm).

use burn::tensor::{Int, Tensor, TensorData};

use super::{Llama, QuantizedWeights};
use crate::batch::TokenBatch;
use crate::cache::KvCache;
use crate::error::{LmError, Result};
use crate::prefix::PrefixKv;

/// One key/value head's keys and values, position after position
/// (`[S, d_h]` each).
#[derive(Debug, Clone, Default)]
struct HeadKv {
    keys: Vec<f32>,
    values: Vec<f32>,
}

/// Decoding state over host buffers for a batch of rows (see the module).
pub struct HostDecoder<'m> {
    model: &'m Llama,
    weights: &'m QuantizedWeights,
    /// Each layer's input and post-attention norm gains, then the final's.
    norms: Vec<[Vec<f32>; 2]>,
    final_norm: Vec<f32>,
    /// `[layer][row][kv head]`: the prefix's positions, then the cache's.
    kv: Vec<Vec<Vec<HeadKv>>>,
    /// `[row][position]`: whether the position is attended (the prefix's
    /// always; padding never).
    visible: Vec<Vec<bool>>,
    /// Each row's next position id.
    next_pos: Vec<usize>,
}

/// A tensor's values on the host.
fn host(t: Tensor<1>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| LmError::Input(format!("reading a tensor to the host: {e:?}")))
}

/// `[B, H_kv, S, d_h]` keys or values as `[row][head]` slices of `[S, d_h]`.
fn heads_of(t: &Tensor<4>) -> Result<Vec<Vec<Vec<f32>>>> {
    let [b, h, s, d] = t.dims();
    let flat = host(t.clone().reshape([b * h * s * d]))?;
    let mut chunks = flat.chunks_exact((s * d).max(1));
    Ok((0..b)
        .map(|_| {
            (0..h)
                .map(|_| chunks.next().map(<[f32]>::to_vec).unwrap_or_default())
                .collect()
        })
        .collect())
}

/// One layer's keys and values on the host, `[row][kv head]`: the
/// prefix's positions (`prefix`, where there is one) then the cache's.
fn layer_kv(
    prefix: Option<&(Tensor<4>, Tensor<4>)>,
    (keys, values): &(Tensor<4>, Tensor<4>),
) -> Result<Vec<Vec<HeadKv>>> {
    let (ck, cv) = (heads_of(keys)?, heads_of(values)?);
    let (pk, pv) = match prefix {
        Some((k, v)) => (heads_of(k)?, heads_of(v)?),
        None => (Vec::new(), Vec::new()),
    };
    let joined = |pre: &[Vec<Vec<f32>>], r: usize, h: usize, own: &[f32]| {
        let mut all = pre.get(r).map(|x| x[h].clone()).unwrap_or_default();
        all.extend_from_slice(own);
        all
    };
    Ok((0..ck.len())
        .map(|r| {
            (0..ck[r].len())
                .map(|h| HeadKv {
                    keys: joined(&pk, r, h, &ck[r][h]),
                    values: joined(&pv, r, h, &cv[r][h]),
                })
                .collect()
        })
        .collect())
}

impl<'m> HostDecoder<'m> {
    /// The state after `prefix` and `cache` (rows as the cache's, at most
    /// [`mac_kernels::quantized::MAX_ROWS`]), or `None` where `model` does
    /// not decode on quantized blocks on the CPU, or host decoding is off
    /// ([`Llama::set_host_decode`]).
    pub fn start(
        model: &'m Llama,
        prefix: Option<&PrefixKv>,
        cache: &KvCache,
    ) -> Result<Option<Self>> {
        let device = model.embed_tokens.val().device();
        let weights = model.decode_weights().filter(|_| model.host_decode);
        let Some(weights) = weights.filter(|_| mac_kernels::linear::accelerated(&device)) else {
            return Ok(None);
        };
        let rows = cache.rows();
        let layers = model.layers.len();
        if rows == 0 || rows > mac_kernels::quantized::MAX_ROWS || cache.layers.len() != layers {
            return Ok(None);
        }
        let p = prefix.map(PrefixKv::len).unwrap_or(0);
        let kv = (0..layers)
            .map(|i| {
                layer_kv(
                    prefix.filter(|_| p > 0).map(|pre| &pre.layers[i]),
                    &cache.layers[i],
                )
            })
            .collect::<Result<_>>()?;
        let visible = cache
            .valid
            .iter()
            .map(|v| {
                std::iter::repeat_n(true, p)
                    .chain(v.iter().copied())
                    .collect()
            })
            .collect();
        let norms = model
            .layers
            .iter()
            .map(|l| {
                let input = host(l.input_layernorm.weight.val())?;
                Ok([input, host(l.post_attention_layernorm.weight.val())?])
            })
            .collect::<Result<_>>()?;
        Ok(Some(Self {
            model,
            weights,
            norms,
            final_norm: host(model.norm.weight.val())?,
            kv,
            visible,
            next_pos: cache.next_pos.clone(),
        }))
    }

    /// The logits `[B, 1, V]` after one more token a row (`batch`: one id
    /// and whether it is real, a row at a time).
    ///
    /// # Shapes
    /// - `batch`: `[B][1]`
    /// - returns `[B, 1, V]`
    pub fn step(&mut self, batch: &TokenBatch) -> Result<Tensor<3>> {
        let b = self.next_pos.len();
        if batch.batch_size() != b || batch.seq_len() != 1 {
            return Err(LmError::Input(format!(
                "a decode step takes one token for each of {b} rows, not {} × {}",
                batch.batch_size(),
                batch.seq_len()
            )));
        }
        let positions: Vec<usize> = self.next_pos.clone();
        for (row, valid) in batch.valid.iter().enumerate() {
            self.visible[row].push(valid[0]);
            self.next_pos[row] += usize::from(valid[0]);
        }
        let mut x = self.embeddings(batch)?;
        for i in 0..self.model.layers.len() {
            self.layer(i, &mut x, &positions);
        }
        let eps = self.model.config.rms_norm_eps as f32;
        let normed = rms_norm(&x, &self.final_norm, eps);
        let device = self.model.embed_tokens.val().device();
        match &self.weights.lm_head {
            Some(head) => {
                let logits = head.mul_rows(&normed, b);
                let v = logits.len() / b;
                Ok(Tensor::from_data(
                    TensorData::new(logits, [b, 1, v]),
                    &device,
                ))
            }
            None => {
                let d = self.final_norm.len();
                let hidden = Tensor::from_data(TensorData::new(normed, [b, 1, d]), &device);
                Ok(self.model.logits(hidden))
            }
        }
    }

    /// The rows' token embeddings, `[B · d]`.
    fn embeddings(&self, batch: &TokenBatch) -> Result<Vec<f32>> {
        let ids: Vec<i64> = batch.ids.iter().map(|r| i64::from(r[0])).collect();
        let b = ids.len();
        let embed = self.model.embed_tokens.val();
        let device = embed.device();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [b]), &device);
        let d = embed.dims()[1];
        host(embed.select(0, ids).reshape([b * d]))
    }

    /// Layer `i` over the rows' residual streams `x` (`[B · d]`), the new
    /// tokens at `positions`.
    fn layer(&mut self, i: usize, x: &mut [f32], positions: &[usize]) {
        let config = &self.model.config;
        let (h, hkv, dh) = (
            config.num_attention_heads,
            config.kv_heads(),
            config.head_size(),
        );
        let (dq, dkv) = (h * dh, hkv * dh);
        let eps = config.rms_norm_eps as f32;
        let b = positions.len();
        let weights = &self.weights.layers[i];
        let qkv = weights
            .qkv
            .mul_rows(&rms_norm(x, &self.norms[i][0], eps), b);
        let width = dq + 2 * dkv;
        let mut attn = vec![0f32; b * dq];
        for (row, &pos) in positions.iter().enumerate() {
            let mut all = qkv[row * width..(row + 1) * width].to_vec();
            let (q, kv) = all.split_at_mut(dq);
            let (k, v) = kv.split_at_mut(dkv);
            for head in q.chunks_exact_mut(dh).chain(k.chunks_exact_mut(dh)) {
                rotate(head, pos as f32, &self.model.inv_freq);
            }
            let heads = &mut self.kv[i][row];
            for (g, kv) in heads.iter_mut().enumerate() {
                kv.keys.extend_from_slice(&k[g * dh..(g + 1) * dh]);
                kv.values.extend_from_slice(&v[g * dh..(g + 1) * dh]);
            }
            let out = &mut attn[row * dq..(row + 1) * dq];
            for (head, (qh, oh)) in q.chunks_exact(dh).zip(out.chunks_exact_mut(dh)).enumerate() {
                attend(qh, &heads[head * hkv / h], &self.visible[row], oh);
            }
        }
        add(x, &weights.o.mul_rows(&attn, b));
        let gate_up = weights
            .gate_up
            .mul_rows(&rms_norm(x, &self.norms[i][1], eps), b);
        let f = gate_up.len() / (2 * b);
        let mut hidden = vec![0f32; b * f];
        for (row, out) in hidden.chunks_exact_mut(f).enumerate() {
            let (gate, up) = gate_up[row * 2 * f..(row + 1) * 2 * f].split_at(f);
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = g / (1.0 + (-g).exp()) * u;
            }
        }
        add(x, &weights.down.mul_rows(&hidden, b));
    }
}

/// `x += y`.
fn add(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Each row of `x` (rows as wide as `gain`) divided by its root mean
/// square (with `eps`), times `gain`.
fn rms_norm(x: &[f32], gain: &[f32], eps: f32) -> Vec<f32> {
    let d = gain.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(d) {
        let mean = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let rms = (mean + eps).sqrt();
        out.extend(row.iter().zip(gain).map(|(v, g)| v / rms * g));
    }
    out
}

/// Rotary position `pos` on one head (rotate-half layout, `inv_freq` of
/// half its width).
fn rotate(head: &mut [f32], pos: f32, inv_freq: &[f32]) {
    let half = head.len() / 2;
    for (j, &f) in inv_freq.iter().enumerate().take(half) {
        let (sin, cos) = (pos * f).sin_cos();
        let (a, b) = (head[j], head[j + half]);
        head[j] = a * cos - b * sin;
        head[j + half] = b * cos + a * sin;
    }
}

/// One query head's attention over a key/value head's `visible`
/// positions, scaled by `1/√d_h`, into `out`; zeros where none is visible.
fn attend(q: &[f32], kv: &HeadKv, visible: &[bool], out: &mut [f32]) {
    let dh = q.len();
    let scale = 1.0 / (dh as f32).sqrt();
    let scores: Vec<Option<f32>> = kv
        .keys
        .chunks_exact(dh)
        .zip(visible)
        .map(|(k, &seen)| seen.then(|| scale * q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>()))
        .collect();
    out.fill(0.0);
    let Some(max) = scores.iter().flatten().copied().reduce(f32::max) else {
        return;
    };
    let weights: Vec<f32> = scores
        .iter()
        .map(|s| s.map_or(0.0, |s| (s - max).exp()))
        .collect();
    let total: f32 = weights.iter().sum();
    for (w, v) in weights.iter().zip(kv.values.chunks_exact(dh)) {
        if *w > 0.0 {
            for (o, &x) in out.iter_mut().zip(v) {
                *o += w / total * x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_by_position_zero_is_the_identity_and_keeps_the_norm() {
        let inv_freq = [1.0, 0.1];
        let mut head = [1.0, 2.0, 3.0, 4.0];
        rotate(&mut head, 0.0, &inv_freq);
        assert_eq!(head, [1.0, 2.0, 3.0, 4.0]);
        rotate(&mut head, 5.0, &inv_freq);
        let norm: f32 = head.iter().map(|v| v * v).sum();
        assert!((norm - 30.0).abs() < 1e-4, "{head:?}");
        // Pairs (j, j + half) rotate by pos · inv_freq[j].
        let (s, c) = 5f32.sin_cos();
        assert!((head[0] - (c - 3.0 * s)).abs() < 1e-5);
    }

    #[test]
    fn attention_skips_positions_not_visible_and_gives_zeros_where_none_is() {
        let kv = HeadKv {
            keys: vec![1.0, 0.0, 0.0, 1.0, 5.0, 5.0],
            values: vec![1.0, 2.0, 3.0, 4.0, 100.0, 100.0],
        };
        let mut out = [0.0; 2];
        attend(&[0.0, 0.0], &kv, &[true, true, false], &mut out);
        // Equal scores: the mean of the visible values.
        assert_eq!(out, [2.0, 3.0]);
        attend(&[1.0, 1.0], &kv, &[false, false, false], &mut out);
        assert_eq!(out, [0.0, 0.0]);
    }

    #[test]
    fn rms_norm_divides_each_row_by_its_root_mean_square() {
        let out = rms_norm(&[3.0, 4.0, 0.0, 0.0], &[1.0, 2.0], 1e-6);
        let rms = (12.5f32 + 1e-6).sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6 && (out[1] - 8.0 / rms).abs() < 1e-6);
        assert_eq!(&out[2..], [0.0, 0.0]);
    }
}
