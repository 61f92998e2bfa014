//! The meta-training loop.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::grad_clipping::GradientClippingConfig;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use mac_data::{exact_match, f1_score, load, Dataset, FactStream, Format, LoadOptions, QaPair};
use mac_encoder::EncoderTokenizer;
use mac_lm::LoadedLm;
use mac_model::prompt::{answer_batch, continuation_ids, question_prompt, AnswerBatch};
use mac_model::{Checkpoint, CheckpointMeta, MacModel, MacRuntime};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::{DataSource, TrainConfig};
use crate::profile::{part, PartTimer};
use crate::selection::{SelectionConfig, SelectionPool};

/// The three splits a run uses.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Meta-training documents.
    pub train: Dataset,
    /// Validation documents.
    pub validation: Dataset,
    /// The test stream.
    pub test: Dataset,
}

/// Loads (or generates) the data of a configuration.
pub fn load_splits(source: &DataSource) -> Result<Splits> {
    match source {
        DataSource::FactStream(cfg) => {
            let s = FactStream::generate(cfg);
            Ok(Splits {
                train: s.train,
                validation: s.validation,
                test: s.test,
            })
        }
        DataSource::Files {
            train,
            validation,
            test,
            format,
        } => {
            let format: Format = format.parse().map_err(anyhow::Error::msg)?;
            let get = |p: &Path| -> Result<Dataset> {
                Ok(load(p, format, LoadOptions::default())?.dataset)
            };
            Ok(Splits {
                train: get(train)?,
                validation: get(validation)?,
                test: get(test)?,
            })
        }
    }
}

/// One micro-batch: documents, the questions asked of them, and which
/// documents carry gradients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainBatch {
    /// Indices into the training documents; together they are the bank.
    pub documents: Vec<usize>,
    /// (position in `documents`, question index within that document).
    pub questions: Vec<(usize, usize)>,
    /// Per position in `documents`: encoded with gradients (backprop dropout).
    pub keep: Vec<bool>,
}

/// The losses of one micro-batch.
pub struct BatchLosses {
    /// Answer NLL of the frozen LM given the question and the prefix.
    pub answer_nll: Tensor<1>,
    /// The auxiliary answer-token loss (when configured).
    pub answer_tokens: Option<Tensor<1>>,
    /// The auxiliary retrieval loss (when configured and the bank holds
    /// more than the question's own document).
    pub retrieval: Option<Tensor<1>>,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepStats {
    /// 1-based step number.
    pub step: usize,
    /// Mean answer NLL over the step's micro-batches.
    pub loss: f64,
    /// Mean auxiliary answer-token loss, when configured.
    pub answer_token_loss: Option<f64>,
    /// Mean auxiliary retrieval loss, when configured and in the bank phase.
    #[serde(default)]
    pub retrieval_loss: Option<f64>,
    /// Learning rate used.
    pub lr: f64,
    /// Seconds the step took.
    pub seconds: f64,
}

/// Validation results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidationStats {
    /// Step at which it ran.
    pub step: usize,
    /// Mean answer NLL.
    pub loss: f64,
    /// Mean answer NLL when each batch's questions aggregate over another
    /// batch's documents (`None` with a single batch). Higher than `loss`
    /// exactly when the answers come from the memory.
    pub loss_unrelated_bank: Option<f64>,
    /// Mean answer NLL when each question's memory is its own document
    /// alone: what the modulations carry, without any retrieval.
    #[serde(default)]
    pub loss_own_document: Option<f64>,
    /// The same with another document of the batch alone. The gap to
    /// `loss_own_document` is the content the modulations carry.
    #[serde(default)]
    pub loss_other_document: Option<f64>,
    /// Mean share of the aggregator's attention on the question's own document.
    pub gold_weight: f64,
    /// That share under uniform attention (1 / documents per bank).
    pub uniform_weight: f64,
    /// SQuAD exact match (0..1).
    pub em: f64,
    /// SQuAD token F1 (0..1).
    pub f1: f64,
    /// Questions answered.
    pub n_questions: usize,
}

