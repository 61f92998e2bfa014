//! A training run on disk: checkpoints written and resumed exactly, metrics appended.

use anyhow::Result;
use burn::module::Module;
use mac_model::{Checkpoint, CheckpointMeta};
use std::path::PathBuf;

use super::Trainer;
use crate::run_dir::{sibling, swap_into_place, MetricsLine, OPTIMIZER_FILE};

impl Trainer {
    /// Writes `checkpoints/NAME` (model, optimizer state, step).
    pub fn save(&self, name: &str) -> Result<PathBuf> {
        let dir = self.run_dir.checkpoint(name);
        let tmp = sibling(&dir, ".partial");
        let _ = std::fs::remove_dir_all(&tmp);
        let mut meta = CheckpointMeta::new(
            self.config.model.clone(),
            self.lm_path.clone(),
            self.encoder_dir.clone(),
            self.lm.model.kv_layout(),
        );
        meta.step = self.state.step as u64;
        Checkpoint::save(&tmp, &self.model.valid(), &meta)?;
        self.optim.save(tmp.join(OPTIMIZER_FILE)).map_err(|e| {
            anyhow::anyhow!("{}: cannot save optimizer state: {e:?}", tmp.display())
        })?;
        std::fs::write(
            tmp.join("trainer.json"),
            serde_json::to_string(&self.state)?,
        )?;
        swap_into_place(&tmp, &dir)?;
        Ok(dir)
    }

    /// Writes the `last` checkpoint when `step` is a multiple of
    /// `checkpoint_every`.
    pub(crate) fn checkpoint_if_due(&self, step: usize) -> Result<()> {
        let every = self.config.checkpoint_every;
        if every > 0 && step.is_multiple_of(every) {
            self.save("last")?;
        }
        Ok(())
    }

    /// Appends a line to the run's metrics.
    pub(crate) fn log(&self, line: &MetricsLine) -> Result<()> {
        self.run_dir.append_metrics(line)
    }
}
