//! Checkpoints: `mac.json` (what the model is and what it was built on) and
//! `model.bpk` (every parameter, burnpack, parameter ids included so that an
//! optimizer state saved beside it resumes exactly).

use std::path::{Path, PathBuf};

use burn::store::{ApplyResult, BurnpackStore, ModuleSnapshot};
use burn::tensor::Device;
use mac_lm::KvLayout;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use mac_encoder::EncoderFiles;

use crate::{MacConfig, MacModel, ModelError};

/// File name of the parameters inside a checkpoint directory.
pub const MODEL_FILE: &str = "model.bpk";
/// File name of the metadata inside a checkpoint directory.
pub const META_FILE: &str = "mac.json";
const FORMAT_VERSION: u32 = 1;

/// Where checkpoints written before the model held its path as an enum
/// kept each module (`aggregator.…`, `copy.…`), and where it lies now:
/// they load unchanged (a copy-mode one's unused paper modules are left).
const EARLIER_NAMES: [(&str, &str); 2] = [
    (
        r"^(amortizer|aggregator|expansion|answer_probe)(\.|$)",
        "path.Aggregation.${1}${2}",
    ),
    (r"^copy\.", "path.Copy."),
];

/// Where the paper's document selector's parameters lie.
const SELECTOR_PATH: &str = "path.Aggregation.aggregator.selector.";

/// What a checkpoint holds besides its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Format version of the checkpoint directory.
    pub format_version: u32,
    /// The model's shape.
    pub config: MacConfig,
    /// The frozen base LM (GGUF file or Hugging Face directory).
    pub lm: PathBuf,
    /// The encoder backbone's Hugging Face directory (initial weights and tokenizer).
    pub encoder: PathBuf,
    /// The base LM's KV layout: `[layers, kv heads, head dim]`.
    pub kv_layout: [usize; 3],
    /// Optimizer steps taken when this was written.
    pub step: u64,
}

impl CheckpointMeta {
    /// A new record for a model built on `lm` and `encoder`.
    pub fn new(config: MacConfig, lm: PathBuf, encoder: PathBuf, layout: KvLayout) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            config,
            lm,
            encoder,
            kv_layout: [layout.n_layers, layout.n_kv_heads, layout.head_dim],
            step: 0,
        }
    }

    /// The stored KV layout.
    pub fn layout(&self) -> KvLayout {
        KvLayout {
            n_layers: self.kv_layout[0],
            n_kv_heads: self.kv_layout[1],
            head_dim: self.kv_layout[2],
        }
    }
}

/// A checkpoint directory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The directory.
    pub dir: PathBuf,
    /// Its metadata.
    pub meta: CheckpointMeta,
}

pub(crate) fn err(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl Checkpoint {
    /// Writes `model` and `meta` into `dir` (created if needed). Each file is
    /// written beside its final name and renamed into place.
    pub fn save(dir: &Path, model: &MacModel, meta: &CheckpointMeta) -> Result<Self, ModelError> {
        write_parts(dir, model, MODEL_FILE, META_FILE, meta)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            meta: meta.clone(),
        })
    }

    /// Reads the metadata of a checkpoint directory (parameters are loaded by [`Self::load_model`]).
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let (meta_path, meta): (_, CheckpointMeta) = read_meta(dir, META_FILE, "MAC checkpoint")?;
        meta.config
            .validate()
            .map_err(|e| err(&meta_path, format!("invalid model configuration: {e}")))?;
        if let Some(bad) = meta
            .kv_layout
            .iter()
            .find(|&&n| n == 0 || n > crate::model::MAX_CONFIG_SIZE)
        {
            return Err(err(
                &meta_path,
                format!(
                    "invalid kv_layout {:?}: {bad} is not between 1 and {}",
                    meta.kv_layout,
                    crate::model::MAX_CONFIG_SIZE
                ),
            ));
        }
        if meta.format_version != FORMAT_VERSION {
            return Err(err(
                &meta_path,
                format!(
                    "checkpoint format version {} (this build reads {FORMAT_VERSION})",
                    meta.format_version
                ),
            ));
        }
        if !dir.join(MODEL_FILE).is_file() {
            return Err(err(&dir.join(MODEL_FILE), "missing parameters file"));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            meta,
        })
    }

    /// Builds the model on `device` and loads the stored parameters into it.
    /// `encoder_dir` overrides the recorded encoder location (a checkpoint
    /// moved to another machine).
    pub fn load_model(
        &self,
        encoder_dir: Option<&Path>,
        device: &Device,
    ) -> Result<MacModel, ModelError> {
        // Checked before the encoder directory is read: the parameter file
        // is the checkpoint's own.
        self.check_parameter_file()?;
        let encoder = encoder_dir.unwrap_or(&self.meta.encoder);
        self.build_and_load(&EncoderFiles::open(encoder)?, device)
    }

    /// [`Self::load_model`] over an encoder directory already read.
    pub fn load_model_from(
        &self,
        encoder: &EncoderFiles,
        device: &Device,
    ) -> Result<MacModel, ModelError> {
        self.check_parameter_file()?;
        self.build_and_load(encoder, device)
    }

    fn build_and_load(
        &self,
        encoder: &EncoderFiles,
        device: &Device,
    ) -> Result<MacModel, ModelError> {
        let mut model =
            MacModel::init_from_files(&self.meta.config, encoder, self.meta.layout(), device)?;
        self.load_into(&mut model)?;
        Ok(model)
    }

    /// Refuses a configuration that claims more parameters than
    /// `model.bpk` can hold, before anything is built for it.
    fn check_parameter_file(&self) -> Result<(), ModelError> {
        let params = self.dir.join(MODEL_FILE);
        let file_bytes = std::fs::metadata(&params)
            .map_err(|e| err(&params, format!("cannot read the parameters file: {e}")))?
            .len();
        let least = self.meta.config.least_parameter_count();
        if least.saturating_mul(2) > file_bytes as u128 {
            return Err(err(
                &params,
                format!(
                    "{META_FILE} describes a model of at least {least} parameters, more than the {file_bytes} bytes of this file can hold"
                ),
            ));
        }
        Ok(())
    }

    /// Loads the stored parameters into an already built model of the same shape.
    ///
    /// A checkpoint saved without a document selector loads into a model
    /// with one (a content-trained run given a selection phase): the
    /// selector keeps its fresh weights. Anything else missing is an error.
    pub fn load_into(&self, model: &mut MacModel) -> Result<(), ModelError> {
        let path = self.dir.join(MODEL_FILE);
        let adds_selector = self.meta.config.aggregator_selector_dim.is_none()
            && model.aggregator().is_some_and(|a| a.selector.is_some());
        // Burn's file store opens the file for each tensor it reads (each
        // byte is still read once); reading it whole into memory first
        // measured 480 MB more peak memory for `mac ask` and no faster.
        let mut store = BurnpackStore::from_file(&path)
            .auto_extension(false)
            .allow_partial(adds_selector);
        for (from, to) in EARLIER_NAMES {
            store = store.with_remap_pattern(from, to);
        }
        let mut result = model
            .load_from(&mut store)
            .map_err(|e| err(&path, format!("unreadable parameters: {e}")))?;
        if adds_selector {
            result.missing.retain(|m| !m.0.starts_with(SELECTOR_PATH));
        }
        check_applied(&path, &result, "the model")
    }
}

