//! Salvaging a damaged bank: every intact committed record copied into a
//! new bank, and a report of everything left behind.
//!
//! The damaged bank is only read. Its MANIFEST, when it is valid, gives the
//! shape, the producer and each segment's committed length (bytes past it
//! were never acknowledged and are not copied); when it is not, the shape
//! is taken from the records whose checksums hold (the first one's widths;
//! rows that differ between them make a bank of varying rows), and every segment
//! file named as the bank names them (`seg-NNNNNN.bin`) is scanned to its
//! end. A record is copied when its frame, its header's lengths against
//! the shape and its checksum all hold; after a damaged stretch the scan
//! resynchronises at the next record magic that starts an intact record.
//! The new bank numbers its entries from 0 (the report maps old ids to new).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::bank::{AppendOutcome, MemoryBank, NewEntry};
use crate::error::{io, BankError, Result};
use crate::manifest::{segment_name, BankShape, Manifest, MANIFEST};
use crate::precision::Precision;
use crate::record::{floats, Header, FIXED_BODY, FRAME};

/// A stretch of a damaged bank that was not copied, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The segment file (or MANIFEST).
    pub file: String,
    /// Where the stretch starts, in bytes.
    pub offset: u64,
    /// Its length in bytes.
    pub bytes: u64,
    /// What was wrong with it.
    pub reason: String,
}

/// What [`repair`] copied and what it left behind.
#[derive(Debug, Clone)]
pub struct RepairReport {
    /// The shape of both banks.
    pub shape: BankShape,
    /// Whether the damaged bank's MANIFEST could be used.
    pub manifest_used: bool,
    /// `(id in the damaged bank, id in the new bank)` of every copied entry.
    pub copied: Vec<(u64, u64)>,
    /// Everything not copied.
    pub dropped: Vec<Dropped>,
}

/// One intact record found in a segment.
struct Found {
    id: u64,
    source: String,
    text: String,
    modulation: Vec<f32>,
    key: Vec<f32>,
}

/// The bank's shape as repair knows it: from the MANIFEST, or inferred
/// from the intact records found so far (rows found to differ between
/// records make it a bank of varying rows).
#[derive(Clone, Copy)]
struct KnownShape {
    shape: Option<BankShape>,
    from_manifest: bool,
}

impl KnownShape {
    /// Whether a record of shape `here` (its own rows) belongs to the bank.
    fn admits(&self, here: &BankShape) -> bool {
        if here.n_tokens == 0 || here.d_mod == 0 {
            return false;
        }
        let Some(s) = self.shape else {
            return true;
        };
        let width = (s.d_mod, s.key_dim, s.precision) == (here.d_mod, here.key_dim, here.precision);
        width && (!self.from_manifest || s.allows_rows(here.n_tokens))
    }

    /// Takes in the shape of an intact record.
    fn widen(&mut self, here: BankShape) {
        match &mut self.shape {
            None => self.shape = Some(here),
            Some(s) if !self.from_manifest && s.n_tokens != here.n_tokens => {
                s.rows_vary = true;
                s.n_tokens = s.n_tokens.max(here.n_tokens);
            }
            Some(_) => {}
        }
    }
}

