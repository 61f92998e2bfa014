//! Errors of the encoder crate: every variant names the file and the cause.

use std::path::PathBuf;

use mac_kernels::WeightError;
use mac_lm::LmError;

/// An error while loading or running an encoder backbone or its tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// A checkpoint tensor could not be read.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// The file could not be read at all.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration key is absent or invalid.
    #[error("{path}: configuration key `{key}` is missing or invalid: {reason}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
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
    /// Any other error of the tokenizer reader shared with the LM.
    #[error(transparent)]
    Lm(LmError),
}

/// The shared readers' errors (configuration checks, `tokenizer.json`) as
/// the encoder's own, variant for variant where it has one.
impl From<LmError> for EncoderError {
    fn from(e: LmError) -> Self {
        match e {
            LmError::Io { path, source } => EncoderError::Io { path, source },
            LmError::Config { path, key, reason } => EncoderError::Config { path, key, reason },
            LmError::Tokenizer { path, reason } => EncoderError::Tokenizer { path, reason },
            LmError::Weights(e) => EncoderError::Weights(e),
            other => EncoderError::Lm(other),
        }
    }
}

/// Results of the encoder crate.
pub type Result<T> = std::result::Result<T, EncoderError>;
