//! What a span memory run reads, trains and chooses: its configuration and
//! presets.

use std::path::PathBuf;

use mac_data::FactStreamConfig;
use mac_model::{SpanExtent, SpanReader};
use serde::{Deserialize, Serialize};

use super::SpanTrainConfig;

/// What a span memory run reads, trains and chooses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanRunConfig {
    /// The preset it started from.
    pub preset: String,
    /// The selector and its training.
    pub selector: SpanTrainConfig,
    /// The document's first tokens kept beside the span (an attention sink).
    pub sink_tokens: usize,
    /// The fact stream trained and validated on.
    pub stream: FactStreamConfig,
    /// Training documents read (at most the stream's).
    pub train_documents: usize,
    /// Validation documents: the bank the choices are made over.
    pub validation_documents: usize,
    /// Steps between validations (the steps that can be chosen).
    pub validate_every: usize,
    /// Validation questions answered per frame to choose the frame.
    pub frame_questions: usize,
    /// The LM (the fetched SmolLM2 when absent).
    #[serde(default)]
    pub lm: Option<PathBuf>,
    /// Unrelated documents spread among the validation updates that choose
    /// the recency (a bank nearer the size served).
    #[serde(default)]
    pub recency_distractors: usize,
    /// A second stream whose validation documents (as many as
    /// `validation_documents`) join the choice of frame, extent and
    /// whole-document floor: kinds of fact and lengths training never
    /// shows, so that the choices hold beyond the training generator.
    /// None: the training stream's validation only.
    #[serde(default)]
    pub unseen_validation: Option<FactStreamConfig>,
    /// Documents of knowledge that changes in the training split's wording
    /// ([`mac_data::training_updates`]) joined to training, without the
    /// changed facts' questions: an entity's later document, about another
    /// of its facts, is a negative sharing its name.
    #[serde(default)]
    pub train_updates: usize,
    /// A stream whose validation documents (as many as
    /// `validation_documents`), beside the training stream's, choose the
    /// slack of the sentence check ([`mac_model::SentenceCheck`]); none: no
    /// check.
    #[serde(default)]
    pub sentence_check_validation: Option<FactStreamConfig>,
    /// A second stream whose validation knowledge that changes (a bank
    /// built as the training stream's) joins the choice of recency: kinds
    /// of fact training never states, changed. None: the training
    /// stream's bank only.
    #[serde(default)]
    pub recency_validation: Option<FactStreamConfig>,
    /// The sentence encoder of the check (the fetched all-MiniLM-L6-v2
    /// when absent).
    #[serde(default)]
    pub sentence_encoder: Option<PathBuf>,
}

impl SpanRunConfig {
    /// `span` (the documented run: 2,000 training documents of the `open`
    /// stream, 1,000 steps), `span-hard` (the same with two hard negatives
    /// per question in each step's bank), `span-hard-updates` (the same with
    /// 600 documents of training-worded knowledge that changes joined),
    /// `span-unseen` (the same, its answering chosen
    /// also on the broad stream's validation documents, whose further kinds
    /// training never states), `span-broad` (trained on the broad stream's
    /// fourteen kinds, spans of up to 16 tokens) or `span-tiny` (a few
    /// minutes' run for tests and a first look; it does not answer well).
    pub fn preset(name: &str) -> Result<Self, String> {
        let span = Self {
            preset: name.into(),
            selector: SpanTrainConfig::default(),
            sink_tokens: 4,
            stream: FactStreamConfig::open(),
            train_documents: 2000,
            validation_documents: 64,
            validate_every: 100,
            frame_questions: 96,
            lm: None,
            recency_distractors: 400,
            unseen_validation: None,
            train_updates: 0,
            sentence_check_validation: Some(FactStreamConfig::broad()),
            recency_validation: Some(FactStreamConfig::broad()),
            sentence_encoder: None,
        };
        match name {
            "span-broad" => Ok(Self {
                selector: SpanTrainConfig {
                    max_span: 16,
                    ..SpanTrainConfig::default()
                },
                stream: FactStreamConfig::broad(),
                ..span
            }),
            "span" => Ok(span),
            "span-hard" => Ok(Self {
                selector: SpanTrainConfig {
                    hard_negatives: 2,
                    ..SpanTrainConfig::default()
                },
                ..span
            }),
            "span-hard-updates" => Ok(Self {
                selector: SpanTrainConfig {
                    hard_negatives: 2,
                    ..SpanTrainConfig::default()
                },
                train_updates: 600,
                ..span
            }),
            "span-unseen" => Ok(Self {
                unseen_validation: Some(FactStreamConfig::broad()),
                ..span
            }),
            "span-tiny" => Ok(Self {
                selector: SpanTrainConfig {
                    layer: 4,
                    d_key: 16,
                    bank_documents: 8,
                    questions: 8,
                    steps: 20,
                    ..SpanTrainConfig::default()
                },
                stream: FactStreamConfig {
                    n_train: 32,
                    n_validation: 8,
                    n_test: 16,
                    ..FactStreamConfig::open()
                },
                train_documents: 32,
                validation_documents: 8,
                validate_every: 10,
                frame_questions: 8,
                recency_distractors: 8,
                ..span
            }),
            other => Err(format!(
                "unknown span preset `{other}`: span, span-hard, span-hard-updates, span-unseen, span-broad or span-tiny"
            )),
        }
    }

    /// The LM the run reads.
    pub fn lm_path(&self) -> PathBuf {
        self.lm.clone().unwrap_or_else(mac_assets::default_lm_path)
    }

    /// The sentence encoder the check reads.
    pub fn sentence_encoder_dir(&self) -> PathBuf {
        self.sentence_encoder
            .clone()
            .unwrap_or_else(mac_assets::default_encoder_dir)
    }

    /// How documents are read into states.
    pub fn reader(&self) -> SpanReader {
        SpanReader {
            layer: self.selector.layer,
            sink_tokens: self.sink_tokens,
            extent: SpanExtent::Span,
            copied: false,
        }
    }
}
