//! Span memory's training: a [`SpanSelector`] learns where each question's
//! answer lies among the tokens of a bank of documents.
//!
//! The LM's residual states of every document and question prompt are
//! read once, up front ([`SpanFeatures::read`]); a step draws a bank of
//! training documents and questions about some of them, and the loss is the
//! cross-entropy of the gold start and the gold end over **every token of
//! the bank** — choosing the document and the span is one softmax. No pass
//! of the LM per step, so thousands of steps cost minutes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
pub use mac_aggregation::SpanRule;
use mac_aggregation::{per_token, DocumentMatches, SpanSelector, SpanSelectorConfig};
use mac_data::Dataset;
use mac_lm::LoadedLm;
use mac_model::{
    answer_span, SelectorShape, SpanCheckpoint, SpanCheckpointMeta, SpanReader, SpanReading,
};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::run_dir::{sibling, swap_into_place, OPTIMIZER_FILE};
use crate::tensors::{draw_initial_weights, SEEDED_INIT};

mod choose;
mod config;
mod recency;
mod replaced;
mod run;
mod sentence;
mod validation;
pub use choose::{choose_spans, choose_spans_each, Choosing, QuestionSpan, BANK_CHUNK};
pub use config::SpanRunConfig;
pub use recency::RecencyScore;
pub use replaced::ReplacedChoice;
pub use run::{train_span_memory, RuleScore, SpanRunReport, ValidationPoint, SPAN_RUN_FILE};
pub use sentence::SentenceCheckChoice;

/// What span memory's selector is trained on, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanTrainConfig {
    /// Seed of the initial weights and of the banks and questions drawn.
    pub seed: u64,
    /// Residual stream after this many LM layers.
    pub layer: usize,
    /// Width of a start (end) key.
    pub d_key: usize,
    /// Longest span chosen, in tokens.
    pub max_span: usize,
    /// Documents in each step's bank.
    pub bank_documents: usize,
    /// Questions per step (about documents of the bank).
    pub questions: usize,
    /// Optimizer steps (Adam).
    pub steps: usize,
    /// Learning rate.
    pub learning_rate: f64,
    /// Train the document-matching projection (else only its norm and scale).
    #[serde(default = "yes")]
    pub train_match: bool,
    /// Hard negatives per question put in its step's bank: the training
    /// documents BM25 ranks highest for the question, its own left out
    /// (they share its names, wording and values).
    #[serde(default)]
    pub hard_negatives: usize,
}

fn yes() -> bool {
    true
}

impl Default for SpanTrainConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            layer: 12,
            d_key: 64,
            max_span: 8,
            bank_documents: 32,
            questions: 32,
            steps: 1000,
            learning_rate: 1e-3,
            train_match: true,
            hard_negatives: 0,
        }
    }
}

/// One question with the LM's summary of it and its answer's place.
#[derive(Debug, Clone)]
pub struct SpanQuestion {
    /// Index of its document in [`SpanFeatures::documents`].
    pub document: usize,
    /// The question.
    pub text: String,
    /// Accepted answers.
    pub answers: Vec<String>,
    /// Last and mean residual state of its prompt, `2·d_lm` floats.
    pub summary: Vec<f32>,
    /// Residual states of its prompt's tokens, `Tq·d_lm` floats.
    pub states: Vec<f32>,
    /// First and last token of the first answer in the document, when it is there.
    pub span: Option<(usize, usize)>,
}

/// Residual states of a dataset's documents and questions, read once.
#[derive(Debug, Clone)]
pub struct SpanFeatures {
    /// Token ids of each document, as the LM reads it.
    pub documents: Vec<Vec<u32>>,
    /// Each document's text.
    pub texts: Vec<String>,
    /// Residual states of each document's tokens, `T·d_lm` floats, row-major.
    pub states: Vec<Vec<f32>>,
    /// Width of a residual state.
    pub d_lm: usize,
    /// Every question of the documents.
    pub questions: Vec<SpanQuestion>,
}

