//! The paper's path over a bank on disk: documents amortized into
//! modulation entries, questions answered by the aggregation over the
//! bank read a chunk at a time ([`BankMemory`]).

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use mac_aggregation::{ChunkedMemory, MemoryChunk};
use mac_bank::{BankShape, MemoryBank, NewEntry, Precision};
use mac_lm::LoadedLm;
use mac_model::{AnswerGeneration, MacRuntime};

use crate::service::{check_questions, most_attended};
use crate::{AskOptions, Ingested, Memory, NewDocument, RuntimeError, SourcedAnswer};

/// Documents amortized and appended at a time.
const INGEST_BATCH: usize = 8;

/// A bank on disk as the aggregator's [`ChunkedMemory`]: each read decodes
/// the entries' modulations and retrieval keys onto `device`.
pub struct BankMemory<'a> {
    /// The bank.
    pub bank: &'a MemoryBank,
    /// Where the decoded tensors go.
    pub device: &'a Device,
}

impl ChunkedMemory for BankMemory<'_> {
    type Error = RuntimeError;
    fn n_documents(&self) -> usize {
        self.bank.len()
    }
    fn read(&self, start: usize, len: usize) -> Result<MemoryChunk, RuntimeError> {
        let shape = self.bank.shape();
        if shape.rows_vary {
            return Err(RuntimeError::input(format!(
                "{}: the bank's entries hold varying rows (one per token); the paper's aggregation reads modulations of one shape",
                self.bank.dir().display()
            )));
        }
        let chunk = self.bank.modulations(start, len)?;
        let len = chunk.ids.len();
        let modulations = Tensor::from_data(
            TensorData::new(chunk.data, [len, shape.n_tokens, shape.d_mod]),
            self.device,
        );
        let keys = (shape.key_dim > 0).then(|| {
            Tensor::from_data(
                TensorData::new(chunk.keys, [len, shape.key_dim]),
                self.device,
            )
        });
        Ok(MemoryChunk { modulations, keys })
    }
}

/// The paper's path over a bank: each document amortized into one
/// modulation entry (with its retrieval key when the runtime has a key
/// encoder), questions answered by the aggregation read chunk by chunk.
impl Memory for MacRuntime {
    fn name(&self) -> &'static str {
        "mac"
    }
    fn lm(&self) -> &LoadedLm {
        &self.lm
    }
    fn has_prior(&self, bank: &MemoryBank) -> bool {
        bank.shape().key_dim > 0
    }
    fn paper_path(&self) -> Option<&MacRuntime> {
        Some(self)
    }
    fn bank_shape(&self) -> BankShape {
        let (n_tokens, d_mod) = self.config.memory_shape();
        BankShape {
            n_tokens,
            d_mod,
            key_dim: self.key_dim(),
            rows_vary: false,
            precision: Precision::F32,
        }
    }
    fn document_token_limit(&self) -> usize {
        self.config.max_document_tokens
    }
    /// Opens the bank in `dir` as its writer, creating it when absent; a
    /// bank another model filled is refused (its modulations would not fit).
    fn open_bank_writer(&self, dir: &Path) -> Result<MemoryBank, RuntimeError> {
        let bank = MemoryBank::open_or_create(dir, self.bank_shape(), &self.producer)?;
        if bank.producer() != self.producer {
            return Err(RuntimeError::input(format!(
                "{}: the bank was built by `{}`, not by `{}` — its modulations would not match; use a new bank",
                dir.display(),
                bank.producer(),
                self.producer
            )));
        }
        Ok(bank)
    }
    fn ingest(
        &self,
        bank: &mut MemoryBank,
        docs: &[NewDocument],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Ingested>, RuntimeError> {
        let with_keys = bank.shape().key_dim > 0;
        let mut done = Vec::with_capacity(docs.len());
        for chunk in docs.chunks(INGEST_BATCH) {
            let texts: Vec<&str> = chunk.iter().map(|d| d.text.as_str()).collect();
            let amortized = self.amortize(&texts)?;
            let entries: Vec<NewEntry<'_>> = chunk
                .iter()
                .zip(amortized.modulations.iter().zip(&amortized.keys))
                .map(|(d, (m, k))| NewEntry {
                    source: &d.source,
                    text: &d.text,
                    modulation: m,
                    key: if with_keys { k } else { &[] },
                })
                .collect();
            let outcomes = bank.append_batch(&entries)?;
            done.extend(outcomes.into_iter().zip(&amortized.truncated).map(
                |(outcome, &truncated_tokens)| Ingested {
                    outcome,
                    truncated_tokens,
                },
            ));
            progress(done.len());
        }
        Ok(done)
    }
    fn ask_with(
        &self,
        bank: &MemoryBank,
        questions: &[&str],
        generation: &[AnswerGeneration],
        opts: &AskOptions,
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<SourcedAnswer>, RuntimeError> {
        check_questions(questions, generation)?;
        let memory = BankMemory {
            bank,
            device: &self.device,
        };
        let reading = opts.reading(bank);
        let answers = self
            .answer_from_memory(questions, generation, &memory, &reading, on_text)
            .map_err(|e| e.naming(bank))?;
        answers
            .into_iter()
            .map(|answer| {
                Ok(SourcedAnswer {
                    text: answer.text,
                    documents: most_attended(bank, &answer.doc_weights, opts.top)?,
                    shares: answer.doc_weights,
                    bank_entries: bank.len(),
                    hit_token_limit: answer.hit_token_limit,
                    generated_tokens: answer.generated_tokens,
                    prompt_tokens: answer.prompt_tokens,
                    timings: answer.timings,
                    span: None,
                })
            })
            .collect()
    }
}
