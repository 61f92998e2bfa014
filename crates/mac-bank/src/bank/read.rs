//! Reading committed entries: one at a time, in chunks, and verifying
//! every checksum.

use super::*;
use crate::record::floats;

impl MemoryBank {
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

    /// A text field of entry `m`, an error naming its segment if it is not
    /// UTF-8.
    fn utf8(&self, m: &EntryMeta, bytes: &[u8]) -> Result<String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| BankError::Corrupt {
            path: self.dir.join(&self.manifest.segments[m.segment].file),
            reason: format!("entry {} holds invalid UTF-8", m.id),
        })
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
        let precision = self.shape().precision;
        let f = h.fields(&body, h.modulation_len(), precision);
        Ok(StoredEntry {
            id: h.id,
            time_ms: h.time_ms,
            source: self.utf8(m, f.source)?,
            text: self.utf8(m, f.text)?,
            modulation: precision.decode(f.modulation),
            key: floats(f.key),
        })
    }

    /// Modulations of entries `start..start + len`, `[len, n, d]` row-major
    /// (each entry's own rows when they vary), and their keys.
    pub fn modulations(&self, start: usize, len: usize) -> Result<Chunk> {
        let end = (start + len).min(self.len());
        let (numel, key_dim) = (self.shape().numel(), self.shape().key_dim);
        let capacity = if self.shape().rows_vary {
            0
        } else {
            (end - start) * numel
        };
        let mut data = Vec::with_capacity(capacity);
        let mut keys = Vec::with_capacity((end - start) * key_dim);
        let (mut ids, mut rows) = (Vec::with_capacity(end - start), Vec::new());
        let mut texts = Vec::with_capacity(end - start);
        for m in &self.entries[start..end] {
            let body = self.read_body(m)?;
            let h = Header::parse(&body).expect("checked at open");
            let precision = self.shape().precision;
            let f = h.fields(&body, h.modulation_len(), precision);
            data.extend(precision.decode(f.modulation));
            keys.extend(floats(f.key));
            texts.push(self.utf8(m, f.text)?);
            ids.push(m.id);
            rows.push(h.n as usize);
        }
        Ok(Chunk {
            start,
            ids,
            rows,
            data,
            keys,
            texts,
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
