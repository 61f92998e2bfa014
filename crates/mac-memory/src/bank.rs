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
use crate::record::{self, Header, FIXED_BODY};
use crate::segment;
use crate::FORMAT_VERSION;

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
    /// Its modulation, row-major `[n_tokens, d_mod]`.
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
    /// Modulation `[n_tokens * d_mod]`.
    pub modulation: Vec<f32>,
    /// Retrieval key `[key_dim]` (empty when the bank stores none).
    pub key: Vec<f32>,
}

/// A run of consecutive entries' modulations, `[len, n_tokens, d_mod]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Position of the first entry in the bank.
    pub start: usize,
    /// Ids of the entries.
    pub ids: Vec<u64>,
    /// Their modulations, concatenated.
    pub data: Vec<f32>,
    /// Their retrieval keys, concatenated `[len, key_dim]` (empty when the
    /// bank stores none).
    pub keys: Vec<f32>,
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
            version: FORMAT_VERSION,
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
    /// (the model that would fill or read it); the key width may differ.
    pub fn check_modulation_shape(&self, shape: BankShape) -> Result<()> {
        let found = self.shape();
        if (found.n_tokens, found.d_mod) != (shape.n_tokens, shape.d_mod) {
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

    fn check(&self, e: &NewEntry<'_>) -> Result<()> {
        if e.text.trim().is_empty() {
            return Err(BankError::Invalid(format!(
                "document from `{}` is empty",
                e.source
            )));
        }
        if e.modulation.len() != self.shape().numel() {
            return Err(BankError::Invalid(format!(
                "modulation has {} values, the bank stores {} ({:?})",
                e.modulation.len(),
                self.shape().numel(),
                self.shape()
            )));
        }
        if e.key.len() != self.shape().key_dim {
            return Err(BankError::Invalid(format!(
                "retrieval key of `{}` has {} values, the bank stores {}",
                e.source,
                e.key.len(),
                self.shape().key_dim
            )));
        }
        if let Some(bad) = e.modulation.iter().chain(e.key).find(|v| !v.is_finite()) {
            return Err(BankError::Invalid(format!(
                "modulation or key of `{}` holds a non-finite value ({bad})",
                e.source
            )));
        }
        let shape = self.shape();
        if record::body_len(e.source.len(), e.text.len(), shape.numel(), shape.key_dim).is_none() {
            return Err(BankError::Invalid(format!(
                "document from `{}` makes a record over the format's 4 GiB limit",
                e.source
            )));
        }
        Ok(())
    }

    /// Appends one entry durably (see the crate docs).
    pub fn append(&mut self, entry: NewEntry<'_>) -> Result<AppendOutcome> {
        Ok(self.append_batch(&[entry])?[0])
    }

    /// Appends several entries with one fsync and one manifest commit. All are
    /// validated first: on a validation error nothing is written.
    pub fn append_batch(&mut self, batch: &[NewEntry<'_>]) -> Result<Vec<AppendOutcome>> {
        self.writable()?;
        for e in batch {
            self.check(e)?;
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut pending: HashMap<[u8; 32], u64> = HashMap::new();
        let mut bytes = Vec::new();
        let mut new_meta = Vec::new();
        if self.active().committed_bytes >= SEGMENT_BYTES {
            self.start_segment()?;
        }
        let si = self.manifest.segments.len() - 1;
        let base = self.active().committed_bytes;
        // Ids are taken from here and reach the manifest only with the commit.
        let mut next_id = self.manifest.next_id;
        for e in batch {
            let hash = record::content_hash(e.text);
            if let Some(&id) = self.by_hash.get(&hash).or_else(|| pending.get(&hash)) {
                outcomes.push(AppendOutcome::Duplicate(id));
                continue;
            }
            let shape = self.shape();
            let h = Header {
                id: next_id,
                time_ms: now_ms(),
                hash,
                n: shape.n_tokens as u32,
                d: shape.d_mod as u32,
                source_len: e.source.len() as u32,
                text_len: e.text.len() as u32,
            };
            let rec = record::encode(&h, e.source, e.text, e.modulation, e.key);
            new_meta.push(EntryMeta {
                id: h.id,
                time_ms: h.time_ms,
                hash,
                segment: si,
                offset: base + bytes.len() as u64,
                len: rec.len() as u64,
            });
            bytes.extend_from_slice(&rec);
            pending.insert(hash, h.id);
            outcomes.push(AppendOutcome::Stored(h.id));
            next_id += 1;
        }
        if new_meta.is_empty() {
            return Ok(outcomes);
        }
        let path = self.dir.join(&self.manifest.segments[si].file);
        let file = &self.files[si];
        file.write_all_at(&bytes, base)
            .map_err(io(&path, "append record"))?;
        file.sync_data().map_err(io(&path, "fsync segment"))?;
        let before = self.manifest.clone();
        let seg = &mut self.manifest.segments[si];
        seg.committed_bytes += bytes.len() as u64;
        seg.entries += new_meta.len() as u64;
        self.manifest.next_id = next_id;
        let outcome = match self.commit_manifest() {
            Ok(()) => Ok(outcomes),
            Err(ManifestWrite::NotReplaced(e)) => {
                // Not committed: memory forgets it as the disk does (the
                // tail is dropped on the next writer's open).
                self.manifest = before;
                return Err(e);
            }
            // The new manifest is in place: the entries are committed as far
            // as the disk says, so memory keeps them; the caller learns that
            // they may not survive a power loss.
            Err(ManifestWrite::ReplacedNotSynced(e)) => Err(e),
        };
        for m in new_meta {
            self.by_hash.insert(m.hash, m.id);
            self.entries.push(m);
        }
        outcome
    }

    fn active(&self) -> &SegmentInfo {
        self.manifest
            .segments
            .last()
            .expect("a validated manifest has a segment")
    }

    fn start_segment(&mut self) -> Result<()> {
        let name = segment_name(self.manifest.segments.len());
        let path = self.dir.join(&name);
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path, "create segment"))?;
        f.sync_all().map_err(io(&path, "fsync segment"))?;
        self.files.push(f);
        self.manifest.segments.push(SegmentInfo {
            file: name,
            committed_bytes: 0,
            entries: 0,
        });
        match self.commit_manifest() {
            Ok(()) => Ok(()),
            Err(ManifestWrite::NotReplaced(e)) => {
                // The disk still lists the old segments: so does memory.
                self.files.pop();
                self.manifest.segments.pop();
                Err(e)
            }
            Err(ManifestWrite::ReplacedNotSynced(e)) => Err(e),
        }
    }

    fn read_body(&self, m: &EntryMeta) -> Result<Vec<u8>> {
        let path = self.dir.join(&self.manifest.segments[m.segment].file);
        let mut rec = vec![0u8; m.len as usize];
        self.files[m.segment]
            .read_exact_at(&mut rec, m.offset)
            .map_err(io(&path, "read record"))?;
        let body = &rec[8..rec.len() - 4];
        let crc = u32::from_le_bytes(rec[rec.len() - 4..].try_into().unwrap());
        if crc32fast::hash(body) != crc {
            return Err(BankError::Corrupt {
                path,
                reason: format!(
                    "checksum mismatch in entry {} (record at byte {})",
                    m.id, m.offset
                ),
            });
        }
        Ok(body.to_vec())
    }

    /// Reads one entry (by position in the bank), checking its checksum.
    pub fn read(&self, index: usize) -> Result<StoredEntry> {
        let m = self.entries.get(index).ok_or_else(|| {
            BankError::Invalid(format!(
                "entry {index} out of range (bank has {})",
                self.len()
            ))
        })?;
        let body = self.read_body(m)?;
        let h = Header::parse(&body).expect("checked at open");
        let s0 = FIXED_BODY;
        let t0 = s0 + h.source_len as usize;
        let m0 = t0 + h.text_len as usize;
        let (modulation, key) = self.payload(&body);
        let path = || self.dir.join(&self.manifest.segments[m.segment].file);
        let utf8 = |b: &[u8]| {
            String::from_utf8(b.to_vec()).map_err(|_| BankError::Corrupt {
                path: path(),
                reason: format!("entry {} holds invalid UTF-8", m.id),
            })
        };
        Ok(StoredEntry {
            id: h.id,
            time_ms: h.time_ms,
            source: utf8(&body[s0..t0])?,
            text: utf8(&body[t0..m0])?,
            modulation: floats(modulation),
            key: floats(key),
        })
    }

    /// A record body's modulation and key bytes (they end the body).
    fn payload<'b>(&self, body: &'b [u8]) -> (&'b [u8], &'b [u8]) {
        let (numel, key_dim) = (self.shape().numel(), self.shape().key_dim);
        let k0 = body.len() - 4 * key_dim;
        (&body[k0 - 4 * numel..k0], &body[k0..])
    }

    /// Modulations of entries `start..start + len`, `[len, n, d]` row-major,
    /// and their keys.
    pub fn modulations(&self, start: usize, len: usize) -> Result<Chunk> {
        let end = (start + len).min(self.len());
        let (numel, key_dim) = (self.shape().numel(), self.shape().key_dim);
        let mut data = Vec::with_capacity((end - start) * numel);
        let mut keys = Vec::with_capacity((end - start) * key_dim);
        let mut ids = Vec::with_capacity(end - start);
        for m in &self.entries[start..end] {
            let body = self.read_body(m)?;
            let (modulation, key) = self.payload(&body);
            data.extend(floats(modulation));
            keys.extend(floats(key));
            ids.push(m.id);
        }
        Ok(Chunk {
            start,
            ids,
            data,
            keys,
        })
    }

    /// Streams the bank in chunks of at most `size` entries; only one chunk is
    /// in memory at a time.
    pub fn chunks(&self, size: usize) -> impl Iterator<Item = Result<Chunk>> + '_ {
        let size = size.max(1);
        (0..self.len())
            .step_by(size)
            .map(move |s| self.modulations(s, size))
    }

    /// Checks every committed record's checksum. A damaged bank is an error
    /// that lists every damaged entry (naming the first one's segment);
    /// `mac bank repair` copies the intact ones into a new bank.
    pub fn verify(&self) -> Result<VerifyReport> {
        let problems: Vec<BankError> = self
            .entries
            .iter()
            .filter_map(|m| self.read_body(m).err())
            .collect();
        if let Some(first) = problems.first() {
            let listed: Vec<String> = problems.iter().map(|e| e.to_string()).collect();
            let path = match first {
                BankError::Corrupt { path, .. } | BankError::Io { path, .. } => path.clone(),
                _ => self.dir.clone(),
            };
            return Err(BankError::Corrupt {
                path,
                reason: format!(
                    "{} of {} entries are damaged: {}",
                    problems.len(),
                    self.len(),
                    listed.join("; ")
                ),
            });
        }
        Ok(VerifyReport {
            entries: self.len(),
            segments: self.manifest.segments.len(),
            bytes: self.size_bytes(),
        })
    }
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
