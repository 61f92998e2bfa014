//! The assembled MAC model.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use mac_aggregation::{trainable_params, Aggregation, Aggregator, ExpansionKind};
use mac_encoder::{EncoderFiles, Trainable};
use mac_lm::{BaseLm, KvLayout, PrefixKv};
use serde::{Deserialize, Serialize};

use crate::aggregation_path::AggregationPath;
use crate::copy_mode::{CopyConfig, CopyPath};
use crate::AmortizationEncoder;

/// Anything that can go wrong building, running or restoring a [`MacModel`].
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Loading or running the LM or its tokenizer failed.
    #[error(transparent)]
    Lm(#[from] mac_lm::LmError),
    /// Loading or running an encoder or its tokenizer failed.
    #[error(transparent)]
    Encoder(#[from] mac_encoder::EncoderError),
    /// A memory cannot be aggregated (empty, wrong shape, no keys).
    #[error(transparent)]
    Aggregation(#[from] mac_aggregation::AggregationError),
    /// A checkpoint is missing, unreadable or does not fit.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The checkpoint file or directory.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Bad input (empty text, mismatched shapes).
    #[error("{0}")]
    Input(String),
}

/// The shape of a MAC model. Serialised into every checkpoint (`mac.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacConfig {
    /// Virtual tokens per document `n` (reference: 12 or 24).
    pub n_tokens: usize,
    /// Width of a modulation token `d_mod`.
    pub d_mod: usize,
    /// Which layers of the document encoder's backbone train.
    pub document_trainable: Trainable,
    /// Which layers of the question encoder's backbone train.
    pub question_trainable: Trainable,
    /// Heads of the query-token cross-attention in both encoders.
    pub head_heads: usize,
    /// Cross-attention blocks of the aggregator (reference: 4).
    pub aggregator_blocks: usize,
    /// Heads per aggregator block (reference: 8).
    pub aggregator_heads: usize,
    /// Width of one aggregator head (reference: 96).
    pub aggregator_head_dim: usize,
    /// Keep the question tokens on the aggregator's residual path to its
    /// output (the reference) or output only what was read from memory.
    #[serde(default = "yes")]
    pub aggregator_question_residual: bool,
    /// Key width of the aggregator's learnt document selector (`null` = no
    /// selector, the reference): per-document scores added to its attention
    /// logits, trained by the selection phase.
    #[serde(default)]
    pub aggregator_selector_dim: Option<usize>,
    /// Prefix length per layer `p` (reference: 2).
    pub prefix_len: usize,
    /// Hidden width of the expansion MLPs (reference: 768).
    pub expansion_hidden: usize,
    /// Per-slot MLPs (reference) or one shared MLP with slot embeddings.
    pub expansion_kind: ExpansionKind,
    /// Initialise the expansion's output at zero (the LM starts as itself).
    #[serde(default)]
    pub zero_init_prefix: bool,
    /// Width of the base LM's hidden state when the model carries an
    /// *answer probe* (a linear map from the aggregated modulation, read out
    /// through the LM's own output embedding; trained by the auxiliary
    /// answer-token loss, unused when answering). `null` = no probe.
    #[serde(default)]
    pub answer_probe_width: Option<usize>,
    /// Width of the base LM's token embeddings when the amortization
    /// encoder also reads each document's tokens as the frozen LM embeds
    /// them (the *LM-token channel*); `null` = the encoder backbone only.
    #[serde(default)]
    pub lm_token_channel_width: Option<usize>,
    /// What the LM-token channel reads: the LM's input embeddings (`null`)
    /// or its residual stream after this many layers.
    #[serde(default)]
    pub lm_token_channel_layer: Option<usize>,
    /// Copy mode (`null` = off, the reference): documents are amortized by
    /// a [`CopyHead`](mac_aggregation::CopyHead) over the base LM's own
    /// tokens and questions read them with a
    /// [`CopyReader`](mac_aggregation::CopyReader) into soft-prompt tokens,
    /// instead of the encoder head, the aggregator and the expansion.
    #[serde(default)]
    pub copy: Option<CopyConfig>,
    /// Encoder token limit for documents (longer ones are truncated, with a warning).
    pub max_document_tokens: usize,
    /// Encoder token limit for questions.
    pub max_question_tokens: usize,
}

impl Default for MacConfig {
    /// The CPU-sized default: 12 tokens of width 384 (MiniLM's width),
    /// the reference's 4 aggregator blocks, and the lean shared expansion.
    fn default() -> Self {
        Self {
            n_tokens: 12,
            d_mod: 384,
            document_trainable: Trainable::TopLayers(2),
            question_trainable: Trainable::TopLayers(2),
            head_heads: 6,
            aggregator_blocks: 4,
            aggregator_heads: 6,
            aggregator_head_dim: 64,
            aggregator_question_residual: false,
            aggregator_selector_dim: None,
            prefix_len: 2,
            expansion_hidden: 768,
            expansion_kind: ExpansionKind::SharedWithSlotEmbeddings,
            zero_init_prefix: true,
            answer_probe_width: Some(576),
            lm_token_channel_width: Some(576),
            lm_token_channel_layer: Some(12),
            copy: None,
            max_document_tokens: 256,
            max_question_tokens: 64,
        }
    }
}

/// Largest value a size field of [`MacConfig`] may take: a configuration
/// read from a file cannot ask for an absurd allocation.
pub const MAX_CONFIG_SIZE: usize = 1 << 16;

impl MacConfig {
    /// A lower bound on the parameters of the model this configuration
    /// builds: the aggregator blocks' projections (`4 · d_mod · heads ·
    /// head_dim`) and feed-forward layers (`8 · d_mod²`) alone. A checkpoint
    /// whose parameter file is smaller than this many half-precision values
    /// cannot hold the model, and is refused before anything is allocated.
    pub fn least_parameter_count(&self) -> u128 {
        let (d, inner) = (
            self.d_mod as u128,
            self.aggregator_heads as u128 * self.aggregator_head_dim as u128,
        );
        self.aggregator_blocks as u128 * (4 * d * inner + 8 * d * d)
    }

    /// Checks that every size is positive and bounded, so that building the
    /// model neither divides by zero nor allocates without bound; the error
    /// names the field.
    pub fn validate(&self) -> Result<(), String> {
        let sizes = [
            ("n_tokens", self.n_tokens),
            ("d_mod", self.d_mod),
            ("head_heads", self.head_heads),
            ("aggregator_blocks", self.aggregator_blocks),
            ("aggregator_heads", self.aggregator_heads),
            ("aggregator_head_dim", self.aggregator_head_dim),
            ("prefix_len", self.prefix_len),
            ("expansion_hidden", self.expansion_hidden),
            ("max_document_tokens", self.max_document_tokens),
            ("max_question_tokens", self.max_question_tokens),
        ];
        let optional = [
            ("aggregator_selector_dim", self.aggregator_selector_dim),
            ("answer_probe_width", self.answer_probe_width),
            ("lm_token_channel_width", self.lm_token_channel_width),
            ("copy.slots", self.copy.as_ref().map(|c| c.slots)),
            ("copy.key_dim", self.copy.as_ref().map(|c| c.key_dim)),
            (
                "copy.prefix_tokens",
                self.copy.as_ref().map(|c| c.prefix_tokens),
            ),
            ("copy.lm_width", self.copy.as_ref().map(|c| c.lm_width)),
        ];
        let all = sizes
            .into_iter()
            .chain(optional.into_iter().filter_map(|(f, v)| v.map(|v| (f, v))));
        for (field, value) in all {
            if value == 0 || value > MAX_CONFIG_SIZE {
                return Err(format!(
                    "{field} is {value}: it must be between 1 and {MAX_CONFIG_SIZE}"
                ));
            }
        }
        Ok(())
    }
}

/// Parameter counts of one module.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamSummary {
    /// Module name.
    pub name: String,
    /// All scalars.
    pub total: usize,
    /// Scalars that receive gradients.
    pub trainable: usize,
}

