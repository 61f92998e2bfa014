//! # mac-model — the MAC model and its checkpoints
//!
//! Tack et al., *Online Adaptation of Language Models with a Memory of
//! Amortized Contexts* (NeurIPS 2024), §3. This crate puts the trainable
//! pieces together:
//!
//! * [`AmortizationEncoder`]: a pretrained encoder backbone
//!   ([`mac_encoder::Bert`]) → `n` learned query tokens cross-attending to its
//!   output → one MLP per token → a modulation `[B, n, d_mod]`. Used twice:
//!   for documents (the amortization network) and for questions.
//! * [`MacModel`]: both encoders, the [`mac_aggregation::Aggregator`] and the
//!   [`mac_aggregation::PrefixExpansion`] to the frozen LM's prefix key/values.
//! * [`MacRuntime`]: everything loaded to ingest documents into a memory
//!   bank and answer from it, with the documents drawn on.
//! * [`Checkpoint`]: a directory with `mac.json` (configuration and where the
//!   base LM and encoder weights came from) and `model.bpk` (burnpack).

mod bank_service;
mod checkpoint;
mod copy_mode;
mod encoder;
mod model;
pub mod prompt;
mod runtime;

pub use bank_service::{
    AskOptions, Attended, Ingested, NewDocument, SourcedAnswer, DEFAULT_PRIOR_SCALE,
};
pub use checkpoint::{Checkpoint, CheckpointMeta, META_FILE, MODEL_FILE};
pub use copy_mode::{CopyConfig, CopyPath};
pub use encoder::{AmortizationEncoder, EncodedText, LmChannelSpec, LmTokenChannel, LmTokens};
pub use model::{MacConfig, MacModel, ModelError, ParamSummary};
pub use runtime::{
    generate_answers, Amortized, Answer, BankMemory, BankReading, MacRuntime, MAX_ANSWER_TOKENS,
};
