//! Dequantisation of the stored types to f32.

use half::{bf16, f16};

use super::{GgmlType, GgufFile};
use mac_kernels::quantized::{BlockFormat, QuantizedMatrix, BLOCK};
use mac_kernels::{Result, WeightError};

impl GgufFile {
    /// Where tensor `name` lies and how it is stored.
    fn tensor(&self, name: &str) -> Result<&super::GgufTensorInfo> {
        self.tensors
            .get(name)
            .ok_or_else(|| WeightError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// Dequantises one tensor to f32 (row-major, shape in `info.shape`).
    pub fn dequantize(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self.tensor(name)?;
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
            GgmlType::Q8_0 => dequant_blocks(bytes, BlockFormat::Q8_0),
            GgmlType::Q4_0 => dequant_blocks(bytes, BlockFormat::Q4_0),
            GgmlType::Q4_1 => dequant_blocks(bytes, BlockFormat::Q4_1),
            GgmlType::Other(_) => {
                return Err(WeightError::UnsupportedDType {
                    path: self.path.clone(),
                    name: name.to_string(),
                    dtype: info.dtype.name(),
                })
            }
        };
        Ok((info.shape.clone(), values))
    }
}

impl GgufFile {
    /// A 2-D tensor kept in its blocks (Q8_0, Q4_0, Q4_1), rows as in
    /// [`GgufFile::dequantize`]; `None` for any other type or rank.
    pub fn quantized(&self, name: &str) -> Result<Option<QuantizedMatrix>> {
        let info = self.tensor(name)?;
        let format = match info.dtype {
            GgmlType::Q8_0 => BlockFormat::Q8_0,
            GgmlType::Q4_0 => BlockFormat::Q4_0,
            GgmlType::Q4_1 => BlockFormat::Q4_1,
            _ => return Ok(None),
        };
        let &[rows, cols] = info.shape.as_slice() else {
            return Ok(None);
        };
        let bytes = &self.mmap[info.offset..info.offset + info.byte_len];
        QuantizedMatrix::from_blocks(format, rows, cols, bytes)
            .map(Some)
            .ok_or_else(|| {
                WeightError::malformed(
                    &self.path,
                    "GGUF",
                    format!(
                        "tensor `{name}` [{rows}, {cols}]: rows are not whole {format:?} blocks"
                    ),
                )
            })
    }
}

fn dequant_blocks(bytes: &[u8], format: BlockFormat) -> Vec<f32> {
    let block_bytes = format.block_bytes();
    let n_blocks = bytes.len() / block_bytes;
    let mut out = vec![0f32; n_blocks * BLOCK];
    let mut w = [0f32; BLOCK];
    for (b, o) in bytes
        .chunks_exact(block_bytes)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        format.dequantize_block(b, &mut w);
        o.copy_from_slice(&w);
    }
    out
}
