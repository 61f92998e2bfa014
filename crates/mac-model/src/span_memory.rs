//! Span memory's side of the frozen LM: the residual states a
//! [`mac_aggregation::SpanSelector`] reads, and answers from a few of a
//! document's own key/values.
//!
//! A document is read once by the LM (positions `0..T`, as if it were the
//! context); its memory is its tokens and one selection key per token. A
//! question is answered from the key/values of the document's first
//! `sink_tokens` tokens (an attention sink) and of the chosen span, at the
//! positions they were computed at; the question prompt continues after
//! the document's last position. A document's key/values are a
//! deterministic function of its tokens, so they are recomputed for the
//! chosen document at answer time, or read from a store of them
//! ([`SpanRead::stored`], laid out as [`SpanReader::document_kv`] gives
//! them: 46 KB per token for SmolLM2-135M in f32, against 2 bytes for its
//! id).
//!
//! For a chat model the document can be read inside a [`ChatFrame`]
//! instead: the model's chat template with a short-answer instruction and
//! worked examples before the document (read once, and kept whole in
//! place of the sink) and the question as the user's words after it.

use burn::tensor::Tensor;
use mac_lm::{Generation, KvCache, LoadedLm, Padding, TokenBatch};
use serde::{Deserialize, Serialize};

use crate::answer::{generate_answers_after, AnswerGeneration, GeneratedAnswer};
use crate::copy_answer::CopiedAnswers;
use crate::prompt::{continuation_ids, prompt_ids, question_prompt, ChatFrame};
use crate::ModelError;

/// Positions of the LM left after a document for the question prompt and
/// its answer.
pub const QUESTION_ROOM: usize = 64;

/// Where span memory reads the LM, and how much of a document it hands back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanReader {
    /// Selection keys come from the residual stream after this many layers.
    pub layer: usize,
    /// The document's first tokens kept beside the span (attention sink).
    pub sink_tokens: usize,
    /// How much of the chosen document the LM is handed around the span.
    #[serde(default)]
    pub extent: SpanExtent,
    /// Whether each answer is copied from what the LM is handed: its
    /// tokens keep it a run of whole words of that text
    /// ([`crate::CopiedAnswers`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copied: bool,
}

/// How much of the chosen document's key/values the LM is handed: the
/// span, the sentences holding it, or the whole document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanExtent {
    /// The chosen span only (with the attention sink or frame).
    #[default]
    Span,
    /// The sentence (or sentences) the span lies in.
    Sentence,
    /// Every token of the chosen document.
    Document,
}

impl SpanExtent {
    /// Every extent, narrowest first.
    pub const ALL: [SpanExtent; 3] = [Self::Span, Self::Sentence, Self::Document];

    /// Its name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Span => "span",
            Self::Sentence => "sentence",
            Self::Document => "document",
        }
    }

    /// The first and last token (inclusive) handed to the LM for the span
    /// `start..=end` of `document`.
    pub fn range(
        self,
        lm: &LoadedLm,
        document: &[u32],
        start: usize,
        end: usize,
    ) -> Result<(usize, usize), ModelError> {
        let last = document.len().saturating_sub(1);
        match self {
            Self::Span => Ok((start, end.min(last))),
            Self::Document => Ok((0, last)),
            Self::Sentence => {
                let ends = sentence_ends(lm, document)?;
                let from = (0..start).rev().find(|&i| ends[i]).map_or(0, |i| i + 1);
                let to = (end.min(last)..=last).find(|&i| ends[i]).unwrap_or(last);
                Ok((from, to))
            }
        }
    }
}

/// Whether each token of `document` ends a sentence: its text ends in
/// `.`, `!` or `?` before a space or the end, or holds a line break.
fn sentence_ends(lm: &LoadedLm, document: &[u32]) -> Result<Vec<bool>, ModelError> {
    let texts = document
        .iter()
        .map(|&id| lm.tokenizer.decode(&[id]))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..texts.len())
        .map(|i| {
            let stop = texts[i].trim_end().ends_with(['.', '!', '?']);
            let then_space = texts
                .get(i + 1)
                .is_none_or(|next| next.starts_with(char::is_whitespace));
            texts[i].contains('\n') || (stop && then_space)
        })
        .collect())
}

/// Each sentence of `document` as its first and last token (inclusive),
/// in order: the runs of tokens ending where [`SpanExtent::Sentence`] ends
/// one (the last run ends with the document).
pub(crate) fn sentence_ranges(
    lm: &LoadedLm,
    document: &[u32],
) -> Result<Vec<(usize, usize)>, ModelError> {
    let ends = sentence_ends(lm, document)?;
    let mut ranges = Vec::new();
    let mut from = 0;
    for (i, &end) in ends.iter().enumerate() {
        if end || i + 1 == ends.len() {
            ranges.push((from, i));
            from = i + 1;
        }
    }
    Ok(ranges)
}

