//! # mac-serve — the memory as a service
//!
//! MAC (Tack et al., *Online Adaptation of Language Models with a Memory of
//! Amortized Contexts*, NeurIPS 2024) keeps a frozen LM current by
//! amortizing each new document into a memory bank. This crate serves that
//! over HTTP (axum):
//!
//! * `POST /v1/documents` — documents amortized and durably appended to the
//!   bank before the response (201 with their ids; duplicates reported);
//!   `GET /v1/documents/{id}`, `GET /v1/bank`.
//! * `POST /v1/chat/completions`, `POST /v1/completions` — OpenAI-compatible
//!   (plain or server-sent events): the last user message is answered from
//!   the bank, and the `mac` field of the response lists the documents drawn
//!   on with their share of the attention; `GET /v1/models`.
//! * `GET /health`, `GET /metrics` (Prometheus).
//!
//! Two threads compute ([`workers`]): the answerer batches the questions that
//! wait together into one LM batch; the ingester is the bank's one writer
//! and publishes a read-only snapshot after each commit, so answering never
//! waits for ingest. Bad requests get a 4xx naming the problem and change
//! nothing ([`api`] has the limits). Shutdown (SIGINT, SIGTERM) stops
//! accepting connections and finishes the requests in flight.
//!
//! ```
//! use mac_serve::api::{parse_json, ChatRequest};
//!
//! // The question of a chat request is its last user message.
//! let body = br#"{"messages": [{"role": "system", "content": "Be brief."},
//!                              {"role": "user", "content": "Where was Ada born?"}]}"#;
//! let request: ChatRequest = parse_json(body).unwrap();
//! assert_eq!(request.question().unwrap(), "Where was Ada born?");
//! // A malformed one is a 400 that says why.
//! assert!(parse_json::<ChatRequest>(b"{\"messages\": 3}").is_err());
//! ```

pub mod api;
mod completion;
mod error;
mod metrics;
mod routes;
mod state;
pub mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use mac_bank::MemoryBank;
use mac_runtime::{AskOptions, Memory, RuntimeError};

pub use error::ApiError;
pub use metrics::Metrics;
use state::AppState;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The bank could not be opened or does not fit the model.
    #[error(transparent)]
    Bank(#[from] RuntimeError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Serve the bank without ingest (no writer lock taken; the bank is
    /// reopened at each read, so another process's appends are seen).
    pub read_only: bool,
    /// The model id clients name (`model` in requests, `/v1/models`).
    pub model_name: String,
    /// How questions read the bank and what comes back with an answer.
    pub ask: AskOptions,
    /// Most questions answered in one LM batch.
    pub max_batch: usize,
    /// Keep the documents' key/values beside the bank at this precision
    /// ([`Memory::store_key_values`]; span memory): the bank's documents
    /// read into the store at start, every ingest filling it. A bank that
    /// has a store is read through it whether or not this is set.
    pub store_kv: Option<mac_bank::Precision>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            read_only: false,
            model_name: "mac".into(),
            ask: AskOptions::default(),
            max_batch: 8,
            store_kv: None,
        }
    }
}

/// A server with its workers running, ready to accept connections.
pub struct Server {
    state: Arc<AppState>,
    workers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Opens the bank in `bank_dir` (created when absent, unless read-only)
    /// and starts the workers.
    pub fn start(
        memory: Box<dyn Memory>,
        bank_dir: &Path,
        opts: ServeOptions,
    ) -> Result<Self, ServeError> {
        let memory: Arc<dyn Memory> = Arc::from(memory);
        let metrics = Arc::new(Metrics::default());
        let mut workers = Vec::new();
        let (view, ingest) = if opts.read_only {
            if opts.store_kv.is_some() {
                return Err(RuntimeError::input(
                    "storing key/values needs the bank's writer, not --read-only".into(),
                )
                .into());
            }
            let bank = MemoryBank::open_read_only(bank_dir).map_err(RuntimeError::from)?;
            bank.check_modulation_shape(memory.bank_shape())
                .map_err(RuntimeError::from)?;
            metrics.bank_entries(bank.len() as u64);
            (
                Arc::new(workers::BankView::Reopened(bank_dir.to_path_buf())),
                None,
            )
        } else {
            let bank = memory.open_bank_writer(bank_dir)?;
            if let Some(precision) = opts.store_kv {
                memory.store_key_values(&bank, precision, &mut |_| {})?;
            }
            metrics.bank_entries(bank.len() as u64);
            let reader = bank.reader().map_err(RuntimeError::from)?;
            let view = Arc::new(workers::BankView::Published(RwLock::new(Arc::new(reader))));
            let (tx, rx) = mpsc::channel();
            let (rt, v, m) = (memory.clone(), view.clone(), metrics.clone());
            workers.push(spawn("mac-ingest", move || {
                workers::run_ingester(rt, bank, v, m, rx)
            })?);
            (view, Some(tx))
        };
        let (ask, rx) = mpsc::channel();
        let (rt, v, m) = (memory.clone(), view.clone(), metrics.clone());
        let (ask_opts, max_batch) = (opts.ask, opts.max_batch);
        workers.push(spawn("mac-answer", move || {
            workers::run_answerer(rt, v, ask_opts, max_batch, m, rx)
        })?);
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let state = Arc::new(AppState {
            memory,
            view,
            ask,
            ingest,
            metrics,
            model_name: opts.model_name,
            created,
            next_id: AtomicU64::new(0),
        });
        Ok(Self { state, workers })
    }

    /// Entries in the bank now.
    pub fn bank_entries(&self) -> usize {
        self.state.view.current().map_or(0, |b| b.len())
    }

    /// Serves on `listener` until `shutdown` completes, then finishes the
    /// requests in flight (every acknowledged document is durable) and
    /// stops the workers.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Server { state, workers } = self;
        axum::serve(listener, routes::router(state))
            .with_graceful_shutdown(shutdown)
            .await?;
        // The router and every handler are gone: the workers' queues close,
        // they finish what they hold and return.
        tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await
        .map_err(std::io::Error::other)?;
        Ok(())
    }

    /// Binds `addr`, calls `on_listening` with the bound address (port 0
    /// picks a free one), and serves until SIGINT or SIGTERM.
    pub fn run_until_signal(
        self,
        addr: SocketAddr,
        on_listening: impl FnOnce(SocketAddr),
    ) -> Result<(), ServeError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?;
            on_listening(listener.local_addr()?);
            self.run(listener, shutdown_signal()).await
        })
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, ServeError> {
    Ok(std::thread::Builder::new().name(name.into()).spawn(f)?)
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
