//! BERT encoder ("BERT: Pre-training of Deep Bidirectional Transformers",
//! Devlin et al., 2019), post-LayerNorm, exact GELU. Parameter names follow
//! Hugging Face `BertModel` (with or without the `bert.` prefix);
//! all-MiniLM-L6-v2 is one.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use mac_kernels::activation::gelu;
use serde::{Deserialize, Serialize};

use crate::error::{EncoderError, Result};
use mac_kernels::attention::masked_attention;
use mac_kernels::linear::linear_layer;
use mac_kernels::weights::{Scope, WeightSource};

use crate::Trainable;

/// BERT hyper-parameters, named as in Hugging Face `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Learned positions.
    pub max_position_embeddings: usize,
    /// Segment vocabulary.
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    /// Activation; `gelu` (exact) is supported.
    #[serde(default = "act")]
    pub hidden_act: String,
}

fn two() -> usize {
    2
}
fn eps() -> f64 {
    1e-12
}
fn act() -> String {
    "gelu".into()
}

impl BertConfig {
    /// The configuration in a parsed `config.json` (read from `cfg_path`,
    /// which errors name), checked.
    pub fn from_json(cfg_path: &Path, json: &serde_json::Value) -> Result<Self> {
        let config: BertConfig = crate::backbone::config_from_json(cfg_path, json)?;
        if config.hidden_act != "gelu" {
            return Err(EncoderError::Config {
                path: cfg_path.to_path_buf(),
                key: "hidden_act".into(),
                reason: format!("`{}` is not supported (gelu is)", config.hidden_act),
            });
        }
        config.check(cfg_path)?;
        Ok(config)
    }

    /// Checks the numbers before anything is sized by them; errors name
    /// `path` and the key.
    pub fn check(&self, path: &Path) -> Result<()> {
        let h = self.num_attention_heads;
        Ok(mac_lm::check_config(
            path,
            &[
                ("vocab_size", self.vocab_size > 0, "must be positive"),
                (
                    "hidden_size",
                    self.hidden_size > 0 && h > 0 && self.hidden_size.is_multiple_of(h),
                    "must be a positive multiple of num_attention_heads",
                ),
                (
                    "num_hidden_layers",
                    (1..=mac_lm::MAX_LAYERS).contains(&self.num_hidden_layers),
                    "must be between 1 and 1024",
                ),
                ("num_attention_heads", h > 0, "must be positive"),
                (
                    "intermediate_size",
                    self.intermediate_size > 0,
                    "must be positive",
                ),
                (
                    "max_position_embeddings",
                    self.max_position_embeddings >= 2,
                    "must be at least 2",
                ),
                (
                    "type_vocab_size",
                    self.type_vocab_size > 0,
                    "must be positive",
                ),
                (
                    "layer_norm_eps",
                    self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0,
                    "must be a finite non-negative number",
                ),
            ],
        )?)
    }
}

/// One encoder layer.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// Query projection.
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// Attention output projection.
    pub attn_out: Linear,
    /// Norm after attention.
    pub attn_norm: LayerNorm,
    /// Feed-forward up.
    pub intermediate: Linear,
    /// Feed-forward down.
    pub output: Linear,
    /// Norm after the feed-forward.
    pub out_norm: LayerNorm,
}

/// A BERT encoder.
#[derive(Module, Debug)]
pub struct Bert {
    /// Token embeddings.
    pub word_embeddings: Embedding,
    /// Position embeddings.
    pub position_embeddings: Embedding,
    /// Segment embeddings (segment 0 is used).
    pub token_type_embeddings: Embedding,
    /// Embedding norm.
    pub embed_norm: LayerNorm,
    /// Layers.
    pub layers: Vec<BertLayer>,
    #[module(skip)]
    config: BertConfig,
}

/// Reads the encoder's parameters under a path of the checkpoint.
#[derive(Clone)]
struct Loader<'a> {
    src: &'a dyn WeightSource,
    scope: Scope,
    device: Device,
}

impl Loader<'_> {
    /// The same loader one part deeper.
    fn pp(&self, part: impl std::fmt::Display) -> Self {
        Self {
            scope: self.scope.pp(part),
            ..self.clone()
        }
    }
    fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        train: bool,
    ) -> Result<Param<Tensor<D>>> {
        let data = self.src.load_checked(&self.scope.name(name), &shape)?;
        let t = Tensor::<D>::from_data(TensorData::new(data, shape), &self.device);
        Ok(Param::from_tensor(t).set_require_grad(train))
    }
    fn linear(&self, name: &str, d_in: usize, d_out: usize, train: bool) -> Result<Linear> {
        // PyTorch stores [out, in]; Burn's Linear wants [in, out]. Transposed
        // on the host so the parameter is a leaf of the autodiff graph.
        let full = self.scope.pp(name).name("weight");
        let data = self.src.load_checked(&full, &[d_out, d_in])?;
        let mut t = vec![0f32; data.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                t[i * d_out + o] = data[o * d_in + i];
            }
        }
        let w = Tensor::<2>::from_data(TensorData::new(t, [d_in, d_out]), &self.device);
        Ok(Linear {
            weight: Param::from_tensor(w).set_require_grad(train),
            bias: Some(self.tensor(&format!("{name}.bias"), [d_out], train)?),
        })
    }
    fn norm(&self, name: &str, d: usize, eps: f64, train: bool) -> Result<LayerNorm> {
        let mut ln = LayerNormConfig::new(d).with_epsilon(eps).init(&self.device);
        ln.gamma = self.tensor(&format!("{name}.weight"), [d], train)?;
        ln.beta = Some(self.tensor(&format!("{name}.bias"), [d], train)?);
        Ok(ln)
    }
    fn embedding(&self, name: &str, n: usize, d: usize, train: bool) -> Result<Embedding> {
        Ok(Embedding {
            weight: self.tensor(&format!("{name}.weight"), [n, d], train)?,
        })
    }
}

