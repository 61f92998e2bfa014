//! [`BaseLm`]: one frozen causal LM of either architecture, loaded from a GGUF
//! file or a Hugging Face directory, with forward, loss, greedy generation and
//! perplexity.

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::batch::{Padding, PassContext, TokenBatch};
use crate::cache::KvCache;
use crate::error::{LmError, Result};
use crate::gguf::GgufFile;
use crate::gpt2::{Gpt2, Gpt2Config};
use crate::llama::{Llama, LlamaConfig};
use crate::prefix::{KvLayout, PrefixKv};
use crate::tokenizer::TextTokenizer;
use crate::weights::{ParamLoader, SafetensorsSource, WeightSource};

/// A frozen decoder of one of the supported architectures.
#[derive(Module, Debug)]
pub enum BaseLm {
    /// Llama family (SmolLM2, LLaMA-2, ...).
    Llama(Llama),
    /// GPT-2 family.
    Gpt2(Gpt2),
}

/// A loaded model with its tokenizer.
#[derive(Debug, Clone)]
pub struct LoadedLm {
    /// The model.
    pub model: BaseLm,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
}

/// Options of greedy decoding.
#[derive(Debug, Clone, Copy)]
pub struct GenerateOptions {
    /// Most tokens to generate per row.
    pub max_new_tokens: usize,
    /// Stop a row when it produces EOS (the EOS id is not returned).
    pub stop_at_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 16,
            stop_at_eos: true,
        }
    }
}

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
}

/// Undoes llama.cpp's rotary permutation of `[n_heads * head_dim, cols]` rows.
fn unpermute_rows(data: &[f32], n_heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let hd = rows / n_heads;
    let half = hd / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_heads {
        for j in 0..2 {
            for i in 0..half {
                let hf = h * hd + j * half + i;
                let gg = h * hd + 2 * i + j;
                out[hf * cols..(hf + 1) * cols].copy_from_slice(&data[gg * cols..(gg + 1) * cols]);
            }
        }
    }
    out
}

