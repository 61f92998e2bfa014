//! Training configuration: a serde file with named presets.

use std::path::{Path, PathBuf};

use mac_aggregation::ExpansionKind;
use mac_data::{FactStreamConfig, ValueVocabulary};
use mac_encoder::Trainable;
use mac_model::{CopyConfig, MacConfig};
use serde::{Deserialize, Serialize};

use crate::selection::SelectionConfig;

/// Learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Constant after warm-up (the reference).
    Constant,
    /// Cosine decay to zero at the last step.
    Cosine,
}

/// Where training data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// The embedded fact-stream generator.
    FactStream(FactStreamConfig),
    /// Dataset files (train, validation and test) of one format.
    Files {
        /// Training file.
        train: PathBuf,
        /// Validation file.
        validation: PathBuf,
        /// Test file (the online-adaptation stream).
        test: PathBuf,
        /// `jsonl`, `squad`, `streamingqa` or `archivalqa`.
        format: String,
    },
}

/// Everything a training run needs. Written to `RUN_DIR/config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Name of the preset this started from.
    pub preset: String,
    /// The MAC model's shape.
    pub model: MacConfig,
    /// The data.
    pub data: DataSource,
    /// Frozen base LM (GGUF or HF directory); `null` = the fetched SmolLM2.
    pub lm: Option<PathBuf>,
    /// Encoder backbone directory; `null` = the fetched all-MiniLM-L6-v2.
    pub encoder: Option<PathBuf>,
    /// Seed of initialisation, batch sampling and backprop dropout.
    pub seed: u64,
    /// Optimizer steps.
    pub steps: usize,
    /// Documents per batch `B` (each question aggregates over all `B`).
    pub batch_documents: usize,
    /// Questions asked of each batch document per step (capped by how many
    /// it has; the reference asks one). More questions reuse the same
    /// document encodings, so they add supervision cheaply.
    #[serde(default = "one")]
    pub questions_per_document: usize,
    /// Curriculum: for the first this many steps each question's bank is its
    /// own document only, so the encoder and expansion learn to carry the
    /// content before the aggregator has to find it among `B` (0 = off, the
    /// reference).
    #[serde(default)]
    pub own_document_steps: usize,
    /// After the curriculum, the share of each step's questions that still
    /// see their own document alone (spread evenly over the batch); the
    /// rest aggregate over the whole batch. Keeps the content the
    /// modulations carry from being unlearnt while the aggregator learns
    /// to find documents (0 = off, the reference).
    #[serde(default)]
    pub own_document_share: f64,
    /// Weight of the auxiliary answer-token loss: the aggregated modulation,
    /// through the model's answer probe and the LM's output embedding, must
    /// predict the answer's tokens (a bag of tokens). A short, LM-free path
    /// from the documents to the answer that teaches the encoders and the
    /// aggregator to carry the facts early (0 = off, the reference).
    #[serde(default)]
    pub answer_token_loss_weight: f64,
    /// Reading steps: the first this many steps train by the answer-token
    /// loss alone, without the frozen LM's pass over the questions — the
    /// encoders and the aggregator learn to read each question's answer
    /// into the modulation at a fraction of a full step's cost, before the
    /// prefix has to carry it to the LM (0 = off, the reference). Counted
    /// within `steps`.
    #[serde(default)]
    pub reading_steps: usize,
    /// Weight of the auxiliary retrieval loss: minus the log of the share of
    /// the aggregator's attention (every block, mean over heads) that lands
    /// on each question's own document, when the bank holds several. The
    /// trainer knows which document a question belongs to; this teaches the
    /// aggregator to find it directly (0 = off, the reference).
    #[serde(default)]
    pub retrieval_loss_weight: f64,
    /// Micro-batches accumulated per optimizer step.
    pub grad_accumulation: usize,
    /// Peak learning rate (Adam).
    pub learning_rate: f64,
    /// Fraction of the steps spent warming up linearly (reference: 1%).
    pub warmup_fraction: f64,
    /// Schedule after warm-up.
    pub schedule: Schedule,
    /// Gradient-norm clip (reference: 100).
    pub grad_clip: f32,
    /// Fraction of a batch's documents that carry gradients (backprop dropout; 1 = all).
    pub backprop_keep: f64,
    /// Validate every this many steps (0 = only at the end).
    pub validate_every: usize,
    /// Validation documents used (their questions are answered).
    pub validation_documents: usize,
    /// Write the `last` checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: usize,
    /// Longest question + answer in LM tokens.
    pub max_qa_tokens: usize,
    /// Stop the content steps early after this many minutes (the
    /// checkpoint is still written; a selection phase still runs).
    pub max_minutes: Option<f64>,
    /// Selection steps after the content steps: the aggregator learns to
    /// find documents in large banks by the retrieval loss alone (`null` =
    /// none, the reference).
    #[serde(default)]
    pub selection: Option<SelectionConfig>,
}

