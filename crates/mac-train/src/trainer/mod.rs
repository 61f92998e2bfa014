//! The meta-training loop: the trainer, its state and the step; each
//! part of its work in a module of its own (batches, losses, selection,
//! validation, profile, checkpoints).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use mac_encoder::{EncoderFiles, EncoderTokenizer};
use mac_lm::LoadedLm;
use mac_model::{Checkpoint, MacModel, MacRuntime};

mod batches;
mod checkpoints;
mod losses;
mod profile;
mod selection;
mod validation;

use crate::config::TrainConfig;
use crate::data::{load_splits, Splits};
use crate::profile::{part, PartTimer};
use crate::run_dir::{MetricsLine, RunDir, TrainerState, OPTIMIZER_FILE};
use crate::selection::{SelectionConfig, SelectionPool};
use crate::stats::{CutShort, SelectionSummary, StepStats, TrainSummary, ValidationStats};
use crate::tensors::{draw_initial_weights, SEEDED_INIT};

/// A training run in `run_dir`.
pub struct Trainer {
    /// The run's configuration.
    pub config: TrainConfig,
    /// The run directory.
    pub run_dir: RunDir,
    /// The data.
    pub splits: Splits,
    /// The frozen LM (plain device: no gradients kept for it).
    pub lm: LoadedLm,
    /// The MAC model (on the autodiff device).
    pub model: MacModel,
    pub(crate) optim: ModuleOptimizer,
    pub(crate) document_tokenizer: EncoderTokenizer,
    pub(crate) question_tokenizer: EncoderTokenizer,
    pub(crate) lm_path: PathBuf,
    pub(crate) encoder_dir: PathBuf,
    pub(crate) device: Device,
    pub(crate) ad: Device,
    pub(crate) state: TrainerState,
    /// The selection phase's document modulations, once computed.
    pub(crate) selection_pool: Option<SelectionPool>,
}

fn resolve_lm(cfg: &TrainConfig) -> PathBuf {
    cfg.lm.clone().unwrap_or_else(mac_assets::default_lm_path)
}

fn resolve_encoder(cfg: &TrainConfig) -> PathBuf {
    cfg.encoder
        .clone()
        .unwrap_or_else(mac_assets::default_encoder_dir)
}

fn optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    AdamConfig::new()
        .with_grad_clipping(Some(GradientClippingConfig::Norm(cfg.grad_clip)))
        .init()
}

/// A progress bar at `position` of `len` in `template`'s style (hidden
/// unless `show`).
pub(crate) fn progress_bar(show: bool, len: usize, position: usize, template: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(position as u64);
    bar
}

impl Trainer {
    /// Starts a fresh run: writes `config.json` into `run_dir`.
    pub fn new(config: TrainConfig, run_dir: &Path, device: &Device) -> Result<Self> {
        config.validate()?;
        let dir = RunDir::new(run_dir);
        dir.write_config(&config)?;
        let _ = std::fs::remove_file(dir.metrics());
        Self::build(config, dir, device, None)
    }

    /// Resumes the run in `run_dir` from its `last` checkpoint (model,
    /// optimizer state and step).
    pub fn resume(run_dir: &Path, device: &Device) -> Result<Self> {
        let dir = RunDir::new(run_dir);
        let config = dir.read_config()?;
        let last = dir.resumable_checkpoint()?;
        Self::build(config, dir, device, Some(&last))
    }

    fn build(
        config: TrainConfig,
        run_dir: RunDir,
        device: &Device,
        from: Option<&Path>,
    ) -> Result<Self> {
        let splits = load_splits(&config.data)?;
        anyhow::ensure!(
            splits.train.documents.len() >= config.batch_documents,
            "the training split has {} documents, fewer than batch_documents = {}",
            splits.train.documents.len(),
            config.batch_documents
        );
        let lm_path = resolve_lm(&config);
        let encoder_dir = resolve_encoder(&config);
        let lm = LoadedLm::load(&lm_path, device)?;
        for (field, width) in [
            ("answer_probe_width", config.model.answer_probe_width),
            (
                "lm_token_channel_width",
                config.model.lm_token_channel_width,
            ),
            (
                "copy.lm_width",
                config.model.copy.as_ref().map(|c| c.lm_width),
            ),
        ] {
            if let Some(w) = width {
                anyhow::ensure!(
                    w == lm.model.hidden_width(),
                    "model.{field} is {w}, but {} has hidden width {}",
                    lm_path.display(),
                    lm.model.hidden_width()
                );
            }
        }
        let ad = device.clone().autodiff();
        // Read once: both encoders and both tokenizers come from it.
        let encoder_files = EncoderFiles::open(&encoder_dir)?;
        let mut model = {
            // The backend's generator is process-wide: seeding it and drawing
            // the initial weights happen under one lock, so trainers built
            // at once (threads, parallel tests) get the weights their seed
            // gives instead of interleaved draws.
            let _draws = SEEDED_INIT
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ad.seed(config.seed);
            let model = MacModel::init_from_files(
                &config.model,
                &encoder_files,
                lm.model.kv_layout(),
                &ad,
            )?;
            draw_initial_weights(&model);
            model
        };
        let mut optim = optimizer(&config);
        let mut state = TrainerState::default();
        if let Some(dir) = from {
            let ckpt = Checkpoint::open(dir)?;
            ckpt.load_into(&mut model)?;
            let opt_path = dir.join(OPTIMIZER_FILE);
            optim = optim.load(&opt_path).map_err(|e| {
                anyhow::anyhow!("{}: cannot load optimizer state: {e:?}", opt_path.display())
            })?;
            let st = dir.join("trainer.json");
            state = serde_json::from_str(
                &std::fs::read_to_string(&st)
                    .with_context(|| format!("{}: cannot read", st.display()))?,
            )
            .with_context(|| format!("{}: malformed", st.display()))?;
        }
        Ok(Self {
            document_tokenizer: encoder_files.tokenizer(config.model.max_document_tokens)?,
            question_tokenizer: encoder_files.tokenizer(config.model.max_question_tokens)?,
            config,
            run_dir,
            splits,
            lm,
            model,
            optim,
            lm_path,
            encoder_dir,
            device: device.clone(),
            ad,
            state,
            selection_pool: None,
        })
    }

