//! The selection phase: the aggregator trained to find each question's document in a bank of precomputed modulations.

use crate::data::step_rng;
use crate::losses::retrieval_loss;
use crate::tensors::{detached, index_tensor};
use anyhow::Result;
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};
use mac_model::MacRuntime;
use rand::seq::IndexedRandom;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

use super::Trainer;
use crate::selection::{
    SelectionConfig, SelectionPool, SelectionStats, POOL_CHUNK, SELECTION_SEED,
    SELECTION_VALIDATION_DOCUMENTS,
};

impl Trainer {
    /// Computes the phase's pool: `pool_documents` training documents
    /// (a function of the seed) through the current amortizer.
    fn build_selection_pool(&self, cfg: &SelectionConfig) -> Result<SelectionPool> {
        let train = &self.splits.train.documents;
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed ^ SELECTION_SEED);
        let documents =
            rand::seq::index::sample(&mut rng, train.len(), cfg.pool_documents.min(train.len()))
                .into_vec();
        let texts: Vec<&str> = documents.iter().map(|&d| train[d].text.as_str()).collect();
        let modulations = amortize_in_chunks(&self.runtime()?, &texts)?;
        Ok(SelectionPool {
            documents,
            modulations: detached(modulations, &self.ad)?,
        })
    }

    /// One selection step (builds the pool first if this run has none yet);
    /// advances the selection step counter.
    pub fn selection_step(&mut self) -> Result<SelectionStats> {
        let t0 = Instant::now();
        let cfg = self
            .config
            .selection
            .clone()
            .ok_or_else(|| anyhow::anyhow!("this run has no selection phase"))?;
        if self.selection_pool.is_none() {
            self.selection_pool = Some(self.build_selection_pool(&cfg)?);
        }
        let pool = self
            .selection_pool
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the selection pool could not be built"))?;
        let k = self.state.selection_step;
        let mut rng = step_rng(self.config.seed ^ SELECTION_SEED, k, 0);
        let pool_len = pool.documents.len();
        let bank: Vec<usize> =
            rand::seq::index::sample(&mut rng, pool_len, cfg.bank_documents.min(pool_len))
                .into_vec();
        let gold: Vec<usize> =
            rand::seq::index::sample(&mut rng, bank.len(), cfg.questions.min(bank.len()))
                .into_vec();
        let train = &self.splits.train.documents;
        let mut questions = Vec::with_capacity(gold.len());
        for &row in &gold {
            let qas = &train[pool.documents[bank[row]]].qas;
            let qa = qas
                .choose(&mut rng)
                .ok_or_else(|| anyhow::anyhow!("a training document without questions"))?;
            questions.push(qa.question.as_str());
        }
        let [_, n, d] = pool.modulations.dims();
        let memory = pool
            .modulations
            .clone()
            .select(0, index_tensor(&bank, &self.ad))
            .reshape([bank.len() * n, d]);
        let q_tokens = self
            .model
            .question_encoder
            .encode_texts(&self.question_tokenizer, &questions, None, &self.ad)?
            .tokens;
        // The selector's contrastive loss: its scores over the bank, a
        // softmax, minus the log-probability of each question's document.
        let aggregator = self.model.aggregator_for("the selection phase")?;
        let selector_loss = aggregator.selector.as_ref().map(|selector| {
            let scores = selector.scores(
                selector.question_keys(q_tokens.clone()),
                selector.document_keys(memory.clone().reshape([bank.len(), n, d])),
            );
            let mut mask = vec![0f32; gold.len() * bank.len()];
            for (i, &g) in gold.iter().enumerate() {
                mask[i * bank.len() + g] = 1.0;
            }
            let mask =
                Tensor::<2>::from_data(TensorData::new(mask, [gold.len(), bank.len()]), &self.ad);
            (log_softmax(scores, 1) * mask).sum().neg() / gold.len() as f64
        });
        let agg = aggregator.aggregate_shared(q_tokens, memory, None);
        let mut loss = retrieval_loss(&agg.token_weights, &gold, n, bank.len(), &self.ad)
            * cfg.attention_loss_weight;
        if let Some(s) = selector_loss {
            loss = loss + s;
        }
        let top1 = top1_rate(&gold, &agg.doc_weights);
        let loss_value = loss.clone().into_scalar::<f64>();
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        self.model = self
            .optim
            .step(cfg.learning_rate, self.model.clone(), grads);
        self.state.selection_step += 1;
        Ok(SelectionStats {
            step: self.state.selection_step,
            loss: loss_value,
            top1,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// Selection steps done so far.
    pub fn selection_steps_done(&self) -> usize {
        self.state.selection_step
    }

    /// Top-1 rate of the aggregator on a bank of the validation documents
    /// (at most [`SELECTION_VALIDATION_DOCUMENTS`]): for one question per
    /// document (drawn by the seed), whether its own document draws the most
    /// attention (last block), without the similarity prior.
    pub fn validate_selection(&self) -> Result<f64> {
        let rt = self.runtime()?;
        let docs: Vec<_> = self
            .splits
            .validation
            .documents
            .iter()
            .take(SELECTION_VALIDATION_DOCUMENTS)
            .filter(|d| !d.qas.is_empty())
            .collect();
        anyhow::ensure!(!docs.is_empty(), "no validation documents with questions");
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed ^ SELECTION_SEED);
        let questions: Vec<&str> = docs
            .iter()
            .map(|d| d.qas[rng.random_range(0..d.qas.len())].question.as_str())
            .collect();
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        let bank = amortize_in_chunks(&rt, &texts)?;
        let [p, n, d] = bank.dims();
        let q_tokens = rt.encode_questions(&questions)?;
        let agg = rt
            .model
            .aggregator_for("validating the selection")?
            .aggregate_shared(q_tokens, bank.reshape([p * n, d]), None);
        let gold: Vec<usize> = (0..docs.len()).collect();
        Ok(top1_rate(&gold, &agg.doc_weights))
    }
}

/// Modulations `[P, n, d]` of `texts` on the runtime's device, amortized
/// [`POOL_CHUNK`] at a time.
fn amortize_in_chunks(rt: &MacRuntime, texts: &[&str]) -> Result<Tensor<3>> {
    let parts = texts
        .chunks(POOL_CHUNK)
        .map(|chunk| Ok(rt.encode_documents(chunk)?.tokens))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(parts, 0))
}

/// Share of questions whose gold document (`gold[i]`, a row of
/// `weights[i]`) drew the most attention.
fn top1_rate(gold: &[usize], weights: &[Vec<f32>]) -> f64 {
    let hits = gold
        .iter()
        .zip(weights)
        .filter(|(&g, w)| w.iter().all(|&x| x <= w[g]))
        .count();
    hits as f64 / gold.len().max(1) as f64
}