impl TrainConfig {
    /// A named preset: `default` (SmolLM2-135M + MiniLM on the fact stream,
    /// sized for about an hour on a 2-core CPU), `open` (the same on a
    /// stream whose test answers training never shows), `copy` (the open
    /// stream in copy mode; experimental) or `tiny` (a few minutes; for
    /// tests and smoke runs, quality not expected).
    pub fn preset(name: &str) -> Result<Self, String> {
        match name {
            "default" => Ok(Self::default_preset()),
            "open" => Ok(Self::open()),
            "copy" => Ok(Self::copy()),
            "tiny" => Ok(Self::tiny()),
            other => Err(format!(
                "unknown preset `{other}` (known: default, open, copy, tiny)"
            )),
        }
    }

    fn default_preset() -> Self {
        Self {
            preset: "default".into(),
            model: MacConfig::default(),
            data: DataSource::FactStream(FactStreamConfig::default()),
            lm: None,
            encoder: None,
            seed: 17,
            steps: 380,
            batch_documents: 8,
            questions_per_document: 3,
            // Every step trains the content path (each question with its own
            // document): at this CPU budget the bank phase unlearnt the
            // content faster than the aggregator learnt to find documents
            // (docs/results.md, the bank-phase run in the history of the
            // meta-training section); retrieval in a large bank is left
            // to `mac+rag@k`.
            own_document_steps: 380,
            own_document_share: 0.0,
            answer_token_loss_weight: 1.0,
            reading_steps: 0,
            retrieval_loss_weight: 1.0,
            grad_accumulation: 1,
            learning_rate: 5e-4,
            warmup_fraction: 0.03,
            schedule: Schedule::Constant,
            grad_clip: 1.0,
            backprop_keep: 1.0,
            validate_every: 95,
            validation_documents: 32,
            checkpoint_every: 50,
            max_qa_tokens: 64,
            max_minutes: Some(56.0),
            selection: None,
        }
    }

    /// The default preset on a fact stream with open values: every
    /// validation and test answer is a value training never showed, so only
    /// the memory can supply it.
    fn open() -> Self {
        Self {
            preset: "open".into(),
            data: DataSource::FactStream(FactStreamConfig::open()),
            ..Self::default_preset()
        }
    }

    /// The `open` stream in copy mode (experimental): documents stored as
    /// slots of their own LM token embeddings, read hard into soft-prompt
    /// tokens after four learnt format tokens; 100 reading steps, then 300
    /// LM steps (docs/results.md, `runs/copy3`).
    fn copy() -> Self {
        let open = Self::open();
        Self {
            preset: "copy".into(),
            model: MacConfig {
                document_trainable: Trainable::None,
                question_trainable: Trainable::None,
                answer_probe_width: None,
                lm_token_channel_width: None,
                lm_token_channel_layer: None,
                copy: Some(CopyConfig {
                    slots: 16,
                    key_dim: 64,
                    context_layer: 12,
                    prefix_tokens: 6,
                    lm_width: 576,
                    hard: true,
                    format_tokens: 4,
                }),
                ..open.model.clone()
            },
            steps: 400,
            reading_steps: 100,
            learning_rate: 2e-3,
            validate_every: 100,
            checkpoint_every: 100,
            ..open
        }
    }

