//! The batches a training step draws: seeded per step, with the documents that keep gradients.

use anyhow::Result;
use mac_data::QaPair;
use mac_model::prompt::{answer_batch, question_prompt, AnswerBatch};
use rand::seq::SliceRandom;

use super::Trainer;
use crate::data::{step_rng, TrainBatch};

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
