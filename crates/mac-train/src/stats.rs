//! What a run reports: each step, each validation, and the run's end.

use serde::{Deserialize, Serialize};

/// What one optimizer step did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepStats {
    /// 1-based step number.
    pub step: usize,
    /// Mean answer NLL over the step's micro-batches; in a reading step,
    /// the answer-token loss it trained by.
    pub loss: f64,
    /// Whether this was a reading step (answer-token loss alone, no LM pass).
    #[serde(default)]
    pub reading: bool,
    /// Mean auxiliary answer-token loss, when configured.
    pub answer_token_loss: Option<f64>,
    /// Mean auxiliary retrieval loss, when configured and in the bank phase.
    #[serde(default)]
    pub retrieval_loss: Option<f64>,
    /// Learning rate used.
    pub lr: f64,
    /// Seconds the step took.
    pub seconds: f64,
}

/// Validation results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidationStats {
    /// Step at which it ran.
    pub step: usize,
    /// Mean answer NLL.
    pub loss: f64,
    /// Mean answer NLL when each batch's questions aggregate over another
    /// batch's documents (`None` with a single batch). Higher than `loss`
    /// exactly when the answers come from the memory.
    pub loss_unrelated_bank: Option<f64>,
    /// Mean answer NLL when each question's memory is its own document
    /// alone: what the modulations carry, without any retrieval.
    #[serde(default)]
    pub loss_own_document: Option<f64>,
    /// The same with another document of the batch alone. The gap to
    /// `loss_own_document` is the content the modulations carry.
    #[serde(default)]
    pub loss_other_document: Option<f64>,
    /// The answer probe's answer-token loss with each question's own
    /// document alone (models with a probe): what the aggregated
    /// modulation reads of the answer, without the LM.
    #[serde(default)]
    pub probe_loss_own_document: Option<f64>,
    /// The same with another document alone; the gap is what was read.
    #[serde(default)]
    pub probe_loss_other_document: Option<f64>,
    /// Mean share of the aggregator's attention on the question's own document.
    pub gold_weight: f64,
    /// That share under uniform attention (1 / documents per bank).
    pub uniform_weight: f64,
    /// SQuAD exact match (0..1).
    pub em: f64,
    /// SQuAD token F1 (0..1).
    pub f1: f64,
    /// Questions answered.
    pub n_questions: usize,
}

impl ValidationStats {
    /// The validation loss of what a step with `own_share` of its questions
    /// on their own document trains: that share of the own-document loss and
    /// the rest of the bank loss. Picks the `best` checkpoint, so a run that
    /// trains only on single documents is not judged by an aggregation over
    /// eight it never learnt.
    pub fn objective(&self, own_share: f64) -> f64 {
        let own = self.loss_own_document.unwrap_or(self.loss);
        own_share * own + (1.0 - own_share) * self.loss
    }
}

impl std::fmt::Display for ValidationStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {}: validation loss {:.3}", self.step, self.loss)?;
        if let Some(u) = self.loss_unrelated_bank {
            write!(f, " (unrelated bank {u:.3})")?;
        }
        if let (Some(o), Some(x)) = (self.loss_own_document, self.loss_other_document) {
            write!(f, "  own document alone {o:.3} (another {x:.3})")?;
        }
        if let (Some(o), Some(x)) = (self.probe_loss_own_document, self.probe_loss_other_document) {
            write!(f, "  probe {o:.3} (another {x:.3})")?;
        }
        write!(
            f,
            "  gold attention {:.3} (uniform {:.3})  EM {:.3}  F1 {:.3}",
            self.gold_weight, self.uniform_weight, self.em, self.f1
        )
    }
}

/// The end of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Steps completed.
    pub steps: usize,
    /// Steps the configuration plans.
    #[serde(default)]
    pub planned_steps: usize,
    /// Why the run stopped before the planned steps (`None`: it did not).
    #[serde(default)]
    pub cut_short: Option<CutShort>,
    /// Wall-clock seconds of this invocation.
    pub seconds: f64,
    /// Mean seconds per step.
    pub seconds_per_step: f64,
    /// Last validation.
    pub last_validation: Option<ValidationStats>,
    /// Lowest validation loss of the trained objective
    /// ([`ValidationStats::objective`]) and its step (the `best` checkpoint).
    pub best_loss: Option<(f64, usize)>,
    /// The selection phase, when the run has one and reached it (`steps`
    /// says whether it finished).
    #[serde(default)]
    pub selection: Option<SelectionSummary>,
}

/// The outcome of a run's selection phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelectionSummary {
    /// Selection steps done.
    pub steps: usize,
    /// Wall-clock seconds of the phase in this invocation (pool included).
    pub seconds: f64,
    /// Top-1 rate on the validation bank before the phase (`None` when the
    /// phase started in an earlier invocation).
    pub top1_before: Option<f64>,
    /// Top-1 rate on the validation bank after it
    /// ([`Trainer::validate_selection`](crate::Trainer::validate_selection)).
    pub top1_after: f64,
}

/// Why a run stopped before its planned steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum CutShort {
    /// The configuration's time budget (`max_minutes`) ran out.
    TimeBudget {
        /// The budget in minutes.
        minutes: f64,
    },
    /// The invocation was asked to stop after some steps (`--stop-after`);
    /// the run can be resumed.
    StopAfter {
        /// Steps this invocation was allowed.
        steps: usize,
    },
}

impl TrainSummary {
    /// One line that says whether the run trained all its planned steps,
    /// and if not, why not.
    pub fn completion(&self) -> String {
        let (done, planned) = (self.steps, self.planned_steps);
        match self.cut_short {
            None => format!("{done} of {planned} planned steps"),
            Some(CutShort::TimeBudget { minutes }) => format!(
                "CUT SHORT by the {minutes}-minute time budget: {done} of {planned} planned steps"
            ),
            Some(CutShort::StopAfter { steps }) => format!(
                "stopped after {steps} steps of this invocation (--stop-after): {done} of {planned} planned steps; resume to continue"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;

    /// `best` follows what the step trained: the own-document loss during
    /// the curriculum, the bank loss after it, their mix with a share.
    #[test]
    pub(crate) fn best_checkpoint_objective_follows_the_trained_mode() {
        let v = ValidationStats {
            step: 10,
            loss: 3.0,
            loss_unrelated_bank: Some(3.1),
            loss_own_document: Some(2.0),
            loss_other_document: Some(2.5),
            probe_loss_own_document: None,
            probe_loss_other_document: None,
            gold_weight: 0.2,
            uniform_weight: 0.125,
            em: 0.0,
            f1: 0.0,
            n_questions: 4,
        };
        assert_eq!(v.objective(1.0), 2.0);
        assert_eq!(v.objective(0.0), 3.0);
        assert!((v.objective(0.25) - 2.75).abs() < 1e-12);
        let no_own = ValidationStats {
            loss_own_document: None,
            ..v
        };
        assert_eq!(no_own.objective(1.0), 3.0);
        let mut cfg = TrainConfig::preset("tiny").unwrap();
        cfg.own_document_steps = 5;
        cfg.own_document_share = 0.5;
        assert_eq!(cfg.own_document_share_at(4), 1.0);
        assert_eq!(cfg.own_document_share_at(5), 0.5);
    }
}
