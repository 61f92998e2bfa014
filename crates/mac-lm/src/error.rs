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
    /// A checkpoint tensor could not be read (missing, of another shape,
    /// of a type that cannot be dequantised, or its file unreadable).
    #[error(transparent)]
    Weights(#[from] mac_kernels::WeightError),
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