/// How a [`MacModel`] reads its memory: each variant builds only its own
/// modules.
// One per model: the variants' sizes differ, and nothing is gained by boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum MacPath {
    /// The paper's path: modulations aggregated into prefix key/values.
    Aggregation(AggregationPath),
    /// Copy mode: the copy head's slots read as soft-prompt tokens.
    Copy(CopyPath),
}

/// The trainable side of MAC (the base LM stays outside, frozen).
#[derive(Module, Debug)]
pub struct MacModel {
    /// Question → query tokens.
    pub question_encoder: AmortizationEncoder,
    /// The paper's path or copy mode.
    pub path: MacPath,
}

impl MacModel {
    /// Builds a model with fresh heads over pretrained encoder backbones
    /// loaded from `encoder_dir` (both encoders start from the same weights).
    pub fn init(
        config: &MacConfig,
        encoder_dir: &Path,
        kv_layout: KvLayout,
        device: &Device,
    ) -> Result<Self, ModelError> {
        config.validate().map_err(ModelError::Input)?;
        Self::init_from_files(config, &EncoderFiles::open(encoder_dir)?, kv_layout, device)
    }

    /// [`Self::init`] from an encoder directory already read (the runtime
    /// reads it once for the model, the key encoder and the tokenizers).
    pub fn init_from_files(
        config: &MacConfig,
        encoder_files: &EncoderFiles,
        kv_layout: KvLayout,
        device: &Device,
    ) -> Result<Self, ModelError> {
        config.validate().map_err(ModelError::Input)?;
        let question_encoder = AmortizationEncoder::load(
            encoder_files,
            config.n_tokens,
            config.d_mod,
            config.head_heads,
            config.question_trainable,
            None,
            device,
        )?;
        let path = match &config.copy {
            Some(c) => MacPath::Copy(CopyPath::init(c, config, device)),
            None => MacPath::Aggregation(AggregationPath::init(
                config,
                encoder_files,
                kv_layout,
                device,
            )?),
        };
        Ok(Self {
            question_encoder,
            path,
        })
    }

