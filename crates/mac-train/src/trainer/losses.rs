//! The losses of a training step: the answer NLL through the frozen LM, and the auxiliary losses.

use crate::data::TrainBatch;
use crate::profile::{part, PartTimer};
use crate::tensors::{detached, index_tensor};
use anyhow::Result;
use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use mac_data::QaPair;
use mac_model::prompt::continuation_ids;

use super::Trainer;
use crate::losses::{retrieval_loss, shared, BatchLosses};

impl Trainer {
    /// The answer NLL of one micro-batch, differentiable w.r.t. the MAC model.
    pub fn batch_loss(&self, step: usize, micro: usize) -> Result<Tensor<1>> {
        self.batch_losses(step, micro)?
            .answer_nll
            .ok_or_else(|| anyhow::anyhow!("step {step} is a reading step: it has no answer NLL"))
    }

    /// The losses of one micro-batch: the answer NLL of the frozen LM and,
    /// when configured, the auxiliary answer-token loss.
    pub fn batch_losses(&self, step: usize, micro: usize) -> Result<BatchLosses> {
        self.batch_losses_timed(step, micro, &mut PartTimer::off())
    }

    /// [`Self::batch_losses`] with each part's time recorded in `timer`.
    pub(crate) fn batch_losses_timed(
        &self,
        step: usize,
        micro: usize,
        timer: &mut PartTimer,
    ) -> Result<BatchLosses> {
        let batch = self.batch(step, micro);
        let reading = self.config.is_reading_step(step);
        let (bank, row_of) = self.encode_bank(&batch, timer)?;
        let [b, n, _] = bank.dims();
        let n_q = batch.questions.len();
        let qas = self.batch_qas(&batch);
        let questions: Vec<&str> = qas.iter().map(|q| q.question.as_str()).collect();
        let q_tokens = timer
            .time(part::QUESTION_ENCODER, || {
                self.model.question_encoder.encode_texts(
                    &self.question_tokenizer,
                    &questions,
                    None,
                    &self.ad,
                )
            })?
            .tokens;
        let gold: Vec<usize> = batch
            .questions
            .iter()
            .map(|&(pos, _)| row_of[pos])
            .collect();
        // Which questions see their own document alone: all of them during
        // the curriculum, then `own_document_share` of them, spread evenly.
        let share = self.config.own_document_share_at(step);
        let (own, whole): (Vec<usize>, Vec<usize>) =
            (0..n_q).partition(|&i| ((i + 1) as f64 * share).floor() > (i as f64 * share).floor());
        let mut parts: Vec<(f64, BatchLosses)> = Vec::new();
        for (idx, alone) in [(own, true), (whole, false)] {
            if idx.is_empty() {
                continue;
            }
            let group_gold: Vec<usize> = idx.iter().map(|&i| gold[i]).collect();
            let memory = if alone {
                bank.clone().select(0, index_tensor(&group_gold, &self.ad))
            } else {
                shared(&bank, idx.len())
            };
            let group_qas: Vec<&QaPair> = idx.iter().map(|&i| qas[i]).collect();
            let group_questions = q_tokens.clone().select(0, index_tensor(&idx, &self.ad));
            let (agg, answer_nll) = if reading {
                let agg = timer.time(part::AGGREGATION, || {
                    self.model.aggregate(group_questions, memory, None)
                });
                (agg, None)
            } else {
                let (prefix, agg) = timer.time(part::AGGREGATION, || {
                    self.model
                        .prefix_from_memory(&self.lm.model, group_questions, memory)
                })?;
                let ab = self.answer_batch(&group_qas)?;
                let nll = timer.time(part::LM_FORWARD, || {
                    self.lm
                        .model
                        .weighted_nll(&ab.batch, &ab.targets, &ab.weights, Some(&prefix))
                })?;
                (agg, Some(nll))
            };
            let (retrieval, answer_tokens) = timer.time(part::AUX_LOSSES, || {
                let retrieval = (self.config.retrieval_loss_weight > 0.0 && !alone && b > 1)
                    .then(|| retrieval_loss(&agg.token_weights, &group_gold, n, b, &self.ad));
                let answer_tokens = if self.config.answer_token_loss_weight > 0.0 {
                    self.answer_token_loss(agg.modulation, &group_qas, &self.ad)
                } else {
                    Ok(None)
                };
                answer_tokens.map(|a| (retrieval, a))
            })?;
            parts.push((
                idx.len() as f64,
                BatchLosses {
                    answer_nll,
                    answer_tokens,
                    retrieval,
                },
            ));
        }
        Ok(BatchLosses::weighted(parts))
    }

