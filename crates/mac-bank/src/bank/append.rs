//! The writer's path: checking entries, appending them durably, starting
//! segments.

use super::*;

impl MemoryBank {
    fn check(&self, e: &NewEntry<'_>) -> Result<()> {
        if e.text.trim().is_empty() {
            return Err(BankError::Invalid(format!(
                "document from `{}` is empty",
                e.source
            )));
        }
        if self.shape().rows_of(e.modulation.len()).is_none() {
            let stores = if self.shape().rows_vary {
                format!(
                    "1 to {} rows of {}",
                    self.shape().n_tokens,
                    self.shape().d_mod
                )
            } else {
                self.shape().numel().to_string()
            };
            return Err(BankError::Invalid(format!(
                "modulation has {} values, the bank stores {stores} ({:?})",
                e.modulation.len(),
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
        if !shape.precision.holds(e.modulation) {
            return Err(BankError::Invalid(format!(
                "modulation of `{}` holds a value beyond what {} stores",
                e.source,
                shape.precision.name()
            )));
        }
        if record::body_len(
            e.source.len(),
            e.text.len(),
            e.modulation.len(),
            shape.key_dim,
            shape.precision,
        )
        .is_none()
        {
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
                // Whole rows, checked above.
                n: (e.modulation.len() / shape.d_mod) as u32,
                d: shape.d_mod as u32,
                source_len: e.source.len() as u32,
                text_len: e.text.len() as u32,
            };
            let rec = record::encode(&h, e.source, e.text, e.modulation, e.key, shape.precision);
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

    pub(super) fn start_segment(&mut self) -> Result<()> {
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
}
