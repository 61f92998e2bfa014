//! One type for either backbone, chosen by the checkpoint's `config.json`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{EncoderError, Result};
use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor};
use mac_kernels::weights::SafetensorsSource;

use crate::{Bert, BertConfig, EncoderTokenizer, T5Config, T5Encoder, Trainable};

/// A pretrained text encoder: BERT family or T5 encoder.
#[derive(Module, Debug)]
pub enum EncoderBackbone {
    /// BERT / MiniLM.
    Bert(Bert),
    /// T5 encoder stack.
    T5(T5Encoder),
}

/// A Hugging Face encoder directory read once — its `config.json` parsed,
/// its safetensors memory-mapped and its `tokenizer.json` parsed, each when
/// first needed — from which several backbones and tokenizers are built
/// (the runtime's document, question and key encoders, the trainer's
/// encoders and tokenizers) without reading the files again.
pub struct EncoderFiles {
    dir: PathBuf,
    config: serde_json::Value,
    weights: OnceLock<SafetensorsSource>,
    tokenizer: OnceLock<EncoderTokenizer>,
}

/// The value in `cell`, made by `make` on the first call (an error is not
/// kept: the next call tries again).
fn get_or_try_init<T>(cell: &OnceLock<T>, make: impl FnOnce() -> Result<T>) -> Result<&T> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let made = make()?;
    Ok(cell.get_or_init(|| made))
}

impl std::fmt::Debug for EncoderFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncoderFiles({})", self.dir.display())
    }
}

impl EncoderFiles {
    /// Reads `dir/config.json`; `dir/*.safetensors` and `dir/tokenizer.json`
    /// are read when first needed, so that a configuration error comes
    /// first and a backbone alone needs no tokenizer.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| EncoderError::Io {
            path: cfg_path.clone(),
            source: e,
        })?;
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| EncoderError::Config {
                path: cfg_path.clone(),
                key: "(json)".into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            dir,
            config,
            weights: OnceLock::new(),
            tokenizer: OnceLock::new(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config.json`'s path (errors name it).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// The weights (mapped on the first call).
    pub fn weights(&self) -> Result<&SafetensorsSource> {
        get_or_try_init(&self.weights, || Ok(SafetensorsSource::open(&self.dir)?))
    }

    /// The tokenizer (read on the first call), cutting sequences to
    /// `max_len` tokens (specials included).
    pub fn tokenizer(&self, max_len: usize) -> Result<EncoderTokenizer> {
        let path = self.dir.join("tokenizer.json");
        let t = get_or_try_init(&self.tokenizer, || {
            EncoderTokenizer::from_file(&path, max_len)
        })?;
        Ok(t.with_max_len(max_len))
    }
}

/// Deserialises a parsed `config.json` into `T`; an error names `cfg_path`
/// and the offending key.
pub(crate) fn config_from_json<T: serde::de::DeserializeOwned>(
    cfg_path: &Path,
    json: &serde_json::Value,
) -> Result<T> {
    serde_json::from_value(json.clone()).map_err(|e| EncoderError::Config {
        path: cfg_path.to_path_buf(),
        key: e.to_string().split('`').nth(1).unwrap_or("?").to_string(),
        reason: e.to_string(),
    })
}

impl EncoderBackbone {
    /// Loads a Hugging Face directory; `model_type` in `config.json` picks
    /// the architecture (`bert` or `t5`).
    pub fn load(dir: impl AsRef<Path>, device: &Device, trainable: Trainable) -> Result<Self> {
        Self::from_files(&EncoderFiles::open(dir)?, device, trainable)
    }

    /// Builds a backbone from a directory already read.
    pub fn from_files(files: &EncoderFiles, device: &Device, trainable: Trainable) -> Result<Self> {
        let cfg_path = files.config_path();
        let json = files.config();
        match json.get("model_type").and_then(|m| m.as_str()) {
            Some("t5") | Some("mt5") => {
                let config = T5Config::from_json(&cfg_path, json)?;
                Ok(Self::T5(T5Encoder::from_source(
                    config,
                    files.weights()?,
                    device,
                    trainable,
                )?))
            }
            Some("bert") | None => {
                let config = BertConfig::from_json(&cfg_path, json)?;
                Ok(Self::Bert(Bert::from_source(
                    config,
                    files.weights()?,
                    device,
                    trainable,
                )?))
            }
            Some(other) => Err(EncoderError::Config {
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