impl ValidationStats {
    /// The validation loss of what a step with `own_share` of its questions
    /// on their own document trains: that share of the own-document loss and
    /// the rest of the bank loss. Picks the `best` checkpoint, so a run that
    /// trains only on single documents is not judged by an aggregation over
    /// eight it never learnt.
    pub fn objective(&self, own_share: f64) -> f64 {
        let own = self.loss_own_document.unwrap_or(self.loss);
        own_share * own + (1.0 - own_share) * self.loss
    }
}

impl std::fmt::Display for ValidationStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {}: validation loss {:.3}", self.step, self.loss)?;
        if let Some(u) = self.loss_unrelated_bank {
            write!(f, " (unrelated bank {u:.3})")?;
        }
        if let (Some(o), Some(x)) = (self.loss_own_document, self.loss_other_document) {
            write!(f, "  own document alone {o:.3} (another {x:.3})")?;
        }
        write!(
            f,
            "  gold attention {:.3} (uniform {:.3})  EM {:.3}  F1 {:.3}",
            self.gold_weight, self.uniform_weight, self.em, self.f1
        )
    }
}

/// The end of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Steps completed.
    pub steps: usize,
    /// Steps the configuration plans.
    #[serde(default)]
    pub planned_steps: usize,
    /// Why the run stopped before the planned steps (`None`: it did not).
    #[serde(default)]
    pub cut_short: Option<CutShort>,
    /// Wall-clock seconds of this invocation.
    pub seconds: f64,
    /// Mean seconds per step.
    pub seconds_per_step: f64,
    /// Last validation.
    pub last_validation: Option<ValidationStats>,
    /// Lowest validation loss of the trained objective
    /// ([`ValidationStats::objective`]) and its step (the `best` checkpoint).
    pub best_loss: Option<(f64, usize)>,
    /// The selection phase, when the run has one and reached it (`steps`
    /// says whether it finished).
    #[serde(default)]
    pub selection: Option<SelectionSummary>,
}

/// The outcome of a run's selection phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelectionSummary {
    /// Selection steps done.
    pub steps: usize,
    /// Wall-clock seconds of the phase in this invocation (pool included).
    pub seconds: f64,
    /// Top-1 rate on the validation bank before the phase (`None` when the
    /// phase started in an earlier invocation).
    pub top1_before: Option<f64>,
    /// Top-1 rate on the validation bank after it
    /// ([`Trainer::validate_selection`]).
    pub top1_after: f64,
}

/// Why a run stopped before its planned steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum CutShort {
    /// The configuration's time budget (`max_minutes`) ran out.
    TimeBudget {
        /// The budget in minutes.
        minutes: f64,
    },
    /// The invocation was asked to stop after some steps (`--stop-after`);
    /// the run can be resumed.
    StopAfter {
        /// Steps this invocation was allowed.
        steps: usize,
    },
}

impl TrainSummary {
    /// One line that says whether the run trained all its planned steps,
    /// and if not, why not.
    pub fn completion(&self) -> String {
        let (done, planned) = (self.steps, self.planned_steps);
        match self.cut_short {
            None => format!("{done} of {planned} planned steps"),
            Some(CutShort::TimeBudget { minutes }) => format!(
                "CUT SHORT by the {minutes}-minute time budget: {done} of {planned} planned steps"
            ),
            Some(CutShort::StopAfter { steps }) => format!(
                "stopped after {steps} steps of this invocation (--stop-after): {done} of {planned} planned steps; resume to continue"
            ),
        }
    }
}

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
    best_loss: Option<(f64, usize)>,
}

