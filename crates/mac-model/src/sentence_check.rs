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

use burn::tensor::Device;
use mac_encoder::{Bert, EncoderBackbone, EncoderFiles, EncoderTokenizer, Trainable};
use mac_lm::LoadedLm;
use serde::{Deserialize, Serialize};

use crate::span_memory::sentence_ranges;
use crate::{ModelError, SpanExtent};

/// Tokens of a question or sentence the encoder reads (longer ones cut).
const SENTENCE_TOKENS: usize = 128;

/// A span memory's sentence check as its checkpoint records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentenceChecking {
    /// Another sentence is handed when its cosine with the question exceeds
    /// the span's sentence's by more than this.
    pub slack: f32,
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

    /// The cosine of `question`'s sentence embedding with each of `texts`'.
    pub fn similarities(&self, question: &str, texts: &[&str]) -> Result<Vec<f32>, ModelError> {
        let all: Vec<&str> = std::iter::once(question)
            .chain(texts.iter().copied())
            .collect();
        let batch = self.tokenizer.encode_batch(&all)?;
        let embeddings = self.encoder.sentence_embedding(
            batch.ids_tensor(&self.device),
            batch.valid_tensor(&self.device),
        );
        let n = all.len();
        let question = embeddings.clone().narrow(0, 0, 1);
        let others = embeddings.narrow(0, 1, n - 1);
        let cosines = others.matmul(question.transpose()).reshape([n - 1]);
        cosines
            .try_to_vec_as::<f32>()
            .map_err(|e| ModelError::Input(format!("cannot read the sentence cosines: {e:?}")))
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
        let own = SpanExtent::Sentence.range(lm, document, start, end)?;
        let sentences: Vec<(usize, usize)> = sentence_ranges(lm, document)?
            .into_iter()
            .filter(|&r| r != own)
            .collect();
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
}
