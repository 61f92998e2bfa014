//! The run directory on disk: checkpoints written atomically and durably,
//! the checkpoint a resumed run continues from, and the metrics log.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::selection::SelectionStats;
use crate::stats::{StepStats, ValidationStats};

/// Progress persisted beside each checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct TrainerState {
    /// Content steps done.
    pub(crate) step: usize,
    /// Selection steps done (after the content steps).
    #[serde(default)]
    pub(crate) selection_step: usize,
    /// Lowest validation answer NLL of the trained objective so far and its
    /// step (F1 at these levels is too noisy on a small validation set to
    /// pick a checkpoint).
    #[serde(default)]
    pub(crate) best_loss: Option<(f64, usize)>,
}

/// A run directory: the one place that knows its layout.
///
/// ```text
/// RUN/config.json          the configuration (overrides included)
/// RUN/metrics.jsonl        one MetricsLine per step and validation
/// RUN/checkpoints/NAME/    `best`, `last` (mac.json, model.bpk, optimizer.bpk, trainer.json)
/// RUN/train-report.{json,md}, RUN/learning_curve.png, RUN/validation_f1.png
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run directory at `root` (nothing is created or checked).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The run directory a checkpoint directory (`RUN/checkpoints/NAME`)
    /// belongs to, if it sits in one.
    pub fn of_checkpoint(checkpoint: &Path) -> Option<Self> {
        let parent = checkpoint.parent()?;
        (parent.file_name()? == "checkpoints")
            .then(|| Self::new(parent.parent().unwrap_or(Path::new("."))))
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// `metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// `checkpoints/NAME`.
    pub fn checkpoint(&self, name: &str) -> PathBuf {
        self.checkpoints().join(name)
    }

    /// A file of the run's report (`train-report.json`, a plot, ...).
    pub fn report_file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The first of config.json, metrics.jsonl and checkpoints/ that
    /// exists: the directory already holds a run.
    pub fn existing_run_file(&self) -> Option<PathBuf> {
        [self.config(), self.metrics(), self.checkpoints()]
            .into_iter()
            .find(|p| p.exists())
    }

    /// The configuration in `config.json`.
    pub fn read_config(&self) -> Result<TrainConfig> {
        TrainConfig::from_file(&self.config())
    }

    /// Writes `config.json` (creating the directory).
    pub fn write_config(&self, config: &TrainConfig) -> Result<()> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("{}: cannot create the run directory", self.root.display()))?;
        let path = self.config();
        std::fs::write(&path, serde_json::to_string_pretty(config)?)
            .with_context(|| format!("{}: cannot write", path.display()))
    }

    /// The checkpoint a resumed run continues from: `checkpoints/last`, or,
    /// when a save was interrupted between its two renames, the complete
    /// previous one it had moved aside (`last.old`); never a `.partial` one.
    pub fn resumable_checkpoint(&self) -> Result<PathBuf> {
        ["last", "last.old"]
            .iter()
            .map(|name| self.checkpoint(name))
            .find(|dir| dir.join(mac_model::META_FILE).is_file())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no complete checkpoint to resume from (checkpoints/last)",
                    self.root.display()
                )
            })
    }

    /// Appends one line to `metrics.jsonl`.
    pub fn append_metrics(&self, line: &MetricsLine) -> Result<()> {
        let path = self.metrics();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("{}: cannot append", path.display()))?;
        writeln!(f, "{}", serde_json::to_string(line)?)
            .with_context(|| format!("{}: cannot append", path.display()))
    }

    /// Every line of `metrics.jsonl` (none when it does not exist). A last
    /// line cut short by a crash mid-write is left out; any other line that
    /// does not parse is an error naming the file and the line.
    pub fn read_metrics(&self) -> Result<Vec<MetricsLine>> {
        let path = self.metrics();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(anyhow::anyhow!("{}: cannot read: {e}", path.display())),
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str(line) {
                Ok(m) => out.push(m),
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => anyhow::bail!("{}: line {}: {e}", path.display(), i + 1),
            }
        }
        Ok(out)
    }
}

/// One line of `metrics.jsonl`, tagged by `kind`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetricsLine {
    /// A training step through the frozen LM.
    Train(StepStats),
    /// A reading step (answer-token loss alone).
    Reading(StepStats),
    /// A validation.
    Validation {
        /// Its statistics.
        #[serde(flatten)]
        stats: ValidationStats,
        /// Whether it ran after the selection phase.
        #[serde(default)]
        after_selection: bool,
        /// The selection phase's validation top-1 rate, when it ran after it.
        #[serde(default)]
        selection_top1: Option<f64>,
    },
    /// A selection step.
    Selection(SelectionStats),
}

