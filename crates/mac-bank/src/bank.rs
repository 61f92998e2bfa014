//! The memory bank directory: open, append, read in chunks, verify.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{io, BankError, Result};
use crate::manifest::{
    segment_name, BankShape, Manifest, ManifestWrite, SegmentInfo, FORMAT_NAME, MANIFEST,
};
use crate::record::{self, Header};
use crate::segment;

mod append;
mod read;

const LOCK: &str = "LOCK";
/// A new segment is started once the active one passes this size.
const SEGMENT_BYTES: u64 = 256 << 20;

/// What the bank knows about an entry without reading its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// Bank-wide id (0, 1, 2, ... in append order).
    pub id: u64,
    /// Arrival time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// sha256 of the text.
    pub hash: [u8; 32],
    /// Segment index.
    segment: usize,
    /// Byte offset of the record in its segment.
    offset: u64,
    /// Record length including the frame.
    len: u64,
}

/// A document to append.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    /// Where it came from (file path, URL, dataset id).
    pub source: &'a str,
    /// The document text.
    pub text: &'a str,
    /// Its modulation, row-major `[n_tokens, d_mod]` (`[rows, d_mod]` when
    /// the bank's rows vary).
    pub modulation: &'a [f32],
    /// Its retrieval key `[key_dim]` (empty when the bank stores none).
    pub key: &'a [f32],
}

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored under this id.
    Stored(u64),
    /// Same content already stored under this id; nothing written.
    Duplicate(u64),
}

/// A fully read entry.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    /// Id.
    pub id: u64,
    /// Arrival time (ms since epoch).
    pub time_ms: u64,
    /// Source.
    pub source: String,
    /// Text.
    pub text: String,
    /// Modulation `[n_tokens * d_mod]` (`[rows * d_mod]` when rows vary).
    pub modulation: Vec<f32>,
    /// Retrieval key `[key_dim]` (empty when the bank stores none).
    pub key: Vec<f32>,
}

/// A run of consecutive entries' modulations, `[len, n_tokens, d_mod]` row-major
/// (entries of `rows[i]` rows each one after another when rows vary).
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Position of the first entry in the bank.
    pub start: usize,
    /// Ids of the entries.
    pub ids: Vec<u64>,
    /// Rows of each entry's modulation.
    pub rows: Vec<usize>,
    /// Their modulations, concatenated.
    pub data: Vec<f32>,
    /// Their retrieval keys, concatenated `[len, key_dim]` (empty when the
    /// bank stores none).
    pub keys: Vec<f32>,
    /// Their documents' text.
    pub texts: Vec<String>,
}

/// What [`MemoryBank::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: usize,
    /// Segment files checked.
    pub segments: usize,
    /// Committed bytes checked.
    pub bytes: u64,
}

/// A memory bank directory, opened by its one writer ([`MemoryBank::open`],
/// holding the bank's lock) or by a reader ([`MemoryBank::open_read_only`],
/// which takes no lock, never writes, and sees the entries committed when it
/// opened).
pub struct MemoryBank {
    dir: PathBuf,
    manifest: Manifest,
    entries: Vec<EntryMeta>,
    by_hash: HashMap<[u8; 32], u64>,
    files: Vec<File>,
    /// The held LOCK file of the writer; `None` for a reader.
    writer_lock: Option<File>,
}

