//! Llama-architecture decoder (RMSNorm, rotary embeddings with rotate-half,
//! grouped-query attention, SwiGLU), as in "LLaMA: Open and Efficient
//! Foundation Language Models" (Touvron et al., 2023). SmolLM2 is one.
//!
//! Parameter names follow Hugging Face `LlamaForCausalLM`; GGUF files are read
//! through [`crate::model`]'s key remapping (and Q/K un-permutation).

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::activation::silu;
use burn::tensor::module::embedding;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::batch::PassContext;
use crate::cache::KvCache;
use crate::error::{check_config, Result, MAX_LAYERS};
use crate::prefix::{KvLayout, PrefixKv};
use mac_kernels::attention::attend;
use mac_kernels::linear::linear;
use mac_kernels::quantized::{try_product, Activations, QuantizedMatrix};
use mac_kernels::weights::ParamLoader;

mod host_decode;
pub use host_decode::HostDecoder;

/// Hyper-parameters of a Llama model, named as in Hugging Face `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width `d`.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (GQA); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Head size; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// Rotary base frequency (transformers 4.x spelling).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Rotary settings (transformers 5.x spelling); only the `default` type is supported.
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    /// Longest supported context.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Whether the output projection shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn default_rms_eps() -> f64 {
    1e-6
}
/// `rope_parameters` of a transformers 5.x `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    /// Rotary base frequency.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Scaling type (`default` = none).
    #[serde(default)]
    pub rope_type: Option<String>,
}
fn default_max_pos() -> usize {
    2048
}

impl LlamaConfig {
    /// Number of key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    /// Rotary base frequency (10 000 when unspecified).
    pub fn theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(10_000.0)
    }
    /// Widths of the projections: the model's `d`, the queries' `H·d_h`,
    /// the keys' and values' `H_kv·d_h`, and SwiGLU's inner `f`.
    fn widths(&self) -> (usize, usize, usize, usize) {
        let dh = self.head_size();
        (
            self.hidden_size,
            self.num_attention_heads * dh,
            self.kv_heads() * dh,
            self.intermediate_size,
        )
    }

    /// Size of one attention head.
    pub fn head_size(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Every number the model is built from, checked: an error names the
    /// file and the field, before anything is allocated.
    pub fn validate(&self, path: &std::path::Path) -> Result<()> {
        let (h, hkv) = (self.num_attention_heads, self.kv_heads());
        let rope_type = self
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_type.as_deref())
            .unwrap_or("default");
        if rope_type != "default" {
            return Err(crate::error::LmError::Config {
                path: path.to_path_buf(),
                key: "rope_parameters.rope_type".into(),
                reason: format!("rotary scaling `{rope_type}` is not supported (default is)"),
            });
        }
        check_config(
            path,
            &[
                ("vocab_size", self.vocab_size > 0, "must be positive"),
                ("hidden_size", self.hidden_size > 0, "must be positive"),
                (
                    "intermediate_size",
                    self.intermediate_size > 0,
                    "must be positive",
                ),
                (
                    "num_hidden_layers",
                    (1..=MAX_LAYERS).contains(&self.num_hidden_layers),
                    "must be between 1 and 1024",
                ),
                ("num_attention_heads", h > 0, "must be positive"),
                (
                    "num_key_value_heads",
                    hkv > 0 && h.is_multiple_of(hkv),
                    "must be positive and divide the attention heads",
                ),
                (
                    "head_dim",
                    self.head_dim.is_some() || self.hidden_size.is_multiple_of(h.max(1)),
                    "absent, and hidden_size is not a multiple of the attention heads",
                ),
                (
                    "head_dim",
                    self.head_size() > 0 && self.head_size().is_multiple_of(2),
                    "must be positive and even (rotary halves)",
                ),
                (
                    "max_position_embeddings",
                    self.max_position_embeddings >= 2,
                    "must be at least 2",
                ),
                (
                    "rms_norm_eps",
                    self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0,
                    "must be a finite non-negative number",
                ),
                (
                    "rope_theta",
                    self.theta().is_finite() && self.theta() > 0.0,
                    "must be a finite positive number",
                ),
            ],
        )
    }
}

/// Root-mean-square layer norm.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Per-channel gain.
    pub weight: Param<Tensor<1>>,
    #[module(skip)]
    eps: f64,
}

impl RmsNorm {
    /// Normalises over the last dimension.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let rms = (x.clone().powi_scalar(2).mean_dim(2) + self.eps).sqrt();
        (x / rms) * self.weight.val().unsqueeze::<3>()
    }
}

