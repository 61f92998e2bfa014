//! How a bank stores its values: f32, or half floats (format 4), and the
//! record magic that names each.

use std::str::FromStr;

use half::f16;
use serde::{Deserialize, Serialize};

/// How a bank stores its modulation values: 4-byte floats, or (format 4)
/// 2-byte IEEE half floats, read back widened to f32 (about 3 significant
/// digits; values beyond ±65,504 become infinite and are refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// IEEE single precision, 4 bytes a value.
    #[default]
    F32,
    /// IEEE half precision, 2 bytes a value.
    F16,
}

impl Precision {
    /// Bytes a value takes on disk.
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
        }
    }

    /// Its name on the command line and in reports (`f32`, `f16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }

    /// The precision named `name` (`f32` or `f16`).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::F32, Self::F16]
            .into_iter()
            .find(|p| p.name() == name)
    }

    pub(crate) fn is_f32(&self) -> bool {
        *self == Self::F32
    }
}

impl FromStr for Precision {
    type Err = String;

    /// `f32` or `f16`.
    fn from_str(name: &str) -> Result<Self, String> {
        Self::parse(name).ok_or_else(|| format!("`{name}` is not f32 or f16"))
    }
}

/// The magic of a record whose values are f32.
pub(crate) const MAGIC: &[u8; 4] = b"MACE";
/// The magic of a record whose values are f16.
pub(crate) const MAGIC_F16: &[u8; 4] = b"MACH";

impl Precision {
    /// The magic that opens a record of this precision.
    pub(crate) fn magic(self) -> &'static [u8; 4] {
        match self {
            Self::F32 => MAGIC,
            Self::F16 => MAGIC_F16,
        }
    }

    /// The precision a record's magic names, if it is a record's.
    pub(crate) fn of_magic(bytes: &[u8]) -> Option<Self> {
        [Self::F32, Self::F16]
            .into_iter()
            .find(|p| bytes.get(..4) == Some(p.magic().as_slice()))
    }

    /// Values decoded from their little-endian bytes.
    pub(crate) fn decode(self, b: &[u8]) -> Vec<f32> {
        match self {
            Self::F32 => floats(b),
            Self::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }

    /// Appends `values` as little-endian bytes of this precision.
    pub(crate) fn encode(self, values: &[f32], out: &mut Vec<u8>) {
        match self {
            Self::F32 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Self::F16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        }
    }

    /// Whether every value survives this precision as a finite number.
    pub(crate) fn holds(self, values: &[f32]) -> bool {
        match self {
            Self::F32 => true,
            Self::F16 => values.iter().all(|v| f16::from_f32(*v).is_finite()),
        }
    }
}

/// Little-endian f32s.
pub(crate) fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
