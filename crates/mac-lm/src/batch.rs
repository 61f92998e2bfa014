//! Token batches with padding, and the per-pass attention mask and positions
//! shared by both architectures.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::cache::KvCache;
use crate::error::{LmError, Result};

/// A rectangular batch of token ids with a validity (non-padding) mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// `[B][T]` token ids (padding positions hold the pad id).
    pub ids: Vec<Vec<u32>>,
    /// `[B][T]`: `true` for real tokens, `false` for padding.
    pub valid: Vec<Vec<bool>>,
}

/// Which side padding goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Pad before the tokens (generation: the last position is real in every row).
    Left,
    /// Pad after the tokens (training: answers line up with their questions).
    Right,
}

impl TokenBatch {
    /// Pads sequences of different lengths into one batch.
    pub fn padded(seqs: &[Vec<u32>], pad_id: u32, side: Padding) -> Result<Self> {
        if seqs.is_empty() {
            return Err(LmError::Input("empty batch".into()));
        }
        let len = seqs.iter().map(Vec::len).max().unwrap_or(0);
        if len == 0 {
            return Err(LmError::Input(
                "every sequence in the batch is empty".into(),
            ));
        }
        let mut ids = Vec::with_capacity(seqs.len());
        let mut valid = Vec::with_capacity(seqs.len());
        for s in seqs {
            let pad = len - s.len();
            let (mut row, mut v) = (Vec::with_capacity(len), Vec::with_capacity(len));
            if side == Padding::Left {
                row.extend(std::iter::repeat_n(pad_id, pad));
                v.extend(std::iter::repeat_n(false, pad));
            }
            row.extend_from_slice(s);
            v.extend(std::iter::repeat_n(true, s.len()));
            if side == Padding::Right {
                row.extend(std::iter::repeat_n(pad_id, pad));
                v.extend(std::iter::repeat_n(false, pad));
            }
            ids.push(row);
            valid.push(v);
        }
        Ok(Self { ids, valid })
    }

    /// One unpadded sequence.
    pub fn single(ids: Vec<u32>) -> Result<Self> {
        Self::padded(&[ids], 0, Padding::Right)
    }

    /// Batch size.
    pub fn batch_size(&self) -> usize {
        self.ids.len()
    }

    /// Sequence length (including padding).
    pub fn seq_len(&self) -> usize {
        self.ids.first().map(Vec::len).unwrap_or(0)
    }

    /// The ids as an `[B, T]` integer tensor.
    pub fn ids_tensor(&self, device: &Device) -> Tensor<2, Int> {
        let flat: Vec<i64> = self.ids.iter().flatten().map(|&i| i as i64).collect();
        Tensor::from_data(
            TensorData::new(flat, [self.batch_size(), self.seq_len()]),
            device,
        )
    }
}

/// What every layer of one forward pass shares: positions of the new tokens and
/// the boolean attention mask over `[prefix | cached | new]` keys.
pub(crate) struct PassContext {
    /// `[B][T]` position ids of the new tokens.
    pub positions: Vec<Vec<usize>>,
    /// `[B, H, T, p + S]`, `true` = masked out.
    pub mask: Tensor<4, Bool>,
}

impl PassContext {
    /// Builds the positions and mask, and advances the cache's bookkeeping.
    pub fn new(
        batch: &TokenBatch,
        prefix_len: usize,
        n_heads: usize,
        cache: Option<&mut KvCache>,
        device: &Device,
    ) -> Result<Self> {
        let (b, t) = (batch.batch_size(), batch.seq_len());
        let mut local = KvCache::new();
        let cache = cache.unwrap_or(&mut local);
        if cache.valid.is_empty() {
            cache.valid = vec![Vec::new(); b];
            cache.next_pos = vec![0; b];
        } else if cache.valid.len() != b {
            return Err(LmError::Input(format!(
                "batch of {b} rows does not match the cache's {} rows",
                cache.valid.len()
            )));
        }
        let past = cache.len();
        let mut positions = Vec::with_capacity(b);
        for (row, valid) in batch.valid.iter().enumerate() {
            let mut pos = cache.next_pos[row];
            let row_positions: Vec<usize> = valid
                .iter()
                .map(|&real| {
                    let p = pos;
                    pos += real as usize;
                    p
                })
                .collect();
            positions.push(row_positions);
            cache.next_pos[row] = pos;
            cache.valid[row].extend_from_slice(valid);
        }
        let k_len = prefix_len + past + t;
        let mut mask = vec![false; b * t * k_len];
        for row in 0..b {
            for i in 0..t {
                let base = (row * t + i) * k_len;
                for j in 0..past + t {
                    let visible = j <= past + i && cache.valid[row][j];
                    mask[base + prefix_len + j] = !visible;
                }
            }
        }
        let mask = Tensor::<4, Bool>::from_data(TensorData::new(mask, [b, 1, t, k_len]), device)
            .expand([b, n_heads, t, k_len]);
        Ok(Self { positions, mask })
    }
}