impl Bert {
    /// Loads `config.json` + `*.safetensors` from a Hugging Face directory.
    pub fn load(dir: impl AsRef<Path>, device: &Device, trainable: Trainable) -> Result<Self> {
        let files = crate::EncoderFiles::open(dir)?;
        let config = BertConfig::from_json(&files.config_path(), files.config())?;
        Self::from_source(config, files.weights()?, device, trainable)
    }

    /// Builds the encoder from checkpoint tensors.
    pub fn from_source(
        config: BertConfig,
        src: &dyn WeightSource,
        device: &Device,
        trainable: Trainable,
    ) -> Result<Self> {
        // BertModel checkpoints of other heads nest the weights under `bert`.
        let nested = src
            .shape("bert.embeddings.word_embeddings.weight")
            .is_some();
        let scope = match nested {
            true => Scope::default().pp("bert"),
            false => Scope::default(),
        };
        let l = Loader {
            src,
            scope,
            device: device.clone(),
        };
        let (d, f, eps) = (
            config.hidden_size,
            config.intermediate_size,
            config.layer_norm_eps,
        );
        let n = config.num_hidden_layers;
        let layer_trains = |i: usize| match trainable {
            Trainable::All => true,
            Trainable::TopLayers(k) => i + k >= n,
            Trainable::None => false,
        };
        let emb_train = trainable == Trainable::All;
        let mut layers = Vec::new();
        for i in 0..n {
            let layer = l.pp("encoder.layer").pp(i);
            let (attn, out) = (layer.pp("attention"), layer.pp("output"));
            let t = layer_trains(i);
            layers.push(BertLayer {
                query: attn.linear("self.query", d, d, t)?,
                key: attn.linear("self.key", d, d, t)?,
                value: attn.linear("self.value", d, d, t)?,
                attn_out: attn.linear("output.dense", d, d, t)?,
                attn_norm: attn.norm("output.LayerNorm", d, eps, t)?,
                intermediate: layer.linear("intermediate.dense", d, f, t)?,
                output: out.linear("dense", f, d, t)?,
                out_norm: out.norm("LayerNorm", d, eps, t)?,
            });
        }
        Ok(Self {
            word_embeddings: l.embedding(
                "embeddings.word_embeddings",
                config.vocab_size,
                d,
                emb_train,
            )?,
            position_embeddings: l.embedding(
                "embeddings.position_embeddings",
                config.max_position_embeddings,
                d,
                emb_train,
            )?,
            token_type_embeddings: l.embedding(
                "embeddings.token_type_embeddings",
                config.type_vocab_size,
                d,
                emb_train,
            )?,
            embed_norm: l.norm("embeddings.LayerNorm", d, eps, emb_train)?,
            layers,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Output width.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// Last hidden states `[B, T, d]`. `valid` is `[B, T]` (true = real
    /// token); padded keys are masked in every layer.
    pub fn forward(&self, ids: Tensor<2, Int>, valid: Tensor<2, Bool>) -> Tensor<3> {
        let device = ids.device();
        let [b, t] = ids.dims();
        let h = self.config.num_attention_heads;
        let dh = self.config.hidden_size / h;
        let pos: Vec<i64> = (0..b).flat_map(|_| 0..t as i64).collect();
        let pos = Tensor::<2, Int>::from_data(TensorData::new(pos, [b, t]), &device);
        let seg = Tensor::<2, Int>::zeros([b, t], &device);
        let x = self.word_embeddings.forward(ids)
            + self.position_embeddings.forward(pos)
            + self.token_type_embeddings.forward(seg);
        let mut x = self.embed_norm.forward(x);
        // true = masked: padded keys, for every query and head.
        let mask = valid.bool_not().reshape([b, 1, 1, t]).expand([b, h, t, t]);
        for layer in &self.layers {
            let heads = |z: Tensor<3>| z.reshape([b, t, h, dh]).swap_dims(1, 2);
            let q = heads(linear_layer(&layer.query, x.clone()));
            let k = heads(linear_layer(&layer.key, x.clone()));
            let v = heads(linear_layer(&layer.value, x.clone()));
            let a = masked_attention(q, k, v, mask.clone())
                .swap_dims(1, 2)
                .reshape([b, t, h * dh]);
            x = layer
                .attn_norm
                .forward(x + linear_layer(&layer.attn_out, a));
            let ff = linear_layer(
                &layer.output,
                gelu(linear_layer(&layer.intermediate, x.clone())),
            );
            x = layer.out_norm.forward(x + ff);
        }
        x
    }

    /// Mean of the valid tokens' states, L2-normalised: the sentence
    /// embedding of sentence-transformers' all-MiniLM-L6-v2. `[B, d]`.
    pub fn sentence_embedding(&self, ids: Tensor<2, Int>, valid: Tensor<2, Bool>) -> Tensor<2> {
        let states = self.forward(ids, valid.clone());
        let w = valid.float().unsqueeze_dim::<3>(2); // [B, T, 1]
        let summed = (states * w.clone()).sum_dim(1).squeeze_dim::<2>(1);
        let count = w.sum_dim(1).squeeze_dim::<2>(1).clamp_min(1e-9);
        let mean = summed / count;
        let norm = mean
            .clone()
            .powi_scalar(2)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        mean / norm
    }
}