    /// Optimizer steps completed so far.
    pub fn step(&self) -> usize {
        self.state.step
    }

    /// The device gradients are recorded on.
    pub(crate) fn autodiff_device(&self) -> Device {
        self.ad.clone()
    }

    /// One optimizer step (all micro-batches); advances the step counter.
    pub fn train_step(&mut self) -> Result<StepStats> {
        self.train_step_timed(&mut PartTimer::off())
    }

    /// [`Self::train_step`] with each part's time recorded in `timer`.
    pub(crate) fn train_step_timed(&mut self, timer: &mut PartTimer) -> Result<StepStats> {
        let t0 = Instant::now();
        let step = self.state.step;
        let mut acc = GradientsAccumulator::new();
        let (mut total, mut total_aux, mut total_retrieval) = (0.0, None::<f64>, None::<f64>);
        let micro = self.config.grad_accumulation;
        let reading = self.config.is_reading_step(step);
        for u in 0..micro {
            let losses = self.batch_losses_timed(step, u, timer)?;
            let mut loss = losses.answer_nll.map(|nll| {
                let nll = nll / micro as f64;
                total += nll.clone().into_scalar::<f64>();
                nll
            });
            let auxiliaries = [
                (
                    losses.answer_tokens,
                    self.config.answer_token_loss_weight,
                    &mut total_aux,
                ),
                (
                    losses.retrieval,
                    self.config.retrieval_loss_weight,
                    &mut total_retrieval,
                ),
            ];
            for (aux, weight, sum) in auxiliaries {
                if let Some(aux) = aux {
                    let aux = aux / micro as f64;
                    *sum.get_or_insert(0.0) += aux.clone().into_scalar::<f64>();
                    let weighted = aux * weight;
                    loss = Some(match loss {
                        Some(l) => l + weighted,
                        None => weighted,
                    });
                }
            }
            let loss = loss.ok_or_else(|| anyhow::anyhow!("step {step} has no loss to train"))?;
            let grads = timer.time(part::BACKWARD, || {
                GradientsParams::from_grads(loss.backward(), &self.model)
            });
            timer.time(part::OPTIMIZER, || acc.accumulate(&self.model, grads));
        }
        let lr = self.config.lr_at(step);
        self.model = timer.time(part::OPTIMIZER, || {
            self.optim.step(lr, self.model.clone(), acc.grads())
        });
        self.state.step += 1;
        Ok(StepStats {
            step: self.state.step,
            loss: if reading {
                total_aux.unwrap_or(f64::NAN)
            } else {
                total
            },
            reading,
            answer_token_loss: total_aux,
            retrieval_loss: total_retrieval,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// A runtime over the current weights without gradients (for answering).
    pub fn runtime(&self) -> Result<MacRuntime> {
        Ok(MacRuntime {
            lm: self.lm.clone(),
            model: self.model.valid(),
            document_tokenizer: self.document_tokenizer.clone(),
            question_tokenizer: self.question_tokenizer.clone(),
            config: self.config.model.clone(),
            device: self.device.clone(),
            // Validation aggregates in memory, without the similarity prior.
            key_encoder: None,
            producer: format!("mac-train step {}", self.step()),
        })
    }

    /// Runs until `steps` (or `max_minutes`), validating and checkpointing
    /// as configured. `stop_after` ends this invocation early after that many
    /// steps (used to test resume).
    pub fn run(&mut self, show_progress: bool, stop_after: Option<usize>) -> Result<TrainSummary> {
        let t0 = Instant::now();
        let total = self.config.steps;
        let bar = progress_bar(
            show_progress,
            total,
            self.state.step,
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps  {per_sec}  eta {eta}  {msg}",
        );
        let start_step = self.state.step;
        let mut last_validation = None;
        let mut ema: Option<f64> = None;
        let mut cut_short = None;
        while self.state.step < total {
            if let Some(k) = stop_after.filter(|&k| self.state.step - start_step >= k) {
                cut_short = Some(CutShort::StopAfter { steps: k });
                break;
            }
            if let Some(m) = self
                .config
                .max_minutes
                .filter(|&m| t0.elapsed().as_secs_f64() > m * 60.0)
            {
                bar.println(format!(
                    "time budget of {m} min reached at step {} of {total}",
                    self.state.step
                ));
                cut_short = Some(CutShort::TimeBudget { minutes: m });
                break;
            }
            let s = self.train_step()?;
            if s.step == self.config.reading_steps + 1 {
                ema = None; // the first LM step: another loss from here on
            }
            ema = Some(ema.map_or(s.loss, |e| 0.9 * e + 0.1 * s.loss));
            self.log(&if s.reading {
                MetricsLine::Reading(s.clone())
            } else {
                MetricsLine::Train(s.clone())
            })?;
            bar.set_position(s.step as u64);
            bar.set_message(format!(
                "loss {:.3} (avg {:.3})",
                s.loss,
                ema.unwrap_or(s.loss)
            ));
            let every = self.config.validate_every;
            if every > 0 && s.step % every == 0 && s.step < total {
                let v = self.validate_and_keep_best()?;
                bar.println(v.to_string());
                last_validation = Some(v);
            }
            self.checkpoint_if_due(s.step)?;
        }
        bar.finish_and_clear();
        let done = self.state.step - start_step;
        let content_seconds = t0.elapsed().as_secs_f64();
        let finished = stop_after.is_none() || self.state.step >= total;
        if finished && self.state.selection_step == 0 {
            last_validation = Some(self.validate_and_keep_best()?);
        }
        let mut selection = None;
        if let Some(cfg) = self.config.selection.clone().filter(|_| finished) {
            let budget = stop_after.map(|k| k.saturating_sub(done));
            let (summary, v) = self.run_selection(&cfg, show_progress, budget)?;
            if summary.steps < cfg.steps {
                // Only a stop-after budget ends the phase early.
                cut_short = stop_after.map(|steps| CutShort::StopAfter { steps });
            }
            last_validation = v.or(last_validation);
            selection = Some(summary);
        }
        self.save("last")?;
        let seconds = t0.elapsed().as_secs_f64();
        Ok(TrainSummary {
            steps: self.state.step,
            planned_steps: total,
            cut_short,
            seconds,
            seconds_per_step: content_seconds / done.max(1) as f64,
            last_validation,
            best_loss: self.state.best_loss,
            selection,
        })
    }

    /// The selection phase: selection steps until the configured number
    /// (at most `budget` in this invocation), checkpointing as configured;
    /// when the phase completes, validates and makes the result `best` (the
    /// content phase's objective does not measure selection).
    fn run_selection(
        &mut self,
        cfg: &SelectionConfig,
        show_progress: bool,
        budget: Option<usize>,
    ) -> Result<(SelectionSummary, Option<ValidationStats>)> {
        let t0 = Instant::now();
        let top1_before = (self.state.selection_step == 0)
            .then(|| self.validate_selection())
            .transpose()?;
        let bar = progress_bar(
            show_progress,
            cfg.steps,
            self.state.selection_step,
            "{elapsed_precise} [{bar:30}] {pos}/{len} selection steps  {per_sec}  {msg}",
        );
        let mut done = 0;
        let mut ema: Option<f64> = None;
        while self.state.selection_step < cfg.steps && budget.is_none_or(|b| done < b) {
            let s = self.selection_step()?;
            done += 1;
            ema = Some(ema.map_or(s.top1, |e| 0.95 * e + 0.05 * s.top1));
            self.log(&MetricsLine::Selection(s.clone()))?;
            bar.set_position(s.step as u64);
            bar.set_message(format!(
                "loss {:.3}, top-1 {:.2}",
                s.loss,
                ema.unwrap_or(s.top1)
            ));
            self.checkpoint_if_due(s.step)?;
        }
        bar.finish_and_clear();
        let top1_after = self.validate_selection()?;
        let mut validation = None;
        if self.state.selection_step >= cfg.steps {
            let v = self.validate()?;
            self.log(&MetricsLine::Validation {
                stats: v.clone(),
                after_selection: true,
                selection_top1: Some(top1_after),
            })?;
            let share = self.config.own_document_share_at(v.step.saturating_sub(1));
            self.state.best_loss = Some((v.objective(share), v.step));
            self.save("best")?;
            validation = Some(v);
        }
        Ok((
            SelectionSummary {
                steps: self.state.selection_step,
                seconds: t0.elapsed().as_secs_f64(),
                top1_before,
                top1_after,
            },
            validation,
        ))
    }
}
