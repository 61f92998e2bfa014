//! The losses of a training step: the frozen LM's answer NLL through the
//! aggregated prefix, the answer probe's answer-token loss and the
//! retrieval loss on the aggregator's attention.

use burn::tensor::{Device, Tensor, TensorData};

/// The losses of one micro-batch.
pub struct BatchLosses {
    /// Answer NLL of the frozen LM given the question and the prefix
    /// (`None` in a reading step, which runs no LM pass).
    pub answer_nll: Option<Tensor<1>>,
    /// The auxiliary answer-token loss (when configured).
    pub answer_tokens: Option<Tensor<1>>,
    /// The auxiliary retrieval loss (when configured and the bank holds
    /// more than the question's own document).
    pub retrieval: Option<Tensor<1>>,
}

impl BatchLosses {
    /// The losses of question groups, each with its number of questions:
    /// one group's as they are; several weighted by their questions.
    pub(crate) fn weighted(mut parts: Vec<(f64, BatchLosses)>) -> BatchLosses {
        if parts.len() == 1 {
            return parts.remove(0).1;
        }
        let sum = |xs: Vec<(f64, Tensor<1>)>| -> Option<Tensor<1>> {
            let total: f64 = xs.iter().map(|(w, _)| w).sum();
            xs.into_iter()
                .map(|(w, t)| t * (w / total))
                .reduce(|a, b| a + b)
        };
        let answer_nll = sum(parts
            .iter()
            .filter_map(|(w, l)| l.answer_nll.clone().map(|t| (*w, t)))
            .collect());
        let answer_tokens = sum(parts
            .iter()
            .filter_map(|(w, l)| l.answer_tokens.clone().map(|t| (*w, t)))
            .collect());
        let retrieval = sum(parts
            .iter()
            .filter_map(|(w, l)| l.retrieval.clone().map(|t| (*w, t)))
            .collect());
        BatchLosses {
            answer_nll,
            answer_tokens,
            retrieval,
        }
    }
}

/// Minus the log of the attention share on each question's own document,
/// averaged over questions and aggregator blocks. `token_weights[k]` is
/// `[Q, B·n]` (block `k`), `gold[q]` the bank row of question `q`'s document.
pub(crate) fn retrieval_loss(
    token_weights: &[Tensor<2>],
    gold: &[usize],
    n: usize,
    b: usize,
    device: &Device,
) -> Tensor<1> {
    let q = gold.len();
    let mut mask = vec![0f32; q * b * n];
    for (i, &row) in gold.iter().enumerate() {
        mask[i * b * n + row * n..i * b * n + (row + 1) * n].fill(1.0);
    }
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [q, b * n]), device);
    let per_block: Vec<Tensor<1>> = token_weights
        .iter()
        .map(|w| {
            let share = (w.clone() * mask.clone()).sum_dim(1).reshape([q]);
            (share + 1e-6).log().mean().neg()
        })
        .collect();
    let blocks = per_block.len().max(1) as f64;
    Tensor::cat(per_block, 0).sum() / blocks
}

/// One bank `[N, n, d]` as the memory of each of `questions` questions
/// (`[Q, N·n, d]`).
pub(crate) fn shared(bank: &Tensor<3>, questions: usize) -> Tensor<3> {
    let [docs, n, d] = bank.dims();
    bank.clone()
        .reshape([1, docs * n, d])
        .expand([questions, docs * n, d])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The retrieval loss against a hand computation: two questions over a
    /// bank of two documents of two tokens each, two identical blocks.
    #[test]
    pub(crate) fn retrieval_loss_is_minus_log_gold_share() {
        let device = mac_device::select("flex").unwrap();
        let w = Tensor::<2>::from_data(
            TensorData::new(vec![0.1f32, 0.2, 0.3, 0.4, 0.25, 0.25, 0.25, 0.25], [2, 4]),
            &device,
        );
        let loss = retrieval_loss(&[w.clone(), w], &[1, 0], 2, 2, &device).into_scalar::<f64>();
        let expected = -((0.7f64 + 1e-6).ln() + (0.5f64 + 1e-6).ln()) / 2.0;
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
    }
}
