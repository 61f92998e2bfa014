//! # mac-bank — MAC's memory bank, persisted
//!
//! The memory bank of MAC (Tack et al., 2024, §3): the modulations
//! `[n, d_mod]` of every document seen so far, plus the document itself, its
//! source, content hash, arrival time and (when the bank's shape has a
//! `key_dim`) its retrieval key, in a directory:
//!
//! ```text
//! bank/
//!   MANIFEST          JSON: format version, shape, segments and their committed lengths
//!   LOCK              held (flock) by the one writer
//!   seg-000000.bin    append-only records: [magic | body length | body | crc32(body)]
//!   seg-000001.bin    ...
//! ```
//!
//! **Durability.** [`MemoryBank::append`] writes the record, fsyncs the
//! segment, then publishes the new committed length by writing
//! `MANIFEST.tmp`, fsyncing it, renaming it over `MANIFEST` and fsyncing the
//! directory. An append that returned `Ok` survives a crash; bytes past the
//! committed length (a torn or unacknowledged write) are ignored and
//! truncated on the next open, so no partial entry is ever visible.
//!
//! **Reading.** Opening scans record headers only; modulations are read in
//! chunks with positioned reads ([`MemoryBank::chunks`]), each record's
//! checksum verified as it is read, so a bank larger than memory can be
//! streamed to the aggregator. [`MemoryBank::verify`] checks everything.
//!
//! **Deduplication.** A document whose content hash (sha256 of its text) is
//! already stored is not stored again; [`AppendOutcome::Duplicate`] names the
//! existing entry.
//!
//! ```
//! use mac_bank::{AppendOutcome, BankShape, MemoryBank, NewEntry, Precision};
//!
//! # fn main() -> mac_bank::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let shape = BankShape { n_tokens: 2, d_mod: 3, key_dim: 0, rows_vary: false, precision: Precision::F32 };
//! let mut bank = MemoryBank::create(dir.path().join("bank"), shape, "example")?;
//! let doc = NewEntry { source: "notes.txt", text: "Ada was born in Porto.", modulation: &[0.5; 6], key: &[] };
//! assert_eq!(bank.append(doc)?, AppendOutcome::Stored(0));
//! assert_eq!(bank.append(doc)?, AppendOutcome::Duplicate(0)); // same text: not stored again
//! drop(bank);
//!
//! // A reader takes no lock: it runs beside the writer.
//! let reader = MemoryBank::open_read_only(dir.path().join("bank"))?;
//! assert_eq!(reader.read(0)?.text, "Ada was born in Porto.");
//! for chunk in reader.chunks(256) {
//!     assert_eq!(chunk?.data.len(), 6); // [entries, n_tokens, d_mod], row-major
//! }
//! reader.verify()?;
//! # Ok(()) }
//! ```

mod bank;
mod error;
mod manifest;
mod precision;
mod record;
mod repair;
mod segment;

pub use bank::{AppendOutcome, Chunk, EntryMeta, MemoryBank, NewEntry, StoredEntry, VerifyReport};
pub use error::{BankError, Result};
pub use manifest::BankShape;
pub use precision::Precision;
pub use record::content_hash;
pub use repair::{repair, Dropped, RepairReport};

/// The newest on-disk format this crate reads and writes (2: entries may
/// carry a retrieval key; 3: entries may hold varying rows; 4: values may
/// be half floats — 3 and 4 written only for such banks). Banks of earlier
/// formats are read unchanged.
pub const FORMAT_VERSION: u32 = 4;
