//! # mac-finetune — online fine-tuning baselines
//!
//! The baselines MAC is compared with in the paper (§4.1): the base LM
//! itself is trained on each document as it arrives, then answers questions
//! after the whole stream.
//!
//! * **uniform**: language-modelling loss on every token of the document;
//! * **salient spans**: the loss only on *salient* tokens. The heuristic
//!   (documented, deterministic): a word is salient when it contains a
//!   digit, is a month name, or starts with a capital letter and is not the
//!   first word of a sentence — numbers, dates and named entities, the
//!   spans questions ask about. Tokens are weighted by the word they belong to.
//!
//! Adam, a fixed number of steps per document, gradient-norm clipping 1.0.
//! Every weight of the LM trains (the LM is loaded on the autodiff device
//! and unfrozen).
//!
//! ```
//! use mac_finetune::{FinetuneConfig, FinetuneKind, OnlineFinetuner};
//!
//! // Salient spans: numbers, months and capitalised words past a sentence's start.
//! let text = "Velra was born on 3 May in Port Vessa.";
//! let spans: Vec<&str> = mac_finetune::salient_spans(text).iter().map(|&(a, b)| &text[a..b]).collect();
//! assert_eq!(spans, ["3", "May", "Port", "Vessa"]);
//!
//! // A tiny random Llama learns a document it is shown.
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../mac-lm/tests/fixtures/tiny-llama.gguf");
//! let config = FinetuneConfig {
//!     kind: FinetuneKind::Uniform,
//!     learning_rate: 1e-2,
//!     steps_per_document: 5,
//!     max_tokens: 64,
//! };
//! let device = mac_device::select("flex").unwrap();
//! let mut tuner = OnlineFinetuner::load(path.as_ref(), &device, config).unwrap();
//! let losses = tuner.adapt(text).unwrap();
//! assert!(losses[4] < losses[0]);
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use mac_lm::{LoadedLm, Padding, TextTokenizer, TokenBatch};
use serde::{Deserialize, Serialize};

/// Which tokens carry the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinetuneKind {
    /// Every token.
    Uniform,
    /// Salient words only (see the crate docs).
    SalientSpans,
}

impl FinetuneKind {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::SalientSpans => "salient_spans",
        }
    }
}

/// Settings of an online fine-tuning run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// Loss placement.
    pub kind: FinetuneKind,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Gradient steps per arriving document.
    pub steps_per_document: usize,
    /// Longest document in LM tokens (longer ones are cut).
    pub max_tokens: usize,
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// Byte ranges of the salient words of `text`.
pub fn salient_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut sentence_start = true;
    let mut start = None;
    let flush = |s: usize, e: usize, first: bool, spans: &mut Vec<(usize, usize)>| {
        let w = &text[s..e];
        let lower = w.to_lowercase();
        let capital = w.chars().next().is_some_and(char::is_uppercase);
        if w.chars().any(|c| c.is_ascii_digit())
            || MONTHS.contains(&lower.as_str())
            || (capital && !first)
        {
            spans.push((s, e));
        }
    };
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() {
            if start.is_none() {
                start = Some(i);
            }
        } else {
            if let Some(s) = start.take() {
                flush(s, i, sentence_start, &mut spans);
                sentence_start = false;
            }
            if matches!(c, '.' | '!' | '?') {
                sentence_start = true;
            }
        }
    }
    if let Some(s) = start {
        flush(s, text.len(), sentence_start, &mut spans);
    }
    spans
}

/// Token ids of `text` and, per token, whether it overlaps a salient word.
fn tokens_with_salience(tok: &TextTokenizer, text: &str) -> Result<(Vec<u32>, Vec<bool>)> {
    let enc = tok
        .inner()
        .encode(text, false)
        .map_err(|e| anyhow::anyhow!("tokenizing a document: {e}"))?;
    let spans = salient_spans(text);
    let salient = enc
        .get_offsets()
        .iter()
        .map(|&(s, e)| spans.iter().any(|&(a, b)| s < b && a < e))
        .collect();
    Ok((enc.get_ids().to_vec(), salient))
}

