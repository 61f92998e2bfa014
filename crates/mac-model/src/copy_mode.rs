//! Copy mode of a [`MacModel`]: documents amortized by a
//! [`CopyHead`] over the base LM's own tokens, questions answered by a
//! [`CopyReader`] whose output the LM reads as soft-prompt tokens (see
//! mac-aggregation's `copy` module for why).

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use mac_aggregation::{CopyHead, CopyHeadConfig, CopyReader, CopyReaderConfig};
use mac_encoder::EncoderTokenizer;
use mac_lm::LoadedLm;
use serde::{Deserialize, Serialize};

use crate::{EncodedText, LmTokens, MacConfig, MacModel, MacPath, ModelError};

/// Shape of copy mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyConfig {
    /// Slots per document `k` (a modulation is `[k, key_dim + lm_width]`).
    pub slots: usize,
    /// Width of a slot's key.
    pub key_dim: usize,
    /// The base LM's residual stream after this many layers gives the
    /// document's tokens their context (which entity and attribute a value
    /// belongs to).
    pub context_layer: usize,
    /// Soft-prompt tokens read per question `p`.
    pub prefix_tokens: usize,
    /// The base LM's embedding width.
    pub lm_width: usize,
    /// Hard (straight-through) attention in the head and the reader: the
    /// LM is given document tokens' embeddings exactly, not mixtures.
    #[serde(default)]
    pub hard: bool,
    /// Learnt format tokens (from the question) before the read ones.
    #[serde(default)]
    pub format_tokens: usize,
}

/// Copy mode's modules.
#[derive(Module, Debug)]
pub struct CopyPath {
    /// Document side.
    pub head: CopyHead,
    /// Question side.
    pub reader: CopyReader,
    /// Slots per document.
    #[module(skip)]
    pub slots: usize,
    #[module(skip)]
    context_layer: usize,
    #[module(skip)]
    max_document_tokens: usize,
}

impl CopyPath {
    /// Fresh modules for `copy` within the model `config`.
    pub(crate) fn init(copy: &CopyConfig, config: &MacConfig, device: &Device) -> Self {
        Self {
            head: CopyHeadConfig::new(copy.lm_width, copy.slots, copy.key_dim)
                .with_hard(copy.hard)
                .init(device),
            reader: CopyReaderConfig::new(
                config.d_mod,
                copy.key_dim,
                copy.lm_width,
                copy.prefix_tokens,
            )
            .with_hard(copy.hard)
            .with_format_tokens(copy.format_tokens)
            .init(device),
            slots: copy.slots,
            context_layer: copy.context_layer,
            max_document_tokens: config.max_document_tokens,
        }
    }

    /// Documents → slots `[B, k, key_dim + lm_width]`, from the LM's input
    /// embeddings and its residual stream over each document's tokens.
    pub fn encode(
        &self,
        texts: &[&str],
        lm: &LoadedLm,
        device: &Device,
    ) -> Result<EncodedText, ModelError> {
        let max = self.max_document_tokens;
        let context = LmTokens::embed(lm, texts, max, Some(self.context_layer), device)?;
        let embeddings = LmTokens::embed(lm, texts, max, None, device)?;
        Ok(EncodedText {
            tokens: self
                .head
                .forward(context.embeddings, embeddings.embeddings, context.valid),
            truncated: context.truncated,
        })
    }
}

impl CopyPath {
    /// The answer probe of copy mode, which has no weights: the mean of
    /// the read tokens (LM embeddings; the format tokens before them left
    /// out).
    ///
    /// # Shapes
    /// - `read`: `[B, n, d_lm]` → `[B, 1, d_lm]`
    pub fn probe(&self, read: Tensor<3>) -> Tensor<3> {
        let [b, n, d] = read.dims();
        let k = self.reader.positions.dims()[0].min(n);
        let mean = read.narrow(1, n - k, k).sum_dim(1) / k as f64;
        mean.reshape([b, 1, d])
    }
}

impl MacConfig {
    /// The shape `(tokens, width)` of one document's modulation in memory.
    pub fn memory_shape(&self) -> (usize, usize) {
        match &self.copy {
            Some(c) => (c.slots, c.key_dim + c.lm_width),
            None => (self.n_tokens, self.d_mod),
        }
    }
}

impl MacModel {
    /// Documents → modulations `[B, n, d]` in one forward pass: the
    /// amortization encoder (with the LM-token channel when it has one), or
    /// in copy mode the copy head over the LM's tokens.
    pub fn encode_documents(
        &self,
        tokenizer: &EncoderTokenizer,
        texts: &[&str],
        lm: &LoadedLm,
        device: &Device,
    ) -> Result<EncodedText, ModelError> {
        match &self.path {
            MacPath::Copy(c) => c.encode(texts, lm, device),
            MacPath::Aggregation(a) => a.amortizer.encode_texts(tokenizer, texts, Some(lm), device),
        }
    }

    /// [`Self::aggregate`] of each question over its own documents
    /// (`docs[i]`: `[k_i, n, d]`) → one modulation per question.
    pub fn aggregate_each(&self, questions: Tensor<3>, docs: Vec<Tensor<3>>) -> Tensor<3> {
        if let Some(aggregator) = self.aggregator() {
            return aggregator.aggregate_each(questions, docs);
        }
        let per_question: Vec<Tensor<3>> = docs
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let [k, n, w] = d.dims();
                let q = questions.clone().narrow(0, i, 1);
                self.aggregate(q, d.reshape([1, k * n, w]), None).modulation
            })
            .collect();
        Tensor::cat(per_question, 0)
    }
}
