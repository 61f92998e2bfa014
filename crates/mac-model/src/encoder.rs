//! The amortization encoder: backbone → learned query tokens → per-token MLPs.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use mac_aggregation::{QueryTokenHead, QueryTokenHeadConfig};
use mac_encoder::{EncoderBackbone, EncoderTokenizer, Trainable};

use crate::model::ModelError;

/// Document (or question) text → modulation `[B, n, d_mod]`.
#[derive(Module, Debug)]
pub struct AmortizationEncoder {
    /// The pretrained encoder backbone.
    pub backbone: EncoderBackbone,
    /// Query tokens and per-token MLPs.
    pub head: QueryTokenHead,
}

/// Text after the encoder, with what truncation happened.
#[derive(Debug, Clone)]
pub struct EncodedText {
    /// `[B, n, d_mod]`.
    pub tokens: Tensor<3>,
    /// Per input: how many tokens were cut off at the encoder's length limit.
    pub truncated: Vec<usize>,
}

impl AmortizationEncoder {
    /// Loads the backbone from a Hugging Face directory and adds a fresh head.
    pub fn load(
        backbone_dir: &Path,
        n_tokens: usize,
        d_mod: usize,
        n_heads: usize,
        trainable: Trainable,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let backbone = EncoderBackbone::load(backbone_dir, device, trainable)?;
        let h = backbone.hidden_size();
        let head = QueryTokenHeadConfig::new(h, n_tokens, d_mod)
            .with_n_heads(n_heads)
            .init(device);
        Ok(Self { backbone, head })
    }

    /// Encodes token ids `[B, T]` with validity mask `[B, T]`.
    pub fn forward(
        &self,
        ids: Tensor<2, burn::tensor::Int>,
        valid: Tensor<2, burn::tensor::Bool>,
    ) -> Tensor<3> {
        let states = self.backbone.forward(ids, valid.clone());
        self.head.forward(states, valid)
    }

    /// Tokenises and encodes texts. Empty (or whitespace-only) texts are an error.
    pub fn encode_texts(
        &self,
        tokenizer: &EncoderTokenizer,
        texts: &[&str],
        device: &Device,
    ) -> Result<EncodedText, ModelError> {
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(ModelError::Input(format!("text #{i} is empty")));
        }
        let batch = tokenizer.encode_batch(texts)?;
        let tokens = self.forward(batch.ids_tensor(device), batch.valid_tensor(device));
        Ok(EncodedText {
            tokens,
            truncated: batch.truncated,
        })
    }
}
