//! One type for either backbone, chosen by the checkpoint's `config.json`.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor};
use mac_lm::{LmError, Result};

use crate::{Bert, T5Encoder, Trainable};

/// A pretrained text encoder: BERT family or T5 encoder.
#[derive(Module, Debug)]
pub enum EncoderBackbone {
    /// BERT / MiniLM.
    Bert(Bert),
    /// T5 encoder stack.
    T5(T5Encoder),
}

impl EncoderBackbone {
    /// Loads a Hugging Face directory; `model_type` in `config.json` picks
    /// the architecture (`bert` or `t5`).
    pub fn load(dir: impl AsRef<Path>, device: &Device, trainable: Trainable) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| LmError::Io {
            path: cfg_path.clone(),
            source: e,
        })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| LmError::Config {
            path: cfg_path.clone(),
            key: "(json)".into(),
            reason: e.to_string(),
        })?;
        match v.get("model_type").and_then(|m| m.as_str()) {
            Some("t5") | Some("mt5") => Ok(Self::T5(T5Encoder::load(dir, device, trainable)?)),
            Some("bert") | None => Ok(Self::Bert(Bert::load(dir, device, trainable)?)),
            Some(other) => Err(LmError::Config {
                path: cfg_path,
                key: "model_type".into(),
                reason: format!("`{other}` is not a supported encoder (bert, t5)"),
            }),
        }
    }

    /// Output width.
    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Bert(m) => m.hidden_size(),
            Self::T5(m) => m.hidden_size(),
        }
    }

    /// Last hidden states `[B, T, d]`, padding masked.
    pub fn forward(&self, ids: Tensor<2, Int>, valid: Tensor<2, Bool>) -> Tensor<3> {
        match self {
            Self::Bert(m) => m.forward(ids, valid),
            Self::T5(m) => m.forward(ids, valid),
        }
    }
}