    /// The batch's documents encoded as the bank `[B, n, d]`: those that
    /// keep gradients first, the rest (backprop dropout) encoded without a
    /// graph; with each document's row in it, by position in the batch.
    fn encode_bank(
        &self,
        batch: &TrainBatch,
        timer: &mut PartTimer,
    ) -> Result<(Tensor<3>, Vec<usize>)> {
        let train = &self.splits.train.documents;
        // Bank rows: the documents that keep gradients first, then the rest.
        let order: Vec<usize> = (0..batch.documents.len())
            .filter(|&i| batch.keep[i])
            .chain((0..batch.documents.len()).filter(|&i| !batch.keep[i]))
            .collect();
        let mut row_of = vec![0usize; order.len()];
        for (row, &pos) in order.iter().enumerate() {
            row_of[pos] = row;
        }
        let text = |pos: &usize| train[batch.documents[*pos]].text.as_str();
        let texts_kept: Vec<&str> = order.iter().filter(|&&p| batch.keep[p]).map(text).collect();
        let texts_dropped: Vec<&str> = order
            .iter()
            .filter(|&&p| !batch.keep[p])
            .map(text)
            .collect();
        let mut parts = vec![
            timer
                .time(part::DOCUMENT_ENCODER, || {
                    self.model.encode_documents(
                        &self.document_tokenizer,
                        &texts_kept,
                        &self.lm,
                        &self.ad,
                    )
                })?
                .tokens,
        ];
        if !texts_dropped.is_empty() {
            // Backprop dropout: these documents are encoded without a graph
            // and still serve as distractors in the bank.
            let frozen = self.model.valid();
            let t = timer
                .time(part::DOCUMENT_ENCODER, || {
                    frozen.encode_documents(
                        &self.document_tokenizer,
                        &texts_dropped,
                        &self.lm,
                        &self.device,
                    )
                })?
                .tokens;
            parts.push(detached(t, &self.ad)?);
        }
        Ok((Tensor::cat(parts, 0), row_of))
    }

    /// Bag-of-tokens cross-entropy of each answer's LM tokens under the
    /// answer probe's logits (through the LM's output embedding).
    pub(crate) fn answer_token_loss(
        &self,
        modulation: Tensor<3>,
        qas: &[&QaPair],
        device: &Device,
    ) -> Result<Option<Tensor<1>>> {
        let Some(hidden) = self.model.answer_probe_hidden(modulation) else {
            return Ok(None);
        };
        let logits = self.lm.model.logits(hidden); // [Q, 1, V]
        let [q, _, v] = logits.dims();
        let log_p = log_softmax(logits.reshape([q, v]), 1);
        let mut bag = vec![0f32; q * v];
        for (i, qa) in qas.iter().enumerate() {
            let ids = continuation_ids(&self.lm.tokenizer, &format!(" {}", qa.answers[0].trim()))?;
            for &t in &ids {
                bag[i * v + t as usize] += 1.0 / ids.len().max(1) as f32;
            }
        }
        let bag = Tensor::<2>::from_data(TensorData::new(bag, [q, v]), device);
        Ok(Some((log_p * bag).sum().neg() / q as f64))
    }
}
