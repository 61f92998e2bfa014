//! A reader for GGUF (llama.cpp) model files: metadata, tensor directory and
//! dequantisation of F32, F16, BF16, Q8_0, Q4_0 and Q4_1 tensors to f32.
//!
//! Format reference: the GGUF specification in the ggml repository
//! (`docs/gguf.md`). Dimensions in GGUF are listed fastest-varying first, so a
//! tensor with dims `[ne0, ne1]` is a row-major `[ne1, ne0]` array; this reader
//! returns shapes in the row-major (PyTorch) order.

mod dequant;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{LmError, Result};
use mac_kernels::weights::WeightSource;

const GGUF_MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value from a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// F32 or F64.
    F64(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array of values.
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            GgufValue::U64(v) => Some(*v),
            GgufValue::I64(v) if *v >= 0 => Some(*v as u64),
            _ => None,
        }
    }
    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            GgufValue::F64(v) => Some(*v),
            GgufValue::U64(v) => Some(*v as f64),
            GgufValue::I64(v) => Some(*v as f64),
            _ => None,
        }
    }
    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as an array, if it is one.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The ggml storage types this reader knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    Bf16,
    /// Blocks of 32: f16 scale + 32 x i8.
    Q8_0,
    /// Blocks of 32: f16 scale + 16 bytes of 4-bit values (offset 8).
    Q4_0,
    /// Blocks of 32: f16 scale, f16 minimum + 16 bytes of 4-bit values.
    Q4_1,
    /// Any other type id (recognised by the parser, not dequantisable here).
    Other(u32),
}

impl GgmlType {
    fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::Bf16,
            other => GgmlType::Other(other),
        }
    }

    /// (elements per block, bytes per block), or `None` for unsupported types.
    fn block_layout(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::Bf16 => Some((1, 2)),
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Other(_) => None,
        }
    }

    fn name(self) -> String {
        match self {
            GgmlType::Other(id) => format!("ggml type id {id}"),
            known => format!("{known:?}"),
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    /// Shape in row-major order (reversed GGUF dims).
    pub shape: Vec<usize>,
    /// Storage type.
    pub dtype: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    /// Size of the data in bytes (0 when the type is unsupported).
    pub byte_len: usize,
}

/// A parsed, memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    /// GGUF format version (2 or 3).
    pub version: u32,
    /// All metadata key/values.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor directory by name.
    pub tensors: BTreeMap<String, GgufTensorInfo>,
}

struct Cursor<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(LmError::malformed(
                self.path,
                "GGUF",
                format!(
                    "file is truncated: needed {n} bytes for {what} at offset {}, file has {}",
                    self.pos,
                    self.data.len()
                ),
            )),
        }
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn count(&mut self, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        // Every counted item takes at least one byte, so a count beyond the
        // remaining bytes is corruption, not a reason to allocate.
        if n > (self.data.len() - self.pos) as u64 {
            return Err(LmError::malformed(
                self.path,
                "GGUF",
                format!(
                    "file is truncated or corrupt: {what} = {n} exceeds the {} bytes left",
                    self.data.len() - self.pos
                ),
            ));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            LmError::malformed(self.path, "GGUF", format!("{what} is not valid UTF-8"))
        })
    }
    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U64(self.u8(what)? as u64),
            1 => GgufValue::I64(self.u8(what)? as i8 as i64),
            2 => GgufValue::U64(self.u16(what)? as u64),
            3 => GgufValue::I64(self.u16(what)? as i16 as i64),
            4 => GgufValue::U64(self.u32(what)? as u64),
            5 => GgufValue::I64(self.u32(what)? as i32 as i64),
            6 => GgufValue::F64(f32::from_bits(self.u32(what)?) as f64),
            7 => GgufValue::Bool(self.u8(what)? != 0),
            8 => GgufValue::Str(self.string(what)?),
            9 => {
                if depth > 4 {
                    return Err(LmError::malformed(
                        self.path,
                        "GGUF",
                        format!("{what}: arrays nested too deeply"),
                    ));
                }
                let item_ty = self.u32(what)?;
                let n = self.count(what)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_ty, what, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(self.u64(what)? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64(what)?)),
            other => {
                return Err(LmError::malformed(
                    self.path,
                    "GGUF",
                    format!("{what}: unknown metadata value type {other}"),
                ))
            }
        })
    }
}

