//! What can go wrong with a memory over a bank: the model's errors and
//! the bank's, each kept whole.

use mac_aggregation::AggregationError;
use mac_bank::{BankError, MemoryBank};
use mac_lm::LmError;
use mac_model::ModelError;

/// A memory failed: its model (bad input, a checkpoint, the LM) or its bank.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The model or its input.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The memory bank.
    #[error(transparent)]
    Bank(#[from] BankError),
}

impl RuntimeError {
    /// Bad input, said in `message`.
    pub fn input(message: String) -> Self {
        Self::Model(ModelError::Input(message))
    }

    /// Whether a file the user named is at fault (a bank or a checkpoint
    /// missing, damaged or of another shape).
    pub fn is_bad_file(&self) -> bool {
        matches!(
            self,
            Self::Bank(_) | Self::Model(ModelError::Checkpoint { .. })
        )
    }

    /// The error with the bank it arose in named, where it concerns the
    /// bank's contents (an aggregation the bank cannot feed).
    pub(crate) fn naming(self, bank: &MemoryBank) -> Self {
        match self {
            Self::Model(ModelError::Aggregation(e)) => {
                Self::input(format!("{}: {e}", bank.dir().display()))
            }
            other => other,
        }
    }
}

impl From<AggregationError> for RuntimeError {
    fn from(e: AggregationError) -> Self {
        Self::Model(e.into())
    }
}

impl From<LmError> for RuntimeError {
    fn from(e: LmError) -> Self {
        Self::Model(e.into())
    }
}
