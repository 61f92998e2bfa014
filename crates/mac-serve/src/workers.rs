//! The two threads that compute: the answerer (questions that arrive
//! together answered as one LM batch) and the ingester (the bank's one
//! writer; a document is acknowledged only once durably appended). Readers
//! never wait for the writer: after each commit the ingester publishes a
//! read-only snapshot of the bank, which answers use.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, RwLock};

use mac_bank::{AppendOutcome, MemoryBank};
use mac_model::AnswerGeneration;
use mac_runtime::{AskOptions, Ingested, Memory, NewDocument, SourcedAnswer};
use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// A question waiting for the answerer.
pub struct AskJob {
    /// The question.
    pub question: String,
    /// How its answer is generated.
    pub generation: AnswerGeneration,
    /// Receives the settled answer as it grows (streamed requests); dropped
    /// once the answer is sent.
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Where its answer goes.
    pub reply: oneshot::Sender<Result<SourcedAnswer, ApiError>>,
}

/// Documents waiting for the ingester.
pub struct IngestJob {
    /// The documents, checked.
    pub docs: Vec<NewDocument>,
    /// Where the outcome goes, once durable.
    pub reply: oneshot::Sender<Result<Vec<Ingested>, ApiError>>,
}

/// The bank as readers see it.
pub enum BankView {
    /// Snapshots the writer publishes after each commit.
    Published(RwLock<Arc<MemoryBank>>),
    /// A read-only server: the bank reopened read-only at each read, so it
    /// sees what another process appends.
    Reopened(PathBuf),
}

impl BankView {
    /// The bank as of the last commit.
    pub fn current(&self) -> Result<Arc<MemoryBank>, ApiError> {
        match self {
            Self::Published(lock) => Ok(lock.read().unwrap_or_else(|p| p.into_inner()).clone()),
            Self::Reopened(dir) => MemoryBank::open_read_only(dir)
                .map(Arc::new)
                .map_err(|e| ApiError::internal(e.to_string())),
        }
    }

    fn publish(&self, bank: MemoryBank) {
        if let Self::Published(lock) = self {
            *lock.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(bank);
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Answers questions with `opts` until every sender is gone. Each round
/// takes the first waiting question and every other one already waiting (up
/// to `max_batch`) and answers them as one batch.
pub fn run_answerer(
    rt: Arc<dyn Memory>,
    view: Arc<BankView>,
    opts: AskOptions,
    max_batch: usize,
    metrics: Arc<Metrics>,
    jobs: Receiver<AskJob>,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch.max(1) {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let result = view.current().and_then(|bank| {
            if bank.is_empty() {
                return Err(ApiError::empty_bank());
            }
            let questions: Vec<&str> = batch.iter().map(|j| j.question.as_str()).collect();
            let generation: Vec<AnswerGeneration> = batch.iter().map(|j| j.generation).collect();
            let mut watch = |i: usize, so_far: &str| {
                if let Some(progress) = &batch[i].progress {
                    // A client that left is no reason to stop the others.
                    let _ = progress.send(so_far.to_string());
                }
            };
            let ask = || rt.ask_with(&bank, &questions, &generation, &opts, &mut watch);
            catch_unwind(AssertUnwindSafe(ask))
                .map_err(|p| {
                    ApiError::internal(format!("answering failed: {}", panic_message(&*p)))
                })?
                .map_err(ApiError::from)
        });
        match result {
            Ok(answers) => {
                metrics.answered(batch.len() as u64);
                for (job, answer) in batch.into_iter().zip(answers) {
                    let _ = job.reply.send(Ok(answer));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Most documents amortized and appended in one round of the ingester.
const INGEST_ROUND_DOCS: usize = 32;

/// Ingests documents until every sender is gone, as the bank's one writer.
/// Requests waiting together are amortized and committed together; each
/// is answered only after its documents are durable, and a snapshot of the
/// bank is published for the readers after every round.
pub fn run_ingester(
    rt: Arc<dyn Memory>,
    mut bank: MemoryBank,
    view: Arc<BankView>,
    metrics: Arc<Metrics>,
    jobs: Receiver<IngestJob>,
) {
    while let Ok(first) = jobs.recv() {
        let mut round = vec![first];
        let mut docs: usize = round[0].docs.len();
        while docs < INGEST_ROUND_DOCS {
            match jobs.try_recv() {
                Ok(job) => {
                    docs += job.docs.len();
                    round.push(job);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let all: Vec<NewDocument> = round.iter().flat_map(|j| j.docs.iter().cloned()).collect();
        let result = catch_unwind(AssertUnwindSafe(|| rt.ingest(&mut bank, &all, &mut |_| {})))
            .map_err(|p| ApiError::internal(format!("ingest failed: {}", panic_message(&*p))))
            .and_then(|r| r.map_err(ApiError::from));
        // Whatever was committed, readers see it.
        match bank.reader() {
            Ok(reader) => view.publish(reader),
            Err(e) => eprintln!("mac serve: cannot publish the bank to readers: {e}"),
        }
        metrics.bank_entries(bank.len() as u64);
        match result {
            Ok(outcomes) => {
                let stored = outcomes
                    .iter()
                    .filter(|o| matches!(o.outcome, AppendOutcome::Stored(_)))
                    .count() as u64;
                metrics.ingested(stored, outcomes.len() as u64 - stored);
                let mut rest = outcomes.into_iter();
                for job in round {
                    let mine: Vec<Ingested> = rest.by_ref().take(job.docs.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                for job in round {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