/// One question's span: a document's tokens and the span's first and last
/// token (inclusive).
#[derive(Debug, Clone, Copy)]
pub struct SpanRead<'a> {
    /// The document's token ids (from [`SpanReader::document_ids`]).
    pub document: &'a [u32],
    /// First token of the span.
    pub start: usize,
    /// Last token of the span (inclusive).
    pub end: usize,
    /// The document's key/values as [`SpanReader::document_kv`] gives
    /// them, read from a store; `None`: recomputed from its tokens.
    pub stored: Option<&'a Tensor<2>>,
    /// Hand exactly `start..=end`, whatever the extent (a part of a
    /// sentence, as [`crate::beside_replaced`] finds it).
    pub exact: bool,
}

impl<'a> SpanRead<'a> {
    /// The whole of `document`, whatever the extent.
    pub fn whole(document: &'a [u32]) -> Self {
        Self {
            document,
            start: 0,
            end: document.len().saturating_sub(1),
            stored: None,
            exact: false,
        }
    }
}

impl SpanReader {
    /// A document's token ids as the LM reads it: its trimmed text and a
    /// line break (with BOS where the tokenizer adds one), cut to leave
    /// [`QUESTION_ROOM`] of the LM's positions for the question and answer.
    pub fn document_ids(lm: &LoadedLm, text: &str) -> Result<Vec<u32>, ModelError> {
        let mut ids = prompt_ids(&lm.tokenizer, &format!("{}\n", text.trim()))?;
        ids.truncate(
            lm.model
                .max_positions()
                .saturating_sub(QUESTION_ROOM)
                .max(1),
        );
        Ok(ids)
    }

    /// The residual stream after [`Self::layer`] layers over each document.
    ///
    /// # Shapes
    /// - returns one `[T_i, d_lm]` per document
    pub fn token_states(
        &self,
        lm: &LoadedLm,
        documents: &[Vec<u32>],
    ) -> Result<Vec<Tensor<2>>, ModelError> {
        let batch = TokenBatch::padded(documents, lm.tokenizer.pad_id, Padding::Right)?;
        let states = lm.model.residual_stream(&batch, self.layer)?;
        let [b, t, d] = states.dims();
        let states = states.reshape([b * t, d]);
        Ok(documents
            .iter()
            .enumerate()
            .map(|(i, ids)| states.clone().narrow(0, i * t, ids.len()))
            .collect())
    }

    /// The residual stream after [`Self::layer`] layers over each question
    /// prompt.
    ///
    /// # Shapes
    /// - returns one `[Tq_i, d_lm]` per question
    pub fn question_states(
        &self,
        lm: &LoadedLm,
        questions: &[&str],
    ) -> Result<Vec<Tensor<2>>, ModelError> {
        let ids = questions
            .iter()
            .map(|q| prompt_ids(&lm.tokenizer, &question_prompt(q)))
            .collect::<Result<Vec<_>, _>>()?;
        self.token_states(lm, &ids)
    }

    /// A question's summary from its prompt's states `[Tq, d_lm]`: the last
    /// state, then the mean state, `[1, 2·d_lm]`.
    pub fn summary(states: Tensor<2>) -> Tensor<2> {
        let t = states.dims()[0];
        let last = states.clone().narrow(0, t - 1, 1);
        Tensor::cat(vec![last, states.mean_dim(0)], 1)
    }

    /// The cached positions kept for a span of a document of `len` tokens:
    /// the first [`Self::sink_tokens`] and the span, ascending.
    pub fn kept_positions(&self, start: usize, end: usize, len: usize) -> Vec<usize> {
        let mut kept: Vec<usize> = (0..self.sink_tokens.min(len)).collect();
        kept.extend((start..=end.min(len.saturating_sub(1))).filter(|&p| p >= self.sink_tokens));
        kept
    }

