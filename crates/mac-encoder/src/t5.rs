//! The T5 encoder (Raffel et al., "Exploring the Limits of Transfer Learning
//! with a Unified Text-to-Text Transformer", 2020) — the paper's choice of
//! backbone for MAC's amortization and question networks. Pre-RMSNorm
//! blocks, unscaled attention with bucketed relative position biases (from
//! the first layer, shared by all), ReLU (v1.0) or gated-GELU (v1.1)
//! feed-forward. Parameter names follow Hugging Face `T5EncoderModel` /
//! `T5Model` (`encoder.block.{i}.layer.{0,1}...`, `shared.weight`).

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::activation::{gelu_approximate, relu, softmax};
use burn::tensor::module::linear;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{EncoderError, Result};
use mac_kernels::linear::batched_matmul;
use mac_kernels::weights::{Scope, WeightSource};

use crate::Trainable;

/// T5 hyper-parameters, named as in Hugging Face `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct T5Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub d_model: usize,
    /// Width of one attention head.
    pub d_kv: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Encoder layers.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Relative-position buckets.
    #[serde(default = "buckets")]
    pub relative_attention_num_buckets: usize,
    /// Distance beyond which positions share the last bucket.
    #[serde(default = "max_distance")]
    pub relative_attention_max_distance: usize,
    /// RMSNorm epsilon.
    #[serde(default = "eps")]
    pub layer_norm_epsilon: f64,
    /// `relu` (T5 v1.0) or `gated-gelu` (T5 v1.1, flan-t5).
    #[serde(default = "ff")]
    pub feed_forward_proj: String,
}

fn buckets() -> usize {
    32
}
fn max_distance() -> usize {
    128
}
fn eps() -> f64 {
    1e-6
}
fn ff() -> String {
    "relu".into()
}

/// One encoder block.
#[derive(Module, Debug)]
pub struct T5Block {
    /// RMSNorm weight before attention.
    pub attn_norm: Param<Tensor<1>>,
    /// Query `[d, H·d_kv]`.
    pub q: Param<Tensor<2>>,
    /// Key.
    pub k: Param<Tensor<2>>,
    /// Value.
    pub v: Param<Tensor<2>>,
    /// Output `[H·d_kv, d]`.
    pub o: Param<Tensor<2>>,
    /// RMSNorm weight before the feed-forward.
    pub ff_norm: Param<Tensor<1>>,
    /// `wi` (ReLU) or `wi_0` (gated: the GELU branch), `[d, d_ff]`.
    pub wi_0: Param<Tensor<2>>,
    /// `wi_1` (gated only: the linear branch).
    pub wi_1: Option<Param<Tensor<2>>>,
    /// `wo`, `[d_ff, d]`.
    pub wo: Param<Tensor<2>>,
}

/// A T5 encoder stack.
#[derive(Module, Debug)]
pub struct T5Encoder {
    /// Token embeddings (`shared`).
    pub embed: Param<Tensor<2>>,
    /// Relative attention bias `[buckets, H]` (first layer's, shared by all).
    pub relative_bias: Param<Tensor<2>>,
    /// Blocks.
    pub blocks: Vec<T5Block>,
    /// Final RMSNorm weight.
    pub final_norm: Param<Tensor<1>>,
    #[module(skip)]
    config: T5Config,
}

impl T5Config {
    /// The configuration in a parsed `config.json` (read from `cfg_path`,
    /// which errors name), checked.
    pub fn from_json(cfg_path: &Path, json: &serde_json::Value) -> Result<Self> {
        let config: T5Config = crate::backbone::config_from_json(cfg_path, json)?;
        if !matches!(config.feed_forward_proj.as_str(), "relu" | "gated-gelu") {
            return Err(EncoderError::Config {
                path: cfg_path.to_path_buf(),
                key: "feed_forward_proj".into(),
                reason: format!(
                    "`{}` is not supported (relu and gated-gelu are)",
                    config.feed_forward_proj
                ),
            });
        }
        config.check(cfg_path)?;
        Ok(config)
    }

    /// Checks the numbers before anything is sized by them; errors name
    /// `path` and the key.
    pub fn check(&self, path: &Path) -> Result<()> {
        Ok(mac_lm::check_config(
            path,
            &[
                ("vocab_size", self.vocab_size > 0, "must be positive"),
                ("d_model", self.d_model > 0, "must be positive"),
                (
                    "d_kv",
                    self.d_kv > 0 && self.num_heads.checked_mul(self.d_kv).is_some(),
                    "must be positive (and num_heads x d_kv must fit)",
                ),
                ("d_ff", self.d_ff > 0, "must be positive"),
                (
                    "num_layers",
                    (1..=mac_lm::MAX_LAYERS).contains(&self.num_layers),
                    "must be between 1 and 1024",
                ),
                ("num_heads", self.num_heads > 0, "must be positive"),
                (
                    "relative_attention_num_buckets",
                    self.relative_attention_num_buckets >= 4,
                    "must be at least 4",
                ),
                (
                    "relative_attention_max_distance",
                    self.relative_attention_max_distance >= 2,
                    "must be at least 2",
                ),
                (
                    "layer_norm_epsilon",
                    self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon >= 0.0,
                    "must be a finite non-negative number",
                ),
            ],
        )?)
    }
}