    fn tiny() -> Self {
        Self {
            preset: "tiny".into(),
            model: MacConfig {
                n_tokens: 2,
                d_mod: 64,
                document_trainable: Trainable::None,
                question_trainable: Trainable::None,
                head_heads: 2,
                aggregator_blocks: 1,
                aggregator_heads: 2,
                aggregator_head_dim: 16,
                aggregator_question_residual: true,
                aggregator_selector_dim: None,
                prefix_len: 1,
                expansion_hidden: 64,
                expansion_kind: ExpansionKind::SharedWithSlotEmbeddings,
                zero_init_prefix: false,
                answer_probe_width: None,
                lm_token_channel_width: None,
                lm_token_channel_layer: None,
                copy: None,
                max_document_tokens: 96,
                max_question_tokens: 32,
            },
            data: DataSource::FactStream(FactStreamConfig {
                seed: 3,
                n_train: 64,
                n_validation: 4,
                n_test: 6,
                facts_per_document: 2,
                values: ValueVocabulary::Closed,
                filler_sentences: 0,
            }),
            lm: None,
            encoder: None,
            seed: 5,
            steps: 12,
            batch_documents: 4,
            questions_per_document: 1,
            own_document_steps: 0,
            own_document_share: 0.0,
            answer_token_loss_weight: 0.0,
            reading_steps: 0,
            retrieval_loss_weight: 0.0,
            grad_accumulation: 1,
            learning_rate: 3e-3,
            warmup_fraction: 0.0,
            schedule: Schedule::Constant,
            grad_clip: 1.0,
            backprop_keep: 1.0,
            validate_every: 0,
            validation_documents: 4,
            checkpoint_every: 0,
            max_qa_tokens: 48,
            max_minutes: None,
            selection: None,
        }
    }

    /// Reads a configuration file (JSON), naming the file in errors.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Checks the numbers make sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.batch_documents >= 1,
            "batch_documents must be at least 1"
        );
        anyhow::ensure!(
            self.questions_per_document >= 1,
            "questions_per_document must be at least 1"
        );
        anyhow::ensure!(
            self.grad_accumulation >= 1,
            "grad_accumulation must be at least 1"
        );
        anyhow::ensure!(
            self.backprop_keep > 0.0 && self.backprop_keep <= 1.0,
            "backprop_keep must be in (0, 1]"
        );
        anyhow::ensure!(
            self.answer_token_loss_weight == 0.0
                || self.model.answer_probe_width.is_some()
                || self.model.copy.is_some(),
            "answer_token_loss_weight > 0 needs model.answer_probe_width (the LM's hidden width) or copy mode"
        );
        anyhow::ensure!(
            self.reading_steps == 0 || self.answer_token_loss_weight > 0.0,
            "reading_steps > 0 needs answer_token_loss_weight > 0 (reading steps train by that loss alone)"
        );
        anyhow::ensure!(
            self.retrieval_loss_weight >= 0.0 && self.answer_token_loss_weight >= 0.0,
            "loss weights must not be negative"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.own_document_share),
            "own_document_share must be in [0, 1]"
        );
        anyhow::ensure!(self.learning_rate > 0.0, "learning_rate must be positive");
        if let Some(selection) = &self.selection {
            selection.validate()?;
            anyhow::ensure!(
                self.model.copy.is_none(),
                "a selection phase trains the aggregator, which copy mode does not use"
            );
        }
        anyhow::ensure!(
            (0.0..1.0).contains(&self.warmup_fraction),
            "warmup_fraction must be in [0, 1)"
        );
        Ok(())
    }

    /// Share of step `step`'s questions (0-based) that see their own
    /// document alone: all of them during the curriculum, then
    /// `own_document_share`.
    pub fn own_document_share_at(&self, step: usize) -> f64 {
        if step < self.own_document_steps {
            1.0
        } else {
            self.own_document_share
        }
    }

    /// Whether step `step` (0-based) is a reading step.
    pub fn is_reading_step(&self, step: usize) -> bool {
        step < self.reading_steps
    }

    /// Learning rate at optimizer step `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        let warmup = (self.warmup_fraction * self.steps as f64).ceil() as usize;
        if step < warmup {
            return self.learning_rate * (step + 1) as f64 / (warmup + 1) as f64;
        }
        match self.schedule {
            Schedule::Constant => self.learning_rate,
            Schedule::Cosine => {
                let span = (self.steps - warmup).max(1) as f64;
                let t = (step - warmup) as f64 / span;
                0.5 * self.learning_rate * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

fn one() -> usize {
    1
}
