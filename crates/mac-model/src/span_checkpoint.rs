//! Span memory's checkpoint: `span.json` (the selector's shape, where the
//! LM is read, how a span is chosen and answers framed, the LM it was
//! trained on) and
//! `selector.bpk` (the selector's parameters, burnpack, parameter ids
//! included so that an optimizer state saved beside it resumes exactly).
//!
//! Everything `span.json` says is checked before anything is built for it:
//! its format, sizes within bounds, and a parameters file large enough for
//! the selector it describes.

use std::path::{Path, PathBuf};

use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Device;
use mac_aggregation::{Recency, SpanRule, SpanSelector, SpanSelectorConfig};
use mac_lm::LoadedLm;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{check_applied, err, read_meta, write_parts};
use crate::model::MAX_CONFIG_SIZE;
use crate::prompt::{ChatExample, ChatFormat, ChatFrame};
#[cfg(doc)]
use crate::SentenceCheck;
use crate::{ModelError, SentenceChecking, SpanReader};

/// File name of span memory's metadata inside a checkpoint directory.
pub const SPAN_META_FILE: &str = "span.json";
/// File name of the selector's parameters inside a checkpoint directory.
pub const SELECTOR_FILE: &str = "selector.bpk";
const SPAN_FORMAT_VERSION: u32 = 1;

/// The selector's shape as a checkpoint records it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorShape {
    /// Width of the LM's residual stream.
    pub d_lm: usize,
    /// Width of a start (and of an end) key.
    pub d_key: usize,
    /// Longest span chosen, in tokens.
    pub max_span: usize,
    /// Width of a token's matching key.
    pub d_match: usize,
    /// Whether the matching projection was trained.
    pub train_match: bool,
}

impl SelectorShape {
    /// The shape of the selector `config` builds.
    pub fn of(config: &SpanSelectorConfig) -> Self {
        Self {
            d_lm: config.d_lm,
            d_key: config.d_key,
            max_span: config.max_span,
            d_match: config.d_match,
            train_match: config.train_match,
        }
    }

    /// The configuration that builds a selector of this shape.
    pub fn config(&self) -> SpanSelectorConfig {
        SpanSelectorConfig::new(self.d_lm)
            .with_d_key(self.d_key)
            .with_max_span(self.max_span)
            .with_d_match(self.d_match)
            .with_train_match(self.train_match)
    }

    /// Parameters of a selector of this shape (norms, projections, scale).
    pub fn parameter_count(&self) -> u128 {
        let (d, k, m) = (self.d_lm as u128, self.d_key as u128, self.d_match as u128);
        2 * d + 4 * d + 2 * d + d * 2 * k + 2 * d * 2 * k + d * m + 1
    }

    fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("d_lm", self.d_lm),
            ("d_key", self.d_key),
            ("max_span", self.max_span),
            ("d_match", self.d_match),
        ] {
            if value == 0 || value > MAX_CONFIG_SIZE {
                return Err(format!(
                    "selector.{field} is {value}: it must be between 1 and {MAX_CONFIG_SIZE}"
                ));
            }
        }
        Ok(())
    }
}

/// A worked example of an answer frame, as a checkpoint records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameExample {
    /// The text.
    pub document: String,
    /// The question.
    pub question: String,
    /// Its answer, as it should be given.
    pub answer: String,
}

impl FrameExample {
    /// The example as a chat prompt takes it.
    pub fn as_chat(&self) -> ChatExample<'_> {
        ChatExample {
            document: &self.document,
            question: &self.question,
            answer: &self.answer,
        }
    }
}

/// How a question and what the memory hands the LM are put to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AnswerFrame {
    /// The document's first tokens and the span, then `Question: …\nAnswer:`.
    Plain,
    /// The LM's chat template: a short-answer instruction and `examples`
    /// before the document, the question as the user's words after it.
    Chat {
        /// Worked examples read before the document (few-shot).
        examples: Vec<FrameExample>,
    },
}

impl AnswerFrame {
    /// The chat frame on `lm`'s own template, or `None` for the plain frame.
    /// A chat frame on an LM whose template is not recognised is an error.
    pub fn chat_frame(&self, lm: &LoadedLm) -> Result<Option<ChatFrame>, ModelError> {
        let AnswerFrame::Chat { examples } = self else {
            return Ok(None);
        };
        let format = lm
            .tokenizer
            .chat_template
            .as_deref()
            .and_then(ChatFormat::recognise)
            .ok_or_else(|| {
                ModelError::Input(
                    "the checkpoint answers in a chat frame, but the LM has no chat template this build recognises".into(),
                )
            })?;
        let shots: Vec<ChatExample<'_>> = examples.iter().map(FrameExample::as_chat).collect();
        Ok(Some(ChatFrame::new(format, &shots)))
    }
}