/// A training run in `run_dir`.
pub struct Trainer {
    /// The run's configuration.
    pub config: TrainConfig,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The data.
    pub splits: Splits,
    /// The frozen LM (plain device: no gradients kept for it).
    pub lm: LoadedLm,
    /// The MAC model (on the autodiff device).
    pub model: MacModel,
    pub(crate) optim: ModuleOptimizer,
    pub(crate) document_tokenizer: EncoderTokenizer,
    pub(crate) question_tokenizer: EncoderTokenizer,
    lm_path: PathBuf,
    encoder_dir: PathBuf,
    pub(crate) device: Device,
    pub(crate) ad: Device,
    pub(crate) state: TrainerState,
    /// The selection phase's document modulations, once computed.
    pub(crate) selection_pool: Option<SelectionPool>,
}

/// The checkpoint a resumed run continues from: `checkpoints/last`, or,
/// when a save was interrupted between its two renames, the complete
/// previous one it had moved aside (`last.old`); never a `.partial` one.
pub fn resumable_checkpoint(run_dir: &Path) -> Result<PathBuf> {
    let checkpoints = run_dir.join("checkpoints");
    ["last", "last.old"]
        .iter()
        .map(|name| checkpoints.join(name))
        .find(|dir| dir.join(mac_model::META_FILE).is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no complete checkpoint to resume from (checkpoints/last)",
                run_dir.display()
            )
        })
}

