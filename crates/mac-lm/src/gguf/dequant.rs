//! Dequantisation of the stored types to f32.

use half::{bf16, f16};

use super::{GgmlType, GgufFile};
use mac_kernels::quantized::{BlockFormat, QuantizedMatrix};
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
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 => {
                // Decoded by the same code the quantized products use: one
                // row of every value.
                let numel = info.shape.iter().product();
                self.blocks(name, info, 1, numel)?.dequantize()
            }
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
        match (block_format(info.dtype), info.shape.as_slice()) {
            (Some(_), &[rows, cols]) => Ok(Some(self.blocks(name, info, rows, cols)?)),
            _ => Ok(None),
        }
    }

    /// Tensor `name`'s blocks as a `[rows, cols]` matrix.
    fn blocks(
        &self,
        name: &str,
        info: &super::GgufTensorInfo,
        rows: usize,
        cols: usize,
    ) -> Result<QuantizedMatrix> {
        let bytes = &self.mmap[info.offset..info.offset + info.byte_len];
        block_format(info.dtype)
            .and_then(|format| QuantizedMatrix::from_blocks(format, rows, cols, bytes))
            .ok_or_else(|| {
                WeightError::malformed(
                    &self.path,
                    "GGUF",
                    format!(
                        "tensor `{name}` [{rows}, {cols}]: rows are not whole {:?} blocks",
                        info.dtype
                    ),
                )
            })
    }
}

/// The block format of a quantized GGUF type.
fn block_format(dtype: GgmlType) -> Option<BlockFormat> {
    match dtype {
        GgmlType::Q8_0 => Some(BlockFormat::Q8_0),
        GgmlType::Q4_0 => Some(BlockFormat::Q4_0),
        GgmlType::Q4_1 => Some(BlockFormat::Q4_1),
        _ => None,
    }
}