/// Hugging Face's bidirectional relative-position bucket (f32 arithmetic, as in PyTorch).
fn bucket(relative: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = (num_buckets / 2) as i64;
    let mut b = if relative > 0 { half } else { 0 };
    let r = relative.abs();
    let max_exact = half / 2;
    if r < max_exact {
        b += r;
    } else {
        let large = max_exact
            + ((r as f32 / max_exact as f32).ln() / (max_distance as f32 / max_exact as f32).ln()
                * (half - max_exact) as f32) as i64;
        b += large.min(half - 1);
    }
    b as usize
}

fn rms_norm(x: Tensor<3>, w: &Param<Tensor<1>>, eps: f64) -> Tensor<3> {
    let var = x.clone().powi_scalar(2).mean_dim(2);
    x / (var + eps).sqrt() * w.val().unsqueeze::<3>()
}

impl T5Encoder {
    /// Loads `config.json` + `*.safetensors` from a Hugging Face directory.
    pub fn load(dir: impl AsRef<Path>, device: &Device, trainable: Trainable) -> Result<Self> {
        let files = crate::EncoderFiles::open(dir)?;
        let config = T5Config::from_json(&files.config_path(), files.config())?;
        Self::from_source(config, files.weights()?, device, trainable)
    }

    /// Builds the encoder from checkpoint tensors.
    pub fn from_source(
        config: T5Config,
        src: &dyn WeightSource,
        device: &Device,
        trainable: Trainable,
    ) -> Result<Self> {
        let p1 = |name: &str, n: usize, train: bool| vector_param(src, name, n, train, device);
        let lin = |name: &str, d_in: usize, d_out: usize, train: bool| {
            linear_param(src, name, d_in, d_out, train, device)
        };
        let (d, inner, f, n) = (
            config.d_model,
            config.num_heads * config.d_kv,
            config.d_ff,
            config.num_layers,
        );
        let layer_trains = |i: usize| match trainable {
            Trainable::All => true,
            Trainable::TopLayers(k) => i + k >= n,
            Trainable::None => false,
        };
        let all = trainable == Trainable::All;
        let gated = config.feed_forward_proj == "gated-gelu";
        let mut blocks = Vec::new();
        for i in 0..n {
            let layer = Scope::default().pp("encoder.block").pp(i).pp("layer");
            let (attn, ff) = (layer.pp(0), layer.pp(1));
            let (sa, dense) = (attn.pp("SelfAttention"), ff.pp("DenseReluDense"));
            let t = layer_trains(i);
            blocks.push(T5Block {
                attn_norm: p1(&attn.name("layer_norm.weight"), d, t)?,
                q: lin(&sa.name("q.weight"), d, inner, t)?,
                k: lin(&sa.name("k.weight"), d, inner, t)?,
                v: lin(&sa.name("v.weight"), d, inner, t)?,
                o: lin(&sa.name("o.weight"), inner, d, t)?,
                ff_norm: p1(&ff.name("layer_norm.weight"), d, t)?,
                wi_0: match gated {
                    true => lin(&dense.name("wi_0.weight"), d, f, t)?,
                    false => lin(&dense.name("wi.weight"), d, f, t)?,
                },
                wi_1: match gated {
                    true => Some(lin(&dense.name("wi_1.weight"), d, f, t)?),
                    false => None,
                },
                wo: lin(&dense.name("wo.weight"), f, d, t)?,
            });
        }
        let embed_name = if src.shape("shared.weight").is_some() {
            "shared.weight"
        } else {
            "encoder.embed_tokens.weight"
        };
        let embed = src.load_checked(embed_name, &[config.vocab_size, d])?;
        let nb = config.relative_attention_num_buckets;
        let bias = src.load_checked(
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            &[nb, config.num_heads],
        )?;
        Ok(Self {
            embed: Param::from_tensor(Tensor::from_data(
                TensorData::new(embed, [config.vocab_size, d]),
                device,
            ))
            .set_require_grad(all),
            relative_bias: Param::from_tensor(Tensor::from_data(
                TensorData::new(bias, [nb, config.num_heads]),
                device,
            ))
            .set_require_grad(layer_trains(0)),
            blocks,
            final_norm: p1(
                "encoder.final_layer_norm.weight",
                d,
                layer_trains(n.saturating_sub(1)),
            )?,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// Output width.
    pub fn hidden_size(&self) -> usize {
        self.config.d_model
    }

    /// Position bias `[1, H, T, T]` from the bucketed relative distances.
    fn position_bias(&self, t: usize, device: &Device) -> Tensor<4> {
        let c = &self.config;
        let ids: Vec<i64> = (0..t)
            .flat_map(|i| {
                (0..t).map(move |j| {
                    bucket(
                        j as i64 - i as i64,
                        c.relative_attention_num_buckets,
                        c.relative_attention_max_distance,
                    ) as i64
                })
            })
            .collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [t * t]), device);
        self.relative_bias
            .val()
            .select(0, ids)
            .reshape([t, t, c.num_heads])
            .permute([2, 0, 1])
            .unsqueeze::<4>()
    }

    /// Last hidden states `[B, T, d]`; padded keys (`valid` false) are masked in every layer.
    pub fn forward(&self, ids: Tensor<2, Int>, valid: Tensor<2, Bool>) -> Tensor<3> {
        let device = ids.device();
        let [b, t] = ids.dims();
        let c = &self.config;
        let (h, dk) = (c.num_heads, c.d_kv);
        let eps = c.layer_norm_epsilon;
        let mut x = self
            .embed
            .val()
            .select(0, ids.reshape([b * t]))
            .reshape([b, t, c.d_model]);
        let bias = self.position_bias(t, &device).expand([b, h, t, t]);
        let mask = valid.bool_not().reshape([b, 1, 1, t]).expand([b, h, t, t]);
        for blk in &self.blocks {
            let xn = rms_norm(x.clone(), &blk.attn_norm, eps);
            let heads = |z: Tensor<3>| z.reshape([b, t, h, dk]).swap_dims(1, 2);
            let q = heads(linear(xn.clone(), blk.q.val(), None));
            let k = heads(linear(xn.clone(), blk.k.val(), None));
            let v = heads(linear(xn, blk.v.val(), None));
            // T5 does not scale the scores by 1/sqrt(d_kv).
            let scores = batched_matmul(q, k.swap_dims(2, 3)) + bias.clone();
            let attn = softmax(scores.mask_fill(mask.clone(), -1e9), 3);
            let a = batched_matmul(attn, v)
                .swap_dims(1, 2)
                .reshape([b, t, h * dk]);
            x = x + linear(a, blk.o.val(), None);
            let xn = rms_norm(x.clone(), &blk.ff_norm, eps);
            let hidden = match &blk.wi_1 {
                Some(wi_1) => {
                    gelu_approximate(linear(xn.clone(), blk.wi_0.val(), None))
                        * linear(xn, wi_1.val(), None)
                }
                None => relu(linear(xn, blk.wi_0.val(), None)),
            };
            x = x + linear(hidden, blk.wo.val(), None);
        }
        rms_norm(x, &self.final_norm, eps)
    }
}

/// A vector parameter `[n]` read from `src`.
fn vector_param(
    src: &dyn WeightSource,
    name: &str,
    n: usize,
    train: bool,
    device: &Device,
) -> Result<Param<Tensor<1>>> {
    let data = src.load_checked(name, &[n])?;
    Ok(
        Param::from_tensor(Tensor::from_data(TensorData::new(data, [n]), device))
            .set_require_grad(train),
    )
}

/// A projection `[d_in, d_out]` read from `src`, where PyTorch stores it
/// `[d_out, d_in]`.
fn linear_param(
    src: &dyn WeightSource,
    name: &str,
    d_in: usize,
    d_out: usize,
    train: bool,
    device: &Device,
) -> Result<Param<Tensor<2>>> {
    let data = src.load_checked(name, &[d_out, d_in])?;
    let mut t = vec![0f32; data.len()];
    for o in 0..d_out {
        for i in 0..d_in {
            t[i * d_out + o] = data[o * d_in + i];
        }
    }
    Ok(
        Param::from_tensor(Tensor::from_data(TensorData::new(t, [d_in, d_out]), device))
            .set_require_grad(train),
    )
}

#[cfg(test)]
mod tests {
    use super::bucket;

    /// Values of transformers' `T5Attention._relative_position_bucket`
    /// (bidirectional, 32 buckets, max distance 128) for these distances.
    #[test]
    fn buckets_match_transformers() {
        let cases = [
            (0, 0),
            (1, 17),
            (-1, 1),
            (7, 23),
            (-7, 7),
            (8, 24),
            (-8, 8),
            (20, 26),
            (-20, 10),
            (127, 31),
            (-500, 15),
        ];
        for (rel, want) in cases {
            assert_eq!(bucket(rel, 32, 128), want, "distance {rel}");
        }
    }
}