/// fsyncs every file of a directory, then the directory.
fn sync_tree(dir: &Path) -> Result<()> {
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

/// fsyncs a directory, so the names in it survive a power loss.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("{}: cannot fsync the directory", dir.display()))
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

/// A seed per (run, step, micro-batch): batches do not depend on history.
/// One bank `[N, n, d]` as the memory of each of `questions` questions
/// (`[Q, N·n, d]`).
fn shared(bank: &Tensor<3>, questions: usize) -> Tensor<3> {
    let [docs, n, d] = bank.dims();
    bank.clone()
        .reshape([1, docs * n, d])
        .expand([questions, docs * n, d])
}

/// Draws every parameter's initial value now: Burn initialises parameters
/// lazily, on first use, which would put the draws outside the lock.
fn draw_initial_weights<M: Module>(model: &M) {
    struct Draw;
    impl ModuleVisitor for Draw {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    model.visit(&mut Draw);
}

/// Held while a trainer seeds the backend's generator and initialises its model.
static SEEDED_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `t` (from the plain device) as a leaf without a graph on the autodiff
/// device `ad`.
pub(crate) fn detached(t: Tensor<3>, ad: &Device) -> Result<Tensor<3>> {
    let dims = t.dims();
    let data: Vec<f32> = t
        .try_to_vec_as::<f32>()
        .map_err(|e| anyhow::anyhow!("reading modulations: {e:?}"))?;
    Ok(Tensor::from_data(TensorData::new(data, dims), ad))
}

/// A progress bar at `position` of `len` in `template`'s style (hidden
/// unless `show`).
fn progress_bar(show: bool, len: usize, position: usize, template: &str) -> ProgressBar {
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

/// The metrics line of a validation.
fn validation_line(v: &ValidationStats) -> serde_json::Value {
    serde_json::json!({
        "kind": "validation", "step": v.step, "loss": v.loss,
        "loss_unrelated_bank": v.loss_unrelated_bank,
        "loss_own_document": v.loss_own_document,
        "loss_other_document": v.loss_other_document, "gold_weight": v.gold_weight,
        "uniform_weight": v.uniform_weight, "em": v.em, "f1": v.f1,
        "n_questions": v.n_questions,
    })
}

/// A 1-D index tensor of `rows` on `device`.
pub(crate) fn index_tensor(rows: &[usize], device: &Device) -> Tensor<1, Int> {
    let ids: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    Tensor::from_data(TensorData::new(ids, [rows.len()]), device)
}

pub(crate) fn step_rng(seed: u64, step: usize, micro: usize) -> ChaCha8Rng {
    let mix = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((step as u64) << 16)
        .wrapping_add(micro as u64);
    ChaCha8Rng::seed_from_u64(mix)
}

impl Trainer {
    /// Starts a fresh run: writes `config.json` into `run_dir`.
    pub fn new(config: TrainConfig, run_dir: &Path, device: &Device) -> Result<Self> {
        config.validate()?;
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("{}: cannot create the run directory", run_dir.display()))?;
        let cfg_path = run_dir.join("config.json");
        std::fs::write(&cfg_path, serde_json::to_string_pretty(&config)?)
            .with_context(|| format!("{}: cannot write", cfg_path.display()))?;
        let _ = std::fs::remove_file(run_dir.join("metrics.jsonl"));
        Self::build(config, run_dir, device, None)
    }

    /// Resumes the run in `run_dir` from its `last` checkpoint (model,
    /// optimizer state and step).
    pub fn resume(run_dir: &Path, device: &Device) -> Result<Self> {
        let config = TrainConfig::from_file(&run_dir.join("config.json"))?;
        let last = resumable_checkpoint(run_dir)?;
        Self::build(config, run_dir, device, Some(&last))
    }

    fn build(
        config: TrainConfig,
        run_dir: &Path,
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
        let mut model = {
            // The backend's generator is process-wide: seeding it and drawing
            // the initial weights happen under one lock, so trainers built
            // at once (threads, parallel tests) get the weights their seed
            // gives instead of interleaved draws.
            let _draws = SEEDED_INIT
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            ad.seed(config.seed);
            let model = MacModel::init(&config.model, &encoder_dir, lm.model.kv_layout(), &ad)?;
            draw_initial_weights(&model);
            model
        };
        let mut optim = optimizer(&config);
        let mut state = TrainerState::default();
        if let Some(dir) = from {
            let ckpt = Checkpoint::open(dir)?;
            ckpt.load_into(&mut model)?;
            let opt_path = dir.join("optimizer.bpk");
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
        let tok = encoder_dir.join("tokenizer.json");
        Ok(Self {
            document_tokenizer: EncoderTokenizer::from_file(
                &tok,
                config.model.max_document_tokens,
            )?,
            question_tokenizer: EncoderTokenizer::from_file(
                &tok,
                config.model.max_question_tokens,
            )?,
            config,
            run_dir: run_dir.to_path_buf(),
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

    /// The documents of micro-batch `micro` of step `step` (0-based), its
    /// questions as (position in the documents, question index), and which
    /// documents keep gradients.
    pub fn batch(&self, step: usize, micro: usize) -> TrainBatch {
        let mut rng = step_rng(self.config.seed, step, micro);
        let n = self.splits.train.documents.len();
        let b = self.config.batch_documents;
        let docs: Vec<usize> = rand::seq::index::sample(&mut rng, n, b).into_vec();
        let questions: Vec<(usize, usize)> = docs
            .iter()
            .enumerate()
            .flat_map(|(pos, &d)| {
                let k = self.splits.train.documents[d].qas.len();
                let take = self.config.questions_per_document.min(k);
                rand::seq::index::sample(&mut rng, k, take)
                    .into_vec()
                    .into_iter()
                    .map(move |qi| (pos, qi))
                    .collect::<Vec<_>>()
            })
            .collect();
        let kept = ((b as f64 * self.config.backprop_keep).ceil() as usize).clamp(1, b);
        let mut keep: Vec<bool> = (0..b).map(|i| i < kept).collect();
        keep.shuffle(&mut rng);
        TrainBatch {
            documents: docs,
            questions,
            keep,
        }
    }

    /// The answer NLL of one micro-batch, differentiable w.r.t. the MAC model.
    pub fn batch_loss(&self, step: usize, micro: usize) -> Result<Tensor<1>> {
        Ok(self.batch_losses(step, micro)?.answer_nll)
    }

    /// The losses of one micro-batch: the answer NLL of the frozen LM and,
    /// when configured, the auxiliary answer-token loss.
    pub fn batch_losses(&self, step: usize, micro: usize) -> Result<BatchLosses> {
        self.batch_losses_timed(step, micro, &mut PartTimer::off())
    }

    /// The device gradients are recorded on.
    pub(crate) fn autodiff_device(&self) -> Device {
        self.ad.clone()
    }

    /// The texts of the documents of `step`'s first micro-batch.
    pub(crate) fn document_texts(&self, step: usize) -> Vec<String> {
        let train = &self.splits.train.documents;
        self.batch(step, 0)
            .documents
            .iter()
            .map(|&d| train[d].text.clone())
            .collect()
    }

    /// The teacher-forced answer batch of every question of `step`'s first micro-batch.
    pub(crate) fn step_answer_batch(&self, step: usize) -> Result<AnswerBatch> {
        self.answer_batch(&self.batch_qas(&self.batch(step, 0)))
    }

    /// The question–answer pairs a batch asks, in its question order.
    fn batch_qas(&self, batch: &TrainBatch) -> Vec<&QaPair> {
        let train = &self.splits.train.documents;
        batch
            .questions
            .iter()
            .map(|&(pos, qi)| &train[batch.documents[pos]].qas[qi])
            .collect()
    }

    /// [`Self::batch_losses`] with each part's time recorded in `timer`.
    fn batch_losses_timed(
        &self,
        step: usize,
        micro: usize,
        timer: &mut PartTimer,
    ) -> Result<BatchLosses> {
        let batch = self.batch(step, micro);
        let train = &self.splits.train.documents;
        // Bank rows: the documents that keep gradients first, then the rest.
        let order: Vec<usize> = (0..batch.documents.len())
            .filter(|&i| batch.keep[i])
            .chain((0..batch.documents.len()).filter(|&i| !batch.keep[i]))
            .collect();
        let mut row_of = vec![0usize; order.len()];
        for (row, &pos) in order.iter().enumerate() {
            row_of[pos] = row;
        }
        let text = |pos: &usize| train[batch.documents[*pos]].text.as_str();
        let texts_kept: Vec<&str> = order.iter().filter(|&&p| batch.keep[p]).map(text).collect();
        let texts_dropped: Vec<&str> = order
            .iter()
            .filter(|&&p| !batch.keep[p])
            .map(text)
            .collect();
        let mut parts = vec![
            timer
                .time(part::DOCUMENT_ENCODER, || {
                    self.model.amortizer.encode_texts(
                        &self.document_tokenizer,
                        &texts_kept,
                        Some(&self.lm),
                        &self.ad,
                    )
                })?
                .tokens,
        ];
        if !texts_dropped.is_empty() {
            // Backprop dropout: these documents are encoded without a graph
            // and still serve as distractors in the bank.
            let frozen = self.model.amortizer.valid();
            let t = timer
                .time(part::DOCUMENT_ENCODER, || {
                    frozen.encode_texts(
                        &self.document_tokenizer,
                        &texts_dropped,
                        Some(&self.lm),
                        &self.device,
                    )
                })?
                .tokens;
            parts.push(detached(t, &self.ad)?);
        }
        let bank = Tensor::cat(parts, 0);
        let [b, n, _] = bank.dims();
        let n_q = batch.questions.len();
        let qas = self.batch_qas(&batch);
        let questions: Vec<&str> = qas.iter().map(|q| q.question.as_str()).collect();
        let q_tokens = timer
            .time(part::QUESTION_ENCODER, || {
                self.model.question_encoder.encode_texts(
                    &self.question_tokenizer,
                    &questions,
                    None,
                    &self.ad,
                )
            })?
            .tokens;
        let gold: Vec<usize> = batch
            .questions
            .iter()
            .map(|&(pos, _)| row_of[pos])
            .collect();
        // Which questions see their own document alone: all of them during
        // the curriculum, then `own_document_share` of them, spread evenly.
        let share = self.config.own_document_share_at(step);
        let (own, whole): (Vec<usize>, Vec<usize>) =
            (0..n_q).partition(|&i| ((i + 1) as f64 * share).floor() > (i as f64 * share).floor());
        let mut parts: Vec<(f64, BatchLosses)> = Vec::new();
        for (idx, alone) in [(own, true), (whole, false)] {
            if idx.is_empty() {
                continue;
            }
            let group_gold: Vec<usize> = idx.iter().map(|&i| gold[i]).collect();
            let memory = if alone {
                bank.clone().select(0, index_tensor(&group_gold, &self.ad))
            } else {
                shared(&bank, idx.len())
            };
            let group_qas: Vec<&QaPair> = idx.iter().map(|&i| qas[i]).collect();
            let (prefix, agg) = timer.time(part::AGGREGATION, || {
                self.model.prefix_from_memory(
                    &self.lm.model,
                    q_tokens.clone().select(0, index_tensor(&idx, &self.ad)),
                    memory,
                )
            })?;
            let ab = self.answer_batch(&group_qas)?;
            let answer_nll = timer.time(part::LM_FORWARD, || {
                self.lm
                    .model
                    .weighted_nll(&ab.batch, &ab.targets, &ab.weights, Some(&prefix))
            })?;
            let (retrieval, answer_tokens) = timer.time(part::AUX_LOSSES, || {
                let retrieval = (self.config.retrieval_loss_weight > 0.0 && !alone && b > 1)
                    .then(|| retrieval_loss(&agg.token_weights, &group_gold, n, b, &self.ad));
                let answer_tokens = if self.config.answer_token_loss_weight > 0.0 {
                    self.answer_token_loss(agg.modulation, &group_qas)
                } else {
                    Ok(None)
                };
                answer_tokens.map(|a| (retrieval, a))
            })?;
            parts.push((
                idx.len() as f64,
                BatchLosses {
                    answer_nll,
                    answer_tokens,
                    retrieval,
                },
            ));
        }
        // One group: its losses as they are; two: weighted by their questions.
        if parts.len() == 1 {
            return Ok(parts.remove(0).1);
        }
        let sum = |xs: Vec<(f64, Tensor<1>)>| -> Option<Tensor<1>> {
            let total: f64 = xs.iter().map(|(w, _)| w).sum();
            xs.into_iter()
                .map(|(w, t)| t * (w / total))
                .reduce(|a, b| a + b)
        };
        let answer_nll = sum(parts
            .iter()
            .map(|(w, l)| (*w, l.answer_nll.clone()))
            .collect())
        .ok_or_else(|| anyhow::anyhow!("a batch without questions"))?;
        let answer_tokens = sum(parts
            .iter()
            .filter_map(|(w, l)| l.answer_tokens.clone().map(|t| (*w, t)))
            .collect());
        let retrieval = sum(parts
            .iter()
            .filter_map(|(w, l)| l.retrieval.clone().map(|t| (*w, t)))
            .collect());
        Ok(BatchLosses {
            answer_nll,
            answer_tokens,
            retrieval,
        })
    }

    /// The teacher-forced prompt + answer batch of `qas` (first reference answer).
    fn answer_batch(&self, qas: &[&QaPair]) -> Result<AnswerBatch> {
        let prompts: Vec<(String, String)> = qas
            .iter()
            .map(|q| (question_prompt(&q.question), q.answers[0].clone()))
            .collect();
        Ok(answer_batch(
            &self.lm.tokenizer,
            &prompts,
            self.config.max_qa_tokens,
        )?)
    }

    /// Bag-of-tokens cross-entropy of each answer's LM tokens under the
    /// answer probe's logits (through the LM's output embedding).
    fn answer_token_loss(
        &self,
        modulation: Tensor<3>,
        qas: &[&QaPair],
    ) -> Result<Option<Tensor<1>>> {
        let Some(hidden) = self.model.answer_probe_hidden(modulation) else {
            return Ok(None);
        };
        let logits = self.lm.model.logits(hidden); // [Q, 1, V]
        let [q, _, v] = logits.dims();
        let log_p = log_softmax(logits.reshape([q, v]), 1);
        let mut bag = vec![0f32; q * v];
        for (i, qa) in qas.iter().enumerate() {
            let ids = continuation_ids(&self.lm.tokenizer, &format!(" {}", qa.answers[0].trim()))?;
            for &t in &ids {
                bag[i * v + t as usize] += 1.0 / ids.len().max(1) as f32;
            }
        }
        let bag = Tensor::<2>::from_data(TensorData::new(bag, [q, v]), &self.ad);
        Ok(Some((log_p * bag).sum().neg() / q as f64))
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
        for u in 0..micro {
            let losses = self.batch_losses_timed(step, u, timer)?;
            let nll = losses.answer_nll / micro as f64;
            total += nll.clone().into_scalar::<f64>();
            let mut loss = nll;
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
                    loss = loss + aux * weight;
                }
            }
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
            loss: total,
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
        })
    }

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
            let (l, weights) =
                Self::teacher_forced_loss(&rt, q_tokens.clone(), &ab, shared(&bank, qas.len()))?;
            loss += l * qas.len() as f64;
            for ((pos, _), w) in asked.iter().zip(&weights) {
                gold_weight += f64::from(w[*pos]);
                uniform += 1.0 / chunk.len() as f64;
            }
            if chunk.len() > 1 {
                // Each question with one document alone: its own, then the
                // next one in the chunk.
                let alone = |shift: usize| -> Result<f64> {
                    let rows: Vec<usize> = asked
                        .iter()
                        .map(|(pos, _)| (pos + shift) % chunk.len())
                        .collect();
                    let memory = bank.clone().select(0, index_tensor(&rows, &self.device));
                    Ok(Self::teacher_forced_loss(&rt, q_tokens.clone(), &ab, memory)?.0)
                };
                let nqa = qas.len() as f64;
                n_single += qas.len();
                loss_own += alone(0)? * nqa;
                loss_other += alone(1)? * nqa;
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
            gold_weight: gold_weight / nqf,
            uniform_weight: uniform / nqf,
            em: em / nqf,
            f1: f1 / nqf,
            n_questions: nq,
        })
    }

    /// Teacher-forced answer NLL of the questions (`q_tokens [Q, n, d]`,
    /// their prompt + answer batch `ab`), question `i` aggregating over
    /// `memory[i]` (`[Q, m, d]`), and each question's attention per document.
    fn teacher_forced_loss(
        rt: &MacRuntime,
        q_tokens: Tensor<3>,
        ab: &AnswerBatch,
        memory: Tensor<3>,
    ) -> Result<(f64, Vec<Vec<f32>>)> {
        let (prefix, agg) = rt
            .model
            .prefix_from_memory(&rt.lm.model, q_tokens, memory)?;
        let loss = rt
            .lm
            .model
            .weighted_nll(&ab.batch, &ab.targets, &ab.weights, Some(&prefix))?
            .into_scalar::<f64>();
        Ok((loss, agg.doc_weights))
    }

    /// Writes `checkpoints/NAME` (model, optimizer state, step).
    pub fn save(&self, name: &str) -> Result<PathBuf> {
        let dir = self.run_dir.join("checkpoints").join(name);
        let tmp = self
            .run_dir
            .join("checkpoints")
            .join(format!("{name}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        let mut meta = CheckpointMeta::new(
            self.config.model.clone(),
            self.lm_path.clone(),
            self.encoder_dir.clone(),
            self.lm.model.kv_layout(),
        );
        meta.step = self.state.step as u64;
        Checkpoint::save(&tmp, &self.model.valid(), &meta)?;
        self.optim.save(tmp.join("optimizer.bpk")).map_err(|e| {
            anyhow::anyhow!("{}: cannot save optimizer state: {e:?}", tmp.display())
        })?;
        std::fs::write(
            tmp.join("trainer.json"),
            serde_json::to_string(&self.state)?,
        )?;
        sync_tree(&tmp)?;
        // Swap the finished directory into place. Between the two renames
        // only `NAME.old` exists: `resumable_checkpoint` falls back to it.
        let checkpoints = self.run_dir.join("checkpoints");
        let old = checkpoints.join(format!("{name}.old"));
        let _ = std::fs::remove_dir_all(&old);
        if dir.exists() {
            std::fs::rename(&dir, &old)?;
        }
        std::fs::rename(&tmp, &dir)?;
        sync_dir(&checkpoints)?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(dir)
    }

    /// Writes the `last` checkpoint when `step` is a multiple of
    /// `checkpoint_every`.
    fn checkpoint_if_due(&self, step: usize) -> Result<()> {
        let every = self.config.checkpoint_every;
        if every > 0 && step.is_multiple_of(every) {
            self.save("last")?;
        }
        Ok(())
    }

    fn log(&self, value: &serde_json::Value) -> Result<()> {
        let path = self.run_dir.join("metrics.jsonl");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("{}: cannot append", path.display()))?;
        writeln!(f, "{value}")?;
        Ok(())
    }

    fn validate_and_keep_best(&mut self) -> Result<ValidationStats> {
        let v = self.validate()?;
        self.log(&validation_line(&v))?;
        let share = self.config.own_document_share_at(v.step.saturating_sub(1));
        let loss = v.objective(share);
        let better = self.state.best_loss.is_none_or(|(best, _)| loss < best);
        if better {
            self.state.best_loss = Some((loss, v.step));
            self.save("best")?;
        }
        Ok(v)
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
            ema = Some(ema.map_or(s.loss, |e| 0.9 * e + 0.1 * s.loss));
            self.log(&serde_json::json!({
                "kind": "train", "step": s.step, "loss": s.loss,
                "answer_token_loss": s.answer_token_loss,
                "retrieval_loss": s.retrieval_loss, "lr": s.lr, "seconds": s.seconds,
            }))?;
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
            self.log(&serde_json::json!({
                "kind": "selection", "step": s.step, "loss": s.loss,
                "top1": s.top1, "seconds": s.seconds,
            }))?;
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
            let mut line = validation_line(&v);
            line["after_selection"] = true.into();
            line["selection_top1"] = top1_after.into();
            self.log(&line)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The retrieval loss against a hand computation: two questions over a
    /// bank of two documents of two tokens each, two identical blocks.
    #[test]
    fn retrieval_loss_is_minus_log_gold_share() {
        let device = mac_device::select("flex").unwrap();
        let w = Tensor::<2>::from_data(
            TensorData::new(vec![0.1f32, 0.2, 0.3, 0.4, 0.25, 0.25, 0.25, 0.25], [2, 4]),
            &device,
        );
        let loss = retrieval_loss(&[w.clone(), w], &[1, 0], 2, 2, &device).into_scalar::<f64>();
        let expected = -((0.7f64 + 1e-6).ln() + (0.5f64 + 1e-6).ln()) / 2.0;
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
    }

    /// `best` follows what the step trained: the own-document loss during
    /// the curriculum, the bank loss after it, their mix with a share.
    #[test]
    fn best_checkpoint_objective_follows_the_trained_mode() {
        let v = ValidationStats {
            step: 10,
            loss: 3.0,
            loss_unrelated_bank: Some(3.1),
            loss_own_document: Some(2.0),
            loss_other_document: Some(2.5),
            gold_weight: 0.2,
            uniform_weight: 0.125,
            em: 0.0,
            f1: 0.0,
            n_questions: 4,
        };
        assert_eq!(v.objective(1.0), 2.0);
        assert_eq!(v.objective(0.0), 3.0);
        assert!((v.objective(0.25) - 2.75).abs() < 1e-12);
        let no_own = ValidationStats {
            loss_own_document: None,
            ..v
        };
        assert_eq!(no_own.objective(1.0), 3.0);
        let mut cfg = TrainConfig::preset("tiny").unwrap();
        cfg.own_document_steps = 5;
        cfg.own_document_share = 0.5;
        assert_eq!(cfg.own_document_share_at(4), 1.0);
        assert_eq!(cfg.own_document_share_at(5), 0.5);
    }
}
