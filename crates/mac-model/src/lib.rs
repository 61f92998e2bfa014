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
//! * [`Memory`]: the one interface to both memory designs, the paper's
//!   path ([`MacRuntime`]) and span memory ([`SpanMemory`]: the LM's own
//!   key/values of a span a learnt selector chooses); [`load_memory`] opens
//!   either from its checkpoint.
//! * [`Checkpoint`]: a directory with `mac.json` (configuration and where the
//!   base LM and encoder weights came from) and `model.bpk` (burnpack).
//!
//! ## Ingest, then ask
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! use mac_model::{load_memory, AnswerGeneration, AskOptions, NewDocument, Sampling};
//!
//! let device = mac_device::select("flex")?;
//! let checkpoint = Path::new("runs/default/checkpoints/best");
//! // Either memory, as its checkpoint says; the LM and the trained
//! // parameters each read once.
//! let runtime = load_memory(checkpoint, &device)?;
//! let mut bank = runtime.open_bank_writer(Path::new("my-bank"))?;
//! let note = NewDocument {
//!     source: "note".into(),
//!     text: "Velra Quellington was born in Port Vessa.".into(),
//! };
//! runtime.ingest(&mut bank, &[note], &mut |_| {})?;
//!
//! let question = ["Where was Velra Quellington born?"];
//! // As `mac ask`: greedy, the first non-empty line of at most 16 tokens.
//! let answer = runtime.ask(&bank, &question, &AskOptions::default())?.remove(0);
//! println!("{} (drew on #{})", answer.text, answer.documents[0].id);
//!
//! // Sampled, up to 32 tokens, watching the answer grow (as `mac serve`
//! // streams it).
//! let sampled = AnswerGeneration {
//!     max_tokens: 32,
//!     sampling: Sampling { temperature: 0.7, top_p: 0.9, seed: 1 },
//! };
//! let opts = AskOptions::default();
//! runtime.ask_with(&bank, &question, &[sampled], &opts, &mut |_, so_far| {
//!     eprintln!("{so_far}")
//! })?;
//! # Ok(())
//! # }
//! ```

mod answer;
mod bank_service;
mod checkpoint;
mod copy_mode;
mod encoder;
mod memory;
mod model;
pub mod prompt;
mod runtime;
mod span_checkpoint;
mod span_memory;
mod span_runtime;

pub use answer::{
    generate_answers, generate_answers_after, generate_answers_each, AnswerGeneration,
    AnswerTimings, GeneratedAnswer, MAX_ANSWER_TOKENS,
};
pub use bank_service::{
    AnsweredSpan, AskOptions, Attended, Ingested, NewDocument, SourcedAnswer, DEFAULT_PRIOR_SCALE,
};
pub use checkpoint::{Checkpoint, CheckpointMeta, META_FILE, MODEL_FILE};
pub use copy_mode::{CopyConfig, CopyPath};
pub use encoder::{AmortizationEncoder, EncodedText, LmChannelSpec, LmTokenChannel, LmTokens};
pub use mac_lm::Sampling;
pub use memory::{load_memory, Memory};
pub use model::{MacConfig, MacModel, ModelError, ParamSummary};
pub use runtime::{Amortized, Answer, BankMemory, BankReading, MacRuntime};
pub use span_checkpoint::{
    AnswerFrame, FrameExample, SelectorShape, SpanCheckpoint, SpanCheckpointMeta, SpanReading,
    SELECTOR_FILE, SPAN_META_FILE,
};
pub use span_memory::{answer_span, SpanRead, SpanReader, QUESTION_ROOM};
pub use span_runtime::SpanMemory;
