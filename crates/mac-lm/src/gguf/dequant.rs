//! Dequantisation of the stored types to f32.

use half::{bf16, f16};

use super::{GgmlType, GgufFile};
use crate::error::{LmError, Result};

impl GgufFile {
    /// Dequantises one tensor to f32 (row-major, shape in `info.shape`).
    pub fn dequantize(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| LmError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        let bytes = &self.mmap[info.offset..info.offset + info.byte_len];
        let values = match info.dtype {
            GgmlType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            GgmlType::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            GgmlType::Bf16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            GgmlType::Q8_0 => dequant_blocks(bytes, 34, |b, out| {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                for (o, &q) in out.iter_mut().zip(&b[2..34]) {
                    *o = (q as i8) as f32 * d;
                }
            }),
            GgmlType::Q4_0 => dequant_blocks(bytes, 18, |b, out| {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                for (j, &q) in b[2..18].iter().enumerate() {
                    out[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
                    out[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }),
            GgmlType::Q4_1 => dequant_blocks(bytes, 20, |b, out| {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
                for (j, &q) in b[4..20].iter().enumerate() {
                    out[j] = (q & 0x0f) as f32 * d + m;
                    out[j + 16] = (q >> 4) as f32 * d + m;
                }
            }),
            GgmlType::Other(_) => {
                return Err(LmError::UnsupportedDType {
                    path: self.path.clone(),
                    name: name.to_string(),
                    dtype: info.dtype.name(),
                })
            }
        };
        Ok((info.shape.clone(), values))
    }
}

fn dequant_blocks(bytes: &[u8], block_bytes: usize, f: impl Fn(&[u8], &mut [f32])) -> Vec<f32> {
    let n_blocks = bytes.len() / block_bytes;
    let mut out = vec![0f32; n_blocks * 32];
    for (b, o) in bytes
        .chunks_exact(block_bytes)
        .zip(out.chunks_exact_mut(32))
    {
        f(b, o);
    }
    out
}
