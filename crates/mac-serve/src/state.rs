//! What every handler shares: the memory, the bank as readers see it, the
//! workers' queues and the counters.

use std::sync::atomic::AtomicU64;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use mac_runtime::Memory;

use crate::metrics::Metrics;
use crate::workers::{AskJob, BankView, IngestJob};

/// What every handler shares.
pub struct AppState {
    /// The memory that answers.
    pub memory: Arc<dyn Memory>,
    /// The bank as readers see it.
    pub view: Arc<BankView>,
    /// Questions to the answerer.
    pub ask: Sender<AskJob>,
    /// Documents to the ingester; `None` on a read-only server.
    pub ingest: Option<Sender<IngestJob>>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The model id clients name.
    pub model_name: String,
    /// When the server started (Unix seconds).
    pub created: u64,
    /// Numbers the response ids.
    pub next_id: AtomicU64,
}