/// Rotary position embedding, rotate-half layout: `x [B, H, T, d_h]` with
/// cos/sin tables broadcast over the heads.
fn rotate(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// Self-attention of one Llama layer.
#[derive(Module, Debug)]
pub struct LlamaAttention {
    /// Query projection `[d, H * d_h]`.
    pub q_proj: Param<Tensor<2>>,
    /// Key projection `[d, H_kv * d_h]`.
    pub k_proj: Param<Tensor<2>>,
    /// Value projection `[d, H_kv * d_h]`.
    pub v_proj: Param<Tensor<2>>,
    /// Output projection `[H * d_h, d]`.
    pub o_proj: Param<Tensor<2>>,
}

/// SwiGLU feed-forward.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    /// Gate projection `[d, f]`.
    pub gate_proj: Param<Tensor<2>>,
    /// Up projection `[d, f]`.
    pub up_proj: Param<Tensor<2>>,
    /// Down projection `[f, d]`.
    pub down_proj: Param<Tensor<2>>,
}

impl LlamaMlp {
    /// `down(silu(gate(x)) * up(x))` over normalised hidden states `[B, T, d]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_with(x, None)
    }

    /// [`Self::forward`], on the file's quantized weights where they serve.
    fn forward_with(&self, x: Tensor<3>, q: Option<&QuantizedLayer>) -> Tensor<3> {
        let f = self.gate_proj.dims()[1];
        let (gate, up) = match q.and_then(|q| try_product(&x, &q.gate_up)) {
            Some(y) => (y.clone().narrow(2, 0, f), y.narrow(2, f, f)),
            None => (
                linear(x.clone(), self.gate_proj.val(), None),
                linear(x, self.up_proj.val(), None),
            ),
        };
        product(silu(gate) * up, &self.down_proj, q.map(|q| &q.down))
    }
}

/// `x · w`, on the quantized copy of `w` when it serves this product
/// ([`try_product`]), else on `w`.
fn product(x: Tensor<3>, w: &Param<Tensor<2>>, q: Option<&QuantizedMatrix>) -> Tensor<3> {
    match q.and_then(|q| try_product(&x, q)) {
        Some(y) => y,
        None => linear(x, w.val(), None),
    }
}

/// One layer's projections as the GGUF file keeps them, `[out, in]`;
/// those that read the same input stacked, so that a decode step hands
/// four products per layer to the threads rather than seven.
#[derive(Debug)]
struct QuantizedLayer {
    /// Query, key and value projections, `[H·d_h + 2·H_kv·d_h, d]`.
    qkv: QuantizedMatrix,
    o: QuantizedMatrix,
    /// Gate and up projections, `[2·f, d]`.
    gate_up: QuantizedMatrix,
    down: QuantizedMatrix,
}

/// The model's projections as the GGUF file keeps them, for the products
/// of a few rows (decode steps) ([`mac_kernels::quantized`]).
#[derive(Debug)]
pub struct QuantizedWeights {
    layers: Vec<QuantizedLayer>,
    lm_head: Option<QuantizedMatrix>,
}

impl QuantizedWeights {
    /// The projections of every layer (and the output head, where it is
    /// stored in blocks) when the file keeps every layer's in blocks.
    fn load(config: &LlamaConfig, w: &ParamLoader<'_>) -> Result<Option<Self>> {
        let (d, dq, dkv, f) = config.widths();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let layer = w.pp("model.layers").pp(i);
            let get = |name: &str, d_in, d_out| layer.quantized_linear(name, d_in, d_out);
            let (Some(q), Some(k), Some(v), Some(o), Some(gate), Some(up), Some(down)) = (
                get("self_attn.q_proj.weight", d, dq)?,
                get("self_attn.k_proj.weight", d, dkv)?,
                get("self_attn.v_proj.weight", d, dkv)?,
                get("self_attn.o_proj.weight", dq, d)?,
                get("mlp.gate_proj.weight", d, f)?,
                get("mlp.up_proj.weight", d, f)?,
                get("mlp.down_proj.weight", f, d)?,
            ) else {
                return Ok(None);
            };
            let (Some(qkv), Some(gate_up)) = (
                QuantizedMatrix::stacked(&[&q, &k, &v]),
                QuantizedMatrix::stacked(&[&gate, &up]),
            ) else {
                return Ok(None);
            };
            layers.push(QuantizedLayer {
                qkv,
                o,
                gate_up,
                down,
            });
        }
        let head = if w.has("lm_head.weight") && !config.tie_word_embeddings {
            "lm_head.weight"
        } else {
            "model.embed_tokens.weight"
        };
        let lm_head = w.quantized_linear(head, d, config.vocab_size)?;
        Ok(Some(Self { layers, lm_head }))
    }

    /// The same weights multiplying activations kept as `activations`.
    fn with_activations(&self, activations: Activations) -> Self {
        let set = |m: &QuantizedMatrix| m.clone().with_activations(activations);
        Self {
            layers: self
                .layers
                .iter()
                .map(|l| QuantizedLayer {
                    qkv: set(&l.qkv),
                    o: set(&l.o),
                    gate_up: set(&l.gate_up),
                    down: set(&l.down),
                })
                .collect(),
            lm_head: self.lm_head.as_ref().map(set),
        }
    }

    /// What the products keep the activations as.
    pub fn activations(&self) -> Activations {
        self.layers
            .first()
            .map_or(Activations::F32, |l| l.qkv.activations())
    }

    /// Bytes a decode step reads from them.
    pub fn size_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down])
            .map(QuantizedMatrix::size_bytes)
            .sum();
        layers + self.lm_head.as_ref().map_or(0, QuantizedMatrix::size_bytes)
    }
}

