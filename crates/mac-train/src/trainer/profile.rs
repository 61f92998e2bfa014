//! Timing a training step by part (`cargo xtask bench train --profile`).

use anyhow::Result;
use burn::tensor::{Distribution, Tensor};
use mac_lm::PrefixKv;
use mac_model::LmTokens;
use std::time::Instant;

use super::Trainer;
use crate::profile::{part, sync, PartTimer, StepPart, StepProfile};

impl Trainer {
    /// Runs one optimizer step (advancing the run, as [`Trainer::train_step`])
    /// with every part timed, then times the LM-token channel and the LM's
    /// backward pass on their own with the same step's inputs.
    pub fn profile_step(&mut self) -> Result<StepProfile> {
        let step = self.step();
        let device = self.autodiff_device();
        let mut timer = PartTimer::on(&device);
        let stats = self.train_step_timed(&mut timer)?;
        let channel = self.time_lm_channel(step)?;
        let lm_backward = self.time_lm_backward(step)?;
        let top = [
            part::DOCUMENT_ENCODER,
            part::QUESTION_ENCODER,
            part::AGGREGATION,
            part::LM_FORWARD,
            part::AUX_LOSSES,
            part::BACKWARD,
            part::OPTIMIZER,
        ];
        let mut parts = Vec::new();
        let row = |name: &str, seconds: f64| StepPart {
            name: name.into(),
            seconds,
        };
        for name in top {
            parts.push(row(name, timer.seconds(name)));
            if name == part::DOCUMENT_ENCODER {
                parts.push(row(part::LM_CHANNEL, channel));
            }
            if name == part::BACKWARD {
                parts.push(row(part::LM_BACKWARD, lm_backward));
            }
        }
        let timed: f64 = top.iter().map(|p| timer.seconds(p)).sum();
        parts.push(row(part::OTHER, (stats.seconds - timed).max(0.0)));
        Ok(StepProfile {
            total: stats.seconds,
            parts,
        })
    }

    /// The LM-token channel alone over the documents of `step`'s first micro-batch.
    fn time_lm_channel(&self, step: usize) -> Result<f64> {
        let Some(layer) = self
            .model
            .amortizer()
            .and_then(|a| a.lm_channel.as_ref())
            .map(|c| c.layer)
        else {
            return Ok(0.0);
        };
        let texts = self.document_texts(step);
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let device = self.autodiff_device();
        let max = self.config.model.max_document_tokens;
        sync(&device);
        let t0 = Instant::now();
        let tokens = LmTokens::embed(&self.lm, &texts, max, layer, &device)?;
        let _ = tokens.embeddings.into_data();
        Ok(t0.elapsed().as_secs_f64())
    }

    /// The frozen LM's backward pass alone: the answer NLL of `step`'s
    /// questions under a random prefix of the step's shape that requires
    /// gradients; returns the time of `backward()` only.
    fn time_lm_backward(&self, step: usize) -> Result<f64> {
        let device = self.autodiff_device();
        let ab = self.step_answer_batch(step)?;
        let layout = self.lm.model.kv_layout();
        let q = ab.batch.batch_size();
        let p = self.config.model.prefix_len;
        let shape = [q, layout.n_kv_heads, p, layout.head_dim];
        let leaf =
            || Tensor::<4>::random(shape, Distribution::Normal(0.0, 0.02), &device).require_grad();
        let prefix = PrefixKv {
            layers: (0..layout.n_layers).map(|_| (leaf(), leaf())).collect(),
        };
        let loss =
            self.lm
                .model
                .weighted_nll(&ab.batch, &ab.targets, &ab.weights, Some(&prefix))?;
        sync(&device);
        let t0 = Instant::now();
        let grads = loss.backward();
        let _ = prefix.layers[0].0.grad(&grads).map(|g| g.into_data());
        sync(&device);
        Ok(t0.elapsed().as_secs_f64())
    }
}
