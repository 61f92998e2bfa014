//! Where checkpoint tensors come from: a GGUF file or Hugging Face safetensors
//! shards, behind one trait so the model builders do not care which.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Result, WeightError};
use crate::quantized::QuantizedMatrix;

/// A named collection of checkpoint tensors, dequantised to f32 on request.
pub trait WeightSource {
    /// The file (or directory) the tensors come from, for error messages.
    fn path(&self) -> &Path;
    /// Row-major shape of a tensor, if present.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// Loads one tensor as row-major f32.
    fn load(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)>;
    /// All tensor names.
    fn names(&self) -> Vec<String>;
    /// A 2-D tensor as the file keeps it in blocks, where it does
    /// (rows in the order [`WeightSource::load`] gives them).
    fn quantized(&self, name: &str) -> Result<Option<QuantizedMatrix>> {
        let _ = name;
        Ok(None)
    }

    /// Loads a tensor and checks it has the expected shape.
    fn load_checked(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let (shape, data) = self.load(name)?;
        if shape != expected {
            return Err(WeightError::ShapeMismatch {
                path: self.path().to_path_buf(),
                name: name.to_string(),
                expected: expected.to_vec(),
                found: shape,
            });
        }
        Ok(data)
    }
}

/// Builds frozen parameters from a [`WeightSource`], checking every shape.
#[derive(Clone)]
pub struct ParamLoader<'a> {
    source: &'a dyn WeightSource,
    device: Device,
    scope: Scope,
}

impl<'a> ParamLoader<'a> {
    /// A loader that places tensors on `device`.
    pub fn new(source: &'a dyn WeightSource, device: &Device) -> Self {
        Self {
            source,
            device: device.clone(),
            scope: Scope::default(),
        }
    }

    /// The same loader, its names read under `part` (as candle's
    /// `vb.pp("layers")`): `w.pp("model.layers").pp(3).matrix("x", ..)`
    /// reads `model.layers.3.x`.
    pub fn pp(&self, part: impl std::fmt::Display) -> Self {
        Self {
            scope: self.scope.pp(part),
            ..self.clone()
        }
    }

    /// The underlying source.
    pub fn source(&self) -> &dyn WeightSource {
        self.source
    }

    /// Whether the checkpoint holds `name`.
    pub fn has(&self, name: &str) -> bool {
        self.source.shape(&self.scope.name(name)).is_some()
    }

    /// A frozen 1-D parameter.
    pub fn vector(&self, name: &str, len: usize) -> Result<Param<Tensor<1>>> {
        let data = self.source.load_checked(&self.scope.name(name), &[len])?;
        Ok(frozen(Tensor::from_data(
            TensorData::new(data, [len]),
            &self.device,
        )))
    }

    /// A frozen 2-D parameter stored in the checkpoint as `[rows, cols]`.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Param<Tensor<2>>> {
        let data = self
            .source
            .load_checked(&self.scope.name(name), &[rows, cols])?;
        Ok(frozen(Tensor::from_data(
            TensorData::new(data, [rows, cols]),
            &self.device,
        )))
    }

    /// A frozen Linear weight: the checkpoint has PyTorch's `[out, in]`,
    /// Burn's `Linear` wants `[in, out]`, so it is transposed here.
    pub fn linear_weight(&self, name: &str, d_in: usize, d_out: usize) -> Result<Param<Tensor<2>>> {
        let data = self
            .source
            .load_checked(&self.scope.name(name), &[d_out, d_in])?;
        Ok(frozen(transpose(data, d_out, d_in, &self.device)))
    }

    /// A Linear weight `[out, in]` as the file keeps it in blocks, where it
    /// does, its shape checked.
    pub fn quantized_linear(
        &self,
        name: &str,
        d_in: usize,
        d_out: usize,
    ) -> Result<Option<QuantizedMatrix>> {
        let Some(q) = self.source.quantized(&self.scope.name(name))? else {
            return Ok(None);
        };
        if q.dims() != [d_out, d_in] {
            return Err(WeightError::ShapeMismatch {
                path: self.source.path().to_path_buf(),
                name: self.scope.name(name),
                expected: vec![d_out, d_in],
                found: q.dims().to_vec(),
            });
        }
        Ok(Some(q))
    }

    /// A Linear weight whose `[out, in]` rows are permuted by `row_map` first
    /// (row `i` of the result is row `row_map[i]` of the checkpoint).
    pub fn linear_weight_permuted(
        &self,
        name: &str,
        d_in: usize,
        d_out: usize,
        row_map: &[usize],
    ) -> Result<Param<Tensor<2>>> {
        let data = self
            .source
            .load_checked(&self.scope.name(name), &[d_out, d_in])?;
        let mut permuted = vec![0f32; data.len()];
        for (i, &src) in row_map.iter().enumerate() {
            permuted[i * d_in..(i + 1) * d_in].copy_from_slice(&data[src * d_in..(src + 1) * d_in]);
        }
        Ok(frozen(transpose(permuted, d_out, d_in, &self.device)))
    }
}