/// Parses the record at the start of `bytes`: its length and content, or
/// why it is not an intact record of a bank of the `known` shape.
fn record_at(
    bytes: &[u8],
    known: KnownShape,
) -> std::result::Result<(Found, BankShape, usize), String> {
    if bytes.len() < FRAME + FIXED_BODY {
        return Err("shorter than a record header".into());
    }
    let precision = Precision::of_magic(bytes).ok_or("no record magic")?;
    let body_len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let h = Header::parse(&bytes[8..]).ok_or("short header")?;
    let total = body_len
        .checked_add(FRAME)
        .filter(|&t| t <= bytes.len())
        .ok_or("runs past the end of the file")?;
    let inconsistent = "header lengths are inconsistent";
    let payload = body_len
        .checked_sub(FIXED_BODY + h.source_len as usize + h.text_len as usize)
        .ok_or(inconsistent)?;
    let numel = (h.n as usize)
        .checked_mul(h.d as usize)
        .filter(|&n| {
            n.checked_mul(precision.bytes())
                .is_some_and(|b| b <= payload)
        })
        .ok_or(inconsistent)?;
    let key_bytes = payload - numel * precision.bytes();
    if key_bytes % 4 != 0 {
        return Err(inconsistent.into());
    }
    let shape_here = BankShape {
        n_tokens: h.n as usize,
        d_mod: h.d as usize,
        key_dim: key_bytes / 4,
        rows_vary: false,
        precision,
    };
    if !known.admits(&shape_here) {
        return Err(format!(
            "header lengths do not match the bank's shape (n {}, d {}, key {})",
            h.n, h.d, shape_here.key_dim
        ));
    }
    let body = &bytes[8..8 + body_len];
    let crc = u32::from_le_bytes(bytes[8 + body_len..total].try_into().unwrap());
    if crc32fast::hash(body) != crc {
        return Err(format!("checksum mismatch (entry {})", h.id));
    }
    let text = |b: &[u8]| {
        String::from_utf8(b.to_vec()).map_err(|_| format!("entry {} holds invalid UTF-8", h.id))
    };
    let f = h.fields(body, numel, precision);
    Ok((
        Found {
            id: h.id,
            source: text(f.source)?,
            text: text(f.text)?,
            modulation: precision.decode(f.modulation),
            key: floats(f.key),
        },
        shape_here,
        total,
    ))
}

/// Scans `bytes` (one segment, up to what is to be copied): the intact
/// records, and the damaged stretches between them.
fn scan_tolerant(file: &str, bytes: &[u8], shape: &mut KnownShape) -> (Vec<Found>, Vec<Dropped>) {
    let (mut found, mut dropped) = (Vec::new(), Vec::new());
    let mut offset = 0usize;
    while offset < bytes.len() {
        match record_at(&bytes[offset..], *shape) {
            Ok((record, record_shape, len)) => {
                shape.widen(record_shape);
                found.push(record);
                offset += len;
            }
            Err(reason) => {
                // Resynchronise at the next magic that starts an intact record.
                let next = (offset + 1..bytes.len().saturating_sub(3))
                    .filter(|&p| Precision::of_magic(&bytes[p..]).is_some())
                    .find(|&p| record_at(&bytes[p..], *shape).is_ok())
                    .unwrap_or(bytes.len());
                dropped.push(Dropped {
                    file: file.to_string(),
                    offset: offset as u64,
                    bytes: (next - offset) as u64,
                    reason,
                });
                offset = next;
            }
        }
    }
    (found, dropped)
}