impl GgufFile {
    /// Opens and parses a GGUF file (the tensor data stays memory-mapped).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| LmError::io(&path, e))?;
        // SAFETY: the file is opened read-only; the mapping is only read.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| LmError::io(&path, e))?;
        let (version, metadata, tensors) = Self::parse(&path, &mmap)?;
        Ok(GgufFile {
            path,
            mmap,
            version,
            metadata,
            tensors,
        })
    }

    #[allow(clippy::type_complexity)]
    fn parse(
        path: &Path,
        data: &[u8],
    ) -> Result<(
        u32,
        BTreeMap<String, GgufValue>,
        BTreeMap<String, GgufTensorInfo>,
    )> {
        let mut c = Cursor { path, data, pos: 0 };
        let magic = c.take(4, "magic")?;
        if magic != GGUF_MAGIC {
            return Err(LmError::malformed(
                path,
                "GGUF",
                format!("bad magic {magic:?}: not a GGUF file"),
            ));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(LmError::malformed(
                path,
                "GGUF",
                format!("unsupported GGUF version {version} (2 and 3 are supported)"),
            ));
        }
        let n_tensors = c.count("tensor count")?;
        let n_kv = c.count("metadata count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32("metadata type")?;
            let value = c.value(ty, &key, 0)?;
            metadata.insert(key, value);
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(GgufValue::as_u64)
            .unwrap_or(DEFAULT_ALIGNMENT)
            .max(1);
        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32("tensor rank")? as usize;
            if n_dims > 8 {
                return Err(LmError::malformed(
                    path,
                    "GGUF",
                    format!("tensor `{name}` has rank {n_dims}"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64("tensor dim")? as usize);
            }
            let dtype = GgmlType::from_id(c.u32("tensor type")?);
            let offset = c.u64("tensor offset")?;
            raw.push((name, dims, dtype, offset));
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let mut tensors = BTreeMap::new();
        for (name, dims, dtype, offset) in raw {
            let info = tensor_info(path, data.len(), data_start, &name, &dims, dtype, offset)?;
            tensors.insert(name, info);
        }
        Ok((version, metadata, tensors))
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// A required unsigned-integer metadata value.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        self.get(key)
            .and_then(GgufValue::as_u64)
            .ok_or_else(|| LmError::Config {
                path: self.path.clone(),
                key: key.to_string(),
                reason: "absent or not an unsigned integer".into(),
            })
    }

    /// A required float metadata value.
    pub fn require_f64(&self, key: &str) -> Result<f64> {
        self.get(key)
            .and_then(GgufValue::as_f64)
            .ok_or_else(|| LmError::Config {
                path: self.path.clone(),
                key: key.to_string(),
                reason: "absent or not a number".into(),
            })
    }

    /// A required string metadata value.
    pub fn require_str(&self, key: &str) -> Result<&str> {
        self.get(key)
            .and_then(GgufValue::as_str)
            .ok_or_else(|| LmError::Config {
                path: self.path.clone(),
                key: key.to_string(),
                reason: "absent or not a string".into(),
            })
    }
}

impl WeightSource for GgufFile {
    fn path(&self) -> &Path {
        &self.path
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|t| t.shape.clone())
    }
    fn load(&self, name: &str) -> mac_kernels::Result<(Vec<usize>, Vec<f32>)> {
        self.dequantize(name)
    }
    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
    fn quantized(
        &self,
        name: &str,
    ) -> mac_kernels::Result<Option<mac_kernels::quantized::QuantizedMatrix>> {
        GgufFile::quantized(self, name)
    }
}

/// Where tensor `name` (GGUF dims `dims`, type `dtype`, at `offset` after
/// the data start) lies in a file of `file_len` bytes, checked to fit.
fn tensor_info(
    path: &Path,
    file_len: usize,
    data_start: u64,
    name: &str,
    dims: &[usize],
    dtype: GgmlType,
    offset: u64,
) -> Result<GgufTensorInfo> {
    let too_large = || LmError::malformed(path, "GGUF", format!("tensor `{name}` is too large"));
    let numel = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_large)?;
    let byte_len = match dtype.block_layout() {
        Some((block, bytes)) => {
            if numel % block != 0 {
                return Err(LmError::malformed(
                    path,
                    "GGUF",
                    format!("tensor `{name}`: {numel} elements is not a multiple of the {block}-element block of {dtype:?}"),
                ));
            }
            (numel / block).checked_mul(bytes).ok_or_else(too_large)?
        }
        None => 0,
    };
    let in_file = data_start.checked_add(offset).filter(|start| {
        start
            .checked_add(byte_len as u64)
            .is_some_and(|end| end <= file_len as u64)
    });
    let Some(start) = in_file else {
        return Err(LmError::malformed(
            path,
            "GGUF",
            format!(
                "file is truncated or corrupt: tensor `{name}` at offset {offset} needs {byte_len} bytes after the data start {data_start}, but the file has {file_len}"
            ),
        ));
    };
    Ok(GgufTensorInfo {
        shape: dims.iter().rev().copied().collect(),
        dtype,
        offset: start as usize,
        byte_len,
    })
}
