//! Selection training: the question encoder and the aggregator learn to
//! find each question's own document in a large bank, by the retrieval loss
//! alone (minus the log of the attention share, every block, on the gold
//! document).
//!
//! Content steps teach the modulations to carry a document's facts; at a
//! CPU budget they afford banks of a few documents. Selection needs banks of
//! hundreds, and no pass of the frozen LM: the phase runs after the content
//! steps, computes the modulations of a pool of training documents once
//! (without a graph; the amortizer does not change in this phase, so a
//! resumed run computes the same pool), and each step draws a bank from the
//! pool and questions about the bank's documents. A step costs one
//! question-encoder pass and one aggregation over a memory shared by every
//! question.

use std::time::Instant;

use anyhow::Result;
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};
use mac_model::MacRuntime;
use rand::seq::IndexedRandom;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::step_rng;
use crate::losses::retrieval_loss;
use crate::trainer::{detached, index_tensor, Trainer};

/// The selection phase of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionConfig {
    /// Selection steps, run after the content steps.
    pub steps: usize,
    /// Training documents whose modulations are computed for the phase.
    pub pool_documents: usize,
    /// Documents in each step's bank, drawn from the pool.
    pub bank_documents: usize,
    /// Questions per step, each about a different document of the bank.
    pub questions: usize,
    /// Learning rate (constant; Adam, the run's optimizer).
    pub learning_rate: f64,
    /// Weight of the attention's retrieval loss (the gold document's
    /// attention share, every block); the selector's contrastive loss, when
    /// the model has a selector, has weight 1.
    #[serde(default = "one")]
    pub attention_loss_weight: f64,
}

fn one() -> f64 {
    1.0
}

impl SelectionConfig {
    /// Checks the numbers make sense.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.bank_documents >= 2 && self.bank_documents <= self.pool_documents,
            "selection.bank_documents must be at least 2 and at most selection.pool_documents"
        );
        anyhow::ensure!(
            self.questions >= 1 && self.questions <= self.bank_documents,
            "selection.questions must be between 1 and selection.bank_documents"
        );
        anyhow::ensure!(
            self.learning_rate > 0.0,
            "selection.learning_rate must be positive"
        );
        anyhow::ensure!(
            self.attention_loss_weight >= 0.0,
            "selection.attention_loss_weight must not be negative"
        );
        Ok(())
    }
}

/// What one selection step did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelectionStats {
    /// Selection steps done, this one included.
    pub step: usize,
    /// The step's loss (the selector's contrastive loss plus the weighted
    /// attention retrieval loss).
    pub loss: f64,
    /// Share of the step's questions whose own document drew the most
    /// attention (last block).
    pub top1: f64,
    /// Wall time of the step.
    pub seconds: f64,
}

/// The modulations of the phase's documents.
pub(crate) struct SelectionPool {
    /// Training documents (indices into the training split).
    documents: Vec<usize>,
    /// Their modulations `[P, n, d]`, without a graph, on the autodiff device.
    modulations: Tensor<3>,
}

/// Mixed into the run's seed for the pool and the selection steps.
const SELECTION_SEED: u64 = 0x5E1E_C7ED;

/// Most validation documents in the bank [`Trainer::validate_selection`] uses.
pub const SELECTION_VALIDATION_DOCUMENTS: usize = 256;

/// Documents amortized at once while the pool is built.
const POOL_CHUNK: usize = 16;

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
        let selector_loss = self.model.aggregator.selector.as_ref().map(|selector| {
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
        let agg = self
            .model
            .aggregator
            .aggregate_shared(q_tokens, memory, None);
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
            .aggregator
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