impl SpanFeatures {
    /// Reads the first `max_documents` documents of `dataset` (and their
    /// questions) through the LM, `batch` at a time.
    pub fn read(
        lm: &LoadedLm,
        reader: &SpanReader,
        dataset: &Dataset,
        max_documents: usize,
        batch: usize,
    ) -> Result<Self> {
        let docs = &dataset.documents[..max_documents.min(dataset.documents.len())];
        let d_lm = lm.model.hidden_width();
        let (mut documents, mut states, mut questions) = (Vec::new(), Vec::new(), Vec::new());
        for (c, chunk) in docs.chunks(batch.max(1)).enumerate() {
            let ids = chunk
                .iter()
                .map(|d| SpanReader::document_ids(lm, &d.text))
                .collect::<Result<Vec<_>, _>>()?;
            for s in reader.token_states(lm, &ids)? {
                states.push(host(s)?);
            }
            let mut texts = Vec::new();
            for (i, d) in chunk.iter().enumerate() {
                let index = c * batch.max(1) + i;
                for qa in &d.qas {
                    let answer = qa.answers.first().map(String::as_str).unwrap_or("");
                    questions.push(SpanQuestion {
                        document: index,
                        text: qa.question.clone(),
                        answers: qa.answers.clone(),
                        summary: Vec::new(),
                        states: Vec::new(),
                        span: answer_span(lm, &ids[i], answer)?,
                    });
                    texts.push(qa.question.as_str());
                }
            }
            let first = questions.len() - texts.len();
            for (q, states) in questions[first..]
                .iter_mut()
                .zip(reader.question_states(lm, &texts)?)
            {
                q.summary = host(SpanReader::summary(states.clone()))?;
                q.states = host(states)?;
            }
            documents.extend(ids);
        }
        Ok(Self {
            documents,
            texts: docs.iter().map(|d| d.text.clone()).collect(),
            states,
            d_lm,
            questions,
        })
    }

    /// Joins `other`'s documents and questions after these (read at the
    /// same layer, of the same width).
    pub fn extend(&mut self, other: SpanFeatures) {
        let offset = self.documents.len();
        self.documents.extend(other.documents);
        self.texts.extend(other.texts);
        self.states.extend(other.states);
        self.questions
            .extend(other.questions.into_iter().map(|q| SpanQuestion {
                document: q.document + offset,
                ..q
            }));
    }

    /// Token counts of documents.
    pub fn lengths(&self, documents: &[usize]) -> Vec<usize> {
        documents.iter().map(|&d| self.documents[d].len()).collect()
    }

    /// The states of `documents`' tokens, one after another, `[M, d_lm]`.
    pub fn bank_states(&self, documents: &[usize], device: &Device) -> Tensor<2> {
        let mut data = Vec::new();
        for &d in documents {
            data.extend_from_slice(&self.states[d]);
        }
        let m = data.len() / self.d_lm;
        Tensor::from_data(TensorData::new(data, [m, self.d_lm]), device)
    }

    /// The states of `documents`' tokens padded to the longest, `[N, T, d_lm]`,
    /// with where tokens are, `[N, T]`.
    pub fn padded_documents(
        &self,
        documents: &[usize],
        device: &Device,
    ) -> (Tensor<3>, Tensor<2, Bool>) {
        let rows: Vec<&[f32]> = documents
            .iter()
            .map(|&d| self.states[d].as_slice())
            .collect();
        padded(&rows, self.d_lm, device)
    }

    /// The states of `questions`' prompt tokens padded to the longest,
    /// `[Q, Tq, d_lm]`, with where tokens are, `[Q, Tq]`.
    pub fn padded_questions(
        &self,
        questions: &[usize],
        device: &Device,
    ) -> (Tensor<3>, Tensor<2, Bool>) {
        let rows: Vec<&[f32]> = questions
            .iter()
            .map(|&q| self.questions[q].states.as_slice())
            .collect();
        padded(&rows, self.d_lm, device)
    }

