//! A bank's store of its documents' key/values: what span memory hands the
//! LM, kept so that an answer reads it instead of recomputing it.
//!
//! The store is a bank of its own in the bank's `kv/` directory (one row
//! per position of a document as the LM reads it, every layer's key and
//! value; f32 or half floats), so it is written, verified, repaired and
//! read beside a writer with the same guarantees. Its entries are found by
//! the document's text (the content hash both banks deduplicate by), so
//! the store may lag the bank — a crash between the two appends, or a
//! store made after the bank — and an entry it lacks is recomputed. Its
//! producer names the LM and the frame the key/values were read in; a
//! memory that reads otherwise refuses the store rather than misread it.

use std::path::{Path, PathBuf};

use mac_bank::{BankShape, MemoryBank, NewEntry, Precision};

use crate::RuntimeError;

/// The store's directory inside its bank's.
pub const KV_DIR: &str = "kv";

/// The key/values of a bank's documents, as a bank of their own.
pub struct KvStore {
    bank: MemoryBank,
}

impl KvStore {
    /// Where the store of the bank in `bank_dir` lies.
    pub fn dir(bank_dir: &Path) -> PathBuf {
        bank_dir.join(KV_DIR)
    }

    /// Whether the bank in `bank_dir` has a store.
    pub fn exists(bank_dir: &Path) -> bool {
        Self::dir(bank_dir).join("MANIFEST").exists()
    }

    /// Opens the store of `bank` (as its writer when `bank` is a writer,
    /// else read-only), or `None` when it has none; a store written by
    /// another producer (another LM or frame) is an error.
    pub fn open(bank: &MemoryBank, producer: &str) -> Result<Option<Self>, RuntimeError> {
        if !Self::exists(bank.dir()) {
            return Ok(None);
        }
        let dir = Self::dir(bank.dir());
        let store = match bank.is_writer() {
            true => MemoryBank::open(&dir)?,
            false => MemoryBank::open_read_only(&dir)?,
        };
        Self::checked(store, producer).map(Some)
    }

    /// Opens the store of the bank in `bank_dir` read-only (no lock; the
    /// entries committed now), or `None` when it has none.
    pub fn open_read_only(bank_dir: &Path, producer: &str) -> Result<Option<Self>, RuntimeError> {
        if !Self::exists(bank_dir) {
            return Ok(None);
        }
        let store = MemoryBank::open_read_only(Self::dir(bank_dir))?;
        Self::checked(store, producer).map(Some)
    }

    /// Opens the store of the bank in `bank_dir` as its writer, creating
    /// it with `shape` where there is none.
    pub fn open_or_create(
        bank_dir: &Path,
        shape: BankShape,
        producer: &str,
    ) -> Result<Self, RuntimeError> {
        let store = MemoryBank::open_or_create(Self::dir(bank_dir), shape, producer)?;
        Self::checked(store, producer)
    }

    fn checked(bank: MemoryBank, producer: &str) -> Result<Self, RuntimeError> {
        if bank.producer() != producer {
            return Err(RuntimeError::input(format!(
                "{}: the key/values stored there are `{}`; this memory reads `{producer}`",
                bank.dir().display(),
                bank.producer()
            )));
        }
        Ok(Self { bank })
    }

    /// Whether the store holds the document `text`.
    pub fn holds(&self, text: &str) -> bool {
        self.bank.find_text(text).is_some()
    }

    /// The stored key/values of the document `text`, `[T', width]`
    /// row-major, or `None` when the store lacks it.
    pub fn rows(&self, text: &str) -> Result<Option<Vec<f32>>, RuntimeError> {
        let Some(id) = self.bank.find_text(text) else {
            return Ok(None);
        };
        let index = self.bank.position_of(id).ok_or_else(|| {
            RuntimeError::input(format!(
                "{}: entry {id} is indexed but not listed",
                self.bank.dir().display()
            ))
        })?;
        Ok(Some(self.bank.read(index)?.modulation))
    }

    /// Stores documents' key/values (`(source, text, rows)`), durably.
    pub fn append(&mut self, documents: &[(&str, &str, Vec<f32>)]) -> Result<(), RuntimeError> {
        let entries: Vec<NewEntry<'_>> = documents
            .iter()
            .map(|(source, text, rows)| NewEntry {
                source,
                text,
                modulation: rows,
                key: &[],
            })
            .collect();
        self.bank.append_batch(&entries)?;
        Ok(())
    }

    /// Documents stored.
    pub fn len(&self) -> usize {
        self.bank.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.bank.is_empty()
    }

    /// Bytes on disk.
    pub fn size_bytes(&self) -> u64 {
        self.bank.size_bytes()
    }

    /// How the values are stored.
    pub fn precision(&self) -> Precision {
        self.bank.shape().precision
    }
}

/// What [`crate::Memory::store_key_values`] left in a bank's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvStoreReport {
    /// Documents the store holds.
    pub documents: usize,
    /// Of them, read into it now.
    pub added: usize,
    /// Its bytes on disk.
    pub bytes: u64,
    /// How its values are stored.
    pub precision: Precision,
}