/// How a trained selector is used at answer time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanReading {
    /// Where the LM is read, and the document's first tokens kept.
    pub reader: SpanReader,
    /// How the span is chosen from a bank.
    pub rule: SpanRule,
    /// How answers are framed.
    pub frame: AnswerFrame,
    /// The recency margin: the latest entry after the best that scores
    /// within this much of it is read instead (0: never; checkpoints
    /// written before it existed read as 0). See [`Recency`].
    #[serde(default)]
    pub recency: f32,
    /// With the margin, the most a later entry's match of any question
    /// token may fall below the best entry's (absent: no such condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f32>,
    /// With the margin, a later entry must name every name the question
    /// names (see [`Recency::same_names`]; absent: no such condition).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recency_same_names: bool,
    /// With the margin, the most a later entry's best span may score below
    /// the best entry's (see [`Recency::answers`]; absent: no such
    /// condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recency_answers: Option<f32>,
    /// With both answer tests (`recency_answers` and the sentence check's
    /// `recency`), a later entry passing either is read (see
    /// [`Recency::either_answers`]; absent: it must pass both).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recency_either: bool,
    /// The span is chosen among the documents that name every name the
    /// question names, where any does, and among all otherwise (see
    /// [`mac_aggregation::StreamedSpanChoice::named_first`]; absent: among
    /// all).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub named_first: bool,
    /// The whole chosen document is handed, whatever the extent, when the
    /// chosen span's probability within it is below this (the selector
    /// unsure where the answer lies; absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whole_below: Option<f32>,
    /// Where set, a sentence of the chosen document that a frozen sentence
    /// encoder matches with the question by more than the slack above the
    /// span's own sentence is handed instead (see [`SentenceCheck`];
    /// absent: the span's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentence_check: Option<SentenceChecking>,
    /// Where a later entry is read instead of an earlier one, the value
    /// the earlier one answers is taken as replaced and the later entry's
    /// text handed without it, only the part beside it (see
    /// [`crate::beside_replaced`]; absent: handed as it is).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub beside_replaced: bool,
    /// With `beside_replaced`, the replaced value is the answer of the
    /// earlier report the chosen entry may supersede even where that entry
    /// is the best by itself ([`mac_aggregation::SpanChoice::earlier`]),
    /// not only of one passed over (absent: only one passed over).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replaced_from_earlier: bool,
}

impl SpanReading {
    /// Whether the whole document is handed for a span chosen with this
    /// `confidence` (see [`mac_aggregation::SpanChoice::confidence`]).
    pub fn hands_whole(&self, confidence: f32) -> bool {
        hands_whole(self.whole_below, confidence)
    }

    /// When a later entry is read instead of the best.
    pub fn recency(&self) -> Recency {
        Recency {
            margin: self.recency,
            agreement: self.agreement,
            same_names: self.recency_same_names,
            answers: self.recency_answers,
            sentence_answers: self.sentence_check.as_ref().and_then(|c| c.recency),
            either_answers: self.recency_either,
            without_names: self
                .sentence_check
                .as_ref()
                .is_some_and(|c| c.recency_without_names),
            restates: self
                .sentence_check
                .as_ref()
                .is_some_and(|c| c.recency_restates),
        }
    }
}

/// Whether the whole document is handed for a span chosen with this
/// `confidence` under the floor `whole_below` (none: never).
pub fn hands_whole(whole_below: Option<f32>, confidence: f32) -> bool {
    whole_below.is_some_and(|floor| confidence < floor)
}

/// What a span memory checkpoint holds besides its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanCheckpointMeta {
    /// Format version of the checkpoint directory.
    pub format_version: u32,
    /// The selector's shape.
    pub selector: SelectorShape,
    /// How the selector is used at answer time.
    pub reading: SpanReading,
    /// The frozen base LM (GGUF file or Hugging Face directory).
    pub lm: PathBuf,
    /// Optimizer steps taken when this was written.
    pub step: u64,
}