    /// The summaries of `questions`, `[Q, 2·d_lm]`.
    pub fn summaries(&self, questions: &[usize], device: &Device) -> Tensor<2> {
        let data: Vec<f32> = questions
            .iter()
            .flat_map(|&q| self.questions[q].summary.iter().copied())
            .collect();
        Tensor::from_data(
            TensorData::new(data, [questions.len(), 2 * self.d_lm]),
            device,
        )
    }
}

/// Rows of `T_i·d` floats as `[N, T, d]` (zeros after each row's end) and
/// the mask of real tokens `[N, T]`.
fn padded(rows: &[&[f32]], d: usize, device: &Device) -> (Tensor<3>, Tensor<2, Bool>) {
    let t = rows.iter().map(|r| r.len() / d).max().unwrap_or(0).max(1);
    let mut data = vec![0f32; rows.len() * t * d];
    let mut valid = vec![false; rows.len() * t];
    for (i, r) in rows.iter().enumerate() {
        data[i * t * d..i * t * d + r.len()].copy_from_slice(r);
        valid[i * t..i * t + r.len() / d].fill(true);
    }
    (
        Tensor::from_data(TensorData::new(data, [rows.len(), t, d]), device),
        Tensor::from_data(TensorData::new(valid, [rows.len(), t]), device),
    )
}

/// How documents match questions under the selector (logits `[Q, N]` and
/// each question token's best cosine per document).
pub fn document_matches(
    selector: &SpanSelector,
    memory: &SpanFeatures,
    documents: &[usize],
    asked: &SpanFeatures,
    questions: &[usize],
    device: &Device,
) -> DocumentMatches {
    let keys = |(states, valid): (Tensor<3>, Tensor<2, Bool>)| {
        let [n, t, d] = states.dims();
        let k = selector.match_keys(states.reshape([n * t, d]));
        let dm = k.dims()[1];
        (k.reshape([n, t, dm]), valid)
    };
    let (dk, dv) = keys(memory.padded_documents(documents, device));
    let (qk, qv) = keys(asked.padded_questions(questions, device));
    selector.document_matches(qk, qv, dk, dv)
}

pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.try_to_vec_as::<f32>()
        .map_err(|e| anyhow::anyhow!("reading LM states: {e:?}"))
}

/// Cross-entropy of the gold start and end over each row's logits.
fn span_loss(
    start: Tensor<2>,
    end: Tensor<2>,
    gold: &[(usize, usize)],
    device: &Device,
) -> Tensor<1> {
    let q = gold.len();
    let index = |pick: fn(&(usize, usize)) -> usize| {
        let v: Vec<i64> = gold.iter().map(|g| pick(g) as i64).collect();
        Tensor::<2, Int>::from_data(TensorData::new(v, [q, 1]), device)
    };
    let s = log_softmax(start, 1).gather(1, index(|g| g.0));
    let e = log_softmax(end, 1).gather(1, index(|g| g.1));
    (s + e).sum().neg().reshape([1]) / (2 * q) as f64
}

/// The selector and its optimizer over a training set's features.
pub struct SpanTrainer {
    /// The selector being trained (autodiff device).
    pub selector: SpanSelector,
    selector_config: SpanSelectorConfig,
    optim: ModuleOptimizer,
    config: SpanTrainConfig,
    ad: Device,
    /// Questions whose answer was found in their document.
    trainable: Vec<usize>,
    /// Each question's hard negatives (empty without them).
    negatives: Vec<Vec<usize>>,
    steps_done: usize,
}

/// One training step's numbers.
#[derive(Debug, Clone, Copy)]
pub struct SpanStepStats {
    /// The step's loss, nats: the start and end cross-entropies (averaged)
    /// plus the gold document's retrieval cross-entropy.
    pub loss: f64,
    /// Share of questions whose most likely start is the gold one.
    pub start_accuracy: f64,
}