impl std::fmt::Debug for MemoryBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBank")
            .field("dir", &self.dir)
            .field("shape", &self.manifest.shape)
            .field("entries", &self.entries.len())
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl MemoryBank {
    /// Creates an empty bank in `dir` (created if needed; must not hold a bank).
    pub fn create(dir: impl AsRef<Path>, shape: BankShape, producer: &str) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if shape.n_tokens == 0 || shape.d_mod == 0 {
            return Err(BankError::Invalid(format!(
                "bank shape {shape:?} has a zero dimension"
            )));
        }
        fs::create_dir_all(&dir).map_err(io(&dir, "create directory"))?;
        // The lock first: a second creator waits for nothing and truncates nothing.
        let lock = Self::lock(&dir)?;
        if dir.join(MANIFEST).exists() {
            return Err(BankError::AlreadyExists { path: dir });
        }
        let manifest = Manifest {
            format: FORMAT_NAME.into(),
            version: shape.format_version(),
            shape,
            next_id: 0,
            segments: Vec::new(),
            producer: producer.into(),
        };
        let mut bank = Self {
            dir,
            manifest,
            entries: Vec::new(),
            by_hash: HashMap::new(),
            files: Vec::new(),
            writer_lock: Some(lock),
        };
        // The first segment, and the first manifest commit.
        bank.start_segment()?;
        Ok(bank)
    }

    /// Opens an existing bank, or creates one with `shape` if `dir` holds none.
    /// An existing bank must have the same modulation shape; it keeps its
    /// own key width (check [`Self::shape`] before appending keys).
    pub fn open_or_create(dir: impl AsRef<Path>, shape: BankShape, producer: &str) -> Result<Self> {
        let dir = dir.as_ref();
        if dir.join(MANIFEST).exists() {
            let bank = Self::open(dir)?;
            bank.check_modulation_shape(shape)?;
            Ok(bank)
        } else {
            Self::create(dir, shape, producer)
        }
    }

    /// Whether the bank's modulations have `shape`'s `[n_tokens, d_mod]`
    /// and row rule (the model that would fill or read it); the key width
    /// may differ.
    pub fn check_modulation_shape(&self, shape: BankShape) -> Result<()> {
        let found = self.shape();
        let rows = |s: BankShape| (s.n_tokens, s.d_mod, s.rows_vary);
        if rows(found) != rows(shape) {
            return Err(BankError::Invalid(format!(
                "{}: bank holds modulations of shape {found:?}, the encoder produces {shape:?}",
                self.dir.display(),
            )));
        }
        Ok(())
    }

    fn lock(dir: &Path) -> Result<File> {
        let path = dir.join(LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path, "open lock file"))?;
        match f.try_lock() {
            Ok(()) => Ok(f),
            Err(fs::TryLockError::WouldBlock) => Err(BankError::Locked { path }),
            Err(fs::TryLockError::Error(e)) => Err(io(&path, "lock")(e)),
        }
    }

    /// Opens a bank as its one writer: takes the lock, reads and checks the
    /// manifest, scans record headers up to the committed lengths, and drops
    /// any uncommitted tail.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_as(dir.as_ref(), true)
    }

    /// Opens a bank to read it beside a writer (or none): no lock, nothing
    /// written or truncated, the files opened read-only; it sees every entry
    /// committed before it opened. Appending through it is an error.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_as(dir.as_ref(), false)
    }

    /// Whether this handle may append (it holds the writer's lock).
    pub fn is_writer(&self) -> bool {
        self.writer_lock.is_some()
    }

    fn open_as(dir: &Path, writer: bool) -> Result<Self> {
        let dir = dir.to_path_buf();
        let manifest_path = dir.join(MANIFEST);
        if !manifest_path.exists() {
            return Err(BankError::NotABank { path: dir });
        }
        let lock = if writer {
            Some(Self::lock(&dir)?)
        } else {
            None
        };
        let manifest = Manifest::read(&manifest_path)?;
        let mut entries: Vec<EntryMeta> = Vec::new();
        let mut by_hash = HashMap::new();
        let mut files = Vec::new();
        for (si, seg) in manifest.segments.iter().enumerate() {
            // Checked by `validate`: the bank's own name for segment `si`,
            // never a path that leaves the directory.
            let path = dir.join(&seg.file);
            let file = OpenOptions::new()
                .read(true)
                .write(writer)
                .open(&path)
                .map_err(io(&path, "open segment"))?;
            let len = file.metadata().map_err(io(&path, "stat segment"))?.len();
            if len < seg.committed_bytes {
                return Err(BankError::Corrupt {
                    path,
                    reason: format!(
                        "segment has {len} bytes but the manifest committed {}",
                        seg.committed_bytes
                    ),
                });
            }
            if len > seg.committed_bytes && writer {
                // An append that never returned: drop it. (A reader leaves
                // it to the writer: it may be an append in progress.)
                file.set_len(seg.committed_bytes)
                    .map_err(io(&path, "truncate uncommitted tail"))?;
                file.sync_all().map_err(io(&path, "fsync segment"))?;
            }
            let previous = entries.last().map(|e: &EntryMeta| e.id);
            let records = segment::scan(&file, &path, seg.committed_bytes, &manifest, previous)?;
            let count = records.len() as u64;
            for r in records {
                by_hash.insert(r.hash, r.id);
                entries.push(EntryMeta {
                    id: r.id,
                    time_ms: r.time_ms,
                    hash: r.hash,
                    segment: si,
                    offset: r.offset,
                    len: r.len,
                });
            }
            if count != seg.entries {
                return Err(BankError::Corrupt {
                    path,
                    reason: format!("{count} records found, the manifest says {}", seg.entries),
                });
            }
            files.push(file);
        }
        Ok(Self {
            dir,
            manifest,
            entries,
            by_hash,
            files,
            writer_lock: lock,
        })
    }

    /// A read-only handle on the entries this handle holds, without reading
    /// the bank again: the index is copied and the segment files reopened
    /// read-only. A writer hands one to its readers after each commit (no
    /// lock, never writes; it does not see later appends).
    pub fn reader(&self) -> Result<Self> {
        let files = self
            .manifest
            .segments
            .iter()
            .map(|seg| {
                let path = self.dir.join(&seg.file);
                File::open(&path).map_err(io(&path, "open segment"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            dir: self.dir.clone(),
            manifest: self.manifest.clone(),
            entries: self.entries.clone(),
            by_hash: self.by_hash.clone(),
            files,
            writer_lock: None,
        })
    }

    /// Position in the bank of the entry with this id.
    pub fn position_of(&self, id: u64) -> Option<usize> {
        self.entries.binary_search_by_key(&id, |e| e.id).ok()
    }

    fn writable(&self) -> Result<()> {
        match self.writer_lock {
            Some(_) => Ok(()),
            None => Err(BankError::Invalid(format!(
                "{}: the bank was opened read-only",
                self.dir.display()
            ))),
        }
    }

    /// Commits the in-memory manifest ([`Manifest::commit`]).
    fn commit_manifest(&self) -> std::result::Result<(), ManifestWrite> {
        self.manifest.commit(&self.dir)
    }

    /// Directory of the bank.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Shape of every modulation.
    pub fn shape(&self) -> BankShape {
        self.manifest.shape
    }

    /// What produced the modulations (set at creation).
    pub fn producer(&self) -> &str {
        &self.manifest.producer
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the bank is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Metadata of every entry, in append order.
    pub fn entries(&self) -> &[EntryMeta] {
        &self.entries
    }

    /// Committed bytes on disk across segments.
    pub fn size_bytes(&self) -> u64 {
        self.manifest
            .segments
            .iter()
            .map(|s| s.committed_bytes)
            .sum()
    }

    /// The id of an entry with this text, if stored.
    pub fn find_text(&self, text: &str) -> Option<u64> {
        self.by_hash.get(&record::content_hash(text)).copied()
    }
}
