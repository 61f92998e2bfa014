//! Validation: loss, EM and F1 on validation banks, with the controls that
//! say whether the memory is used (an unrelated bank, each question's own
//! and another document alone, the gold document's attention share).

use crate::losses::shared;
use crate::run_dir::MetricsLine;
use crate::stats::ValidationStats;
use crate::tensors::index_tensor;
use anyhow::Result;
use burn::tensor::Tensor;
use mac_aggregation::Aggregation;
use mac_data::{exact_match, f1_score, QaPair};
use mac_model::prompt::AnswerBatch;
use mac_model::MacRuntime;

use super::Trainer;

impl Trainer {
    /// Loss, EM and F1 on the first `validation_documents` validation
    /// documents; each batch of `batch_documents` documents is the bank.
    /// Also the two signs that the memory is used: the loss with an
    /// unrelated bank (the next batch's documents) and the share of the
    /// aggregator's attention on each question's own document.
    pub fn validate(&self) -> Result<ValidationStats> {
        let rt = self.runtime()?;
        let docs: Vec<_> = self
            .splits
            .validation
            .documents
            .iter()
            .take(self.config.validation_documents)
            .collect();
        let chunks: Vec<_> = docs.chunks(self.config.batch_documents).collect();
        let banks = chunks
            .iter()
            .map(|chunk| {
                let texts: Vec<&str> = chunk.iter().map(|d| d.text.as_str()).collect();
                Ok(rt.encode_documents(&texts)?.tokens)
            })
            .collect::<Result<Vec<_>>>()?;
        let (mut em, mut f1, mut nq) = (0.0, 0.0, 0usize);
        let (mut loss, mut loss_unrelated, mut gold_weight, mut uniform) = (0.0, 0.0, 0.0, 0.0);
        let (mut loss_own, mut loss_other, mut n_single) = (0.0, 0.0, 0usize);
        let (mut probe_own, mut probe_other) = (0.0, 0.0);
        let has_probe = self.model.has_answer_probe();
        for (i, chunk) in chunks.iter().enumerate() {
            let bank = banks[i].clone();
            let asked: Vec<(usize, &QaPair)> = chunk
                .iter()
                .enumerate()
                .flat_map(|(pos, d)| d.qas.iter().map(move |q| (pos, q)))
                .collect();
            let questions: Vec<&str> = asked.iter().map(|(_, q)| q.question.as_str()).collect();
            let answers = rt.answer_from_modulations(&questions, bank.clone(), usize::MAX)?;
            for (a, (_, q)) in answers.iter().zip(&asked) {
                em += exact_match(&a.text, &q.answers);
                f1 += f1_score(&a.text, &q.answers);
            }
            nq += asked.len();
            let qas: Vec<&QaPair> = asked.iter().map(|(_, q)| *q).collect();
            // The questions are encoded and tokenized once for both banks.
            let q_tokens = rt.encode_questions(&questions)?;
            let ab = self.answer_batch(&qas)?;
            let (l, agg) =
                Self::teacher_forced_loss(&rt, q_tokens.clone(), &ab, shared(&bank, qas.len()))?;
            loss += l * qas.len() as f64;
            for ((pos, _), w) in asked.iter().zip(&agg.doc_weights) {
                gold_weight += f64::from(w[*pos]);
                uniform += 1.0 / chunk.len() as f64;
            }
            if chunk.len() > 1 {
                // Each question with one document alone: its own, then the
                // next one in the chunk.
                let alone = |shift: usize| -> Result<(f64, Option<f64>)> {
                    let rows: Vec<usize> = asked
                        .iter()
                        .map(|(pos, _)| (pos + shift) % chunk.len())
                        .collect();
                    let memory = bank.clone().select(0, index_tensor(&rows, &self.device));
                    let (nll, agg) = Self::teacher_forced_loss(&rt, q_tokens.clone(), &ab, memory)?;
                    Ok((nll, self.probe_loss(agg.modulation, &qas)?))
                };
                let nqa = qas.len() as f64;
                n_single += qas.len();
                let ((own, probe_o), (other, probe_x)) = (alone(0)?, alone(1)?);
                loss_own += own * nqa;
                loss_other += other * nqa;
                if let (Some(o), Some(x)) = (probe_o, probe_x) {
                    probe_own += o * nqa;
                    probe_other += x * nqa;
                }
            }
            let other = shared(&banks[(i + 1) % banks.len()], qas.len());
            loss_unrelated +=
                Self::teacher_forced_loss(&rt, q_tokens, &ab, other)?.0 * qas.len() as f64;
        }
        let per_document = n_single > 0;
        let n_single = n_single.max(1) as f64;
        let nqf = nq.max(1) as f64;
        Ok(ValidationStats {
            step: self.state.step,
            loss: loss / nqf,
            loss_unrelated_bank: (banks.len() > 1).then(|| loss_unrelated / nqf),
            loss_own_document: per_document.then(|| loss_own / n_single),
            loss_other_document: per_document.then(|| loss_other / n_single),
            probe_loss_own_document: (per_document && has_probe).then(|| probe_own / n_single),
            probe_loss_other_document: (per_document && has_probe).then(|| probe_other / n_single),
            gold_weight: gold_weight / nqf,
            uniform_weight: uniform / nqf,
            em: em / nqf,
            f1: f1 / nqf,
            n_questions: nq,
        })
    }

    /// The answer probe's answer-token loss of `qas` from their aggregated
    /// modulation `[Q, n, d]`; `None` without a probe.
    fn probe_loss(&self, modulation: Tensor<3>, qas: &[&QaPair]) -> Result<Option<f64>> {
        Ok(self
            .answer_token_loss(modulation, qas, &self.device)?
            .map(|l| l.into_scalar::<f64>()))
    }

    /// Teacher-forced answer NLL of the questions (`q_tokens [Q, n, d]`,
    /// their prompt + answer batch `ab`), question `i` aggregating over
    /// `memory[i]` (`[Q, m, d]`), and the aggregation that made the prefix.
    fn teacher_forced_loss(
        rt: &MacRuntime,
        q_tokens: Tensor<3>,
        ab: &AnswerBatch,
        memory: Tensor<3>,
    ) -> Result<(f64, Aggregation)> {
        let (prefix, agg) = rt
            .model
            .prefix_from_memory(&rt.lm.model, q_tokens, memory)?;
        let loss = rt
            .lm
            .model
            .weighted_nll(&ab.batch, &ab.targets, &ab.weights, Some(&prefix))?
            .into_scalar::<f64>();
        Ok((loss, agg))
    }

    pub(crate) fn validate_and_keep_best(&mut self) -> Result<ValidationStats> {
        let v = self.validate()?;
        self.log(&MetricsLine::Validation {
            stats: v.clone(),
            after_selection: false,
            selection_top1: None,
        })?;
        let share = self.config.own_document_share_at(v.step.saturating_sub(1));
        let loss = v.objective(share);
        let better = self.state.best_loss.is_none_or(|(best, _)| loss < best);
        if better {
            self.state.best_loss = Some((loss, v.step));
            self.save("best")?;
        }
        Ok(v)
    }
}
