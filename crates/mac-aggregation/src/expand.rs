//! Expansion of the aggregated tokens into per-layer prefix keys and values.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};
use mac_kernels::linear::linear;
use serde::{Deserialize, Serialize};

use mac_lm::{BaseLm, KvLayout, PrefixKv};

/// How the slots get their MLPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpansionKind {
    /// The reference: every one of the `2·L·p` slots has its own residual MLP.
    PerSlot,
    /// Parameter-lean: one shared MLP, each slot adding its own learned embedding.
    SharedWithSlotEmbeddings,
    /// `p` *virtual tokens* in the base LM's hidden space (`width` wide), made
    /// by the shared MLP with slot embeddings; every layer of the frozen LM
    /// turns them into its prefix keys and values with its own norm and
    /// projections ([`mac_lm::BaseLm::virtual_token_prefix`]), so the prefix
    /// starts out in a form the LM already reads.
    VirtualTokens {
        /// The LM's hidden width.
        width: usize,
    },
    /// `p` *soft-prompt tokens* in the base LM's input-embedding space
    /// (`width` wide), made by the shared MLP with slot embeddings; the
    /// frozen LM runs them as a causal context placed before the question
    /// and its own per-layer keys and values are the prefix
    /// ([`mac_lm::BaseLm::soft_prompt_prefix`]). Every layer then holds what
    /// the LM would compute for text, so what the tokens carry reaches the
    /// question the way context does. Llama-family LMs only.
    SoftPrompt {
        /// The LM's hidden width.
        width: usize,
    },
}

/// What the expansion's rows are: prefix slots, or tokens the LM reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputForm {
    Kv,
    VirtualTokens,
    SoftPrompt,
}

/// What the expansion produces: prefix key/values directly, or virtual
/// tokens the base LM turns into them.
#[derive(Debug, Clone)]
pub enum ExpansionOutput {
    /// Per-layer keys and values.
    Kv(PrefixKv),
    /// Virtual tokens `[B, p, d_lm]`.
    VirtualTokens(Box<Tensor<3>>),
    /// Soft-prompt input embeddings `[B, p, d_lm]`.
    SoftPrompt(Box<Tensor<3>>),
}

impl ExpansionOutput {
    /// The prefix key/values, asking `lm` to project virtual tokens.
    pub fn into_prefix(self, lm: &BaseLm) -> mac_lm::Result<PrefixKv> {
        match self {
            ExpansionOutput::Kv(kv) => Ok(kv),
            ExpansionOutput::VirtualTokens(h) => lm.virtual_token_prefix(*h),
            ExpansionOutput::SoftPrompt(e) => lm.soft_prompt_prefix(*e),
        }
    }

    /// The key/values when the expansion made them directly.
    pub fn kv(self) -> Option<PrefixKv> {
        match self {
            ExpansionOutput::Kv(kv) => Some(kv),
            ExpansionOutput::VirtualTokens(_) | ExpansionOutput::SoftPrompt(_) => None,
        }
    }
}

/// Configuration of a [`PrefixExpansion`].
#[derive(Config, Debug)]
pub struct PrefixExpansionConfig {
    /// Width of the aggregated tokens.
    pub d_mod: usize,
    /// Number of aggregated tokens `n`.
    pub n_tokens: usize,
    /// Prefix length per layer `p`.
    #[config(default = 2)]
    pub prefix_len: usize,
    /// Hidden width of the slot MLPs (reference: 768).
    #[config(default = 768)]
    pub d_hidden: usize,
    /// Per-slot or shared MLPs.
    #[config(default = "ExpansionKind::PerSlot")]
    pub kind: ExpansionKind,
    /// Start the output layer and the skip at zero, so every prefix key and
    /// value is zero at initialisation and the frozen LM starts out (almost)
    /// as itself instead of reading random prefixes. A soft prompt starts
    /// small instead (0.1 of the usual scale): the LM's RMS norm of an
    /// all-zero input has an unbounded gradient.
    #[config(default = false)]
    pub zero_output: bool,
}

/// Aggregated tokens `[B, n, d_mod]` → prefix keys/values for every layer.
#[derive(Module, Debug)]
pub struct PrefixExpansion {
    /// Norm of every slot's input.
    pub norm: LayerNorm,
    /// First layer: `[S, d_mod, hid]` per slot, or `[1, d_mod, hid]` shared.
    pub w1: Param<Tensor<3>>,
    /// Its bias `[S or 1, 1, hid]`.
    pub b1: Param<Tensor<3>>,
    /// Second layer `[S or 1, hid, kv]`.
    pub w2: Param<Tensor<3>>,
    /// Its bias `[S or 1, 1, kv]`.
    pub b2: Param<Tensor<3>>,
    /// Slot embeddings `[S, 1, d_mod]` (shared kind only).
    pub slot_embed: Option<Param<Tensor<3>>>,
    /// Linear skip `[d_mod, kv]` when the widths differ or the output starts at zero
    /// (otherwise the identity).
    pub skip: Option<Param<Tensor<2>>>,
    #[module(skip)]
    layout: (usize, usize, usize, usize),
    #[module(skip)]
    form: OutputForm,
}

