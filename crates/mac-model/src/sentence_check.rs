//! Checking span memory's sentence with a frozen sentence encoder.
//!
//! The span head learnt where the training generator's kinds of fact lie;
//! on wording it never saw it can choose the right document but the wrong
//! sentence of it. A frozen sentence encoder trained for semantic search
//! (all-MiniLM-L6-v2, the key encoder the paper's path already uses) ranks
//! each sentence of the chosen document by the cosine of its embedding
//! with the question's; where another sentence matches the question by more
//! than a slack (chosen on validation) than the span's own sentence does,
//! that sentence is handed instead.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use mac_encoder::{Bert, EncoderBackbone, EncoderFiles, EncoderTokenizer, Trainable};
use mac_lm::LoadedLm;
use serde::{Deserialize, Serialize};

use crate::names::without_names as without_names_of;
use crate::span_memory::sentence_ranges;
use crate::ModelError;

/// Tokens of a question or sentence the encoder reads (longer ones cut).
const SENTENCE_TOKENS: usize = 128;

/// The cosine above which a later entry's sentence is taken for one its
/// earlier entry has too (a repeated aside restates no fact).
const SAME_SENTENCE: f32 = 0.95;

/// `x` scaled to unit length (zero stays zero).
fn unit(x: &[f32]) -> Vec<f32> {
    let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
    x.iter()
        .map(|v| if norm > 0.0 { v / norm } else { 0.0 })
        .collect()
}

/// A span memory's sentence tests as its checkpoint records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentenceChecking {
    /// Another sentence of the chosen document is handed when its cosine
    /// with the question exceeds the span's sentence's by more than this
    /// (absent: the span's sentence is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<f32>,
    /// A later entry is read instead of the best only if its best sentence
    /// matches the question no more than this below the best entry's
    /// (absent: no such test; see
    /// [`mac_aggregation::Recency::sentence_answers`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recency: Option<f32>,
    /// With `recency` or `recency_restates`, the question and the entries
    /// are read with the question's names left out (see
    /// [`mac_aggregation::Recency::without_names`]; absent: as they are).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recency_without_names: bool,
    /// A later entry is read instead of the best only if it restates the
    /// best's fact the question asks about (see
    /// [`mac_aggregation::Recency::restates`]; absent: no such test).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recency_restates: bool,
    /// The sentence encoder's Hugging Face directory (a BERT family model
    /// with mean pooling).
    pub encoder: PathBuf,
}

/// A sentence of the chosen document that matches the question better than
/// the span's own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BetterSentence {
    /// Its first token.
    pub start: usize,
    /// Its last token (inclusive).
    pub end: usize,
    /// Its cosine with the question less the span's sentence's (> 0).
    pub gap: f32,
}

/// The frozen sentence encoder and its tokenizer.
pub struct SentenceCheck {
    encoder: Bert,
    tokenizer: EncoderTokenizer,
    device: Device,
}

impl std::fmt::Debug for SentenceCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SentenceCheck({} wide)", self.encoder.hidden_size())
    }
}

/// The sentences of `text`: runs ending in `.`, `!` or `?` before
/// whitespace or the end, or at a line break; trimmed, empty ones left out.
pub fn text_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut from = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (i, &(at, c)) in chars.iter().enumerate() {
        let next_blank = chars.get(i + 1).is_none_or(|&(_, n)| n.is_whitespace());
        if c == '\n' || (matches!(c, '.' | '!' | '?') && next_blank) {
            let end = at + c.len_utf8();
            out.push(text[from..end].trim());
            from = end;
        }
    }
    out.push(text[from..].trim());
    out.retain(|s| !s.is_empty());
    out
}

