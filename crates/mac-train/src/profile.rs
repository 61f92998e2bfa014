//! Where a training step's time goes: wall-clock time per part, for
//! `cargo xtask bench train --profile` (the PyTorch reference times the same
//! parts). Parts are timed with the device synchronised on both sides, so
//! asynchronous backends are measured too; the untimed remainder is
//! reported as "other".

use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

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

    pub(crate) fn on(device: &Device) -> Self {
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

    pub(crate) fn seconds(&self, part: &str) -> f64 {
        self.on
            .as_ref()
            .and_then(|(_, parts)| parts.iter().find(|(p, _)| *p == part))
            .map_or(0.0, |(_, s)| *s)
    }
}

pub(crate) fn sync(device: &Device) {
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