/// The segment files of `dir` named as the bank names them, in order.
fn segment_files(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(io(dir, "read directory"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n.strip_prefix("seg-")
                .and_then(|r| r.strip_suffix(".bin"))
                .is_some_and(|d| d.len() == 6 && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Copies every intact committed record of the bank in `damaged` into a
/// new bank in `out` (which must not hold one) and reports what it left
/// behind. `damaged` is only read.
pub fn repair(damaged: &Path, out: &Path) -> Result<RepairReport> {
    if !damaged.is_dir() {
        return Err(BankError::NotABank {
            path: damaged.to_path_buf(),
        });
    }
    let mut dropped = Vec::new();
    let manifest = usable_manifest(damaged, &mut dropped);
    // (file name, bytes to scan) per segment.
    let segments: Vec<(String, u64)> = match &manifest {
        Some(m) => (0..m.segments.len())
            .map(|i| (segment_name(i), m.segments[i].committed_bytes))
            .collect(),
        None => segment_files(damaged)?
            .into_iter()
            .map(|name| (name, u64::MAX))
            .collect(),
    };
    let mut shape = KnownShape {
        shape: manifest.as_ref().map(|m| m.shape),
        from_manifest: manifest.is_some(),
    };
    let found = scan_segments(damaged, &segments, &mut shape, &mut dropped);
    let shape = shape.shape.ok_or_else(|| BankError::Corrupt {
        path: damaged.to_path_buf(),
        reason: "neither the MANIFEST nor any intact record gives the bank's shape".into(),
    })?;
    let producer = manifest
        .as_ref()
        .map(|m| m.producer.clone())
        .unwrap_or_default();
    let mut bank = MemoryBank::create(out, shape, &producer)?;
    let copied = copy_found(&mut bank, found, &mut dropped)?;
    Ok(RepairReport {
        shape,
        manifest_used: manifest.is_some(),
        copied,
        dropped,
    })
}

/// The bank's MANIFEST when it can be read; otherwise `None`, noted in
/// `dropped`.
fn usable_manifest(damaged: &Path, dropped: &mut Vec<Dropped>) -> Option<Manifest> {
    let manifest_path = damaged.join(MANIFEST);
    match Manifest::read(&manifest_path) {
        Ok(m) => Some(m),
        Err(e) => {
            dropped.push(Dropped {
                file: MANIFEST.into(),
                offset: 0,
                bytes: fs::metadata(&manifest_path).map(|m| m.len()).unwrap_or(0),
                reason: format!("unusable ({e}); the shape is taken from the records and every segment is scanned to its end"),
            });
            None
        }
    }
}

/// Every intact record of `segments` (each scanned up to its committed
/// length), in order; what could not be read goes to `dropped`.
fn scan_segments(
    damaged: &Path,
    segments: &[(String, u64)],
    shape: &mut KnownShape,
    dropped: &mut Vec<Dropped>,
) -> Vec<Found> {
    let mut found = Vec::new();
    for (name, committed) in segments {
        let path: PathBuf = damaged.join(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                dropped.push(Dropped {
                    file: name.clone(),
                    offset: 0,
                    bytes: 0,
                    reason: format!("cannot be read: {e}"),
                });
                continue;
            }
        };
        let end = (*committed).min(bytes.len() as u64) as usize;
        if (end as u64) < *committed && *committed != u64::MAX {
            dropped.push(Dropped {
                file: name.clone(),
                offset: end as u64,
                bytes: committed - end as u64,
                reason: "the file is shorter than its committed length".into(),
            });
        }
        let (records, damage) = scan_tolerant(name, &bytes[..end], shape);
        found.extend(records);
        dropped.extend(damage);
        if bytes.len() > end {
            dropped.push(Dropped {
                file: name.clone(),
                offset: end as u64,
                bytes: (bytes.len() - end) as u64,
                reason: "past the committed length: never acknowledged".into(),
            });
        }
    }
    found
}

/// Appends the first copy of each found entry to `bank`: (old id, new id)
/// per entry copied; repeated ids and repeated texts go to `dropped`.
fn copy_found(
    bank: &mut MemoryBank,
    found: Vec<Found>,
    dropped: &mut Vec<Dropped>,
) -> Result<Vec<(u64, u64)>> {
    let mut seen_ids = HashSet::new();
    let (fresh, repeated): (Vec<Found>, Vec<Found>) =
        found.into_iter().partition(|f| seen_ids.insert(f.id));
    let record = |reason: String| Dropped {
        file: "(records)".into(),
        offset: 0,
        bytes: 0,
        reason,
    };
    for f in repeated {
        dropped.push(record(format!(
            "entry {} appears twice; the first copy was kept",
            f.id
        )));
    }
    let mut copied = Vec::new();
    for chunk in fresh.chunks(64) {
        let batch: Vec<NewEntry<'_>> = chunk
            .iter()
            .map(|f| NewEntry {
                source: &f.source,
                text: &f.text,
                modulation: &f.modulation,
                key: &f.key,
            })
            .collect();
        let outcomes = bank.append_batch(&batch)?;
        for (f, outcome) in chunk.iter().zip(outcomes) {
            match outcome {
                AppendOutcome::Stored(new_id) => copied.push((f.id, new_id)),
                AppendOutcome::Duplicate(kept) => dropped.push(record(format!(
                    "entry {} has the same text as the copied entry {kept}",
                    f.id
                ))),
            }
        }
    }
    Ok(copied)
}