    /// Answers to `questions`, each from the key/values of its span only
    /// (and the document's first tokens), the question put as
    /// `Question: …\nAnswer:` after the document.
    pub fn answer(
        &self,
        lm: &LoadedLm,
        reads: &[SpanRead<'_>],
        questions: &[&str],
        generation: &[AnswerGeneration],
    ) -> Result<Vec<GeneratedAnswer>, ModelError> {
        self.answer_in(lm, None, reads, questions, generation)
    }

    /// [`Self::answer`] with the document read inside `frame` (a chat
    /// model's turn: instruction and worked examples before it, kept whole
    /// in place of the document's first tokens; the question as the
    /// user's words after it), or as in [`Self::answer`] without one.
    pub fn answer_in(
        &self,
        lm: &LoadedLm,
        frame: Option<&ChatFrame>,
        reads: &[SpanRead<'_>],
        questions: &[&str],
        generation: &[AnswerGeneration],
    ) -> Result<Vec<GeneratedAnswer>, ModelError> {
        self.answer_watched(lm, frame, reads, questions, generation, &mut |_, _| {})
    }

    /// [`Self::answer_in`]; `on_text(i, so_far)` watches answer `i` grow
    /// (see [`crate::generate_answers_each`]).
    pub fn answer_watched(
        &self,
        lm: &LoadedLm,
        frame: Option<&ChatFrame>,
        reads: &[SpanRead<'_>],
        questions: &[&str],
        generation: &[AnswerGeneration],
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<GeneratedAnswer>, ModelError> {
        let preamble = Preamble::of(lm, frame.cloned())?;
        self.answer_after(lm, &preamble, reads, questions, generation, on_text)
    }

    /// [`Self::answer_watched`] with the frame's preamble already read
    /// (once for every question a memory answers).
    pub fn answer_after(
        &self,
        lm: &LoadedLm,
        preamble: &Preamble,
        reads: &[SpanRead<'_>],
        questions: &[&str],
        generation: &[AnswerGeneration],
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<GeneratedAnswer>, ModelError> {
        if reads.len() != questions.len() {
            return Err(ModelError::Input(format!(
                "{} spans for {} questions",
                reads.len(),
                questions.len()
            )));
        }
        // The document tokens each read hands the LM, found once.
        let handed = reads
            .iter()
            .map(|r| self.handed_range(lm, r))
            .collect::<Result<Vec<_>, _>>()?;
        // Questions about one document share its pass.
        let mut full: Vec<(&[u32], KvCache)> = Vec::new();
        let caches = reads
            .iter()
            .zip(&handed)
            .map(|(r, &range)| {
                let kept = self.kept_in_frame(lm, preamble, r, range);
                let cached = match full.iter().position(|(d, _)| *d == r.document) {
                    Some(i) => &full[i].1,
                    None => {
                        let cache = match r.stored {
                            Some(rows) => preamble.restored(lm, r.document, rows.clone())?,
                            None => preamble.read(lm, r.document)?,
                        };
                        full.push((r.document, cache));
                        &full[full.len() - 1].1
                    }
                };
                Ok(cached.keep(0, &kept)?)
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let prompts = questions
            .iter()
            .map(|q| {
                let text = match &preamble.frame {
                    Some(f) => f.question(q),
                    None => question_prompt(q),
                };
                continuation_ids(&lm.tokenizer, &text)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let start = Generation {
            prefix: None,
            cache: KvCache::stack(&caches)?,
        };
        if !self.copied {
            return generate_answers_after(lm, start, &prompts, generation, on_text, None);
        }
        let sources = reads
            .iter()
            .zip(&handed)
            .map(|(r, &(start, end))| Some(r.document[start..=end].to_vec()))
            .collect();
        let mut copies = CopiedAnswers::new(&lm.tokenizer, sources)?;
        generate_answers_after(lm, start, &prompts, generation, on_text, Some(&mut copies))
    }

    /// The first and last document token (inclusive) a read hands the LM:
    /// its extent around the span, which must lie in the document.
    fn handed_range(&self, lm: &LoadedLm, r: &SpanRead<'_>) -> Result<(usize, usize), ModelError> {
        if r.start > r.end || r.end >= r.document.len() {
            return Err(ModelError::Input(format!(
                "span {}..={} of a document of {} tokens",
                r.start,
                r.end,
                r.document.len()
            )));
        }
        match r.exact {
            true => Ok((r.start, r.end)),
            false => self.extent.range(lm, r.document, r.start, r.end),
        }
    }

    /// The cached positions a read keeps of its document's cache after
    /// `preamble`: the preamble whole (or the attention sink) and the
    /// document tokens `start..=end` it hands the LM.
    fn kept_in_frame(
        &self,
        lm: &LoadedLm,
        preamble: &Preamble,
        r: &SpanRead<'_>,
        (start, end): (usize, usize),
    ) -> Vec<usize> {
        match preamble.frame {
            Some(_) => {
                // Document token `i` sits at `p + i - bos` after the preamble.
                let p = preamble.ids.len();
                let bos = usize::from(starts_with_bos(lm, r.document));
                let first = (p + start).saturating_sub(bos).max(p);
                (0..p)
                    .chain(first..=(p + end).saturating_sub(bos))
                    .collect()
            }
            None => self.kept_positions(start, end, r.document.len()),
        }
    }
}

/// What a document is read after: a chat frame's preamble, read once into
/// its key/values, or nothing (the document from position 0).
#[derive(Debug, Clone)]
pub struct Preamble {
    frame: Option<ChatFrame>,
    ids: Vec<u32>,
    cache: Option<KvCache>,
}

impl Preamble {
    /// `frame`'s preamble read by `lm`, or none without a frame.
    pub fn of(lm: &LoadedLm, frame: Option<ChatFrame>) -> Result<Self, ModelError> {
        Ok(match frame {
            Some(f) => {
                let ids = prompt_ids(&lm.tokenizer, &f.preamble)?;
                let cache = Some(lm.model.cache_of(&ids)?);
                Self {
                    frame: Some(f),
                    ids,
                    cache,
                }
            }
            None => Self {
                frame: None,
                ids: Vec::new(),
                cache: None,
            },
        })
    }

    /// The frame it is the preamble of.
    pub fn frame(&self) -> Option<&ChatFrame> {
        self.frame.as_ref()
    }

    /// The whole cache a document leaves after the preamble.
    fn read(&self, lm: &LoadedLm, document: &[u32]) -> Result<KvCache, ModelError> {
        Ok(match &self.cache {
            Some(p) => {
                let mut cache = p.clone();
                lm.model
                    .extend_cache(&mut cache, framed(lm, &self.ids, document)?)?;
                cache
            }
            None => lm.model.cache_of(document)?,
        })
    }

    /// The cache [`Self::read`] gives, from the document's own key/values
    /// (positions after the preamble, as [`SpanReader::document_kv`] keeps
    /// them).
    fn restored(
        &self,
        lm: &LoadedLm,
        document: &[u32],
        rows: Tensor<2>,
    ) -> Result<KvCache, ModelError> {
        let own = match &self.cache {
            Some(_) => framed(lm, &self.ids, document)?.len(),
            None => document.len(),
        };
        if rows.dims()[0] != own {
            return Err(ModelError::Input(format!(
                "{} stored key/value positions for a document of {own} tokens",
                rows.dims()[0]
            )));
        }
        let next = self.ids.len() + own;
        let stored =
            KvCache::from_token_rows(rows, lm.model.kv_layout(), next, &lm.model.device())?;
        Ok(match &self.cache {
            Some(p) => p.then(&stored)?,
            None => stored,
        })
    }
}

impl SpanReader {
    /// Each document's key/values as an answer reads them (after the
    /// preamble when there is one; the positions of the document's own
    /// tokens only), one row of floats per token
    /// ([`KvCache::token_rows`]): what a store keeps and
    /// [`SpanRead::stored`] hands back.
    ///
    /// # Shapes
    /// - returns one `[T'_i, 2 · n_layers · H_kv · d_h]` per document
    pub fn document_kv(
        &self,
        lm: &LoadedLm,
        preamble: &Preamble,
        documents: &[Vec<u32>],
    ) -> Result<Vec<Tensor<2>>, ModelError> {
        documents
            .iter()
            .map(|d| Ok(preamble.read(lm, d)?.token_rows(0, preamble.ids.len())?))
            .collect()
    }
}

/// Whether a document's ids open with the BOS the tokenizer adds.
fn starts_with_bos(lm: &LoadedLm, document: &[u32]) -> bool {
    lm.tokenizer.add_bos
        && lm.tokenizer.bos_id.is_some()
        && document.first() == lm.tokenizer.bos_id.as_ref()
}

/// A document's ids to read after a frame's preamble (without the
/// document's own BOS), checked against the LM's positions.
fn framed<'a>(
    lm: &LoadedLm,
    preamble: &[u32],
    document: &'a [u32],
) -> Result<&'a [u32], ModelError> {
    let own = &document[usize::from(starts_with_bos(lm, document))..];
    let room = lm.model.max_positions().saturating_sub(QUESTION_ROOM);
    if preamble.len() + own.len() > room {
        return Err(ModelError::Input(format!(
            "a frame of {} tokens and a document of {} leave less than {QUESTION_ROOM} of the LM's {} positions for the question",
            preamble.len(),
            own.len(),
            lm.model.max_positions()
        )));
    }
    Ok(own)
}

/// Where `answer` lies in a document's tokens: the first and last token of
/// its first occurrence (as a word after a space, else as it is), or `None`.
pub fn answer_span(
    lm: &LoadedLm,
    document: &[u32],
    answer: &str,
) -> Result<Option<(usize, usize)>, ModelError> {
    for text in [format!(" {}", answer.trim()), answer.trim().to_string()] {
        let a = continuation_ids(&lm.tokenizer, &text)?;
        if a.is_empty() || a.len() > document.len() {
            continue;
        }
        if let Some(s) = document.windows(a.len()).position(|w| w == a.as_slice()) {
            return Ok(Some((s, s + a.len() - 1)));
        }
    }
    Ok(None)
}
