//! GPT-2 decoder ("Language Models are Unsupervised Multitask Learners",
//! Radford et al., 2019): learned absolute positions, pre-LayerNorm blocks,
//! GELU (tanh approximation), tied output embeddings. The paper's base models
//! (DistilGPT2, GPT2-Large, GPT2-XL) are this architecture.
//!
//! Parameter names follow Hugging Face `GPT2LMHeadModel` (with or without the
//! `transformer.` prefix). GPT-2's `Conv1D` weights are already `[in, out]`.

use burn::module::{Module, Param};
use burn::tensor::activation::gelu_approximate;
use burn::tensor::module::embedding;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::batch::PassContext;
use crate::cache::KvCache;
use crate::error::{check_config, LmError, Result, MAX_LAYERS};
use crate::prefix::{KvLayout, PrefixKv};
use mac_kernels::attention::attend;
use mac_kernels::linear::linear;
use mac_kernels::weights::ParamLoader;

/// Hyper-parameters of a GPT-2 model, named as in Hugging Face `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Number of learned positions.
    pub n_positions: usize,
    /// Model width.
    pub n_embd: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Number of attention heads.
    pub n_head: usize,
    /// MLP inner width; `4 * n_embd` when absent.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// LayerNorm epsilon.
    #[serde(default = "default_ln_eps")]
    pub layer_norm_epsilon: f64,
    /// Activation; only `gelu_new` (tanh GELU) is supported.
    #[serde(default = "default_act")]
    pub activation_function: String,
}

fn default_ln_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}

/// LayerNorm with weight and bias.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Gain.
    pub weight: Param<Tensor<1>>,
    /// Bias.
    pub bias: Param<Tensor<1>>,
    #[module(skip)]
    eps: f64,
}

impl LayerNorm {
    /// Normalises over the last dimension.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let mean = x.clone().mean_dim(2);
        let centered = x - mean;
        let var = centered.clone().powi_scalar(2).mean_dim(2);
        centered / (var + self.eps).sqrt() * self.weight.val().unsqueeze::<3>()
            + self.bias.val().unsqueeze::<3>()
    }
}

/// An affine map `x W + b` with `W` stored `[in, out]`.
#[derive(Module, Debug)]
pub struct Conv1D {
    /// Weight `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// Bias `[out]`.
    pub bias: Param<Tensor<1>>,
}

impl Conv1D {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        linear(x, self.weight.val(), Some(self.bias.val()))
    }
}

impl Gpt2Config {
    /// Every number the model is built from, checked: an error names the
    /// file and the field, before anything is allocated.
    pub fn validate(&self, path: &std::path::Path) -> Result<()> {
        let c = self;
        check_config(
            path,
            &[
                ("vocab_size", c.vocab_size > 0, "must be positive"),
                ("n_embd", c.n_embd > 0, "must be positive"),
                (
                    "n_layer",
                    (1..=MAX_LAYERS).contains(&c.n_layer),
                    "must be between 1 and 1024",
                ),
                (
                    "n_head",
                    c.n_head > 0 && c.n_embd.is_multiple_of(c.n_head.max(1)),
                    "must be positive and divide n_embd",
                ),
                ("n_positions", c.n_positions >= 2, "must be at least 2"),
                ("n_inner", c.n_inner != Some(0), "must be positive"),
                (
                    "layer_norm_epsilon",
                    c.layer_norm_epsilon.is_finite() && c.layer_norm_epsilon >= 0.0,
                    "must be a finite non-negative number",
                ),
            ],
        )
    }
}

/// One GPT-2 block.
#[derive(Module, Debug)]
pub struct Gpt2Block {
    /// Norm before attention.
    pub ln_1: LayerNorm,
    /// Fused QKV projection `[d, 3d]`.
    pub c_attn: Conv1D,
    /// Attention output projection.
    pub attn_proj: Conv1D,
    /// Norm before the MLP.
    pub ln_2: LayerNorm,
    /// MLP up projection.
    pub c_fc: Conv1D,
    /// MLP down projection.
    pub mlp_proj: Conv1D,
}

/// A frozen GPT-2 decoder with prefix key/value support.
#[derive(Module, Debug)]
pub struct Gpt2 {
    /// Token embeddings `[V, d]`.
    pub wte: Param<Tensor<2>>,
    /// Position embeddings `[P, d]`.
    pub wpe: Param<Tensor<2>>,
    /// Blocks.
    pub h: Vec<Gpt2Block>,
    /// Final norm.
    pub ln_f: LayerNorm,
    /// Output projection `[d, V]` (tied: the transposed `wte`).
    pub lm_head: Param<Tensor<2>>,
    #[module(skip)]
    config: Gpt2Config,
}

