//! Selection training: the question encoder and the aggregator learn to
//! find each question's own document in a large bank, by the retrieval loss
//! alone (minus the log of the attention share, every block, on the gold
//! document).
//!
//! Content steps teach the modulations to carry a document's facts; at a
//! CPU budget they afford banks of a few documents. Selection needs banks of
//! hundreds, and no pass of the frozen LM: the phase runs after the content
//! steps, computes the modulations of a pool of training documents once
//! (without a graph; the amortizer does not change in this phase, so a
//! resumed run computes the same pool), and each step draws a bank from the
//! pool and questions about the bank's documents. A step costs one
//! question-encoder pass and one aggregation over a memory shared by every
//! question.

use anyhow::Result;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The selection phase of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionConfig {
    /// Selection steps, run after the content steps.
    pub steps: usize,
    /// Training documents whose modulations are computed for the phase.
    pub pool_documents: usize,
    /// Documents in each step's bank, drawn from the pool.
    pub bank_documents: usize,
    /// Questions per step, each about a different document of the bank.
    pub questions: usize,
    /// Learning rate (constant; Adam, the run's optimizer).
    pub learning_rate: f64,
    /// Weight of the attention's retrieval loss (the gold document's
    /// attention share, every block); the selector's contrastive loss, when
    /// the model has a selector, has weight 1.
    #[serde(default = "one")]
    pub attention_loss_weight: f64,
}

fn one() -> f64 {
    1.0
}

impl SelectionConfig {
    /// Checks the numbers make sense.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.bank_documents >= 2 && self.bank_documents <= self.pool_documents,
            "selection.bank_documents must be at least 2 and at most selection.pool_documents"
        );
        anyhow::ensure!(
            self.questions >= 1 && self.questions <= self.bank_documents,
            "selection.questions must be between 1 and selection.bank_documents"
        );
        anyhow::ensure!(
            self.learning_rate > 0.0,
            "selection.learning_rate must be positive"
        );
        anyhow::ensure!(
            self.attention_loss_weight >= 0.0,
            "selection.attention_loss_weight must not be negative"
        );
        Ok(())
    }
}

/// What one selection step did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelectionStats {
    /// Selection steps done, this one included.
    pub step: usize,
    /// The step's loss (the selector's contrastive loss plus the weighted
    /// attention retrieval loss).
    pub loss: f64,
    /// Share of the step's questions whose own document drew the most
    /// attention (last block).
    pub top1: f64,
    /// Wall time of the step.
    pub seconds: f64,
}

/// The modulations of the phase's documents.
pub(crate) struct SelectionPool {
    /// Training documents (indices into the training split).
    pub(crate) documents: Vec<usize>,
    /// Their modulations `[P, n, d]`, without a graph, on the autodiff device.
    pub(crate) modulations: Tensor<3>,
}

/// Mixed into the run's seed for the pool and the selection steps.
pub(crate) const SELECTION_SEED: u64 = 0x5E1E_C7ED;

/// Most validation documents in the bank [`crate::Trainer::validate_selection`] uses.
pub const SELECTION_VALIDATION_DOCUMENTS: usize = 256;

/// Documents amortized at once while the pool is built.
pub(crate) const POOL_CHUNK: usize = 16;
