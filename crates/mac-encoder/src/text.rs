//! Encoder-side tokenization: `[CLS] text [SEP]`, truncation to the
//! backbone's limit (reported, never silent), padded batches with masks.

use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use tokenizers::Tokenizer;

use crate::error::{EncoderError, Result};

/// A padded batch of encoder inputs.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// `[B][T]` ids (pad id in padding).
    pub ids: Vec<Vec<u32>>,
    /// `[B][T]` true for real tokens.
    pub valid: Vec<Vec<bool>>,
    /// Per row: how many tokens were cut off by truncation.
    pub truncated: Vec<usize>,
}

impl EncodedBatch {
    /// Batch size.
    pub fn batch_size(&self) -> usize {
        self.ids.len()
    }
    /// Padded length.
    pub fn seq_len(&self) -> usize {
        self.ids.first().map(Vec::len).unwrap_or(0)
    }
    /// `[B, T]` ids.
    pub fn ids_tensor(&self, device: &Device) -> Tensor<2, Int> {
        let flat: Vec<i64> = self.ids.iter().flatten().map(|&x| x as i64).collect();
        Tensor::from_data(
            TensorData::new(flat, [self.batch_size(), self.seq_len()]),
            device,
        )
    }
    /// `[B, T]` validity mask (true = real token).
    pub fn valid_tensor(&self, device: &Device) -> Tensor<2, Bool> {
        let flat: Vec<bool> = self.valid.iter().flatten().copied().collect();
        Tensor::from_data(
            TensorData::new(flat, [self.batch_size(), self.seq_len()]),
            device,
        )
    }
}

/// The tokenizer of a BERT-style encoder (`tokenizer.json`).
#[derive(Clone)]
pub struct EncoderTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    cls: u32,
    sep: u32,
    pad: u32,
    max_len: usize,
}

impl std::fmt::Debug for EncoderTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EncoderTokenizer({}, max_len {})",
            self.path.display(),
            self.max_len
        )
    }
}

impl EncoderTokenizer {
    /// Loads `tokenizer.json`; sequences are cut to `max_len` tokens (specials included).
    pub fn from_file(path: impl AsRef<Path>, max_len: usize) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let err = |reason: String| EncoderError::Tokenizer {
            path: path.clone(),
            reason,
        };
        let mut inner = mac_lm::tokenizer::read_tokenizer_json(&path)?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| err(e.to_string()))?;
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| err(format!("no `{t}` token")))
        };
        Ok(Self {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            pad: id("[PAD]")?,
            inner,
            path,
            max_len: max_len.max(3),
        })
    }

    /// The same tokenizer cutting sequences to `max_len` tokens instead.
    pub fn with_max_len(&self, max_len: usize) -> Self {
        Self {
            inner: self.inner.clone(),
            path: self.path.clone(),
            max_len: max_len.max(3),
            ..*self
        }
    }

    /// Longest sequence produced, specials included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Tokenizes texts into a right-padded batch. Over-long texts are truncated
    /// (the count of dropped tokens is in [`EncodedBatch::truncated`]).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<EncodedBatch> {
        let mut rows = Vec::with_capacity(texts.len());
        let mut truncated = Vec::with_capacity(texts.len());
        for text in texts {
            let enc = self
                .inner
                .encode(*text, false)
                .map_err(|e| EncoderError::Tokenizer {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
            let body = enc.get_ids();
            let keep = body.len().min(self.max_len - 2);
            truncated.push(body.len() - keep);
            let mut row = Vec::with_capacity(keep + 2);
            row.push(self.cls);
            row.extend_from_slice(&body[..keep]);
            row.push(self.sep);
            rows.push(row);
        }
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let valid = rows
            .iter()
            .map(|r| (0..len).map(|i| i < r.len()).collect())
            .collect();
        let ids = rows
            .into_iter()
            .map(|mut r| {
                r.resize(len, self.pad);
                r
            })
            .collect();
        Ok(EncodedBatch {
            ids,
            valid,
            truncated,
        })
    }
}