    /// The paper's path's modules; `None` in copy mode.
    pub fn aggregation_path(&self) -> Option<&AggregationPath> {
        match &self.path {
            MacPath::Aggregation(a) => Some(a),
            MacPath::Copy(_) => None,
        }
    }

    /// Copy mode's modules; `None` on the paper's path.
    pub fn copy_path(&self) -> Option<&CopyPath> {
        match &self.path {
            MacPath::Copy(c) => Some(c),
            MacPath::Aggregation(_) => None,
        }
    }

    /// The paper's amortization network; `None` in copy mode (whose copy
    /// head reads documents).
    pub fn amortizer(&self) -> Option<&AmortizationEncoder> {
        self.aggregation_path().map(|a| &a.amortizer)
    }

    /// The paper's aggregator; `None` in copy mode.
    pub fn aggregator(&self) -> Option<&Aggregator> {
        self.aggregation_path().map(|a| &a.aggregator)
    }

    /// The paper's aggregator, or an error naming what needs it.
    pub fn aggregator_for(&self, what: &str) -> Result<&Aggregator, ModelError> {
        self.aggregator().ok_or_else(|| {
            ModelError::Input(format!(
                "{what} needs the paper's aggregator, and this model is in copy mode"
            ))
        })
    }

    /// Question tokens over a bank → prefix key/values and the
    /// per-document attention.
    ///
    /// # Shapes
    /// - `question_tokens`: `[B, n, d]`; `memory`: `[B, K, d]` (flat)
    pub fn prefix_from_memory(
        &self,
        lm: &BaseLm,
        question_tokens: Tensor<3>,
        memory: Tensor<3>,
    ) -> Result<(PrefixKv, Aggregation), ModelError> {
        let agg = self.aggregate(question_tokens, memory, None);
        Ok((self.prefix(lm, agg.modulation.clone())?, agg))
    }

