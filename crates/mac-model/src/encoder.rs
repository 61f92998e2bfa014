//! The amortization encoder: backbone → learned query tokens → per-token MLPs,
//! optionally also reading the document's tokens as the base LM embeds them.

use std::path::Path;

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use mac_aggregation::{QueryTokenHead, QueryTokenHeadConfig};
use mac_encoder::{EncoderBackbone, EncoderTokenizer, Trainable};
use mac_lm::{LoadedLm, Padding, TokenBatch};

use crate::model::ModelError;

/// Document (or question) text → modulation `[B, n, d_mod]`.
#[derive(Module, Debug)]
pub struct AmortizationEncoder {
    /// The pretrained encoder backbone.
    pub backbone: EncoderBackbone,
    /// Query tokens and per-token MLPs.
    pub head: QueryTokenHead,
    /// The *LM-token channel*: the document's tokens in the frozen LM's own
    /// embedding space, projected to the backbone's width and read by the
    /// query tokens beside the backbone's states (`None` = backbone only).
    pub lm_channel: Option<LmTokenChannel>,
}

/// Frozen-LM token embeddings → the backbone's width (projection + norm).
#[derive(Module, Debug)]
pub struct LmTokenChannel {
    /// `[d_lm, h]` projection.
    pub proj: Linear,
    /// Norm after the projection.
    pub norm: LayerNorm,
}

/// A batch of texts as the base LM tokenizes and embeds them (constants:
/// the LM is frozen).
#[derive(Debug, Clone)]
pub struct LmTokens {
    /// `[B, T, d_lm]` token embeddings.
    pub embeddings: Tensor<3>,
    /// `[B, T]`: true at real tokens, false at padding.
    pub valid: Tensor<2, Bool>,
}

impl LmTokens {
    /// Tokenizes `texts` with the LM's tokenizer (at most `max_tokens` each)
    /// and looks up the LM's input embeddings; the result lives on `device`.
    pub fn embed(
        lm: &LoadedLm,
        texts: &[&str],
        max_tokens: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let mut rows = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let mut ids = lm.tokenizer.encode(text)?;
            ids.truncate(max_tokens);
            if ids.is_empty() {
                return Err(ModelError::Input(format!(
                    "text #{i} has no tokens for the base LM"
                )));
            }
            rows.push(ids);
        }
        let batch = TokenBatch::padded(&rows, lm.tokenizer.pad_id, Padding::Right)?;
        let emb = lm
            .model
            .token_embeddings(batch.ids_tensor(&lm.model.device()));
        let dims = emb.dims();
        let valid: Vec<bool> = batch.valid.into_iter().flatten().collect();
        let data: Vec<f32> = emb
            .try_to_vec_as::<f32>()
            .map_err(|e| ModelError::Input(format!("reading LM embeddings: {e:?}")))?;
        Ok(Self {
            embeddings: Tensor::from_data(TensorData::new(data, dims), device),
            valid: Tensor::from_data(TensorData::new(valid, [dims[0], dims[1]]), device),
        })
    }
}

impl AmortizationEncoder {
    /// Loads the backbone from `backbone_dir` and initialises a fresh head
    /// (and an LM-token channel from width `lm_width`, when given).
    pub fn load(
        backbone_dir: &Path,
        n_tokens: usize,
        d_mod: usize,
        n_heads: usize,
        trainable: Trainable,
        lm_width: Option<usize>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let backbone = EncoderBackbone::load(backbone_dir, device, trainable)?;
        let h = backbone.hidden_size();
        let head = QueryTokenHeadConfig::new(h, n_tokens, d_mod)
            .with_n_heads(n_heads)
            .init(device);
        let lm_channel = lm_width.map(|w| LmTokenChannel {
            proj: LinearConfig::new(w, h).init(device),
            norm: LayerNormConfig::new(h).init(device),
        });
        Ok(Self {
            backbone,
            head,
            lm_channel,
        })
    }

    /// Token ids `[B, T]` and their validity mask → `[B, n, d_mod]`; the
    /// LM tokens join the backbone's states when the encoder has a channel.
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        valid: Tensor<2, Bool>,
        lm_tokens: Option<LmTokens>,
    ) -> Tensor<3> {
        let states = self.backbone.forward(ids, valid.clone());
        match (&self.lm_channel, lm_tokens) {
            (Some(ch), Some(lm)) => {
                let extra = ch.norm.forward(ch.proj.forward(lm.embeddings));
                let states = Tensor::cat(vec![states, extra], 1);
                let valid = Tensor::cat(vec![valid, lm.valid], 1);
                self.head.forward(states, valid)
            }
            _ => self.head.forward(states, valid),
        }
    }

    /// Tokenizes and encodes texts; rejects empty ones. An encoder with an
    /// LM-token channel needs the base LM (`lm`) to embed the texts with.
    pub fn encode_texts(
        &self,
        tokenizer: &EncoderTokenizer,
        texts: &[&str],
        lm: Option<&LoadedLm>,
        device: &Device,
    ) -> Result<EncodedText, ModelError> {
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(ModelError::Input(format!("text #{i} is empty")));
        }
        let lm_tokens = match (&self.lm_channel, lm) {
            (None, _) => None,
            (Some(_), Some(lm)) => Some(LmTokens::embed(lm, texts, tokenizer.max_len(), device)?),
            (Some(_), None) => {
                return Err(ModelError::Input(
                    "this encoder reads the base LM's token embeddings; no LM was given".into(),
                ))
            }
        };
        let batch = tokenizer.encode_batch(texts)?;
        let tokens = self.forward(
            batch.ids_tensor(device),
            batch.valid_tensor(device),
            lm_tokens,
        );
        Ok(EncodedText {
            tokens,
            truncated: batch.truncated,
        })
    }
}

/// Text after the encoder, with what truncation happened.
#[derive(Debug, Clone)]
pub struct EncodedText {
    /// `[B, n, d_mod]`.
    pub tokens: Tensor<3>,
    /// Per input: how many tokens were cut off at the encoder's length limit.
    pub truncated: Vec<usize>,
}