impl SpanTrainer {
    /// A fresh selector for features of width `d_lm`.
    pub fn new(config: SpanTrainConfig, features: &SpanFeatures, device: &Device) -> Result<Self> {
        anyhow::ensure!(
            config.bank_documents >= 1,
            "bank_documents must be at least 1"
        );
        anyhow::ensure!(config.questions >= 1, "questions must be at least 1");
        let ad = device.clone().autodiff();
        // The seed gives the initial weights (drawn under the lock every
        // trainer seeds the backend's generator under).
        let selector_config = SpanSelectorConfig::new(features.d_lm)
            .with_d_key(config.d_key)
            .with_max_span(config.max_span)
            .with_train_match(config.train_match);
        let selector = {
            let _draws = SEEDED_INIT
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ad.seed(config.seed);
            let selector = selector_config.init(&ad);
            draw_initial_weights(&selector);
            selector
        };
        let trainable: Vec<usize> = (0..features.questions.len())
            .filter(|&q| features.questions[q].span.is_some())
            .collect();
        anyhow::ensure!(
            !trainable.is_empty(),
            "no question's answer lies in its document"
        );
        let negatives = hard_negatives(features, config.hard_negatives)?;
        Ok(Self {
            selector,
            selector_config,
            optim: AdamConfig::new().init(),
            config,
            ad,
            trainable,
            negatives,
            steps_done: 0,
        })
    }

    /// One step on a drawn bank.
    pub fn step(&mut self, features: &SpanFeatures) -> Result<SpanStepStats> {
        let (picked, bank) = self.draw(features);
        let cfg = &self.config;
        let lengths = features.lengths(&bank);
        let offsets: Vec<usize> = lengths
            .iter()
            .scan(0, |acc, &l| {
                let o = *acc;
                *acc += l;
                Some(o)
            })
            .collect();
        let gold: Vec<(usize, usize)> = picked
            .iter()
            .map(|&q| {
                let question = &features.questions[q];
                let slot = bank
                    .iter()
                    .position(|&d| d == question.document)
                    .unwrap_or(0);
                let (s, e) = question.span.unwrap_or((0, 0));
                (offsets[slot] + s, offsets[slot] + e)
            })
            .collect();
        let document_logits =
            document_matches(&self.selector, features, &bank, features, &picked, &self.ad).logits;
        let keys = self
            .selector
            .token_keys(features.bank_states(&bank, &self.ad));
        let queries = self
            .selector
            .question_queries(features.summaries(&picked, &self.ad));
        let bias = per_token(document_logits.clone(), &lengths);
        let logits = self.selector.logits(queries, keys, Some(bias));
        let predicted = logits
            .start
            .clone()
            .argmax(1)
            .try_to_vec_as::<i64>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let hits = predicted
            .iter()
            .zip(&gold)
            .filter(|(&p, g)| p as usize == g.0)
            .count();
        // The gold document among the bank's (the retrieval loss).
        let gold_documents: Vec<i64> = picked
            .iter()
            .map(|&q| {
                bank.iter()
                    .position(|&d| d == features.questions[q].document)
                    .unwrap_or(0) as i64
            })
            .collect();
        let gold_documents = Tensor::<2, Int>::from_data(
            TensorData::new(gold_documents, [picked.len(), 1]),
            &self.ad,
        );
        let retrieval = log_softmax(document_logits, 1)
            .gather(1, gold_documents)
            .mean()
            .neg();
        let loss = span_loss(logits.start, logits.end, &gold, &self.ad) + retrieval;
        let value = loss.clone().into_scalar::<f64>();
        let grads = GradientsParams::from_grads(loss.backward(), &self.selector);
        self.selector = self
            .optim
            .step(cfg.learning_rate, self.selector.clone(), grads);
        self.steps_done += 1;
        Ok(SpanStepStats {
            loss: value,
            start_accuracy: hits as f64 / gold.len() as f64,
        })
    }