impl WeightSource for GgufLlamaNames<'_> {
    fn path(&self) -> &Path {
        self.gguf.path()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        Self::to_gguf(name).and_then(|n| WeightSource::shape(self.gguf, &n))
    }
    fn load(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let gguf_name = Self::to_gguf(name).ok_or_else(|| LmError::MissingTensor {
            path: self.gguf.path().to_path_buf(),
            name: name.to_string(),
        })?;
        let (shape, data) = self.gguf.dequantize(&gguf_name)?;
        let heads = if name.ends_with("q_proj.weight") {
            Some(self.n_heads)
        } else if name.ends_with("k_proj.weight") {
            Some(self.n_kv_heads)
        } else {
            None
        };
        match (heads, shape.as_slice()) {
            (Some(n), &[rows, cols]) if rows % (2 * n) == 0 => {
                Ok((shape.clone(), unpermute_rows(&data, n, rows, cols)))
            }
            (Some(_), _) => Err(LmError::ShapeMismatch {
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
    pub fn load_gguf(path: &Path, device: &Device) -> Result<Self> {
        let gguf = GgufFile::open(path)?;
        let model = BaseLm::from_gguf(&gguf, device)?;
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
        let add_bos = matches!(model, BaseLm::Llama(_))
            && read_json(&dir.join("tokenizer_config.json"))
                .ok()
                .and_then(|v| v.get("add_bos_token").and_then(|b| b.as_bool()))
                .unwrap_or(false);
        let tokenizer = TextTokenizer::from_file(dir.join("tokenizer.json"), eos, bos, add_bos)?;
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
        let config = LlamaConfig {
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
        };
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

    /// Shapes a prefix must have.
    pub fn kv_layout(&self) -> KvLayout {
        match self {
            BaseLm::Llama(m) => m.kv_layout(),
            BaseLm::Gpt2(m) => m.kv_layout(),
        }
    }

    /// Longest sequence (prompt + generation) the model supports.
    pub fn max_positions(&self) -> usize {
        match self {
            BaseLm::Llama(m) => m.config().max_position_embeddings,
            BaseLm::Gpt2(m) => m.config().n_positions,
        }
    }

    /// Width of the hidden state (what [`Self::logits`] reads).
    pub fn hidden_width(&self) -> usize {
        match self {
            BaseLm::Llama(m) => m.embed_tokens.dims()[1],
            BaseLm::Gpt2(m) => m.wte.dims()[1],
        }
    }

    /// The input token embeddings `[B, T, d]` of `ids` (no position
    /// information; the LM's own lookup table).
    pub fn token_embeddings(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let table = match self {
            BaseLm::Llama(m) => m.embed_tokens.val(),
            BaseLm::Gpt2(m) => m.wte.val(),
        };
        burn::tensor::module::embedding(table, ids)
    }

    /// A prefix of *virtual tokens*: hidden vectors `[B, P, d]` that every
    /// layer turns into keys and values with its own norm and projections,
    /// as if a token with that hidden state stood at position 0 in every
    /// layer. Differentiable with respect to `hidden` (the weights stay frozen).
    pub fn virtual_token_prefix(&self, hidden: Tensor<3>) -> Result<PrefixKv> {
        self.check_hidden_width(&hidden, "virtual tokens")?;
        Ok(match self {
            BaseLm::Llama(m) => m.virtual_token_kv(hidden),
            BaseLm::Gpt2(m) => m.virtual_token_kv(hidden),
        })
    }

    /// A prefix made by running input embeddings `[B, P, d]` (*soft-prompt
    /// tokens*) through the frozen decoder as a causal context placed just
    /// before the real tokens: every layer's prefix keys and values are the
    /// ones the LM itself computes for that context, so the LM reads the
    /// prefix the way it reads text. Differentiable with respect to
    /// `embeds`. Needs rotary positions (Llama): GPT-2's learned absolute
    /// positions have no slot before position 0.
    pub fn soft_prompt_prefix(&self, embeds: Tensor<3>) -> Result<PrefixKv> {
        self.check_hidden_width(&embeds, "soft-prompt tokens")?;
        match self {
            BaseLm::Llama(m) => Ok(m.soft_prompt_kv(embeds)),
            BaseLm::Gpt2(_) => Err(LmError::Input(
                "soft-prompt prefixes need rotary positions (Llama); GPT-2's learned \
                 absolute positions have no slot before position 0"
                    .into(),
            )),
        }
    }

    /// The residual stream `[B, T, d]` after the first `n_layers` layers
    /// (no final norm; `0` = the input embeddings, with GPT-2's positions).
    pub fn residual_stream(&self, batch: &TokenBatch, n_layers: usize) -> Result<Tensor<3>> {
        let total = self.kv_layout().n_layers;
        if n_layers > total {
            return Err(LmError::Input(format!(
                "asked for the residual stream after {n_layers} layers; the model has {total}"
            )));
        }
        self.run_layers(batch, None, None, n_layers)
    }

    /// An error naming `what` unless `x [B, P, d]` is the model's hidden width.
    fn check_hidden_width(&self, x: &Tensor<3>, what: &str) -> Result<()> {
        let d = x.dims()[2];
        if d != self.hidden_width() {
            return Err(LmError::Input(format!(
                "{what} are {d} wide, the model's hidden width is {}",
                self.hidden_width()
            )));
        }
        Ok(())
    }

    /// Device the weights live on.
    pub fn device(&self) -> Device {
        match self {
            BaseLm::Llama(m) => m.embed_tokens.val().device(),
            BaseLm::Gpt2(m) => m.wte.val().device(),
        }
    }

    fn n_heads(&self) -> usize {
        match self {
            BaseLm::Llama(m) => m.n_heads(),
            BaseLm::Gpt2(m) => m.n_heads(),
        }
    }

    /// Final hidden states `[B, T, d]` for a batch, optionally with a prefix and a cache
    /// (which is extended with the batch's keys and values).
    pub fn forward_hidden(
        &self,
        batch: &TokenBatch,
        prefix: Option<&PrefixKv>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor<3>> {
        let n_layers = self.kv_layout().n_layers;
        let x = self.run_layers(batch, prefix, cache, n_layers)?;
        Ok(match self {
            BaseLm::Llama(m) => m.norm.forward(x),
            BaseLm::Gpt2(m) => m.ln_f.forward(x),
        })
    }

    /// The residual stream after the first `n_layers` layers over a batch,
    /// with the checks and the pass context every pass needs.
    fn run_layers(
        &self,
        batch: &TokenBatch,
        prefix: Option<&PrefixKv>,
        cache: Option<&mut KvCache>,
        n_layers: usize,
    ) -> Result<Tensor<3>> {
        let device = self.device();
        if let Some(p) = prefix {
            p.validate(&self.kv_layout(), batch.batch_size())?;
        }
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        if past + batch.seq_len() > self.max_positions() {
            return Err(LmError::Input(format!(
                "{} positions exceed the model's limit of {}",
                past + batch.seq_len(),
                self.max_positions()
            )));
        }
        let mut cache = cache;
        let p = prefix.map(PrefixKv::len).unwrap_or(0);
        let ctx = PassContext::new(batch, p, self.n_heads(), cache.as_deref_mut(), &device)?;
        let ids = batch.ids_tensor(&device);
        Ok(match self {
            BaseLm::Llama(m) => m.residual(ids, &ctx, prefix, cache, n_layers),
            BaseLm::Gpt2(m) => m.residual(ids, &ctx, prefix, cache, n_layers),
        })
    }

    /// Vocabulary logits for hidden states.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        match self {
            BaseLm::Llama(m) => m.logits(hidden),
            BaseLm::Gpt2(m) => m.logits(hidden),
        }
    }

    /// Logits `[B, T, V]` for a batch.
    pub fn forward(&self, batch: &TokenBatch, prefix: Option<&PrefixKv>) -> Result<Tensor<3>> {
        Ok(self.logits(self.forward_hidden(batch, prefix, None)?))
    }

    /// Mean negative log-likelihood of `targets[b][t]` (the token that should
    /// follow position `t`) over positions where `weights[b][t] > 0`,
    /// weighted. Differentiable with respect to the prefix.
    pub fn weighted_nll(
        &self,
        batch: &TokenBatch,
        targets: &[Vec<u32>],
        weights: &[Vec<f32>],
        prefix: Option<&PrefixKv>,
    ) -> Result<Tensor<1>> {
        let (b, t) = (batch.batch_size(), batch.seq_len());
        if targets.len() != b
            || weights.len() != b
            || targets.iter().any(|r| r.len() != t)
            || weights.iter().any(|r| r.len() != t)
        {
            return Err(LmError::Input(
                "targets/weights must match the batch shape".into(),
            ));
        }
        let total: f32 = weights.iter().flatten().sum();
        if total <= 0.0 {
            return Err(LmError::Input("no position carries loss weight".into()));
        }
        let device = self.device();
        // Vocabulary logits only where the loss reads them: the answer
        // positions are a few of each row, and the [rows, V] logits and
        // their softmax are a large share of a step's memory traffic.
        let (mut rows, mut tgt, mut w) = (Vec::new(), Vec::new(), Vec::new());
        for (r, (trow, wrow)) in targets.iter().zip(weights).enumerate() {
            for (c, (&target, &weight)) in trow.iter().zip(wrow).enumerate() {
                if weight > 0.0 {
                    rows.push((r * t + c) as i64);
                    tgt.push(target as i64);
                    w.push(weight);
                }
            }
        }
        let n = rows.len();
        let hidden = self.forward_hidden(batch, prefix, None)?;
        let d = hidden.dims()[2];
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &device);
        let picked_hidden = hidden
            .reshape([b * t, d])
            .select(0, rows)
            .reshape([1, n, d]);
        let logits = self.logits(picked_hidden);
        let v = logits.dims()[2];
        let logp = log_softmax(logits.reshape([n, v]), 1);
        let tgt = Tensor::<2, Int>::from_data(TensorData::new(tgt, [n, 1]), &device);
        let picked = logp.gather(1, tgt).reshape([n]);
        let w = Tensor::<1>::from_data(TensorData::new(w, [n]), &device);
        Ok((picked * w).sum().neg() / total)
    }

    /// Greedy decoding with a KV cache; returns the new tokens of every prompt
    /// (without the EOS that stopped it).
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        prefix: Option<&PrefixKv>,
        pad_id: u32,
        eos_id: u32,
        opts: GenerateOptions,
    ) -> Result<Vec<Vec<u32>>> {
        if prompts.iter().any(Vec::is_empty) {
            return Err(LmError::Input(
                "cannot generate from an empty prompt".into(),
            ));
        }
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if longest + opts.max_new_tokens > self.max_positions() {
            return Err(LmError::Input(format!(
                "prompt of {longest} tokens + {} new tokens exceeds the model's {} positions",
                opts.max_new_tokens,
                self.max_positions()
            )));
        }
        let mut cache = KvCache::new();
        let mut batch = TokenBatch::padded(prompts, pad_id, Padding::Left)?;
        let b = prompts.len();
        let mut out = vec![Vec::new(); b];
        let mut done = vec![false; b];
        for _ in 0..opts.max_new_tokens {
            let hidden = self.forward_hidden(&batch, prefix, Some(&mut cache))?;
            let t = hidden.dims()[1];
            let last = hidden.narrow(1, t - 1, 1);
            let next = self.logits(last).argmax(2).reshape([b]);
            let next: Vec<i64> = next
                .try_to_vec_as::<i64>()
                .map_err(|e| LmError::Input(format!("reading logits: {e:?}")))?;
            let mut ids = Vec::with_capacity(b);
            let mut valid = Vec::with_capacity(b);
            for (row, &tok) in next.iter().enumerate() {
                let tok = tok as u32;
                if !done[row] && opts.stop_at_eos && tok == eos_id {
                    done[row] = true;
                }
                if done[row] {
                    ids.push(vec![pad_id]);
                    valid.push(vec![false]);
                } else {
                    out[row].push(tok);
                    ids.push(vec![tok]);
                    valid.push(vec![true]);
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            batch = TokenBatch { ids, valid };
        }
        Ok(out)
    }

    /// Perplexity of a token sequence, evaluated in non-overlapping windows of
    /// at most `window` tokens (the first token of each window is not scored).
    pub fn perplexity(&self, ids: &[u32], window: usize) -> Result<f64> {
        if ids.len() < 2 {
            return Err(LmError::Input(
                "need at least two tokens for perplexity".into(),
            ));
        }
        let window = window.clamp(2, self.max_positions());
        let (mut nll, mut count) = (0f64, 0usize);
        for chunk in ids.chunks(window) {
            if chunk.len() < 2 {
                continue;
            }
            let input = TokenBatch::single(chunk[..chunk.len() - 1].to_vec())?;
            let targets = vec![chunk[1..].to_vec()];
            let weights = vec![vec![1f32; chunk.len() - 1]];
            let loss = self.weighted_nll(&input, &targets, &weights, None)?;
            let v: f32 = loss.into_scalar::<f32>();
            nll += v as f64 * (chunk.len() - 1) as f64;
            count += chunk.len() - 1;
        }
        Ok((nll / count as f64).exp())
    }
}
