//! The bank's manifest: its format, the shape of its entries, its
//! segments and how much of each is committed. Validated before any file it
//! names is opened; replaced atomically (temporary file, fsync, rename,
//! directory fsync).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{io, BankError, Result};
use crate::precision::Precision;
use crate::record;
use crate::FORMAT_VERSION;

pub(crate) const MANIFEST: &str = "MANIFEST";
pub(crate) const MANIFEST_TMP: &str = "MANIFEST.tmp";
pub(crate) const FORMAT_NAME: &str = "mac-bank-bank";
/// Shape of every entry in a bank: a modulation of `n` tokens of width `d`,
/// and a retrieval key of `key_dim` floats (none when 0). With `rows_vary`
/// each entry holds its own number of rows, from 1 to `n_tokens` (one per
/// token of its document, for a memory that keeps one row per token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankShape {
    /// Virtual tokens per document (with `rows_vary`: the most an entry holds).
    pub n_tokens: usize,
    /// Modulation width.
    pub d_mod: usize,
    /// Width of each document's retrieval key (a frozen sentence embedding
    /// the aggregator's similarity prior compares questions with); 0 = the
    /// bank stores no keys (every format-1 bank).
    #[serde(default)]
    pub key_dim: usize,
    /// Whether entries hold from 1 to `n_tokens` rows each (format 3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rows_vary: bool,
    /// How each modulation value is stored (keys are always f32).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

impl BankShape {
    /// Floats per modulation (with `rows_vary`: the most an entry holds).
    pub fn numel(&self) -> usize {
        self.n_tokens * self.d_mod
    }

    /// Whether an entry of this bank may hold `rows` rows.
    pub fn allows_rows(&self, rows: usize) -> bool {
        if self.rows_vary {
            (1..=self.n_tokens).contains(&rows)
        } else {
            rows == self.n_tokens
        }
    }

    /// The rows of a modulation of `len` floats, when this bank can store it.
    pub fn rows_of(&self, len: usize) -> Option<usize> {
        (self.d_mod > 0 && len.is_multiple_of(self.d_mod))
            .then(|| len / self.d_mod)
            .filter(|&rows| self.allows_rows(rows))
    }

    /// The format version a bank of this shape is written in: 4 when its
    /// values are half floats, 3 when rows vary (a build that reads less
    /// then refuses it), else 2.
    pub(crate) fn format_version(&self) -> u32 {
        if self.precision != Precision::F32 {
            4
        } else if self.rows_vary {
            3
        } else {
            2
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SegmentInfo {
    pub(crate) file: String,
    pub(crate) committed_bytes: u64,
    pub(crate) entries: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) format: String,
    pub(crate) version: u32,
    pub(crate) shape: BankShape,
    pub(crate) next_id: u64,
    pub(crate) segments: Vec<SegmentInfo>,
    /// Free-form description of what produced the modulations (checkpoint, encoder).
    #[serde(default)]
    pub(crate) producer: String,
}

/// A manifest write that failed, and whether the new manifest had already
/// replaced the old one (then the disk holds the commit, and so must memory).
pub(crate) enum ManifestWrite {
    NotReplaced(BankError),
    ReplacedNotSynced(BankError),
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync directory"))
}

pub(crate) fn segment_name(i: usize) -> String {
    format!("seg-{i:06}.bin")
}

impl Manifest {
    /// Everything a manifest says, checked before any file it names is
    /// touched: the format, a shape whose records fit the format, and
    /// segments named as the bank names them (so no name can lead outside
    /// the bank's directory).
    pub(crate) fn validate(&self, path: &Path) -> Result<()> {
        let corrupt = |reason: String| BankError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        if self.format != FORMAT_NAME {
            return Err(corrupt(format!(
                "format is `{}`, not `{FORMAT_NAME}`",
                self.format
            )));
        }
        if self.version > FORMAT_VERSION {
            return Err(BankError::Version {
                path: path.to_path_buf(),
                found: self.version,
                supported: FORMAT_VERSION,
            });
        }
        let shape = self.shape;
        if shape.rows_vary && self.version < 3 {
            return Err(corrupt(format!(
                "entries of varying rows in a format-{} bank (they came with format 3)",
                self.version
            )));
        }
        if shape.precision != Precision::F32 && self.version < 4 {
            return Err(corrupt(format!(
                "{} values in a format-{} bank (they came with format 4)",
                shape.precision.name(),
                self.version
            )));
        }
        let numel = shape.n_tokens.checked_mul(shape.d_mod);
        if shape.n_tokens == 0
            || shape.d_mod == 0
            || numel
                .and_then(|n| record::body_len(0, 0, n, shape.key_dim, shape.precision))
                .is_none()
        {
            return Err(corrupt(format!(
                "shape {shape:?} is empty or makes records over the format's 4 GiB limit"
            )));
        }
        if self.segments.is_empty() {
            return Err(corrupt("lists no segment (a bank always has one)".into()));
        }
        let mut total = 0u64;
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.file != segment_name(i) {
                return Err(corrupt(format!(
                    "segment {i} is named `{}`; the bank names it `{}`",
                    seg.file,
                    segment_name(i)
                )));
            }
            total = total.saturating_add(seg.entries);
        }
        if total > self.next_id {
            return Err(corrupt(format!(
                "{total} entries but the next id is {}",
                self.next_id
            )));
        }
        Ok(())
    }

    /// Reads and validates the manifest at `path`.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(io(path, "read"))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| BankError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("not a valid manifest: {e}"),
        })?;
        manifest.validate(path)?;
        Ok(manifest)
    }

    /// Writes the manifest to a temporary file in `dir`, fsyncs it, renames
    /// it over MANIFEST and fsyncs the directory; says whether a failure
    /// came before or after the rename.
    pub(crate) fn commit(&self, dir: &Path) -> std::result::Result<(), ManifestWrite> {
        let not_replaced = ManifestWrite::NotReplaced;
        let tmp = dir.join(MANIFEST_TMP);
        let json = serde_json::to_vec_pretty(self).expect("manifest serialises");
        let mut f = File::create(&tmp).map_err(|e| not_replaced(io(&tmp, "create")(e)))?;
        f.write_all(&json)
            .map_err(|e| not_replaced(io(&tmp, "write")(e)))?;
        f.sync_all()
            .map_err(|e| not_replaced(io(&tmp, "fsync")(e)))?;
        drop(f);
        let dst = dir.join(MANIFEST);
        fs::rename(&tmp, &dst).map_err(|e| not_replaced(io(&dst, "rename manifest")(e)))?;
        sync_dir(dir).map_err(ManifestWrite::ReplacedNotSynced)
    }
}
