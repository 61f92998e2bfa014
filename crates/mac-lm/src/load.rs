//! Loading a [`BaseLm`] (and its tokenizer, as a [`LoadedLm`]) from a GGUF
//! file or a Hugging Face directory: configurations from the file's
//! metadata or `config.json`, weights by name through a [`WeightSource`]
//! (GGUF names mapped to Hugging Face's, llama.cpp's query/key permutation
//! undone).

use std::path::Path;

use burn::tensor::Device;

use crate::error::{LmError, Result};
use crate::gguf::GgufFile;
use crate::gpt2::{Gpt2, Gpt2Config};
use crate::llama::{Llama, LlamaConfig};
use crate::model::{BaseLm, LoadedLm};
use crate::tokenizer::{chat_template_of, tokenizer_config_beside, TextTokenizer};
use mac_kernels::quantized::{Activations, QuantizedMatrix};
use mac_kernels::weights::{ParamLoader, SafetensorsSource, WeightSource};
use mac_kernels::WeightError;

/// Maps Hugging Face Llama tensor names to GGUF names and undoes llama.cpp's
/// permutation of the query/key rows.
struct GgufLlamaNames<'a> {
    gguf: &'a GgufFile,
    n_heads: usize,
    n_kv_heads: usize,
}

impl GgufLlamaNames<'_> {
    fn to_gguf(name: &str) -> Option<String> {
        let fixed = match name {
            "model.embed_tokens.weight" => Some("token_embd.weight"),
            "model.norm.weight" => Some("output_norm.weight"),
            "lm_head.weight" => Some("output.weight"),
            _ => None,
        };
        if let Some(f) = fixed {
            return Some(f.to_string());
        }
        let rest = name.strip_prefix("model.layers.")?;
        let (layer, tail) = rest.split_once('.')?;
        let mapped = match tail {
            "input_layernorm.weight" => "attn_norm.weight",
            "self_attn.q_proj.weight" => "attn_q.weight",
            "self_attn.k_proj.weight" => "attn_k.weight",
            "self_attn.v_proj.weight" => "attn_v.weight",
            "self_attn.o_proj.weight" => "attn_output.weight",
            "post_attention_layernorm.weight" => "ffn_norm.weight",
            "mlp.gate_proj.weight" => "ffn_gate.weight",
            "mlp.up_proj.weight" => "ffn_up.weight",
            "mlp.down_proj.weight" => "ffn_down.weight",
            _ => return None,
        };
        Some(format!("blk.{layer}.{mapped}"))
    }

    /// The GGUF name of `name`, and the heads whose rows llama.cpp permuted
    /// (queries and keys).
    fn mapped(&self, name: &str) -> mac_kernels::Result<(String, Option<usize>)> {
        let gguf_name = Self::to_gguf(name).ok_or_else(|| WeightError::MissingTensor {
            path: self.gguf.path().to_path_buf(),
            name: name.to_string(),
        })?;
        let heads = if name.ends_with("q_proj.weight") {
            Some(self.n_heads)
        } else if name.ends_with("k_proj.weight") {
            Some(self.n_kv_heads)
        } else {
            None
        };
        Ok((gguf_name, heads))
    }
}

/// The row order that undoes llama.cpp's rotary permutation of
/// `[n_heads * head_dim, cols]` rows: row `i` of the Hugging Face layout is
/// row `order[i]` of the file.
fn unpermuted_order(n_heads: usize, rows: usize) -> Vec<usize> {
    let hd = rows / n_heads;
    let half = hd / 2;
    let mut order = vec![0; rows];
    for h in 0..n_heads {
        for j in 0..2 {
            for i in 0..half {
                order[h * hd + j * half + i] = h * hd + 2 * i + j;
            }
        }
    }
    order
}

/// Undoes llama.cpp's rotary permutation of `[n_heads * head_dim, cols]` rows.
fn unpermute_rows(data: &[f32], n_heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    unpermuted_order(n_heads, rows)
        .iter()
        .flat_map(|&src| &data[src * cols..(src + 1) * cols])
        .copied()
        .collect()
}