impl PrefixExpansionConfig {
    /// Builds the expansion for a base LM's KV layout.
    pub fn init(&self, layout: KvLayout, device: &Device) -> PrefixExpansion {
        // Slots and the width of each: per-layer keys/values, or virtual tokens.
        let (slots, kv) = match self.kind {
            ExpansionKind::VirtualTokens { width } | ExpansionKind::SoftPrompt { width } => {
                (self.prefix_len, width)
            }
            _ => (2 * layout.n_layers * self.prefix_len, layout.kv_width()),
        };
        let (d, hid) = (self.d_mod, self.d_hidden);
        let m = match self.kind {
            ExpansionKind::PerSlot => slots,
            _ => 1,
        };
        let form = match self.kind {
            ExpansionKind::VirtualTokens { .. } => OutputForm::VirtualTokens,
            ExpansionKind::SoftPrompt { .. } => OutputForm::SoftPrompt,
            _ => OutputForm::Kv,
        };
        let out_scale = match (self.zero_output, form) {
            (false, _) => 1.0,
            (true, OutputForm::SoftPrompt) => 0.1,
            (true, _) => 0.0,
        };
        let u = |shape: [usize; 3], fan: usize, scale: f64| -> Param<Tensor<3>> {
            if scale == 0.0 {
                return Initializer::Zeros.init(shape, device);
            }
            let bound = scale / (fan as f64).sqrt();
            Initializer::Uniform {
                min: -bound,
                max: bound,
            }
            .init(shape, device)
        };
        PrefixExpansion {
            norm: LayerNormConfig::new(d).init(device),
            w1: u([m, d, hid], d, 1.0),
            b1: Initializer::Zeros.init([m, 1, hid], device),
            w2: u([m, hid, kv], hid, out_scale),
            b2: Initializer::Zeros.init([m, 1, kv], device),
            slot_embed: (self.kind != ExpansionKind::PerSlot).then(|| {
                Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                }
                .init([slots, 1, d], device)
            }),
            skip: (d != kv || self.zero_output).then(|| {
                if out_scale == 0.0 {
                    return Initializer::Zeros.init([d, kv], device);
                }
                let bound = out_scale / (d as f64).sqrt();
                Initializer::Uniform {
                    min: -bound,
                    max: bound,
                }
                .init([d, kv], device)
            }),
            layout: (
                layout.n_layers,
                layout.n_kv_heads,
                layout.head_dim,
                self.prefix_len,
            ),
            form,
        }
    }
}

impl PrefixExpansion {
    /// `[B, n, d_mod]` → prefix key/values with `p` slots per layer (or `p`
    /// virtual tokens). Slot `s` reads aggregated token `s mod n`.
    pub fn forward(&self, tokens: Tensor<3>) -> ExpansionOutput {
        let [b, n, d] = tokens.dims();
        let (layers, hkv, dh, p) = self.layout;
        let slots = match self.form {
            OutputForm::Kv => 2 * layers * p,
            OutputForm::VirtualTokens | OutputForm::SoftPrompt => p,
        };
        let kv = self.w2.dims()[2];
        let index: Vec<i64> = (0..slots).map(|s| (s % n) as i64).collect();
        let index = Tensor::<1, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(index, [slots]),
            &tokens.device(),
        );
        let x = tokens.select(1, index); // [B, S, d]
        let input = match &self.slot_embed {
            Some(e) => x.clone() + e.val().reshape([1, slots, d]),
            None => x.clone(),
        };
        let hn = self.norm.forward(input);
        let [m, _, hid] = self.w1.dims();
        let y = if m == 1 {
            // One shared MLP: plain matmuls over all B·S rows.
            let h = gelu(linear(
                hn,
                self.w1.val().reshape([d, hid]),
                Some(self.b1.val().reshape([hid])),
            ));
            linear(
                h,
                self.w2.val().reshape([hid, kv]),
                Some(self.b2.val().reshape([kv])),
            )
        } else {
            // One MLP per slot: batched over the slots, [S, B, d] x [S, d, hid].
            let hs = hn.swap_dims(0, 1);
            let h = gelu(hs.matmul(self.w1.val()) + self.b1.val());
            (h.matmul(self.w2.val()) + self.b2.val()).swap_dims(0, 1)
        };
        let residual = match &self.skip {
            Some(s) => linear(x, s.val(), None),
            None => x,
        };
        match self.form {
            OutputForm::VirtualTokens => {
                return ExpansionOutput::VirtualTokens(Box::new(y + residual))
            }
            OutputForm::SoftPrompt => return ExpansionOutput::SoftPrompt(Box::new(y + residual)),
            OutputForm::Kv => {}
        }
        // [B, S, kv] -> [B, L, 2, p, H_kv, dh] -> per layer [B, H_kv, p, dh]
        let out = (y + residual).reshape([b, layers, 2, p, hkv, dh]);
        let layers_kv = (0..layers)
            .map(|l| {
                let layer = out.clone().narrow(1, l, 1);
                let k = layer
                    .clone()
                    .narrow(2, 0, 1)
                    .reshape([b, p, hkv, dh])
                    .swap_dims(1, 2);
                let v = layer
                    .narrow(2, 1, 1)
                    .reshape([b, p, hkv, dh])
                    .swap_dims(1, 2);
                (k, v)
            })
            .collect();
        ExpansionOutput::Kv(PrefixKv { layers: layers_kv })
    }
}