    /// Question tokens over a flat memory (with optional prior logits per
    /// document): the aggregator, or in copy mode the copy reader.
    ///
    /// # Shapes
    /// - `question_tokens`: `[B, n, d]`; `memory`: `[B, K, d]`; `prior`: `[B, N]`
    pub fn aggregate(
        &self,
        question_tokens: Tensor<3>,
        memory: Tensor<3>,
        prior: Option<Tensor<2>>,
    ) -> Aggregation {
        match &self.path {
            MacPath::Copy(c) => c.reader.read(question_tokens, memory, c.slots, prior),
            MacPath::Aggregation(a) => {
                a.aggregator
                    .aggregate_with_prior(question_tokens, memory, prior)
            }
        }
    }

    /// Aggregated tokens → the frozen LM's prefix key/values.
    ///
    /// # Shapes
    /// - `modulation`: `[B, n, d_mod]`
    pub fn prefix(&self, lm: &BaseLm, modulation: Tensor<3>) -> Result<PrefixKv, ModelError> {
        match &self.path {
            // Copy mode: the read tokens are soft-prompt embeddings already.
            MacPath::Copy(_) => Ok(lm.soft_prompt_prefix(modulation)?),
            MacPath::Aggregation(a) => a.prefix(lm, modulation),
        }
    }

    /// The answer probe's hidden states for aggregated tokens; `None`
    /// without a probe.
    ///
    /// # Shapes
    /// - `modulation`: `[B, n, d_mod]` → `[B, 1, d_lm]`
    pub fn answer_probe_hidden(&self, modulation: Tensor<3>) -> Option<Tensor<3>> {
        match &self.path {
            MacPath::Copy(c) => Some(c.probe(modulation)),
            MacPath::Aggregation(a) => a.answer_probe_hidden(modulation),
        }
    }

    /// Whether the model has an answer probe (always in copy mode, where it
    /// has no weights).
    pub fn has_answer_probe(&self) -> bool {
        match &self.path {
            MacPath::Copy(_) => true,
            MacPath::Aggregation(a) => a.answer_probe.is_some(),
        }
    }

    /// Parameter counts per module, and the total.
    pub fn param_summary(&self) -> Vec<ParamSummary> {
        fn row<M: Module>(name: &str, module: &M) -> ParamSummary {
            ParamSummary {
                name: name.into(),
                total: module.num_params(),
                trainable: trainable_params(module),
            }
        }
        let q = &self.question_encoder;
        let mut parts = Vec::new();
        match &self.path {
            MacPath::Aggregation(a) => parts.extend([
                row("amortization encoder (backbone)", &a.amortizer.backbone),
                row(
                    "amortization encoder (query head + token MLPs)",
                    &a.amortizer.head,
                ),
                row(
                    "amortization encoder (LM-token channel)",
                    &a.amortizer.lm_channel,
                ),
            ]),
            MacPath::Copy(c) => parts.push(row("copy mode (document head + question reader)", c)),
        }
        parts.extend([
            row("question encoder (backbone)", &q.backbone),
            row("question encoder (query head + token MLPs)", &q.head),
        ]);
        if let MacPath::Aggregation(a) = &self.path {
            parts.extend([
                row("aggregation network", &a.aggregator),
                row("prefix expansion", &a.expansion),
                row("answer probe (training aid)", &a.answer_probe),
            ]);
        }
        let total = ParamSummary {
            name: "total".into(),
            total: parts.iter().map(|p| p.total).sum(),
            trainable: parts.iter().map(|p| p.trainable).sum(),
        };
        parts.into_iter().chain([total]).collect()
    }
}

fn yes() -> bool {
    true
}
