//! The amortization encoder: backbone → learned query tokens → per-token MLPs,
//! optionally also reading the document's tokens as the base LM embeds them.

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use mac_aggregation::{QueryTokenHead, QueryTokenHeadConfig};
use mac_encoder::{EncoderBackbone, EncoderFiles, EncoderTokenizer, Trainable};
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
    /// Which of the LM's states the channel reads: its input embeddings
    /// (`None`), or its residual stream after this many layers (the tokens
    /// in context: which entity and attribute a value belongs to).
    #[module(skip)]
    pub layer: Option<usize>,
}

/// Shape of an LM-token channel: the LM's hidden width and which of its
/// states the channel reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LmChannelSpec {
    /// The LM's hidden width.
    pub width: usize,
    /// `None`: the LM's input embeddings; `Some(k)`: its residual stream
    /// after `k` layers.
    pub layer: Option<usize>,
}

/// A batch of texts as the base LM tokenizes and embeds them, or as its
/// first layers see them (constants: the LM is frozen).
#[derive(Debug, Clone)]
pub struct LmTokens {
    /// `[B, T, d_lm]` token embeddings or residual-stream states.
    pub embeddings: Tensor<3>,
    /// `[B, T]`: true at real tokens, false at padding.
    pub valid: Tensor<2, Bool>,
    /// Per text: LM tokens cut off at the length limit.
    pub truncated: Vec<usize>,
}

impl LmTokens {
    /// Tokenizes `texts` with the LM's tokenizer (at most `max_tokens` each)
    /// and looks up the LM's input embeddings (`layer = None`) or runs its
    /// first `layer` layers over them; the result lives on `device`.
    pub fn embed(
        lm: &LoadedLm,
        texts: &[&str],
        max_tokens: usize,
        layer: Option<usize>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let mut rows = Vec::with_capacity(texts.len());
        let mut truncated = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let mut ids = lm.tokenizer.encode(text)?;
            truncated.push(ids.len().saturating_sub(max_tokens));
            ids.truncate(max_tokens);
            if ids.is_empty() {
                return Err(ModelError::Input(format!(
                    "text #{i} has no tokens for the base LM"
                )));
            }
            rows.push(ids);
        }
        let batch = TokenBatch::padded(&rows, lm.tokenizer.pad_id, Padding::Right)?;
        let emb = match layer {
            None => lm
                .model
                .token_embeddings(batch.ids_tensor(&lm.model.device())),
            Some(n) => lm.model.residual_stream(&batch, n)?,
        };
        let dims = emb.dims();
        let valid: Vec<bool> = batch.valid.into_iter().flatten().collect();
        let data: Vec<f32> = emb
            .try_to_vec_as::<f32>()
            .map_err(|e| ModelError::Input(format!("reading LM embeddings: {e:?}")))?;
        Ok(Self {
            embeddings: Tensor::from_data(TensorData::new(data, dims), device),
            valid: Tensor::from_data(TensorData::new(valid, [dims[0], dims[1]]), device),
            truncated,
        })
    }
}

impl AmortizationEncoder {
    /// Builds the backbone from an encoder directory already read and
    /// initialises a fresh head (and an LM-token channel, when given).
    pub fn load(
        backbone: &EncoderFiles,
        n_tokens: usize,
        d_mod: usize,
        n_heads: usize,
        trainable: Trainable,
        lm_channel: Option<LmChannelSpec>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let backbone = EncoderBackbone::from_files(backbone, device, trainable)?;
        let h = backbone.hidden_size();
        let head = QueryTokenHeadConfig::new(h, n_tokens, d_mod)
            .with_n_heads(n_heads)
            .init(device);
        let lm_channel = lm_channel.map(|spec| LmTokenChannel {
            proj: LinearConfig::new(spec.width, h).init(device),
            norm: LayerNormConfig::new(h).init(device),
            layer: spec.layer,
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
            (Some(ch), Some(lm)) => Some(LmTokens::embed(
                lm,
                texts,
                tokenizer.max_len(),
                ch.layer,
                device,
            )?),
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
