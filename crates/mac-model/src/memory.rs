//! The one interface to a memory design: a document ingested into a bank
//! entry, a question answered from a bank with its attribution. Two
//! designs implement it: the paper's path ([`MacRuntime`]: an amortization
//! encoder's modulations aggregated into prefix key/values) and span memory
//! ([`SpanMemory`]: the LM's own key/values of a span a learnt selector
//! chooses). [`load_memory`] opens either from its checkpoint directory.

use std::path::Path;

use burn::tensor::Device;
use mac_memory::{BankShape, MemoryBank};

use crate::{
    AskOptions, Ingested, MacRuntime, ModelError, NewDocument, SourcedAnswer, SpanCheckpoint,
    SpanMemory,
};

/// A memory design: how documents become bank entries and how questions
/// are answered from a bank.
pub trait Memory {
    /// What the design is called in reports (`mac` for the paper's path,
    /// `span memory`).
    fn name(&self) -> &'static str;
    /// The shape of the banks it fills.
    fn bank_shape(&self) -> BankShape;
    /// Tokens of a document it reads; beyond them a document is stored cut.
    fn document_token_limit(&self) -> usize;
    /// Opens the bank in `dir` as its writer, creating it if needed.
    fn open_bank_writer(&self, dir: &Path) -> Result<MemoryBank, ModelError>;
    /// Reads each document once into `bank` (duplicates reported, not
    /// stored again); `progress` gets the count done.
    fn ingest(
        &self,
        bank: &mut MemoryBank,
        docs: &[NewDocument],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Ingested>, ModelError>;
    /// Answers `questions` from `bank`, each with what it drew on.
    fn ask(
        &self,
        bank: &MemoryBank,
        questions: &[&str],
        opts: &AskOptions,
    ) -> Result<Vec<SourcedAnswer>, ModelError>;
}

impl Memory for MacRuntime {
    fn name(&self) -> &'static str {
        "mac"
    }
    fn bank_shape(&self) -> BankShape {
        MacRuntime::bank_shape(self)
    }
    fn document_token_limit(&self) -> usize {
        self.config.max_document_tokens
    }
    fn open_bank_writer(&self, dir: &Path) -> Result<MemoryBank, ModelError> {
        MacRuntime::open_bank_writer(self, dir)
    }
    fn ingest(
        &self,
        bank: &mut MemoryBank,
        docs: &[NewDocument],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Ingested>, ModelError> {
        MacRuntime::ingest(self, bank, docs, progress)
    }
    fn ask(
        &self,
        bank: &MemoryBank,
        questions: &[&str],
        opts: &AskOptions,
    ) -> Result<Vec<SourcedAnswer>, ModelError> {
        MacRuntime::ask(self, bank, questions, opts)
    }
}

/// The memory a checkpoint directory holds: span memory where it has a
/// `span.json`, else the paper's path (`mac.json`).
pub fn load_memory(dir: &Path, device: &Device) -> Result<Box<dyn Memory>, ModelError> {
    if SpanCheckpoint::is_span_checkpoint(dir) {
        Ok(Box::new(SpanMemory::from_checkpoint(dir, None, device)?))
    } else {
        Ok(Box::new(MacRuntime::from_checkpoint(
            dir, None, None, device,
        )?))
    }
}