/// The checkpoint a resumed run in `run_dir` continues from
/// ([`RunDir::resumable_checkpoint`]).
pub fn resumable_checkpoint(run_dir: &Path) -> Result<PathBuf> {
    RunDir::new(run_dir).resumable_checkpoint()
}

/// fsyncs every file of a directory, then the directory.
pub(crate) fn sync_tree(dir: &Path) -> Result<()> {
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?
    {
        let path = entry?.path();
        if path.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("{}: cannot fsync", path.display()))?;
        }
    }
    sync_dir(dir)
}

/// File of the optimizer state inside a resumable checkpoint directory.
pub(crate) const OPTIMIZER_FILE: &str = "optimizer.bpk";

/// `dir` with `suffix` added to its name: a sibling (`last.partial`, `last.old`).
pub(crate) fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Moves a finished checkpoint directory `tmp` to `dir` (a sibling),
/// replacing what was there: `tmp`'s files are fsynced first, and between
/// the two renames only `dir` + `.old` exists, which
/// [`RunDir::resumable_checkpoint`] falls back to.
pub(crate) fn swap_into_place(tmp: &Path, dir: &Path) -> Result<()> {
    sync_tree(tmp)?;
    let parent = dir.parent().unwrap_or(Path::new("."));
    let old = sibling(dir, ".old");
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old)
            .with_context(|| format!("{}: cannot move aside", dir.display()))?;
    }
    std::fs::rename(tmp, dir)
        .with_context(|| format!("{}: cannot move into place", dir.display()))?;
    sync_dir(parent)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// fsyncs a directory, so the names in it survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("{}: cannot fsync the directory", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines written by the trainer read back as they were; lines of older
    /// runs (no `reading`, no probe losses) still read; a last line cut
    /// short by a crash is left out, a bad line elsewhere is an error that
    /// names the file and the line.
    #[test]
    fn metrics_round_trip_and_hostile_lines() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        assert!(run.read_metrics().unwrap().is_empty());
        let step = StepStats {
            step: 1,
            loss: 2.5,
            reading: true,
            answer_token_loss: Some(2.5),
            retrieval_loss: None,
            lr: 1e-3,
            seconds: 0.5,
        };
        run.append_metrics(&MetricsLine::Reading(step)).unwrap();
        let old = r#"{"answer_token_loss":4.5,"kind":"train","loss":3.0,"lr":0.0005,"retrieval_loss":null,"seconds":4.3,"step":2}
{"em":0.0,"f1":0.04,"gold_weight":0.125,"kind":"validation","loss":3.06,"loss_other_document":3.07,"loss_own_document":3.06,"loss_unrelated_bank":3.06,"n_questions":96,"step":2,"uniform_weight":0.125}
{"em":0.0,"f1":0.04,"gold_weight":0.5,"kind":"validation","loss":3.0,"loss_other_document":null,"loss_own_document":null,"loss_unrelated_bank":null,"n_questions":9,"step":2,"uniform_weight":0.125,"after_selection":true,"selection_top1":0.25}
{"kind":"selection","step":1,"loss":5.5,"top1":0.02,"seconds":0.1}
"#;
        let path = run.metrics();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(old);
        std::fs::write(&path, format!("{text}{{\"kind\":\"tra")).unwrap();
        let lines = run.read_metrics().unwrap();
        assert_eq!(lines.len(), 5, "the cut-short last line is left out");
        assert!(matches!(&lines[0], MetricsLine::Reading(s) if s.reading && s.loss == 2.5));
        assert!(matches!(&lines[1], MetricsLine::Train(s) if !s.reading && s.step == 2));
        match &lines[2] {
            MetricsLine::Validation {
                stats,
                after_selection,
                selection_top1,
            } => {
                assert_eq!(stats.loss_own_document, Some(3.06));
                assert!(stats.probe_loss_own_document.is_none());
                assert!(!after_selection && selection_top1.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &lines[3],
            MetricsLine::Validation { after_selection: true, selection_top1: Some(t), .. } if *t == 0.25
        ));
        assert!(matches!(&lines[4], MetricsLine::Selection(s) if s.top1 == 0.02));
        // The same bad line in the middle is an error naming file and line.
        std::fs::write(&path, format!("{{\"kind\":\"tra\n{text}")).unwrap();
        let e = run.read_metrics().unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn a_checkpoint_knows_its_run_directory() {
        let run = RunDir::new("/runs/a");
        assert_eq!(RunDir::of_checkpoint(&run.checkpoint("best")), Some(run));
        assert_eq!(RunDir::of_checkpoint(Path::new("/elsewhere/ckpt")), None);
    }
}
