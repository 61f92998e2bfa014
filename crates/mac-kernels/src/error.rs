//! Errors reading checkpoint tensors: every variant names the file and the cause.

use std::path::{Path, PathBuf};

/// An error while reading a checkpoint's tensors.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
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
        /// Format that was expected ("GGUF", "safetensors", ...).
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
}

impl WeightError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        WeightError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A malformed `format` file at `path`.
    pub fn malformed(path: &Path, format: &'static str, reason: impl Into<String>) -> Self {
        WeightError::Malformed {
            path: path.to_path_buf(),
            format,
            reason: reason.into(),
        }
    }
}

/// Results of reading tensors.
pub type Result<T> = std::result::Result<T, WeightError>;