    /// The step's questions, then its bank: their documents, their hard
    /// negatives and other documents drawn, each once.
    fn draw(&self, features: &SpanFeatures) -> (Vec<usize>, Vec<usize>) {
        let cfg = &self.config;
        let mut rng = ChaCha8Rng::seed_from_u64(
            cfg.seed ^ (self.steps_done as u64).wrapping_mul(0x9E37_79B9),
        );
        let picked: Vec<usize> = sample(
            &mut rng,
            self.trainable.len(),
            cfg.questions.min(self.trainable.len()),
        )
        .into_iter()
        .map(|i| self.trainable[i])
        .collect();
        let mut bank: Vec<usize> = Vec::new();
        let add = |bank: &mut Vec<usize>, d: usize| {
            if !bank.contains(&d) {
                bank.push(d);
            }
        };
        for &q in &picked {
            add(&mut bank, features.questions[q].document);
        }
        for &q in &picked {
            for &d in self.negatives.get(q).into_iter().flatten() {
                add(&mut bank, d);
            }
        }
        let n_docs = features.documents.len();
        while bank.len() < cfg.bank_documents.max(picked.len()).min(n_docs) {
            add(&mut bank, sample(&mut rng, n_docs, 1).index(0));
        }
        (picked, bank)
    }

    /// The trained selector, without the autodiff graph.
    pub fn selector(&self) -> SpanSelector {
        self.selector.valid()
    }

    /// The configuration of the selector being trained.
    pub fn selector_config(&self) -> SpanSelectorConfig {
        self.selector_config.clone()
    }

    /// Optimizer steps taken so far.
    pub fn steps_done(&self) -> usize {
        self.steps_done
    }

    /// Writes a checkpoint into `dir`: the selector with its metadata
    /// (`reading` and the LM it reads, as [`SpanCheckpoint`]), and
    /// what resuming needs (optimizer state, step, training config). The
    /// directory is written beside its final name and swapped into place.
    pub fn save(&self, dir: &Path, reading: SpanReading, lm: PathBuf) -> Result<SpanCheckpoint> {
        let tmp = sibling(dir, ".partial");
        let _ = std::fs::remove_dir_all(&tmp);
        let mut meta = SpanCheckpointMeta::new(&self.selector_config, reading, lm);
        meta.step = self.steps_done as u64;
        SpanCheckpoint::save(&tmp, &self.selector(), &meta)?;
        self.optim.save(tmp.join(OPTIMIZER_FILE)).map_err(|e| {
            anyhow::anyhow!("{}: cannot save optimizer state: {e:?}", tmp.display())
        })?;
        let state = SpanTrainerState {
            config: self.config.clone(),
            steps_done: self.steps_done,
        };
        std::fs::write(
            tmp.join(TRAINER_FILE),
            serde_json::to_string_pretty(&state)?,
        )
        .with_context(|| format!("{}: cannot write {TRAINER_FILE}", tmp.display()))?;
        swap_into_place(&tmp, dir)?;
        Ok(SpanCheckpoint::open(dir)?)
    }

    /// Continues the training saved in `dir` by [`Self::save`] on the same
    /// `features`: the selector, the optimizer state and the step, so that
    /// the steps after it are those an uninterrupted run takes.
    pub fn resume(dir: &Path, features: &SpanFeatures, device: &Device) -> Result<Self> {
        let checkpoint = SpanCheckpoint::open(dir)?;
        let path = dir.join(TRAINER_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: cannot read (not a resumable checkpoint)",
                path.display()
            )
        })?;
        let state: SpanTrainerState = serde_json::from_str(&text)
            .with_context(|| format!("{}: malformed", path.display()))?;
        let mut trainer = Self::new(state.config, features, device)?;
        anyhow::ensure!(
            checkpoint.meta.selector == SelectorShape::of(&trainer.selector_config),
            "{}: the stored selector {:?} is not the one its training config builds on these features ({:?})",
            dir.display(),
            checkpoint.meta.selector,
            SelectorShape::of(&trainer.selector_config)
        );
        checkpoint.load_into(&mut trainer.selector)?;
        let opt_path = dir.join(OPTIMIZER_FILE);
        trainer.optim = trainer.optim.load(&opt_path).map_err(|e| {
            anyhow::anyhow!("{}: cannot load optimizer state: {e:?}", opt_path.display())
        })?;
        trainer.steps_done = state.steps_done;
        Ok(trainer)
    }
}

