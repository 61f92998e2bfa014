//! The data a run trains on: its three splits, and the documents and
//! questions of each step's batches (a pure function of seed and step).

use std::path::Path;

use anyhow::Result;
use mac_data::{load, Dataset, FactStream, Format, LoadOptions, QaPair};
use mac_model::prompt::{answer_batch, question_prompt, AnswerBatch};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::DataSource;
use crate::trainer::Trainer;

/// The three splits a run uses.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Meta-training documents.
    pub train: Dataset,
    /// Validation documents.
    pub validation: Dataset,
    /// The test stream.
    pub test: Dataset,
}

/// Loads (or generates) the data of a configuration.
pub fn load_splits(source: &DataSource) -> Result<Splits> {
    match source {
        DataSource::FactStream(cfg) => {
            let s = FactStream::generate(cfg);
            Ok(Splits {
                train: s.train,
                validation: s.validation,
                test: s.test,
            })
        }
        DataSource::Files {
            train,
            validation,
            test,
            format,
        } => {
            let format: Format = format.parse().map_err(anyhow::Error::msg)?;
            let get = |p: &Path| -> Result<Dataset> {
                Ok(load(p, format, LoadOptions::default())?.dataset)
            };
            Ok(Splits {
                train: get(train)?,
                validation: get(validation)?,
                test: get(test)?,
            })
        }
    }
}

/// One micro-batch: documents, the questions asked of them, and which
/// documents carry gradients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainBatch {
    /// Indices into the training documents; together they are the bank.
    pub documents: Vec<usize>,
    /// (position in `documents`, question index within that document).
    pub questions: Vec<(usize, usize)>,
    /// Per position in `documents`: encoded with gradients (backprop dropout).
    pub keep: Vec<bool>,
}

/// A seed per (run, step, micro-batch): batches do not depend on history.
pub(crate) fn step_rng(seed: u64, step: usize, micro: usize) -> ChaCha8Rng {
    let mix = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((step as u64) << 16)
        .wrapping_add(micro as u64);
    ChaCha8Rng::seed_from_u64(mix)
}

impl Trainer {
    /// The documents of micro-batch `micro` of step `step` (0-based), its
    /// questions as (position in the documents, question index), and which
    /// documents keep gradients.
    pub fn batch(&self, step: usize, micro: usize) -> TrainBatch {
        let mut rng = step_rng(self.config.seed, step, micro);
        let n = self.splits.train.documents.len();
        let b = self.config.batch_documents;
        let docs: Vec<usize> = rand::seq::index::sample(&mut rng, n, b).into_vec();
        let questions: Vec<(usize, usize)> = docs
            .iter()
            .enumerate()
            .flat_map(|(pos, &d)| {
                let k = self.splits.train.documents[d].qas.len();
                let take = self.config.questions_per_document.min(k);
                rand::seq::index::sample(&mut rng, k, take)
                    .into_vec()
                    .into_iter()
                    .map(move |qi| (pos, qi))
                    .collect::<Vec<_>>()
            })
            .collect();
        let kept = ((b as f64 * self.config.backprop_keep).ceil() as usize).clamp(1, b);
        let mut keep: Vec<bool> = (0..b).map(|i| i < kept).collect();
        keep.shuffle(&mut rng);
        TrainBatch {
            documents: docs,
            questions,
            keep,
        }
    }

    /// The texts of the documents of `step`'s first micro-batch.
    pub(crate) fn document_texts(&self, step: usize) -> Vec<String> {
        let train = &self.splits.train.documents;
        self.batch(step, 0)
            .documents
            .iter()
            .map(|&d| train[d].text.clone())
            .collect()
    }

    /// The teacher-forced answer batch of every question of `step`'s first micro-batch.
    pub(crate) fn step_answer_batch(&self, step: usize) -> Result<AnswerBatch> {
        self.answer_batch(&self.batch_qas(&self.batch(step, 0)))
    }

    /// The question–answer pairs a batch asks, in its question order.
    pub(crate) fn batch_qas(&self, batch: &TrainBatch) -> Vec<&QaPair> {
        let train = &self.splits.train.documents;
        batch
            .questions
            .iter()
            .map(|&(pos, qi)| &train[batch.documents[pos]].qas[qi])
            .collect()
    }

    /// The teacher-forced prompt + answer batch of `qas` (first reference answer).
    pub(crate) fn answer_batch(&self, qas: &[&QaPair]) -> Result<AnswerBatch> {
        let prompts: Vec<(String, String)> = qas
            .iter()
            .map(|q| (question_prompt(&q.question), q.answers[0].clone()))
            .collect();
        Ok(answer_batch(
            &self.lm.tokenizer,
            &prompts,
            self.config.max_qa_tokens,
        )?)
    }
}
