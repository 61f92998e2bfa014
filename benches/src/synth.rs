//! Models of the real shapes with random weights, for timing where the real
//! weights cannot travel (the GPU machine takes 64 MiB; SmolLM2-135M and
//! MiniLM are 189 MB).
//!
//! [`prepare`] writes, from the real models on this machine, what a model
//! directory needs besides its weights: `config.json`, the tokenizer files,
//! and `tensors.json` (every tensor's name, dtype and shape). [`synthesize`]
//! turns such a directory into a Hugging Face model directory with a random
//! `model.safetensors` of those shapes, which mac-rs and `transformers` both
//! load.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mac_lm::gguf::GgufFile;
use mac_lm::llama::LlamaConfig;
use mac_lm::TextTokenizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

/// The base LM's directory inside a prepared pack or a synthesized model set.
pub const LM_DIR: &str = "smollm2";
/// The encoder backbone's directory inside a prepared pack or model set.
pub const ENCODER_DIR: &str = "minilm";
/// The file naming every tensor of a prepared model.
const TENSORS_FILE: &str = "tensors.json";

/// One tensor of a model: its name, dtype (`F32` or `I64`) and shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// The name in `model.safetensors`.
    pub name: String,
    /// `F32` or `I64`.
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
}

/// The tensors of a Hugging Face `LlamaForCausalLM` of this configuration.
pub fn llama_tensors(c: &LlamaConfig) -> Vec<TensorSpec> {
    let f32 = |name: String, shape: Vec<usize>| TensorSpec {
        name,
        dtype: "F32".into(),
        shape,
    };
    let (d, hd, ffn) = (c.hidden_size, c.head_size(), c.intermediate_size);
    let (q, kv) = (c.num_attention_heads * hd, c.kv_heads() * hd);
    let mut out = vec![f32(
        "model.embed_tokens.weight".into(),
        vec![c.vocab_size, d],
    )];
    for i in 0..c.num_hidden_layers {
        let layer = |tail: &str, shape: Vec<usize>| f32(format!("model.layers.{i}.{tail}"), shape);
        out.extend([
            layer("input_layernorm.weight", vec![d]),
            layer("self_attn.q_proj.weight", vec![q, d]),
            layer("self_attn.k_proj.weight", vec![kv, d]),
            layer("self_attn.v_proj.weight", vec![kv, d]),
            layer("self_attn.o_proj.weight", vec![d, q]),
            layer("post_attention_layernorm.weight", vec![d]),
            layer("mlp.gate_proj.weight", vec![ffn, d]),
            layer("mlp.up_proj.weight", vec![ffn, d]),
            layer("mlp.down_proj.weight", vec![d, ffn]),
        ]);
    }
    out.push(f32("model.norm.weight".into(), vec![d]));
    if !c.tie_word_embeddings {
        out.push(f32("lm_head.weight".into(), vec![c.vocab_size, d]));
    }
    out
}

/// The tensors named in a safetensors file's header.
pub fn safetensors_tensors(path: &Path) -> Result<Vec<TensorSpec>> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out: Vec<TensorSpec> = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| TensorSpec {
            name,
            dtype: format!("{:?}", info.dtype),
            shape: info.shape.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes the base LM's and the encoder's configuration, tokenizer files and
/// tensor list into `out/smollm2` and `out/minilm`, from the GGUF file `lm`
/// and the Hugging Face encoder directory `encoder`.
pub fn prepare(lm: &Path, encoder: &Path, out: &Path) -> Result<()> {
    let lm_out = out.join(LM_DIR);
    fs::create_dir_all(&lm_out)?;
    let gguf = GgufFile::open(lm)?;
    let config = LlamaConfig::from_gguf(&gguf)?;
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    let mut json = serde_json::to_value(&config)?;
    let obj = json
        .as_object_mut()
        .expect("a struct serialises to an object");
    obj.insert("model_type".into(), "llama".into());
    obj.insert(
        "architectures".into(),
        serde_json::json!(["LlamaForCausalLM"]),
    );
    obj.insert("eos_token_id".into(), tokenizer.eos_id.into());
    if let Some(bos) = tokenizer.bos_id {
        obj.insert("bos_token_id".into(), bos.into());
    }
    obj.insert("pad_token_id".into(), tokenizer.pad_id.into());
    obj.insert("torch_dtype".into(), "float32".into());
    write_json(&lm_out.join("config.json"), &json)?;
    let token = |id: Option<u32>| id.and_then(|i| tokenizer.inner().id_to_token(i));
    write_json(
        &lm_out.join("tokenizer_config.json"),
        &serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": tokenizer.add_bos,
            "eos_token": token(Some(tokenizer.eos_id)),
            "bos_token": token(tokenizer.bos_id),
            "model_max_length": config.max_position_embeddings,
        }),
    )?;
    let tokenizer_json = tokenizer
        .inner()
        .to_string(false)
        .map_err(|e| anyhow::anyhow!("serialising the tokenizer of {}: {e}", lm.display()))?;
    fs::write(lm_out.join("tokenizer.json"), tokenizer_json)?;
    write_json(&lm_out.join(TENSORS_FILE), &llama_tensors(&config))?;

    let enc_out = out.join(ENCODER_DIR);
    fs::create_dir_all(&enc_out)?;
    for name in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ] {
        let from = encoder.join(name);
        if from.exists() {
            fs::copy(&from, enc_out.join(name))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    let tensors = safetensors_tensors(&encoder.join("model.safetensors"))?;
    write_json(&enc_out.join(TENSORS_FILE), &tensors)
}

/// The value a random tensor of this name starts from: ones for norm
/// scales, zeros for biases, N(0, 0.02) otherwise (as `transformers`
/// initialises these models).
fn init_kind(name: &str) -> Init {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".bias") || lower.ends_with(".beta") {
        Init::Zeros
    } else if (lower.contains("norm") && lower.ends_with(".weight")) || lower.ends_with(".gamma") {
        Init::Ones
    } else {
        Init::Normal
    }
}