impl WeightSource for GgufLlamaNames<'_> {
    fn path(&self) -> &Path {
        self.gguf.path()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        Self::to_gguf(name).and_then(|n| WeightSource::shape(self.gguf, &n))
    }
    fn load(&self, name: &str) -> mac_kernels::Result<(Vec<usize>, Vec<f32>)> {
        let (gguf_name, heads) = self.mapped(name)?;
        let (shape, data) = self.gguf.dequantize(&gguf_name)?;
        match (heads, shape.as_slice()) {
            (Some(n), &[rows, cols]) if rows % (2 * n) == 0 => {
                Ok((shape.clone(), unpermute_rows(&data, n, rows, cols)))
            }
            (Some(_), _) => Err(WeightError::ShapeMismatch {
                path: self.gguf.path().to_path_buf(),
                name: gguf_name,
                expected: vec![],
                found: shape,
            }),
            (None, _) => Ok((shape, data)),
        }
    }
    fn names(&self) -> Vec<String> {
        self.gguf.names()
    }
    fn quantized(&self, name: &str) -> mac_kernels::Result<Option<QuantizedMatrix>> {
        let (gguf_name, heads) = self.mapped(name)?;
        let Some(q) = self.gguf.quantized(&gguf_name)? else {
            return Ok(None);
        };
        Ok(Some(match heads {
            // `load` has refused a shape the heads do not divide.
            Some(n) if q.dims()[0].is_multiple_of(2 * n) => {
                q.with_rows(&unpermuted_order(n, q.dims()[0]))
            }
            Some(_) => return Ok(None),
            None => q,
        }))
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| LmError::malformed(path, "config.json", e.to_string()))
}

fn config_from_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    v: serde_json::Value,
) -> Result<T> {
    serde_json::from_value(v).map_err(|e| {
        let msg = e.to_string();
        // serde says "missing field `x`": surface the key itself.
        let key = msg.split('`').nth(1).unwrap_or("(see reason)").to_string();
        LmError::Config {
            path: path.to_path_buf(),
            key,
            reason: msg,
        }
    })
}

fn first_id(v: Option<&serde_json::Value>) -> Option<u32> {
    match v? {
        serde_json::Value::Number(n) => n.as_u64().map(|x| x as u32),
        serde_json::Value::Array(a) => a.first().and_then(|x| x.as_u64()).map(|x| x as u32),
        _ => None,
    }
}

impl LlamaConfig {
    /// The configuration a Llama-architecture GGUF file's metadata gives
    /// (`{arch}.block_count`, `.embedding_length`, ...), without reading any
    /// tensor.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let path = gguf.path();
        let arch = gguf.require_str("general.architecture")?;
        let key = |k: &str| format!("{arch}.{k}");
        let n_heads = gguf.require_u64(&key("attention.head_count"))? as usize;
        let hidden = gguf.require_u64(&key("embedding_length"))? as usize;
        let vocab = match gguf.get(&key("vocab_size")).and_then(|v| v.as_u64()) {
            Some(v) => v as usize,
            None => gguf
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .ok_or_else(|| LmError::Config {
                    path: path.to_path_buf(),
                    key: key("vocab_size"),
                    reason: "absent, and no tokenizer.ggml.tokens to count".into(),
                })?,
        };
        Ok(LlamaConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: gguf.require_u64(&key("feed_forward_length"))? as usize,
            num_hidden_layers: gguf.require_u64(&key("block_count"))? as usize,
            num_attention_heads: n_heads,
            num_key_value_heads: Some(
                gguf.get(&key("attention.head_count_kv"))
                    .and_then(|v| v.as_u64())
                    .map(|v| v as usize)
                    .unwrap_or(n_heads),
            ),
            head_dim: gguf
                .get(&key("rope.dimension_count"))
                .and_then(|v| v.as_u64())
                .map(|v| v as usize),
            rms_norm_eps: gguf.require_f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: gguf.get(&key("rope.freq_base")).and_then(|v| v.as_f64()),
            rope_parameters: None,
            max_position_embeddings: gguf
                .get(&key("context_length"))
                .and_then(|v| v.as_u64())
                .unwrap_or(2048) as usize,
            tie_word_embeddings: !gguf.tensors.contains_key("output.weight"),
        })
    }
}

impl LoadedLm {
    /// Loads a GGUF file or a Hugging Face model directory
    /// (`config.json` + `*.safetensors` + `tokenizer.json`) onto `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            Self::load_hf_dir(path, device)
        } else {
            Self::load_gguf(path, device)
        }
    }

    /// Loads a Llama-architecture GGUF file (model and tokenizer).
    ///
    /// Decode steps multiply the file's blocks with f32 activations, or
    /// with sixteen- or eight-bit ones where `MAC_DECODE_ACTIVATIONS` is
    /// `q16` or `q8` (see
    /// [`BaseLm::set_decode_activations`]).
    pub fn load_gguf(path: &Path, device: &Device) -> Result<Self> {
        let gguf = GgufFile::open(path)?;
        let mut model = BaseLm::from_gguf(&gguf, device)?;
        model.set_decode_activations(decode_activations(path)?);
        let tokenizer = TextTokenizer::from_gguf(&gguf)?;
        Ok(Self { model, tokenizer })
    }

    /// Loads a Hugging Face directory: `config.json`, `*.safetensors`, `tokenizer.json`.
    pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<Self> {
        let (model, json) = BaseLm::from_hf_dir(dir, device)?;
        let config_path = dir.join("config.json");
        let eos = first_id(json.get("eos_token_id")).ok_or_else(|| LmError::Config {
            path: config_path.clone(),
            key: "eos_token_id".into(),
            reason: "absent".into(),
        })?;
        let bos = first_id(json.get("bos_token_id"));
        // tokenizer_config.json, read once: BOS and the chat template.
        let tokenizer_json = dir.join("tokenizer.json");
        let config = tokenizer_config_beside(&tokenizer_json)?;
        let add_bos = matches!(model, BaseLm::Llama(_))
            && config
                .as_ref()
                .and_then(|v| v.get("add_bos_token").and_then(|b| b.as_bool()))
                .unwrap_or(false);
        let tokenizer = TextTokenizer::with_template(
            tokenizer_json,
            eos,
            bos,
            add_bos,
            chat_template_of(config.as_ref()),
        )?;
        Ok(Self { model, tokenizer })
    }
}