/// One decoder layer.
#[derive(Module, Debug)]
pub struct LlamaLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Attention.
    pub self_attn: LlamaAttention,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// Feed-forward.
    pub mlp: LlamaMlp,
}

impl LlamaLayer {
    /// Norm, then queries `[B, H, T, d_h]` and keys/values `[B, H_kv, T, d_h]`
    /// of `x [B, T, d]`, with `rope` applied to queries and keys.
    fn project(
        &self,
        x: Tensor<3>,
        (h, hkv, dh): (usize, usize, usize),
        rope: &impl Fn(Tensor<4>) -> Tensor<4>,
        stored: Option<&QuantizedLayer>,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let [b, t, _] = x.dims();
        let a = &self.self_attn;
        let hn = self.input_layernorm.forward(x);
        let (dq, dkv) = (h * dh, hkv * dh);
        let (q, k, v) = match stored.and_then(|s| try_product(&hn, &s.qkv)) {
            Some(y) => (
                y.clone().narrow(2, 0, dq),
                y.clone().narrow(2, dq, dkv),
                y.narrow(2, dq + dkv, dkv),
            ),
            None => (
                linear(hn.clone(), a.q_proj.val(), None),
                linear(hn.clone(), a.k_proj.val(), None),
                linear(hn, a.v_proj.val(), None),
            ),
        };
        (
            rope(q.reshape([b, t, h, dh]).swap_dims(1, 2)),
            rope(k.reshape([b, t, hkv, dh]).swap_dims(1, 2)),
            v.reshape([b, t, hkv, dh]).swap_dims(1, 2),
        )
    }

    /// The rest of the layer after attention: output projection and the
    /// MLP, each added to the residual stream `x`.
    fn complete(
        &self,
        x: Tensor<3>,
        attn: Tensor<3>,
        stored: Option<&QuantizedLayer>,
    ) -> Tensor<3> {
        let x = x + product(attn, &self.self_attn.o_proj, stored.map(|s| &s.o));
        let normed = self.post_attention_layernorm.forward(x.clone());
        x + self.mlp.forward_with(normed, stored)
    }
}

/// A frozen Llama decoder with prefix key/value support.
#[derive(Module, Debug)]
pub struct Llama {
    /// Token embeddings `[V, d]`.
    pub embed_tokens: Param<Tensor<2>>,
    /// Decoder layers.
    pub layers: Vec<LlamaLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Output projection `[d, V]` (the transposed embeddings when tied).
    pub lm_head: Param<Tensor<2>>,
    #[module(skip)]
    config: LlamaConfig,
    #[module(skip)]
    inv_freq: Vec<f32>,
    /// The projections as the GGUF file keeps them, where it does.
    #[module(skip)]
    quantized: Option<Arc<QuantizedWeights>>,
    /// Whether decode steps use [`Self::quantized`].
    #[module(skip)]
    quantized_decode: bool,
    /// Whether decode steps on the quantized projections run over host
    /// buffers ([`HostDecoder`]) rather than as tensor operations.
    #[module(skip)]
    host_decode: bool,
}