impl SentenceCheck {
    /// Loads the sentence encoder in `dir`; it must be of the BERT family.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let files = EncoderFiles::open(dir)?;
        let encoder = match EncoderBackbone::from_files(&files, device, Trainable::None)? {
            EncoderBackbone::Bert(bert) => bert,
            EncoderBackbone::T5(_) => {
                return Err(ModelError::Input(format!(
                    "{}: the sentence check needs a BERT-family sentence encoder (all-MiniLM-L6-v2), not a T5",
                    dir.display()
                )))
            }
        };
        Ok(Self {
            encoder,
            tokenizer: files.tokenizer(SENTENCE_TOKENS)?,
            device: device.clone(),
        })
    }

    /// The sentence embeddings of `texts`, `[N, d]`.
    fn embedded(&self, texts: &[&str]) -> Result<Tensor<2>, ModelError> {
        let batch = self.tokenizer.encode_batch(texts)?;
        Ok(self.encoder.sentence_embedding(
            batch.ids_tensor(&self.device),
            batch.valid_tensor(&self.device),
        ))
    }

    /// The cosine of `question`'s sentence embedding with each of `texts`'.
    pub fn similarities(&self, question: &str, texts: &[&str]) -> Result<Vec<f32>, ModelError> {
        let all: Vec<&str> = std::iter::once(question)
            .chain(texts.iter().copied())
            .collect();
        let embeddings = self.embedded(&all)?;
        let n = all.len();
        let question = embeddings.clone().narrow(0, 0, 1);
        let others = embeddings.narrow(0, 1, n - 1);
        let cosines = others.matmul(question.transpose()).reshape([n - 1]);
        cosines
            .try_to_vec_as::<f32>()
            .map_err(|e| ModelError::Input(format!("cannot read the sentence cosines: {e:?}")))
    }

    /// The best cosine of any sentence of `text` with `question`, both read
    /// without `names` where `without_names` (see [`crate::without_names`]):
    /// how a later entry answers the question (see
    /// [`mac_aggregation::Recency::without_names`]).
    pub fn best_match(
        &self,
        question: &str,
        text: &str,
        names: &[Vec<&str>],
        without_names: bool,
    ) -> Result<f32, ModelError> {
        if !without_names {
            return Ok(self.best_matches(question, &[text])?[0]);
        }
        let (question, text) = (
            without_names_of(question, names),
            without_names_of(text, names),
        );
        Ok(self.best_matches(&question, &[&text])?[0])
    }

    /// Whether `later` restates the fact of `earlier` that `question` asks
    /// about: some sentence of `later` — not one `earlier` has too, near
    /// word for word — is closest to the sentence of `earlier` closest to
    /// the question (cosines of sentence embeddings); all read without
    /// `names` where `without_names`. True where either text has no
    /// sentence (see [`mac_aggregation::Recency::restates`]).
    pub fn restates(
        &self,
        question: &str,
        (earlier, later): (&str, &str),
        names: &[Vec<&str>],
        without_names: bool,
    ) -> Result<bool, ModelError> {
        let read = |t: &str| match without_names {
            true => without_names_of(t, names),
            false => t.to_string(),
        };
        let (question, earlier, later) = (read(question), read(earlier), read(later));
        let (told, new) = (text_sentences(&earlier), text_sentences(&later));
        if told.is_empty() || new.is_empty() {
            return Ok(true);
        }
        let all: Vec<&str> = std::iter::once(question.as_str())
            .chain(told.iter().copied())
            .chain(new.iter().copied())
            .collect();
        let embedded = self.embedded(&all)?;
        let [n, d] = embedded.dims();
        let flat = embedded
            .try_to_vec_as::<f32>()
            .map_err(|e| ModelError::Input(format!("cannot read sentence embeddings: {e:?}")))?;
        let rows: Vec<Vec<f32>> = flat.chunks_exact(d).take(n).map(unit).collect();
        let told_rows = &rows[1..1 + told.len()];
        let closest = |x: &[f32]| {
            told_rows
                .iter()
                .map(|t| t.iter().zip(x).map(|(a, b)| a * b).sum::<f32>())
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a })
        };
        let (asked, _) = closest(&rows[0]);
        Ok(rows[1 + told.len()..].iter().any(|s| {
            let (at, cosine) = closest(s);
            at == asked && cosine < SAME_SENTENCE
        }))
    }

    /// For each of `texts`, the best cosine of any of its sentences
    /// ([`text_sentences`]) with `question` (−1 for a text without one).
    pub fn best_matches(&self, question: &str, texts: &[&str]) -> Result<Vec<f32>, ModelError> {
        let sentences: Vec<Vec<&str>> = texts.iter().map(|t| text_sentences(t)).collect();
        let all: Vec<&str> = sentences.iter().flatten().copied().collect();
        if all.is_empty() {
            return Ok(vec![-1.0; texts.len()]);
        }
        let cosines = self.similarities(question, &all)?;
        let mut at = 0;
        Ok(sentences
            .iter()
            .map(|s| {
                let best = cosines[at..at + s.len()]
                    .iter()
                    .fold(-1f32, |a, &b| a.max(b));
                at += s.len();
                best
            })
            .collect())
    }

    /// The sentence of `document` matching `question` best, where it is
    /// not the sentence (or sentences) holding the span `start..=end`:
    /// `None` when the span's own matches best.
    pub fn better_sentence(
        &self,
        lm: &LoadedLm,
        question: &str,
        document: &[u32],
        (start, end): (usize, usize),
    ) -> Result<Option<BetterSentence>, ModelError> {
        // The span's own sentences, as the sentence extent finds them: from
        // the start of the sentence holding its first token to the end of
        // the one holding its last (the document's tokens decoded once).
        let ranges = sentence_ranges(lm, document)?;
        let holding = |t: usize| ranges.iter().find(|&&(_, b)| b >= t).copied();
        let end = end.min(document.len().saturating_sub(1));
        let (Some((from, _)), Some((_, to))) = (holding(start.min(end)), holding(end)) else {
            return Ok(None);
        };
        let own = (from, to);
        let sentences: Vec<(usize, usize)> = ranges.into_iter().filter(|&r| r != own).collect();
        if sentences.is_empty() {
            return Ok(None);
        }
        let texts = std::iter::once(own)
            .chain(sentences.iter().copied())
            .map(|(a, b)| lm.tokenizer.decode(&document[a..=b]))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let cosines = self.similarities(question, &refs)?;
        let (best, cosine) = cosines[1..].iter().enumerate().fold(
            (0, f32::NEG_INFINITY),
            |(bi, bc), (i, &c)| match c > bc {
                true => (i, c),
                false => (bi, bc),
            },
        );
        let gap = cosine - cosines[0];
        Ok((gap > 0.0).then(|| BetterSentence {
            start: sentences[best].0,
            end: sentences[best].1,
            gap,
        }))
    }

    /// The span handed for `span` of `document`: the sentence matching
    /// `question` by more than `slack` above the span's own, or the span.
    pub fn checked(
        &self,
        lm: &LoadedLm,
        question: &str,
        document: &[u32],
        span: (usize, usize),
        slack: f32,
    ) -> Result<(usize, usize), ModelError> {
        Ok(match self.better_sentence(lm, question, document, span)? {
            Some(b) if b.gap > slack => (b.start, b.end),
            _ => span,
        })
    }
}

/// The span handed for `span` of `document` (its first and last token)
/// before its extent: the span kept within the document, or, with a
/// sentence check and its slack, the sentence the check prefers
/// ([`SentenceCheck::checked`]).
pub fn handed_span(
    lm: &LoadedLm,
    check: Option<(&SentenceCheck, f32)>,
    question: &str,
    document: &[u32],
    span: (usize, usize),
) -> Result<(usize, usize), ModelError> {
    let end = span.1.min(document.len().saturating_sub(1));
    let range = (span.0.min(end), end);
    match check {
        Some((check, slack)) => check.checked(lm, question, document, range, slack),
        None => Ok(range),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_splits_where_its_sentences_end() {
        let text = "Ann lives in Oslo. She earns 3.5 million a year!  Why?\nA list\n\n";
        assert_eq!(
            text_sentences(text),
            [
                "Ann lives in Oslo.",
                "She earns 3.5 million a year!",
                "Why?",
                "A list"
            ]
        );
        assert_eq!(text_sentences("no stop at the end"), ["no stop at the end"]);
        assert!(text_sentences(" \n ").is_empty());
    }
}
