//! # mac-runtime — either memory over a bank on disk
//!
//! Tack et al., *Online Adaptation of Language Models with a Memory of
//! Amortized Contexts* (NeurIPS 2024): each new document is read once into
//! an entry of a persistent memory bank; a question is answered by an
//! aggregation that selects from the bank and hands the frozen LM what it
//! selected. This crate puts the two memory designs of `mac-model` over a
//! `mac-bank` bank, behind one interface the CLI, the server and the
//! evaluation use:
//!
//! * [`Memory`]: ingest documents into bank entries; answer questions from
//!   a bank with their attribution (documents, span, shares) and timings.
//! * The paper's path ([`mac_model::MacRuntime`]): one modulation per
//!   document, aggregated over the bank read a chunk at a time
//!   ([`BankMemory`]).
//! * Span memory ([`SpanMemory`]): one selection key per token of each
//!   document; the LM is handed its own key/values of the span the
//!   selector chooses over the whole bank; with a [`KvStore`] beside the
//!   bank ([`Memory::store_key_values`]) those key/values are read, not
//!   recomputed.
//! * [`load_memory`]: either, from its checkpoint directory.
//!
//! ## Ingest, then ask
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! use mac_model::{AnswerGeneration, Sampling};
//! use mac_runtime::{load_memory, AskOptions, NewDocument};
//!
//! let device = mac_device::select("flex")?;
//! let checkpoint = Path::new("runs/span");
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

mod error;
mod kv_store;
mod memory;
mod paper;
mod service;
mod span;

pub use error::RuntimeError;
pub use kv_store::{KvStore, KvStoreReport, KV_DIR};
pub use memory::{load_memory, Memory};
pub use paper::BankMemory;
pub use service::{
    AnsweredSpan, AskOptions, Attended, Ingested, NewDocument, SourcedAnswer, DEFAULT_PRIOR_SCALE,
};
pub use span::SpanMemory;
