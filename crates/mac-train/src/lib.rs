//! # mac-train — meta-training MAC
//!
//! Tack et al. (2024), §3.2: a batch holds `B` documents and one question per
//! document. All `B` documents are amortized into modulations; the batch *is*
//! the memory bank; every question aggregates over the whole bank (so it
//! must pick out its own document among distractors); the loss is the frozen
//! LM's negative log-likelihood of the answer (and EOS) given the question
//! and the aggregated prefix. Only the MAC modules train.
//!
//! [`Trainer`] adds what a run needs: Adam with warm-up, gradient clipping,
//! accumulation, backprop dropout, periodic validation (loss, EM, F1),
//! `best`/`last` checkpoints with exact resume, JSONL metrics and a progress
//! bar. Batches are a pure function of `(seed, step)`, so a resumed run sees
//! the same batches as an uninterrupted one.
//!
//! ```
//! use mac_train::TrainConfig;
//!
//! // Presets by name, each a complete, valid run configuration.
//! for name in ["default", "open", "copy", "tiny"] {
//!     let config = TrainConfig::preset(name).unwrap();
//!     config.validate().unwrap();
//! }
//! assert!(TrainConfig::preset("huge").unwrap_err().contains("known: default"));
//! ```

mod config;
mod data;
mod losses;
mod profile;
mod run_dir;
mod selection;
pub mod span;
mod stats;
mod tensors;
mod trainer;

pub use config::{DataSource, Schedule, TrainConfig};
pub use data::{load_splits, Splits, TrainBatch};
pub use losses::BatchLosses;
pub use profile::{part, StepPart, StepProfile};
pub use run_dir::{resumable_checkpoint, MetricsLine, RunDir};
pub use selection::{SelectionConfig, SelectionStats, SELECTION_VALIDATION_DOCUMENTS};
pub use stats::{CutShort, SelectionSummary, StepStats, TrainSummary, ValidationStats};
pub use trainer::Trainer;
