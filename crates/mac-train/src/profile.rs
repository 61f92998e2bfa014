//! Where a training step's time goes: wall-clock time per part, for
//! `cargo xtask bench train --profile` (the PyTorch reference times the same
//! parts). Parts are timed with the device synchronised on both sides, so
//! asynchronous backends are measured too; the untimed remainder is
//! reported as "other".

use std::time::Instant;

use anyhow::Result;
use burn::tensor::{Device, Distribution, Tensor};
use mac_lm::PrefixKv;
use mac_model::LmTokens;
use serde::{Deserialize, Serialize};

use crate::trainer::Trainer;

/// The parts of a step, in the order the profile table lists them.
pub mod part {
    /// Both document-encoder passes (backbone, LM-token channel, head).
    pub const DOCUMENT_ENCODER: &str = "document encoder";
    /// The question encoder (backbone and head).
    pub const QUESTION_ENCODER: &str = "question encoder";
    /// The aggregator and the expansion to prefix key/values.
    pub const AGGREGATION: &str = "aggregation + expansion";
    /// The frozen LM's forward pass and answer NLL.
    pub const LM_FORWARD: &str = "LM forward (answer NLL)";
    /// The auxiliary losses (answer tokens, retrieval).
    pub const AUX_LOSSES: &str = "auxiliary losses";
    /// Backpropagation through everything.
    pub const BACKWARD: &str = "backward";
    /// Gradient accumulation, clipping and the Adam update.
    pub const OPTIMIZER: &str = "optimizer";
    /// Batch assembly, tokenization and whatever else is not timed.
    pub const OTHER: &str = "other";
    /// Part of the document encoder: the frozen LM's first layers.
    pub const LM_CHANNEL: &str = "of which: LM-token channel";
    /// Part of the backward pass: through the frozen LM to the prefix.
    pub const LM_BACKWARD: &str = "of which: LM backward";
}

/// Times named parts of a step; does nothing (and costs nothing) when off.
pub(crate) struct PartTimer {
    on: Option<(Device, Vec<(&'static str, f64)>)>,
}

impl PartTimer {
    /// A timer that records nothing.
    pub(crate) fn off() -> Self {
        Self { on: None }
    }

    fn on(device: &Device) -> Self {
        Self {
            on: Some((device.clone(), Vec::new())),
        }
    }

    /// Runs `f`, adding its time (device synchronised before and after) to `part`.
    pub(crate) fn time<T>(&mut self, part: &'static str, f: impl FnOnce() -> T) -> T {
        let Some((device, parts)) = &mut self.on else {
            return f();
        };
        sync(device);
        let t0 = Instant::now();
        let out = f();
        sync(device);
        let s = t0.elapsed().as_secs_f64();
        match parts.iter_mut().find(|(p, _)| *p == part) {
            Some((_, total)) => *total += s,
            None => parts.push((part, s)),
        }
        out
    }

    fn seconds(&self, part: &str) -> f64 {
        self.on
            .as_ref()
            .and_then(|(_, parts)| parts.iter().find(|(p, _)| *p == part))
            .map_or(0.0, |(_, s)| *s)
    }
}

fn sync(device: &Device) {
    // A failed sync shows up as the failure of the next operation.
    let _ = device.sync();
}

/// One row of a step profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepPart {
    /// The part (see [`part`]).
    pub name: String,
    /// Seconds.
    pub seconds: f64,
}

/// The time of one training step by part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepProfile {
    /// The whole step, seconds.
    pub total: f64,
    /// The parts; the top-level ones sum to `total`, the "of which" rows
    /// break down the row above them (measured on their own, same inputs).
    pub parts: Vec<StepPart>,
}

impl StepProfile {
    /// The median of several profiles of the same step, total and part by
    /// part (the parts as the first profile names them); `None` for none.
    pub fn median(profiles: &[StepProfile]) -> Option<StepProfile> {
        let median = |mut xs: Vec<f64>| {
            xs.sort_by(f64::total_cmp);
            xs[xs.len() / 2]
        };
        let first = profiles.first()?;
        let parts = first
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| StepPart {
                name: p.name.clone(),
                seconds: median(
                    profiles
                        .iter()
                        .filter_map(|q| q.parts.get(i).map(|r| r.seconds))
                        .collect(),
                ),
            })
            .collect();
        Some(StepProfile {
            total: median(profiles.iter().map(|p| p.total).collect()),
            parts,
        })
    }
}

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
        let Some(layer) = self.model.amortizer.lm_channel.as_ref().map(|c| c.layer) else {
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
