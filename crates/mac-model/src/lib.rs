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
//! * [`MacRuntime`]: everything the paper's path loads to amortize
//!   documents and answer from any memory of modulations
//!   ([`mac_aggregation::ChunkedMemory`]).
//! * [`SpanReader`] and [`SpanCheckpoint`]: span memory's reading of the
//!   LM's own states and its saved selector.
//!
//! This crate knows no storage: `mac-runtime` puts either memory over a
//! bank on disk.
//! * [`Checkpoint`]: a directory with `mac.json` (configuration and where the
//!   base LM and encoder weights came from) and `model.bpk` (burnpack).
//!
mod aggregation_path;
mod answer;
mod checkpoint;
mod copy_answer;
mod copy_mode;
mod encoder;
mod later_entry;
mod model;
mod names;
pub mod prompt;
mod replaced;
mod runtime;
mod sentence_check;
mod span_checkpoint;
mod span_memory;

pub use aggregation_path::AggregationPath;
pub use answer::{
    generate_answers, generate_answers_after, generate_answers_each, generate_copied_answers,
    AnswerGeneration, AnswerTimings, GeneratedAnswer, MAX_ANSWER_TOKENS,
};
pub use checkpoint::{Checkpoint, CheckpointMeta, META_FILE, MODEL_FILE};
pub use copy_answer::CopiedAnswers;
pub use copy_mode::{CopyConfig, CopyPath};
pub use encoder::{AmortizationEncoder, EncodedText, LmChannelSpec, LmTokenChannel, LmTokens};
pub use later_entry::{EntryTests, EntryTexts, TextsInOrder};
pub use mac_lm::Sampling;
pub use model::{MacConfig, MacModel, MacPath, ModelError, ParamSummary};
pub use names::{names_every, question_names, without_names};
pub use replaced::beside_replaced;
pub use runtime::{Amortized, Answer, BankReading, MacRuntime};
pub use sentence_check::{
    handed_span, text_sentences, BetterSentence, SentenceCheck, SentenceChecking,
};
pub use span_checkpoint::{
    hands_whole, AnswerFrame, FrameExample, SelectorShape, SpanCheckpoint, SpanCheckpointMeta,
    SpanReading, SELECTOR_FILE, SPAN_META_FILE,
};
pub use span_memory::{answer_span, Preamble, SpanExtent, SpanRead, SpanReader, QUESTION_ROOM};