impl SpanCheckpointMeta {
    /// A new record for a selector built by `config`, used as `reading`
    /// says on `lm`.
    pub fn new(config: &SpanSelectorConfig, reading: SpanReading, lm: PathBuf) -> Self {
        Self {
            format_version: SPAN_FORMAT_VERSION,
            selector: SelectorShape::of(config),
            reading,
            lm,
            step: 0,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.format_version != SPAN_FORMAT_VERSION {
            return Err(format!(
                "span checkpoint format version {} (this build reads {SPAN_FORMAT_VERSION})",
                self.format_version
            ));
        }
        self.selector.validate()?;
        for (field, value) in [
            ("reading.reader.layer", self.reading.reader.layer),
            (
                "reading.reader.sink_tokens",
                self.reading.reader.sink_tokens,
            ),
        ] {
            if value > MAX_CONFIG_SIZE {
                return Err(format!("{field} is {value}: at most {MAX_CONFIG_SIZE}"));
            }
        }
        let recency = self.reading.recency;
        if !(recency.is_finite() && recency >= 0.0) {
            return Err(format!(
                "reading.recency is {recency}: a margin is finite and not negative"
            ));
        }
        for (field, value) in [
            ("reading.agreement", self.reading.agreement),
            ("reading.recency_answers", self.reading.recency_answers),
            (
                "reading.sentence_check.slack",
                self.reading.sentence_check.as_ref().and_then(|c| c.slack),
            ),
            (
                "reading.sentence_check.recency",
                self.reading.sentence_check.as_ref().and_then(|c| c.recency),
            ),
        ] {
            if let Some(a) = value.filter(|a| !(a.is_finite() && *a >= 0.0)) {
                return Err(format!("{field} is {a}: finite and not negative"));
            }
        }
        if self.reading.replaced_from_earlier && !self.reading.beside_replaced {
            return Err("reading.replaced_from_earlier is set without beside_replaced".into());
        }
        if let Some(c) = &self.reading.sentence_check {
            if c.recency_without_names && c.recency.is_none() && !c.recency_restates {
                return Err(
                    "reading.sentence_check.recency_without_names is set without its recency slack"
                        .into(),
                );
            }
        }
        if let Some(w) = self
            .reading
            .whole_below
            .filter(|w| !(0.0..=1.0).contains(w))
        {
            return Err(format!(
                "reading.whole_below is {w}: a probability lies in [0, 1]"
            ));
        }
        Ok(())
    }

    /// Whether `lm` is an LM this selector can read: its residual width and
    /// enough layers for the reader.
    pub fn check_lm(&self, lm: &LoadedLm) -> Result<(), ModelError> {
        let (width, layers) = (lm.model.hidden_width(), lm.model.kv_layout().n_layers);
        if width != self.selector.d_lm || self.reading.reader.layer > layers {
            return Err(ModelError::Input(format!(
                "the span selector reads a residual stream of width {} after {} layers; this LM has width {width} and {layers} layers",
                self.selector.d_lm, self.reading.reader.layer
            )));
        }
        Ok(())
    }
}

/// A span memory checkpoint directory.
#[derive(Debug, Clone)]
pub struct SpanCheckpoint {
    /// The directory.
    pub dir: PathBuf,
    /// Its metadata.
    pub meta: SpanCheckpointMeta,
}

impl SpanCheckpoint {
    /// Whether `dir` holds a span memory checkpoint (its metadata file).
    pub fn is_span_checkpoint(dir: &Path) -> bool {
        dir.join(SPAN_META_FILE).is_file()
    }

    /// Writes `selector` and `meta` into `dir` (created if needed); each
    /// file is written beside its final name and renamed into place.
    pub fn save(
        dir: &Path,
        selector: &SpanSelector,
        meta: &SpanCheckpointMeta,
    ) -> Result<Self, ModelError> {
        write_parts(dir, selector, SELECTOR_FILE, SPAN_META_FILE, meta)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            meta: meta.clone(),
        })
    }

    /// Reads and checks the metadata of a checkpoint directory, and that
    /// its parameters file can hold the selector it describes.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let (meta_path, meta): (_, SpanCheckpointMeta) =
            read_meta(dir, SPAN_META_FILE, "span memory checkpoint")?;
        meta.validate().map_err(|e| err(&meta_path, e))?;
        let params = dir.join(SELECTOR_FILE);
        let bytes = std::fs::metadata(&params)
            .map_err(|e| err(&params, format!("missing parameters file: {e}")))?
            .len();
        let least = meta.selector.parameter_count();
        if least.saturating_mul(2) > bytes as u128 {
            return Err(err(
                &params,
                format!(
                    "{SPAN_META_FILE} describes a selector of {least} parameters, more than the {bytes} bytes of this file can hold"
                ),
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            meta,
        })
    }

    /// Builds the selector on `device` and loads the stored parameters.
    pub fn load_selector(&self, device: &Device) -> Result<SpanSelector, ModelError> {
        let mut selector = self.meta.selector.config().init(device);
        self.load_into(&mut selector)?;
        Ok(selector)
    }

    /// Loads the stored parameters into a selector of the same shape.
    pub fn load_into(&self, selector: &mut SpanSelector) -> Result<(), ModelError> {
        let path = self.dir.join(SELECTOR_FILE);
        let mut store = BurnpackStore::from_file(&path).auto_extension(false);
        let result = selector
            .load_from(&mut store)
            .map_err(|e| err(&path, format!("unreadable parameters: {e}")))?;
        check_applied(&path, &result, "the selector")
    }
}