enum Init {
    Zeros,
    Ones,
    Normal,
}

fn random_tensor(spec: &TensorSpec, rng: &mut ChaCha8Rng) -> Result<(Dtype, Vec<u8>)> {
    let count: usize = spec.shape.iter().product();
    match spec.dtype.as_str() {
        "F32" => {
            let kind = init_kind(&spec.name);
            let mut bytes = Vec::with_capacity(count * 4);
            for _ in 0..count {
                let v: f32 = match kind {
                    Init::Zeros => 0.0,
                    Init::Ones => 1.0,
                    Init::Normal => {
                        // Box-Muller: one standard normal from two uniforms.
                        let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
                        let u2: f32 = rng.random();
                        0.02 * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
                    }
                };
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            Ok((Dtype::F32, bytes))
        }
        // Index buffers (BERT's position_ids): 0, 1, 2, ... along the last axis.
        "I64" => {
            let last = spec.shape.last().copied().unwrap_or(1).max(1);
            let bytes = (0..count)
                .flat_map(|i| ((i % last) as i64).to_le_bytes())
                .collect();
            Ok((Dtype::I64, bytes))
        }
        other => bail!(
            "tensor {}: dtype {other} is not supported (F32, I64)",
            spec.name
        ),
    }
}

/// Turns the prepared directory `prepared` (config, tokenizer files,
/// `tensors.json`) into a model directory `out` with a random
/// `model.safetensors` (seeded: the same seed gives the same weights).
pub fn synthesize_model(prepared: &Path, out: &Path, seed: u64) -> Result<()> {
    fs::create_dir_all(out)?;
    for entry in fs::read_dir(prepared)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default();
        if path.is_file() && name != TENSORS_FILE {
            fs::copy(&path, out.join(name))?;
        }
    }
    let list = prepared.join(TENSORS_FILE);
    let specs: Vec<TensorSpec> = serde_json::from_slice(
        &fs::read(&list).with_context(|| format!("reading {}", list.display()))?,
    )
    .with_context(|| format!("parsing {}", list.display()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = specs
        .iter()
        .map(|s| random_tensor(s, &mut rng))
        .collect::<Result<Vec<_>>>()?;
    let views = specs
        .iter()
        .zip(&data)
        .map(|(s, (dtype, bytes))| {
            TensorView::new(*dtype, s.shape.clone(), bytes)
                .map(|v| (s.name.clone(), v))
                .map_err(|e| anyhow::anyhow!("tensor {}: {e}", s.name))
        })
        .collect::<Result<Vec<_>>>()?;
    let file = out.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &file)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display()))
}

/// Synthesizes both models of a prepared pack into `out/smollm2` and
/// `out/minilm`; returns their paths.
pub fn synthesize(prepared: &Path, out: &Path) -> Result<(PathBuf, PathBuf)> {
    let (lm, encoder) = (out.join(LM_DIR), out.join(ENCODER_DIR));
    synthesize_model(&prepared.join(LM_DIR), &lm, 1)?;
    synthesize_model(&prepared.join(ENCODER_DIR), &encoder, 2)?;
    Ok((lm, encoder))
}