/// For every question of `features`, the `k` documents BM25 ranks highest
/// for it other than its own (none when `k` is 0).
fn hard_negatives(features: &SpanFeatures, k: usize) -> Result<Vec<Vec<usize>>> {
    if k == 0 {
        return Ok(Vec::new());
    }
    let index = mac_retrieval::Bm25Index::build(&features.texts)?;
    features
        .questions
        .iter()
        .map(|q| {
            let hits = index.search(&q.text, k + 1)?;
            Ok(hits
                .into_iter()
                .map(|h| h.document)
                .filter(|&d| d != q.document)
                .take(k)
                .collect())
        })
        .collect()
}

/// The training config and step beside it.
const TRAINER_FILE: &str = "span-trainer.json";

/// What [`SpanTrainer::resume`] reads besides the checkpoint.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpanTrainerState {
    config: SpanTrainConfig,
    steps_done: usize,
}

/// The validation questions whose answer lies in their document.
pub(crate) fn answerable(features: &SpanFeatures) -> Vec<usize> {
    (0..features.questions.len())
        .filter(|&q| features.questions[q].span.is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(document: usize, text: &str) -> SpanQuestion {
        SpanQuestion {
            document,
            text: text.into(),
            answers: Vec::new(),
            summary: Vec::new(),
            states: Vec::new(),
            span: None,
        }
    }

    #[test]
    fn joined_features_keep_each_question_on_its_document() {
        let features = |texts: &[&str], asked: &[(usize, &str)]| SpanFeatures {
            documents: texts.iter().map(|t| vec![t.len() as u32]).collect(),
            texts: texts.iter().map(|t| t.to_string()).collect(),
            states: vec![vec![0.0]; texts.len()],
            d_lm: 1,
            questions: asked.iter().map(|&(d, q)| question(d, q)).collect(),
        };
        let mut joined = features(&["a", "bb"], &[(1, "B?")]);
        joined.extend(features(&["ccc", "dddd"], &[(0, "C?"), (1, "D?")]));
        assert_eq!(joined.texts, ["a", "bb", "ccc", "dddd"]);
        let on: Vec<(usize, &str)> = joined
            .questions
            .iter()
            .map(|q| (q.document, q.text.as_str()))
            .collect();
        assert_eq!(on, [(1, "B?"), (2, "C?"), (3, "D?")]);
        assert_eq!(joined.lengths(&[2, 3]), [1, 1]);
    }

    #[test]
    fn hard_negatives_share_the_question_words_and_leave_its_document_out() {
        let texts = [
            "Ada Byron works for Norse Mills.",
            "Ada Lind plays the harp.",
            "Tom Byron works for Kestrel Foods.",
            "The weather was mild all week.",
        ];
        let features = SpanFeatures {
            documents: vec![Vec::new(); texts.len()],
            texts: texts.map(String::from).to_vec(),
            states: vec![Vec::new(); texts.len()],
            d_lm: 1,
            questions: vec![
                question(0, "Who does Ada Byron work for?"),
                question(3, "How was the weather?"),
            ],
        };
        assert!(hard_negatives(&features, 0).unwrap().is_empty());
        let negatives = hard_negatives(&features, 2).unwrap();
        assert_eq!(negatives.len(), 2);
        let mut first = negatives[0].clone();
        first.sort_unstable();
        assert_eq!(first, vec![1, 2], "{negatives:?}");
        assert!(!negatives[1].contains(&3), "{negatives:?}");
        assert!(negatives[1].len() <= 2);
    }
}
