//! Errors of the base-LM crate: every variant names the file (or input) and the cause.

use std::path::PathBuf;

/// An error while loading or running a base language model.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    /// The file could not be read at all.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not in the expected format, or is truncated or corrupt.
    #[error("{path}: malformed {format} file: {reason}")]
    Malformed {
        /// File that failed.
        path: PathBuf,
        /// Format that was expected ("GGUF", "safetensors", "config.json", ...).
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A tensor the architecture needs is absent from the checkpoint.
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor {
        /// Checkpoint file.
        path: PathBuf,
        /// Name of the missing tensor (checkpoint naming).
        name: String,
    },
    /// A tensor has a different shape from the one the configuration implies.
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Checkpoint file.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// Shape the configuration implies.
        expected: Vec<usize>,
        /// Shape found in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a data type this crate cannot dequantise.
    #[error("{path}: tensor `{name}` uses unsupported data type {dtype}")]
    UnsupportedDType {
        /// Checkpoint file.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// Name or id of the data type.
        dtype: String,
    },
    /// A required configuration key is absent or has the wrong type.
    #[error("{path}: configuration key `{key}` is missing or invalid: {reason}")]
    Config {
        /// Configuration file (config.json or the GGUF file).
        path: PathBuf,
        /// Key that is missing or invalid.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The tokenizer could not be built or used.
    #[error("{path}: tokenizer: {reason}")]
    Tokenizer {
        /// File the tokenizer came from.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The input to a forward pass or generation is invalid.
    #[error("invalid input: {0}")]
    Input(String),
}

/// Most decoder layers a configuration may declare (the largest public
/// models have a few hundred); a file claiming more is refused before
/// anything is allocated for them.
pub const MAX_LAYERS: usize = 1024;

/// Checks a model configuration's numbers before anything is built from
/// them: each `(key, ok, reason)` that is not `ok` becomes a
/// [`LmError::Config`] naming `path` and `key`.
pub fn check_config(path: &std::path::Path, checks: &[(&str, bool, &str)]) -> Result<()> {
    match checks.iter().find(|(_, ok, _)| !ok) {
        None => Ok(()),
        Some((key, _, reason)) => Err(LmError::Config {
            path: path.to_path_buf(),
            key: (*key).to_string(),
            reason: (*reason).to_string(),
        }),
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, LmError>;

impl LmError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LmError::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn malformed(
        path: impl Into<PathBuf>,
        format: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        LmError::Malformed {
            path: path.into(),
            format,
            reason: reason.into(),
        }
    }
}

/// A tensor-reading error as the LM's, variant for variant.
impl From<mac_kernels::WeightError> for LmError {
    fn from(e: mac_kernels::WeightError) -> Self {
        use mac_kernels::WeightError as W;
        match e {
            W::Io { path, source } => LmError::Io { path, source },
            W::Malformed {
                path,
                format,
                reason,
            } => LmError::Malformed {
                path,
                format,
                reason,
            },
            W::MissingTensor { path, name } => LmError::MissingTensor { path, name },
            W::ShapeMismatch {
                path,
                name,
                expected,
                found,
            } => LmError::ShapeMismatch {
                path,
                name,
                expected,
                found,
            },
            W::UnsupportedDType { path, name, dtype } => {
                LmError::UnsupportedDType { path, name, dtype }
            }
        }
    }
}