impl Llama {
    /// Builds the model from checkpoint tensors named as in Hugging Face.
    pub fn load(config: LlamaConfig, w: &ParamLoader<'_>) -> Result<Self> {
        config.validate(w.source().path())?;
        let (d, q, kv, f) = config.widths();
        let norm = |w: &ParamLoader<'_>, name: &str| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: w.vector(name, d)?,
                eps: config.rms_norm_eps,
            })
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let layer = w.pp("model.layers").pp(i);
            let (a, mlp) = (layer.pp("self_attn"), layer.pp("mlp"));
            layers.push(LlamaLayer {
                input_layernorm: norm(&layer, "input_layernorm.weight")?,
                self_attn: LlamaAttention {
                    q_proj: a.linear_weight("q_proj.weight", d, q)?,
                    k_proj: a.linear_weight("k_proj.weight", d, kv)?,
                    v_proj: a.linear_weight("v_proj.weight", d, kv)?,
                    o_proj: a.linear_weight("o_proj.weight", q, d)?,
                },
                post_attention_layernorm: norm(&layer, "post_attention_layernorm.weight")?,
                mlp: LlamaMlp {
                    gate_proj: mlp.linear_weight("gate_proj.weight", d, f)?,
                    up_proj: mlp.linear_weight("up_proj.weight", d, f)?,
                    down_proj: mlp.linear_weight("down_proj.weight", f, d)?,
                },
            });
        }
        let embed_tokens = w.matrix("model.embed_tokens.weight", config.vocab_size, d)?;
        let lm_head = if config.tie_word_embeddings || !w.has("lm_head.weight") {
            // Materialised (not a transposed view) so every projection reads contiguous memory.
            mac_kernels::weights::frozen(Tensor::from_data(
                embed_tokens.val().transpose().into_data(),
                &embed_tokens.val().device(),
            ))
        } else {
            w.linear_weight("lm_head.weight", d, config.vocab_size)?
        };
        let dh = config.head_size();
        let inv_freq = (0..dh / 2)
            .map(|i| 1.0 / config.theta().powf(2.0 * i as f64 / dh as f64) as f32)
            .collect();
        let quantized = QuantizedWeights::load(&config, w)?.map(Arc::new);
        Ok(Self {
            embed_tokens,
            layers,
            norm: norm(w, "model.norm.weight")?,
            lm_head,
            config,
            inv_freq,
            quantized_decode: quantized.is_some(),
            quantized,
            host_decode: true,
        })
    }

    /// The projections as the GGUF file keeps them, when it keeps every
    /// layer's in blocks (Q8_0, Q4_0, Q4_1).
    pub fn quantized(&self) -> Option<&QuantizedWeights> {
        self.quantized.as_deref()
    }

    /// Whether products of a few rows (decode steps) read the quantized
    /// projections (the default where the file has them) or the f32 ones.
    pub fn set_quantized_decode(&mut self, on: bool) {
        self.quantized_decode = on && self.quantized.is_some();
    }

    /// Whether decode steps on the quantized projections run over host
    /// buffers (the default) or as tensor operations.
    pub fn set_host_decode(&mut self, on: bool) {
        self.host_decode = on;
    }

    /// What decode steps on the quantized projections keep the
    /// activations as (f32 unless set: see [`Activations`]).
    pub fn set_decode_activations(&mut self, activations: Activations) {
        if let Some(q) = self
            .quantized
            .as_ref()
            .filter(|q| q.activations() != activations)
        {
            self.quantized = Some(Arc::new(q.with_activations(activations)));
        }
    }

    /// Layer `i`'s quantized projections, when decode steps use them.
    fn stored(&self, i: usize) -> Option<&QuantizedLayer> {
        self.decode_weights().map(|q| &q.layers[i])
    }

    /// The quantized weights, when decode steps use them.
    fn decode_weights(&self) -> Option<&QuantizedWeights> {
        self.quantized.as_deref().filter(|_| self.quantized_decode)
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Key/value shapes a prefix must have.
    pub fn kv_layout(&self) -> KvLayout {
        KvLayout {
            n_layers: self.config.num_hidden_layers,
            n_kv_heads: self.config.kv_heads(),
            head_dim: self.config.head_size(),
        }
    }

    /// cos/sin tables `[B, 1, T, d_h]` for the given positions.
    fn rotary(&self, positions: &[Vec<usize>], device: &Device) -> (Tensor<4>, Tensor<4>) {
        let positions: Vec<Vec<f32>> = positions
            .iter()
            .map(|row| row.iter().map(|&p| p as f32).collect())
            .collect();
        self.rotary_at(&positions, device)
    }

    /// cos/sin tables `[B, 1, T, d_h]` for real-valued (possibly negative) positions.
    fn rotary_at(&self, positions: &[Vec<f32>], device: &Device) -> (Tensor<4>, Tensor<4>) {
        let dh = self.config.head_size();
        let (b, t) = (positions.len(), positions[0].len());
        let mut cos = Vec::with_capacity(b * t * dh);
        let mut sin = Vec::with_capacity(b * t * dh);
        for row in positions {
            for &p in row {
                // cat(freqs, freqs): the rotate-half layout.
                for _ in 0..2 {
                    for &f in &self.inv_freq {
                        let a = p * f;
                        cos.push(a.cos());
                        sin.push(a.sin());
                    }
                }
            }
        }
        let shape = [b, 1, t, dh];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }

    /// Runs the first `n_layers` decoder layers over new tokens and returns
    /// the residual stream `[B, T, d]` (the caller applies the final norm).
    pub(crate) fn residual(
        &self,
        ids: Tensor<2, Int>,
        ctx: &PassContext,
        prefix: Option<&PrefixKv>,
        mut cache: Option<&mut KvCache>,
        n_layers: usize,
    ) -> Tensor<3> {
        let device = ids.device();
        let (h, hkv, dh) = (
            self.config.num_attention_heads,
            self.config.kv_heads(),
            self.config.head_size(),
        );
        let (cos, sin) = self.rotary(&ctx.positions, &device);
        let rope = |x: Tensor<4>| rotate(x, &cos, &sin);
        let mut x = embedding(self.embed_tokens.val(), ids);
        for (i, layer) in self.layers.iter().enumerate().take(n_layers) {
            let stored = self.stored(i);
            let (q, k, v) = layer.project(x.clone(), (h, hkv, dh), &rope, stored);
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => c.append(i, k, v),
                None => (k, v),
            };
            let attn = attend(q, k, v, prefix.map(|p| &p.layers[i]), &ctx.mask);
            x = layer.complete(x, attn, stored);
        }
        x
    }

    /// Keys and values every layer computes for hidden vectors `[B, P, d]`
    /// held fixed across layers, at position 0 (where rotary is the identity).
    pub(crate) fn virtual_token_kv(&self, hidden: Tensor<3>) -> PrefixKv {
        let [b, p, _] = hidden.dims();
        let (hkv, dh) = (self.config.kv_heads(), self.config.head_size());
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                let a = &layer.self_attn;
                let hn = layer.input_layernorm.forward(hidden.clone());
                let split = |w: Tensor<2>| {
                    linear(hn.clone(), w, None)
                        .reshape([b, p, hkv, dh])
                        .swap_dims(1, 2)
                };
                (split(a.k_proj.val()), split(a.v_proj.val()))
            })
            .collect();
        PrefixKv { layers }
    }

    /// Keys and values of the input embeddings `[B, P, d]` run through the
    /// decoder as a causal context at positions `-P..-1`: exactly the cache
    /// the LM would build for those embeddings placed before the real
    /// tokens (which keep positions `0..T`; rotary attention only sees the
    /// distance). Differentiable with respect to `embeds`.
    pub(crate) fn soft_prompt_kv(&self, embeds: Tensor<3>) -> PrefixKv {
        let device = embeds.device();
        let [b, p, _] = embeds.dims();
        let (h, hkv, dh) = (
            self.config.num_attention_heads,
            self.config.kv_heads(),
            self.config.head_size(),
        );
        let row: Vec<f32> = (0..p).map(|j| j as f32 - p as f32).collect();
        let (cos, sin) = self.rotary_at(&vec![row; b], &device);
        let rope = |x: Tensor<4>| rotate(x, &cos, &sin);
        // true = not attended: each virtual token sees itself and those before it.
        let future: Vec<bool> = (0..p * p).map(|i| i % p > i / p).collect();
        let mask = Tensor::<2, Bool>::from_data(TensorData::new(future, [p, p]), &device)
            .reshape([1, 1, p, p])
            .expand([b, h, p, p]);
        let n_layers = self.layers.len();
        let mut layers = Vec::with_capacity(n_layers);
        let mut x = embeds;
        for (i, layer) in self.layers.iter().enumerate() {
            let (q, k, v) = layer.project(x.clone(), (h, hkv, dh), &rope, None);
            layers.push((k.clone(), v.clone()));
            if i + 1 == n_layers {
                // The last layer's output feeds nothing the prefix needs.
                break;
            }
            let attn = attend(q, k, v, None, &mask);
            x = layer.complete(x, attn, None);
        }
        PrefixKv { layers }
    }

    /// Projects hidden states to vocabulary logits.
    pub(crate) fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let head = self.decode_weights().and_then(|q| q.lm_head.as_ref());
        product(hidden, &self.lm_head, head)
    }

    /// Number of attention (query) heads.
    pub(crate) fn n_heads(&self) -> usize {
        self.config.num_attention_heads
    }
}