/// The metadata file `file` of the checkpoint directory `dir` (a `kind`
/// checkpoint), parsed, and its path; an error naming it otherwise.
pub(crate) fn read_meta<T: DeserializeOwned>(
    dir: &Path,
    file: &str,
    kind: &str,
) -> Result<(PathBuf, T), ModelError> {
    if !dir.is_dir() {
        return Err(err(dir, "no such checkpoint directory"));
    }
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| err(&path, format!("not a {kind} (cannot read {file}: {e})")))?;
    let meta = serde_json::from_str(&text)
        .map_err(|e| err(&path, format!("malformed {kind} metadata: {e}")))?;
    Ok((path, meta))
}

/// Writes a checkpoint's parameters (`params_file`, burnpack) and metadata
/// (`meta_file`, JSON) into `dir` (created if needed), each beside its final
/// name and renamed into place.
pub(crate) fn write_parts<M: ModuleSnapshot, T: Serialize>(
    dir: &Path,
    module: &M,
    params_file: &str,
    meta_file: &str,
    meta: &T,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create: {e}")))?;
    let tmp = dir.join(format!("{params_file}.partial"));
    let _ = std::fs::remove_file(&tmp);
    let mut store = BurnpackStore::from_file(&tmp)
        .auto_extension(false)
        .overwrite(true);
    module
        .save_into(&mut store)
        .map_err(|e| err(&tmp, format!("cannot write parameters: {e}")))?;
    std::fs::rename(&tmp, dir.join(params_file))
        .map_err(|e| err(dir, format!("cannot rename parameters into place: {e}")))?;
    let meta_tmp = dir.join(format!("{meta_file}.partial"));
    let text = serde_json::to_string_pretty(meta).map_err(|e| err(dir, e.to_string()))?;
    std::fs::write(&meta_tmp, text).map_err(|e| err(&meta_tmp, e.to_string()))?;
    std::fs::rename(&meta_tmp, dir.join(meta_file))
        .map_err(|e| err(dir, format!("cannot rename metadata into place: {e}")))
}

/// An error naming `path` unless every stored parameter fitted `what` and
/// none was missing.
pub(crate) fn check_applied(
    path: &Path,
    result: &ApplyResult,
    what: &str,
) -> Result<(), ModelError> {
    if result.errors.is_empty() && result.missing.is_empty() {
        return Ok(());
    }
    let first = result
        .errors
        .first()
        .map(|e| format!("{e:?}"))
        .or_else(|| result.missing.first().map(|m| format!("missing {}", m.0)))
        .unwrap_or_default();
    Err(err(
        path,
        format!(
            "parameters do not fit {what} ({} errors, {} missing; first: {first})",
            result.errors.len(),
            result.missing.len()
        ),
    ))
}
