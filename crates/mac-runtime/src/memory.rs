//! The one interface to a memory design: a document ingested into a bank
//! entry, a question answered from a bank with its attribution. Two
//! designs implement it: the paper's path ([`MacRuntime`]: an amortization
//! encoder's modulations aggregated into prefix key/values) and span memory
//! ([`SpanMemory`]: the LM's own key/values of a span a learnt selector
//! chooses). [`load_memory`] opens either from its checkpoint directory.

use std::path::Path;

use burn::tensor::Device;
use mac_bank::{BankShape, MemoryBank, Precision};
use mac_lm::LoadedLm;
use mac_model::prompt::ChatFrame;
use mac_model::{AnswerGeneration, MacRuntime, SpanCheckpoint};

use crate::{
    AskOptions, Ingested, KvStoreReport, NewDocument, RuntimeError, SourcedAnswer, SpanMemory,
};

/// A memory design: how documents become bank entries and how questions
/// are answered from a bank. Shared between threads (a server's answerer
/// and ingester).
pub trait Memory: Send + Sync {
    /// What the design is called in reports (`mac` for the paper's path,
    /// `span memory`).
    fn name(&self) -> &'static str;
    /// The frozen LM that answers.
    fn lm(&self) -> &LoadedLm;
    /// How it puts a question to the LM: in this chat frame, or plainly
    /// (`Question: …\nAnswer:`) without one. Methods compared with it
    /// that read text use the same.
    fn frame(&self) -> Option<&ChatFrame> {
        None
    }
    /// Whether its answers are copied from what the LM is handed (whole
    /// words of it, see `mac_model::CopiedAnswers`). Methods compared with
    /// it that read text copy from the text they hand the LM.
    fn copies_answers(&self) -> bool {
        false
    }
    /// Whether it can add the question–document similarity prior when
    /// reading `bank` ([`AskOptions::similarity_prior`]).
    fn has_prior(&self, bank: &MemoryBank) -> bool {
        let _ = bank;
        false
    }
    /// The paper's path, when this is it (for its own evaluation rows).
    fn paper_path(&self) -> Option<&MacRuntime> {
        None
    }
    /// The shape of the banks it fills.
    fn bank_shape(&self) -> BankShape;
    /// Tokens of a document it reads; beyond them a document is stored cut.
    fn document_token_limit(&self) -> usize;
    /// Opens the bank in `dir` as its writer, creating it if needed.
    fn open_bank_writer(&self, dir: &Path) -> Result<MemoryBank, RuntimeError>;
    /// Reads each document once into `bank` (duplicates reported, not
    /// stored again); `progress` gets the count done.
    fn ingest(
        &self,
        bank: &mut MemoryBank,
        docs: &[NewDocument],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Ingested>, RuntimeError>;
    /// Keeps, beside `bank` (its writer), what the memory hands the LM for
    /// each document, at `precision`, so that answers read it rather than
    /// recompute it: creates the bank's key/value store ([`crate::KvStore`])
    /// or opens the one there, and reads into it every document it lacks;
    /// later ingests fill it too. `progress` gets the count read.
    fn store_key_values(
        &self,
        bank: &MemoryBank,
        precision: Precision,
        progress: &mut dyn FnMut(usize),
    ) -> Result<KvStoreReport, RuntimeError> {
        let _ = (bank, precision, progress);
        Err(RuntimeError::input(format!(
            "{} keeps no key/values of its documents to store",
            self.name()
        )))
    }
    /// Answers `questions` from `bank` as one batch, answer `i` generated
    /// as `generation[i]`, each with what it drew on and the batch's
    /// timings; `on_text(i, so_far)` watches answer `i` grow (the settled
    /// part, always a prefix of the final answer).
    fn ask_with(
        &self,
        bank: &MemoryBank,
        questions: &[&str],
        generation: &[AnswerGeneration],
        opts: &AskOptions,
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<SourcedAnswer>, RuntimeError>;
    /// [`Memory::ask_with`] with the default generation, nobody watching.
    fn ask(
        &self,
        bank: &MemoryBank,
        questions: &[&str],
        opts: &AskOptions,
    ) -> Result<Vec<SourcedAnswer>, RuntimeError> {
        let generation = vec![AnswerGeneration::default(); questions.len()];
        self.ask_with(bank, questions, &generation, opts, &mut |_, _| {})
    }
}

/// The memory a checkpoint directory holds: span memory where it has a
/// `span.json`, else the paper's path (`mac.json`).
pub fn load_memory(dir: &Path, device: &Device) -> Result<Box<dyn Memory>, RuntimeError> {
    if SpanCheckpoint::is_span_checkpoint(dir) {
        Ok(Box::new(SpanMemory::from_checkpoint(dir, None, device)?))
    } else {
        Ok(Box::new(MacRuntime::from_checkpoint(
            dir, None, None, device,
        )?))
    }
}