/// Inputs, next-token targets and loss weights of one document.
type LmBatch = (TokenBatch, Vec<Vec<u32>>, Vec<Vec<f32>>);

/// A base LM being fine-tuned online.
pub struct OnlineFinetuner {
    /// The LM (weights trainable, on the autodiff device).
    pub lm: LoadedLm,
    optim: ModuleOptimizer,
    config: FinetuneConfig,
}

impl OnlineFinetuner {
    /// Loads the LM at `path` for training on `device`.
    pub fn load(path: &Path, device: &Device, config: FinetuneConfig) -> Result<Self> {
        let ad = device.clone().autodiff();
        let mut lm =
            LoadedLm::load(path, &ad).with_context(|| format!("loading {}", path.display()))?;
        lm.model = lm.model.unfreeze();
        Ok(Self {
            lm,
            optim: AdamConfig::new()
                .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
                .init(),
            config,
        })
    }

    fn batch(&self, text: &str) -> Result<LmBatch> {
        let tok = &self.lm.tokenizer;
        let (mut ids, mut salient) = tokens_with_salience(tok, text)?;
        ids.truncate(self.config.max_tokens);
        salient.truncate(self.config.max_tokens);
        anyhow::ensure!(ids.len() >= 2, "the document has fewer than two tokens");
        let t = ids.len();
        let mut targets = vec![0u32; t];
        let mut weights = vec![0f32; t];
        for p in 0..t - 1 {
            targets[p] = ids[p + 1];
            let on = match self.config.kind {
                FinetuneKind::Uniform => true,
                FinetuneKind::SalientSpans => salient[p + 1],
            };
            weights[p] = if on { 1.0 } else { 0.0 };
        }
        if weights.iter().all(|&w| w == 0.0) {
            // No salient token: fall back to the whole document.
            weights[..t - 1].fill(1.0);
        }
        let batch = TokenBatch::padded(&[ids], tok.pad_id, Padding::Right)?;
        Ok((batch, vec![targets], vec![weights]))
    }

    /// The (weighted) LM loss of a document, without training.
    pub fn loss(&self, text: &str) -> Result<f64> {
        let (b, t, w) = self.batch(text)?;
        Ok(self
            .lm
            .model
            .valid()
            .weighted_nll(&b, &t, &w, None)?
            .into_scalar::<f64>())
    }

    /// Trains on one arriving document; returns the loss of each step.
    pub fn adapt(&mut self, text: &str) -> Result<Vec<f64>> {
        let (b, t, w) = self.batch(text)?;
        let mut losses = Vec::with_capacity(self.config.steps_per_document);
        for _ in 0..self.config.steps_per_document {
            let loss = self.lm.model.weighted_nll(&b, &t, &w, None)?;
            losses.push(loss.clone().into_scalar::<f64>());
            let grads = GradientsParams::from_grads(loss.backward(), &self.lm.model);
            self.lm.model =
                self.optim
                    .step(self.config.learning_rate, self.lm.model.clone(), grads);
        }
        Ok(losses)
    }

    /// The current weights as a plain (no-gradient) LM for answering.
    pub fn snapshot(&self) -> LoadedLm {
        LoadedLm {
            model: self.lm.model.valid(),
            tokenizer: self.lm.tokenizer.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::salient_spans;

    #[test]
    fn salient_words_are_names_numbers_and_dates() {
        let text = "Velra Quellington was born on 3 May 1961. She works for Orvane Dynamics.";
        let words: Vec<&str> = salient_spans(text)
            .iter()
            .map(|&(a, b)| &text[a..b])
            .collect();
        assert_eq!(
            words,
            ["Quellington", "3", "May", "1961", "Orvane", "Dynamics"]
        );
    }
}
