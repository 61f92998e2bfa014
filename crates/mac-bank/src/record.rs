//! The record format of a segment file.
//!
//! ```text
//! magic    4 bytes  b"MACE" (values f32) or b"MACH" (values f16, format 4)
//! body_len u32 LE
//! body     body_len bytes:
//!            id u64 | time_ms u64 | sha256 [32] | n u32 | d u32 |
//!            source_len u32 | text_len u32 | source | text |
//!            n*d values LE (f32 or f16, as the magic says) |
//!            key_dim f32 LE (format 2; key_dim is the bank's, in MANIFEST)
//! crc32    u32 LE of body
//! ```

use sha2::{Digest, Sha256};

pub(crate) use crate::precision::floats;
use crate::precision::Precision;

/// Fixed part of the body before the variable-length fields.
pub(crate) const FIXED_BODY: usize = 8 + 8 + 32 + 4 + 4 + 4 + 4;
/// Bytes around the body: magic + length before, crc after.
pub(crate) const FRAME: usize = 4 + 4 + 4;

/// sha256 of a document's text: the identity used for deduplication.
pub fn content_hash(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The fixed header fields of a record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Header {
    pub id: u64,
    pub time_ms: u64,
    pub hash: [u8; 32],
    pub n: u32,
    pub d: u32,
    pub source_len: u32,
    pub text_len: u32,
}

impl Header {
    pub fn parse(body: &[u8]) -> Option<Self> {
        if body.len() < FIXED_BODY {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(body[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(body[o..o + 4].try_into().unwrap());
        Some(Header {
            id: u64_at(0),
            time_ms: u64_at(8),
            hash: body[16..48].try_into().unwrap(),
            n: u32_at(48),
            d: u32_at(52),
            source_len: u32_at(56),
            text_len: u32_at(60),
        })
    }

    /// Floats of the modulation this header describes (`n · d`; the
    /// product fits: the body length was checked against it at open).
    pub fn modulation_len(&self) -> usize {
        self.n as usize * self.d as usize
    }

    /// Body length these fields imply, with values of `precision` and a
    /// key of `key_dim` floats (`None` when it overflows: the fields come
    /// from a file).
    pub fn body_len(&self, key_dim: usize, precision: Precision) -> Option<u64> {
        let values = (self.n as u64 * self.d as u64).checked_mul(precision.bytes() as u64)?;
        let floats = values.checked_add((key_dim as u64).checked_mul(4)?)?;
        (FIXED_BODY as u64 + self.source_len as u64 + self.text_len as u64).checked_add(floats)
    }
}

/// The variable-length fields of a record body.
pub(crate) struct Fields<'b> {
    pub source: &'b [u8],
    pub text: &'b [u8],
    pub modulation: &'b [u8],
    pub key: &'b [u8],
}

impl Header {
    /// The fields of `body` (this header's record) with modulations of
    /// `numel` values of `precision`; the key is the rest. The lengths must
    /// already have been checked against the body ([`Self::body_len`]).
    pub fn fields<'b>(&self, body: &'b [u8], numel: usize, precision: Precision) -> Fields<'b> {
        let t0 = FIXED_BODY + self.source_len as usize;
        let m0 = t0 + self.text_len as usize;
        let k0 = m0 + precision.bytes() * numel;
        Fields {
            source: &body[FIXED_BODY..t0],
            text: &body[t0..m0],
            modulation: &body[m0..k0],
            key: &body[k0..],
        }
    }
}

/// Body length of a record with these field sizes, if it fits the format's
/// u32 length field (checked arithmetic: sizes come from files and inputs).
pub(crate) fn body_len(
    source_len: usize,
    text_len: usize,
    numel: usize,
    key_dim: usize,
    precision: Precision,
) -> Option<u32> {
    let floats = numel
        .checked_mul(precision.bytes())?
        .checked_add(key_dim.checked_mul(4)?)?;
    let total = FIXED_BODY
        .checked_add(source_len)?
        .checked_add(text_len)?
        .checked_add(floats)?;
    u32::try_from(total).ok()
}

/// Encodes one record (frame included), its values in `precision`.
pub(crate) fn encode(
    h: &Header,
    source: &str,
    text: &str,
    modulation: &[f32],
    key: &[f32],
    precision: Precision,
) -> Vec<u8> {
    let body_len = h
        .body_len(key.len(), precision)
        .expect("record sizes are checked against the u32 frame before encoding")
        as usize;
    let mut out = Vec::with_capacity(body_len + FRAME);
    out.extend_from_slice(precision.magic());
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    let body_start = out.len();
    out.extend_from_slice(&h.id.to_le_bytes());
    out.extend_from_slice(&h.time_ms.to_le_bytes());
    out.extend_from_slice(&h.hash);
    out.extend_from_slice(&h.n.to_le_bytes());
    out.extend_from_slice(&h.d.to_le_bytes());
    out.extend_from_slice(&h.source_len.to_le_bytes());
    out.extend_from_slice(&h.text_len.to_le_bytes());
    out.extend_from_slice(source.as_bytes());
    out.extend_from_slice(text.as_bytes());
    precision.encode(modulation, &mut out);
    Precision::F32.encode(key, &mut out);
    let crc = crc32fast::hash(&out[body_start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lengths_are_checked_against_the_u32_frame() {
        let f32 = Precision::F32;
        assert_eq!(
            body_len(3, 5, 2, 1, f32),
            Some((FIXED_BODY + 8 + 12) as u32)
        );
        assert_eq!(
            body_len(3, 5, 2, 1, Precision::F16),
            Some((FIXED_BODY + 8 + 4 + 4) as u32)
        );
        let limit = u32::MAX as usize;
        assert_eq!(body_len(limit - FIXED_BODY, 0, 0, 0, f32), Some(u32::MAX));
        assert_eq!(body_len(limit - FIXED_BODY + 1, 0, 0, 0, f32), None);
        assert_eq!(body_len(0, 0, 1 << 30, 0, f32), None, "4 GiB of floats");
        assert_eq!(body_len(0, 0, 1 << 31, 0, Precision::F16), None);
        assert_eq!(
            body_len(0, 0, usize::MAX, 1, f32),
            None,
            "overflowing counts"
        );
        assert_eq!(body_len(usize::MAX, usize::MAX, 0, 0, f32), None);
    }

    #[test]
    fn half_floats_round_trip_to_three_digits_and_name_their_magic() {
        let values = [0.0, 1.0, -2.5, 1e-3, 123.456, 65504.0];
        let mut bytes = Vec::new();
        Precision::F16.encode(&values, &mut bytes);
        assert_eq!(bytes.len(), 2 * values.len());
        let back = Precision::F16.decode(&bytes);
        for (v, b) in values.iter().zip(&back) {
            assert!((v - b).abs() <= v.abs() * 1e-3, "{v} came back as {b}");
        }
        assert!(Precision::F16.holds(&values));
        assert!(!Precision::F16.holds(&[70000.0]), "beyond half's range");
        assert!(Precision::F32.holds(&[f32::MAX]));
        assert_eq!(Precision::of_magic(b"MACH...."), Some(Precision::F16));
        assert_eq!(Precision::of_magic(b"MACE"), Some(Precision::F32));
        assert_eq!(Precision::of_magic(b"MAC"), None);
    }
}