impl Gpt2 {
    /// Builds the model from checkpoint tensors named as in Hugging Face.
    pub fn load(config: Gpt2Config, w: &ParamLoader<'_>) -> Result<Self> {
        config.validate(w.source().path())?;
        if config.activation_function != "gelu_new"
            && config.activation_function != "gelu_pytorch_tanh"
        {
            return Err(LmError::Config {
                path: w.source().path().to_path_buf(),
                key: "activation_function".into(),
                reason: format!(
                    "`{}` is not supported (gelu_new is)",
                    config.activation_function
                ),
            });
        }
        // Hugging Face's GPT2LMHeadModel nests the weights under `transformer`.
        let root = match w.has("transformer.wte.weight") {
            true => w.pp("transformer"),
            false => w.clone(),
        };
        let d = config.n_embd;
        let inner = config.n_inner.unwrap_or(4 * d);
        let ln = |w: ParamLoader<'_>| -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: w.vector("weight", d)?,
                bias: w.vector("bias", d)?,
                eps: config.layer_norm_epsilon,
            })
        };
        let conv = |w: ParamLoader<'_>, i: usize, o: usize| -> Result<Conv1D> {
            Ok(Conv1D {
                weight: w.matrix("weight", i, o)?,
                bias: w.vector("bias", o)?,
            })
        };
        let mut h = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let block = root.pp("h").pp(i);
            let (attn, mlp) = (block.pp("attn"), block.pp("mlp"));
            h.push(Gpt2Block {
                ln_1: ln(block.pp("ln_1"))?,
                c_attn: conv(attn.pp("c_attn"), d, 3 * d)?,
                attn_proj: conv(attn.pp("c_proj"), d, d)?,
                ln_2: ln(block.pp("ln_2"))?,
                c_fc: conv(mlp.pp("c_fc"), d, inner)?,
                mlp_proj: conv(mlp.pp("c_proj"), inner, d)?,
            });
        }
        let wte = root.matrix("wte.weight", config.vocab_size, d)?;
        // Materialised (not a transposed view) so the projection reads contiguous memory.
        let lm_head = mac_kernels::weights::frozen(Tensor::from_data(
            wte.val().transpose().into_data(),
            &wte.val().device(),
        ));
        Ok(Self {
            wpe: root.matrix("wpe.weight", config.n_positions, d)?,
            wte,
            h,
            ln_f: ln(root.pp("ln_f"))?,
            lm_head,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// Key/value shapes a prefix must have.
    pub fn kv_layout(&self) -> KvLayout {
        KvLayout {
            n_layers: self.config.n_layer,
            n_kv_heads: self.config.n_head,
            head_dim: self.config.n_embd / self.config.n_head,
        }
    }

    /// Keys and values every block computes for hidden vectors `[B, P, d]`
    /// held fixed across blocks (GPT-2's positions are added at the input,
    /// so a virtual token has none).
    pub(crate) fn virtual_token_kv(&self, hidden: Tensor<3>) -> PrefixKv {
        let [b, p, d] = hidden.dims();
        let nh = self.n_heads();
        let dh = d / nh;
        let layers = self
            .h
            .iter()
            .map(|block| {
                let qkv = block.c_attn.forward(block.ln_1.forward(hidden.clone()));
                let heads = |z: Tensor<3>| z.reshape([b, p, nh, dh]).swap_dims(1, 2);
                (
                    heads(qkv.clone().narrow(2, d, d)),
                    heads(qkv.narrow(2, 2 * d, d)),
                )
            })
            .collect();
        PrefixKv { layers }
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
        let [b, t] = ids.dims();
        let (nh, d) = (self.config.n_head, self.config.n_embd);
        let dh = d / nh;
        let max_pos = self.config.n_positions - 1;
        let pos: Vec<i64> = ctx
            .positions
            .iter()
            .flatten()
            .map(|&p| p.min(max_pos) as i64)
            .collect();
        let pos = Tensor::<2, Int>::from_data(TensorData::new(pos, [b, t]), &device);
        let mut x = embedding(self.wte.val(), ids) + embedding(self.wpe.val(), pos);
        for (i, block) in self.h.iter().enumerate().take(n_layers) {
            let qkv = block.c_attn.forward(block.ln_1.forward(x.clone()));
            let heads = |z: Tensor<3>| z.reshape([b, t, nh, dh]).swap_dims(1, 2);
            let q = heads(qkv.clone().narrow(2, 0, d));
            let k = heads(qkv.clone().narrow(2, d, d));
            let v = heads(qkv.narrow(2, 2 * d, d));
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => c.append(i, k, v),
                None => (k, v),
            };
            let attn = attend(q, k, v, prefix.map(|p| &p.layers[i]), &ctx.mask);
            x = x + block.attn_proj.forward(attn);
            let m = gelu_approximate(block.c_fc.forward(block.ln_2.forward(x.clone())));
            x = x + block.mlp_proj.forward(m);
        }
        x
    }

    /// Projects hidden states to vocabulary logits.
    pub(crate) fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        linear(hidden, self.lm_head.val(), None)
    }

    /// Number of attention heads.
    pub(crate) fn n_heads(&self) -> usize {
        self.config.n_head
    }
}