impl BaseLm {
    /// Loads only the model from a GGUF file or a Hugging Face directory.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            Ok(Self::from_hf_dir(path, device)?.0)
        } else {
            Self::from_gguf(&GgufFile::open(path)?, device)
        }
    }

    /// Builds a Llama model from an opened GGUF file.
    pub fn from_gguf(gguf: &GgufFile, device: &Device) -> Result<Self> {
        let path = gguf.path();
        let arch = gguf.require_str("general.architecture")?.to_string();
        if arch != "llama" {
            return Err(LmError::Config {
                path: path.to_path_buf(),
                key: "general.architecture".into(),
                reason: format!("`{arch}` is not supported in GGUF (llama is)"),
            });
        }
        let config = LlamaConfig::from_gguf(gguf)?;
        let n_heads = config.num_attention_heads;
        let source = GgufLlamaNames {
            gguf,
            n_heads,
            n_kv_heads: config.kv_heads(),
        };
        let model = Llama::load(config, &ParamLoader::new(&source, device))?;
        Ok(BaseLm::Llama(model))
    }

    /// Builds a model from a Hugging Face directory (`config.json` + `*.safetensors`);
    /// also returns the parsed `config.json`.
    pub fn from_hf_dir(dir: &Path, device: &Device) -> Result<(Self, serde_json::Value)> {
        let config_path = dir.join("config.json");
        let json = read_json(&config_path)?;
        let model_type = json
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| LmError::Config {
                path: config_path.clone(),
                key: "model_type".into(),
                reason: "absent or not a string".into(),
            })?
            .to_string();
        let source = SafetensorsSource::open(dir)?;
        let loader = ParamLoader::new(&source, device);
        let model = match model_type.as_str() {
            "llama" | "mistral" => {
                let config = config_from_json::<LlamaConfig>(&config_path, json.clone())?;
                config.validate(&config_path)?;
                BaseLm::Llama(Llama::load(config, &loader)?)
            }
            "gpt2" => {
                let config = config_from_json::<Gpt2Config>(&config_path, json.clone())?;
                config.validate(&config_path)?;
                BaseLm::Gpt2(Gpt2::load(config, &loader)?)
            }
            other => {
                return Err(LmError::Config {
                    path: config_path,
                    key: "model_type".into(),
                    reason: format!("`{other}` is not supported (llama, gpt2 are)"),
                })
            }
        };
        Ok((model, json))
    }
}

/// The environment variable naming what decode steps keep activations as.
pub const DECODE_ACTIVATIONS_VAR: &str = "MAC_DECODE_ACTIVATIONS";

/// What [`DECODE_ACTIVATIONS_VAR`] asks for: `f32` (also when unset),
/// `q16` or `q8`; anything else is an error naming the variable (and `path`, the
/// model it was read for).
fn decode_activations(path: &Path) -> Result<Activations> {
    activations_named(std::env::var(DECODE_ACTIVATIONS_VAR).ok().as_deref(), path)
}

/// [`decode_activations`] of the variable's value `value`.
fn activations_named(value: Option<&str>, path: &Path) -> Result<Activations> {
    match value {
        None | Some("") | Some("f32") => Ok(Activations::F32),
        Some("q8") => Ok(Activations::Q8),
        Some("q16") => Ok(Activations::Q16),
        Some(other) => Err(LmError::Config {
            path: path.to_path_buf(),
            key: DECODE_ACTIVATIONS_VAR.into(),
            reason: format!("`{other}` is not f32, q16 or q8"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_activations_are_f32_unless_q8_is_named() {
        let path = Path::new("model.gguf");
        let named = |v| activations_named(v, path).unwrap();
        assert_eq!(named(None), Activations::F32);
        assert_eq!(named(Some("f32")), Activations::F32);
        assert_eq!(named(Some("q8")), Activations::Q8);
        assert_eq!(named(Some("q16")), Activations::Q16);
        let err = activations_named(Some("int4"), path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.gguf") && err.contains(DECODE_ACTIVATIONS_VAR),
            "{err}"
        );
        assert!(err.contains("int4"), "{err}");
    }
}