/// A dotted checkpoint path, built a part at a time (as candle's
/// `vb.pp(...)`): `Scope::default().pp("encoder.layer").pp(2).name("output.dense")`
/// is `encoder.layer.2.output.dense`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope(String);

impl Scope {
    /// The path one part deeper.
    pub fn pp(&self, part: impl std::fmt::Display) -> Self {
        match self.0.is_empty() {
            true => Scope(part.to_string()),
            false => Scope(format!("{}.{part}", self.0)),
        }
    }

    /// The full name of `leaf` under this path.
    pub fn name(&self, leaf: &str) -> String {
        self.pp(leaf).0
    }
}

fn transpose(data: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    let mut t = vec![0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = data[r * cols + c];
        }
    }
    Tensor::from_data(TensorData::new(t, [cols, rows]), device)
}

/// Wraps a tensor as a parameter that never requires gradients.
pub fn frozen<const D: usize>(tensor: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(tensor).set_require_grad(false)
}

/// Tensors from one or more Hugging Face `.safetensors` files (memory-mapped).
pub struct SafetensorsSource {
    path: PathBuf,
    shards: Vec<(PathBuf, Mmap)>,
    index: BTreeMap<String, usize>,
}

impl SafetensorsSource {
    /// Opens every `*.safetensors` file in a directory, or a single file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| WeightError::io(&path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            v.sort();
            v
        } else {
            vec![path.clone()]
        };
        if files.is_empty() {
            return Err(WeightError::malformed(
                &path,
                "safetensors",
                "no *.safetensors file in this directory",
            ));
        }
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for f in files {
            let file = File::open(&f).map_err(|e| WeightError::io(&f, e))?;
            // SAFETY: read-only mapping of a file we only read.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| WeightError::io(&f, e))?;
            let st = SafeTensors::deserialize(&mmap)
                .map_err(|e| WeightError::malformed(&f, "safetensors", e.to_string()))?;
            for name in st.names() {
                index.insert(name.to_string(), shards.len());
            }
            shards.push((f, mmap));
        }
        Ok(Self {
            path,
            shards,
            index,
        })
    }

    fn view<T>(
        &self,
        name: &str,
        f: impl FnOnce(&Path, safetensors::tensor::TensorView<'_>) -> Result<T>,
    ) -> Result<T> {
        let shard = *self
            .index
            .get(name)
            .ok_or_else(|| WeightError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        let (file, mmap) = &self.shards[shard];
        let st = SafeTensors::deserialize(mmap)
            .map_err(|e| WeightError::malformed(file, "safetensors", e.to_string()))?;
        let view = st
            .tensor(name)
            .map_err(|e| WeightError::malformed(file, "safetensors", e.to_string()))?;
        f(file, view)
    }
}

impl WeightSource for SafetensorsSource {
    fn path(&self) -> &Path {
        &self.path
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.view(name, |_, v| Ok(v.shape().to_vec())).ok()
    }
    fn load(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        self.view(name, |file, v| {
            let bytes = v.data();
            let data: Vec<f32> = match v.dtype() {
                Dtype::F32 => bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                Dtype::F16 => bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => bytes
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::I64 => bytes
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
                Dtype::I32 => bytes
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
                other => {
                    return Err(WeightError::UnsupportedDType {
                        path: file.to_path_buf(),
                        name: name.to_string(),
                        dtype: format!("{other:?}"),
                    })
                }
            };
            Ok((v.shape().to_vec(), data))
        })
    }
    fn names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Scope;

    #[test]
    fn scopes_join_their_parts_with_dots() {
        let layer = Scope::default().pp("encoder.layer").pp(2);
        assert_eq!(layer.name("output.dense"), "encoder.layer.2.output.dense");
        assert_eq!(
            layer.pp("attention").name("self.query"),
            "encoder.layer.2.attention.self.query"
        );
        assert_eq!(Scope::default().name("wte.weight"), "wte.weight");
    }
}
