//! Errors of the memory bank; each names the file involved.

use std::path::PathBuf;

/// An error reading or writing a memory bank.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// An I/O operation failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The bank's files do not hold what they should (checksum, lengths, JSON).
    #[error("corrupt memory bank: {path}: {reason}")]
    Corrupt {
        /// File found corrupt.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No bank at this path.
    #[error("{path}: no memory bank here (no MANIFEST)")]
    NotABank {
        /// Directory.
        path: PathBuf,
    },
    /// A bank already exists where one was to be created.
    #[error("{path}: a memory bank already exists here")]
    AlreadyExists {
        /// Directory.
        path: PathBuf,
    },
    /// Another process holds the bank's write lock.
    #[error("{path}: the bank is locked by another process")]
    Locked {
        /// The LOCK file.
        path: PathBuf,
    },
    /// The bank was written by a newer format version.
    #[error("{path}: format version {found} is not supported (this build reads {supported})")]
    Version {
        /// MANIFEST.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Version this build supports.
        supported: u32,
    },
    /// The input cannot be stored.
    #[error("invalid entry: {0}")]
    Invalid(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, BankError>;

pub(crate) fn io(
    path: impl Into<PathBuf>,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> BankError {
    let path = path.into();
    move |source| BankError::Io { path, op, source }
}
