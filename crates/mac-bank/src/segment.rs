//! Segment files: the committed records of one segment, scanned and checked
//! frame by frame when a bank is opened.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{io, BankError, Result};
use crate::manifest::Manifest;
use crate::record::{Header, FIXED_BODY, FRAME};

/// Where one record lies in its segment, and what its header says.
pub(crate) struct ScannedRecord {
    pub(crate) id: u64,
    pub(crate) time_ms: u64,
    pub(crate) hash: [u8; 32],
    /// Byte offset of the record in the segment.
    pub(crate) offset: u64,
    /// Record length including the frame.
    pub(crate) len: u64,
}

/// The records in the first `committed` bytes of the segment `file` (at
/// `path`): each frame's magic, its header's lengths against the bank's
/// shape, the record inside the committed length, and ids increasing from
/// `previous` (the last id of the segments before) and below the
/// manifest's next id. Any violation is an error naming the file and the
/// record's byte offset.
pub(crate) fn scan(
    file: &File,
    path: &Path,
    committed: u64,
    manifest: &Manifest,
    mut previous: Option<u64>,
) -> Result<Vec<ScannedRecord>> {
    let shape = manifest.shape;
    let mut records = Vec::new();
    let mut offset = 0u64;
    while offset < committed {
        let corrupt = |reason: String| BankError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("record at byte {offset}: {reason}"),
        };
        if committed - offset < (FRAME + FIXED_BODY) as u64 {
            return Err(corrupt("shorter than a record header".into()));
        }
        let mut head = vec![0u8; 8 + FIXED_BODY];
        file.read_exact_at(&mut head, offset)
            .map_err(io(path, "read record header"))?;
        if &head[..4] != shape.precision.magic() {
            return Err(corrupt(format!(
                "bad magic (not a record of {} values)",
                shape.precision.name()
            )));
        }
        let body_len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as u64;
        let h = Header::parse(&head[8..]).ok_or_else(|| corrupt("short header".into()))?;
        if h.body_len(shape.key_dim, shape.precision) != Some(body_len)
            || !shape.allows_rows(h.n as usize)
            || h.d as usize != shape.d_mod
        {
            return Err(corrupt(format!(
                "header lengths are inconsistent (body {body_len}, n {}, d {})",
                h.n, h.d
            )));
        }
        let len = body_len + FRAME as u64;
        if offset + len > committed {
            return Err(corrupt("runs past the committed length".into()));
        }
        if previous.is_some_and(|p| h.id <= p) || h.id >= manifest.next_id {
            return Err(corrupt(format!(
                "entry id {} out of order (after {previous:?}; next id {})",
                h.id, manifest.next_id
            )));
        }
        previous = Some(h.id);
        records.push(ScannedRecord {
            id: h.id,
            time_ms: h.time_ms,
            hash: h.hash,
            offset,
            len,
        });
        offset += len;
    }
    Ok(records)
}
