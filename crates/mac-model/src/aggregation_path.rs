//! The paper's path of a [`MacModel`](crate::MacModel) (MAC, Tack et al.
//! 2024): documents amortized by the encoder into modulations, questions
//! aggregated over them, the aggregate expanded into the frozen LM's
//! per-layer prefix key/values.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};
use mac_aggregation::{Aggregator, AggregatorConfig, PrefixExpansion, PrefixExpansionConfig};
use mac_encoder::EncoderFiles;
use mac_lm::{BaseLm, KvLayout, PrefixKv};

use crate::{AmortizationEncoder, LmChannelSpec, MacConfig, ModelError};

/// The paper's path: what it builds and nothing of copy mode's.
#[derive(Module, Debug)]
pub struct AggregationPath {
    /// Document → modulation (the amortization network).
    pub amortizer: AmortizationEncoder,
    /// Question tokens attend over the bank.
    pub aggregator: Aggregator,
    /// Aggregated tokens → per-layer prefix key/values.
    pub expansion: PrefixExpansion,
    /// Mean aggregated token → LM hidden width `[d_mod, d_lm]` (training aid).
    pub answer_probe: Option<Param<Tensor<2>>>,
}

impl AggregationPath {
    /// Fresh heads over the pretrained encoder in `encoder_files`, shaped
    /// as `config` says, the expansion writing `kv_layout`.
    pub(crate) fn init(
        config: &MacConfig,
        encoder_files: &EncoderFiles,
        kv_layout: KvLayout,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let lm_channel = config.lm_token_channel_width.map(|width| LmChannelSpec {
            width,
            layer: config.lm_token_channel_layer,
        });
        Ok(Self {
            amortizer: AmortizationEncoder::load(
                encoder_files,
                config.n_tokens,
                config.d_mod,
                config.head_heads,
                config.document_trainable,
                lm_channel,
                device,
            )?,
            aggregator: AggregatorConfig::new(config.d_mod)
                .with_n_blocks(config.aggregator_blocks)
                .with_n_heads(config.aggregator_heads)
                .with_d_head(config.aggregator_head_dim)
                .with_question_residual(config.aggregator_question_residual)
                .with_selector_dim(config.aggregator_selector_dim)
                .init(device),
            expansion: PrefixExpansionConfig::new(config.d_mod, config.n_tokens)
                .with_prefix_len(config.prefix_len)
                .with_d_hidden(config.expansion_hidden)
                .with_kind(config.expansion_kind)
                .with_zero_output(config.zero_init_prefix)
                .init(kv_layout, device),
            answer_probe: config.answer_probe_width.map(|w| {
                let bound = 1.0 / (config.d_mod as f64).sqrt();
                Initializer::Uniform {
                    min: -bound,
                    max: bound,
                }
                .init([config.d_mod, w], device)
            }),
        })
    }

    /// Aggregated tokens → the frozen LM's prefix key/values (through
    /// `lm`'s own projections when the expansion makes virtual tokens).
    ///
    /// # Shapes
    /// - `modulation`: `[B, n, d_mod]`
    pub fn prefix(&self, lm: &BaseLm, modulation: Tensor<3>) -> Result<PrefixKv, ModelError> {
        Ok(self.expansion.forward(modulation).into_prefix(lm)?)
    }

    /// The answer probe's hidden states (the aggregated tokens' mean,
    /// projected); `None` without a probe.
    ///
    /// # Shapes
    /// - `modulation`: `[B, n, d_mod]` → `[B, 1, d_lm]`
    pub fn answer_probe_hidden(&self, modulation: Tensor<3>) -> Option<Tensor<3>> {
        let w = self.answer_probe.as_ref()?;
        let [b, n, d] = modulation.dims();
        let mean = modulation.sum_dim(1).reshape([b, d]) / n as f64;
        let width = w.dims()[1];
        Some(mean.matmul(w.val()).reshape([b, 1, width]))
    }
}
