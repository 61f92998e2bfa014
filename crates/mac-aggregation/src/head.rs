//! Learned query tokens over an encoder's output, with per-token MLPs.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig};
use burn::tensor::activation::{softmax, tanh};
use burn::tensor::{Bool, Device, Tensor};
use mac_kernels::linear::{batched_matmul, linear};

/// Configuration of a [`QueryTokenHead`].
#[derive(Config, Debug)]
pub struct QueryTokenHeadConfig {
    /// Width of the encoder output `h`.
    pub d_input: usize,
    /// Number of output tokens `n`.
    pub n_tokens: usize,
    /// Width of each output token `d` (the modulation width).
    pub d_output: usize,
    /// Attention heads of the query cross-attention.
    #[config(default = 4)]
    pub n_heads: usize,
}

/// `n` learned queries → masked cross-attention → one MLP per token.
#[derive(Module, Debug)]
pub struct QueryTokenHead {
    /// Learned queries `[n, h]`.
    pub queries: Param<Tensor<2>>,
    /// Query projection `[h, h]`.
    pub w_q: Param<Tensor<2>>,
    /// Key projection `[h, h]`.
    pub w_k: Param<Tensor<2>>,
    /// Value projection `[h, h]`.
    pub w_v: Param<Tensor<2>>,
    /// LayerNorm at the head of every token MLP (one norm shared by the `n` tokens).
    pub norm: LayerNorm,
    /// Per-token first layer `[n, h, d]` and bias `[n, 1, d]`.
    pub w1: Param<Tensor<3>>,
    /// Bias of the first layer.
    pub b1: Param<Tensor<3>>,
    /// Per-token second layer `[n, d, d]`.
    pub w2: Param<Tensor<3>>,
    /// Bias of the second layer.
    pub b2: Param<Tensor<3>>,
    /// Per-token linear skip `[n, h, d]` (when h ≠ d; identity otherwise).
    pub skip: Option<Param<Tensor<3>>>,
    #[module(skip)]
    n_heads: usize,
}

fn init<const D: usize>(shape: [usize; D], fan_in: usize, device: &Device) -> Param<Tensor<D>> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Initializer::Uniform {
        min: -bound,
        max: bound,
    }
    .init(shape, device)
}

impl QueryTokenHeadConfig {
    /// Builds the head with random weights on `device`.
    pub fn init(&self, device: &Device) -> QueryTokenHead {
        let (h, n, d) = (self.d_input, self.n_tokens, self.d_output);
        QueryTokenHead {
            queries: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([n, h], device),
            w_q: init([h, h], h, device),
            w_k: init([h, h], h, device),
            w_v: init([h, h], h, device),
            norm: LayerNormConfig::new(h).init(device),
            w1: init([n, h, d], h, device),
            b1: Initializer::Zeros.init([n, 1, d], device),
            w2: init([n, d, d], d, device),
            b2: Initializer::Zeros.init([n, 1, d], device),
            skip: (h != d).then(|| init([n, h, d], h, device)),
            n_heads: self.n_heads,
        }
    }
}

impl QueryTokenHead {
    /// Number of output tokens.
    pub fn n_tokens(&self) -> usize {
        self.queries.dims()[0]
    }

    /// Output width.
    pub fn d_output(&self) -> usize {
        self.w2.dims()[2]
    }

    /// `states [B, T, h]`, `valid [B, T]` → tokens `[B, n, d]`. Padded
    /// positions get no attention.
    pub fn forward(&self, states: Tensor<3>, valid: Tensor<2, Bool>) -> Tensor<3> {
        let [b, t, h] = states.dims();
        let n = self.n_tokens();
        let nh = self.n_heads;
        let dh = h / nh;
        let q = self
            .queries
            .val()
            .matmul(self.w_q.val())
            .reshape([1, n, nh, dh])
            .swap_dims(1, 2)
            .expand([b, nh, n, dh]);
        let heads = |z: Tensor<3>| z.reshape([b, t, nh, dh]).swap_dims(1, 2);
        let k = heads(linear(states.clone(), self.w_k.val(), None));
        let v = heads(linear(states, self.w_v.val(), None));
        let scores = batched_matmul(q, k.swap_dims(2, 3)) / (dh as f64).sqrt();
        let mask = valid.bool_not().reshape([b, 1, 1, t]).expand([b, nh, n, t]);
        let attn = softmax(scores.mask_fill(mask, -1e9), 3);
        let x = batched_matmul(attn, v).swap_dims(1, 2).reshape([b, n, h]);
        self.token_mlps(x)
    }

    /// The per-token MLPs on `[B, n, h]`: batched over the `n` tokens
    /// (`[n, B, h] x [n, h, d]`), so no weight is copied per batch row.
    fn token_mlps(&self, x: Tensor<3>) -> Tensor<3> {
        let xs = x.swap_dims(0, 1); // [n, B, h]
        let hn = self.norm.forward(xs.clone());
        let y = tanh(batched_matmul(hn, self.w1.val()) + self.b1.val());
        let y = batched_matmul(y, self.w2.val()) + self.b2.val();
        let skip = match &self.skip {
            Some(s) => batched_matmul(xs, s.val()),
            None => xs,
        };
        (y + skip).swap_dims(0, 1)
    }
}
