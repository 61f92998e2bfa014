//! The HTTP routes and their responses.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{MatchedPath, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mac_memory::AppendOutcome;
use mac_model::prompt::{continuation_ids, prompt_ids, question_prompt};
use mac_model::{MacRuntime, SourcedAnswer};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::api::{self, ChatRequest, CompletionRequest, MAX_BODY_BYTES};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::workers::{AskJob, BankView, IngestJob};

/// What every handler shares.
pub struct AppState {
    /// The loaded model (for token counts).
    pub runtime: Arc<MacRuntime>,
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

type Shared = Arc<AppState>;
type Body = Result<Bytes, BytesRejection>;

/// The router of every route, with the body limit and request metrics.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/documents", post(add_documents))
        .route("/v1/documents/{id}", get(document))
        .route("/v1/bank", get(bank_info))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn track(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let t0 = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .request(&route, resp.status().as_u16(), t0.elapsed());
    resp
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route {} {}: see /v1/models, /v1/chat/completions, /v1/completions, /v1/documents, /v1/bank, /health, /metrics",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
}

async fn health(State(st): State<Shared>) -> Result<Json<Value>, ApiError> {
    let bank = st.view.current()?;
    Ok(Json(json!({
        "status": "ok",
        "bank_entries": bank.len(),
        "read_only": st.ingest.is_none(),
    })))
}

async fn metrics(State(st): State<Shared>) -> Response {
    if let Ok(bank) = st.view.current() {
        st.metrics.bank_entries(bank.len() as u64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

fn model_object(st: &AppState) -> Value {
    json!({"id": st.model_name, "object": "model", "created": st.created, "owned_by": "mac-rs"})
}

async fn models(State(st): State<Shared>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_object(&st)]}))
}

async fn model(
    State(st): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    api::check_model(Some(&id), &st.model_name)?;
    Ok(Json(model_object(&st)))
}

impl AppState {
    async fn answer(&self, question: String) -> Result<SourcedAnswer, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.ask
            .send(AskJob { question, reply })
            .map_err(|_| ApiError::unavailable())?;
        answer
            .await
            .map_err(|_| ApiError::internal("the answering worker stopped"))?
    }

    fn usage(&self, question: &str, answer: &str) -> Value {
        let tok = &self.runtime.lm.tokenizer;
        let prompt = prompt_ids(tok, &question_prompt(question)).map_or(0, |t| t.len());
        let completion = continuation_ids(tok, answer).map_or(0, |t| t.len());
        json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
    }

    fn id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{}-{n}", self.created)
    }
}

/// An answered question, with what every completion response carries.
struct Completion {
    id: String,
    created: u64,
    answer: SourcedAnswer,
    usage: Value,
}

impl Completion {
    /// `v` with the token counts and the `mac` extension field (the
    /// documents the answer drew on).
    fn with_usage_and_sources(&self, mut v: Value) -> Value {
        v["usage"] = self.usage.clone();
        v["mac"] =
            json!({"documents": self.answer.documents, "bank_entries": self.answer.bank_entries});
        v
    }
}

impl AppState {
    /// Answers `question` and names the response (`id_prefix-…`).
    async fn complete(&self, question: String, id_prefix: &str) -> Result<Completion, ApiError> {
        let answer = self.answer(question.clone()).await?;
        Ok(Completion {
            id: self.id(id_prefix),
            created: now_secs(),
            usage: self.usage(&question, &answer.text),
            answer,
        })
    }
}

fn sse(events: Vec<Value>) -> Response {
    let events = events
        .into_iter()
        .map(|v| Event::default().data(v.to_string()))
        .chain(std::iter::once(Event::default().data("[DONE]")))
        .map(Ok::<_, Infallible>);
    Sse::new(futures_util::stream::iter(events)).into_response()
}

async fn chat_completions(State(st): State<Shared>, body: Body) -> Result<Response, ApiError> {
    let req: ChatRequest = api::parse_json(&body?)?;
    req.common.check(&st.model_name)?;
    let c = st.complete(req.question()?, "chatcmpl").await?;
    let text = &c.answer.text;
    if req.common.stream {
        // The answer (at most 16 tokens) is generated whole, then sent as
        // one content delta between the role chunk and the finishing chunk.
        let chunk = |delta: Value, finish: Value| {
            json!({"id": c.id, "object": "chat.completion.chunk", "created": c.created,
                   "model": st.model_name,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]})
        };
        return Ok(sse(vec![
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": text}), Value::Null),
            c.with_usage_and_sources(chunk(json!({}), json!("stop"))),
        ]));
    }
    let full = json!({
        "id": c.id,
        "object": "chat.completion",
        "created": c.created,
        "model": st.model_name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            "logprobs": null,
        }],
    });
    Ok(Json(c.with_usage_and_sources(full)).into_response())
}

async fn completions(State(st): State<Shared>, body: Body) -> Result<Response, ApiError> {
    let req: CompletionRequest = api::parse_json(&body?)?;
    req.common.check(&st.model_name)?;
    let c = st.complete(req.question()?, "cmpl").await?;
    let body = |text: &str, finish: Value| {
        json!({"id": c.id, "object": "text_completion", "created": c.created, "model": st.model_name,
               "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}]})
    };
    let text = &c.answer.text;
    if req.common.stream {
        let last = c.with_usage_and_sources(body("", json!("stop")));
        return Ok(sse(vec![body(text, Value::Null), last]));
    }
    Ok(Json(c.with_usage_and_sources(body(text, json!("stop")))).into_response())
}

async fn add_documents(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = body?;
    let sender = st.ingest.as_ref().ok_or_else(ApiError::read_only)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("invalid"));
    let docs = api::parse_documents(content_type, &body)?;
    let (reply, done) = oneshot::channel();
    sender
        .send(IngestJob { docs, reply })
        .map_err(|_| ApiError::unavailable())?;
    let outcomes = done
        .await
        .map_err(|_| ApiError::internal("the ingest worker stopped"))??;
    let any_stored = outcomes
        .iter()
        .any(|o| matches!(o.outcome, AppendOutcome::Stored(_)));
    let documents: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            let (id, status) = match o.outcome {
                AppendOutcome::Stored(id) => (id, "stored"),
                AppendOutcome::Duplicate(id) => (id, "duplicate"),
            };
            json!({"id": id, "status": status, "truncated_tokens": o.truncated_tokens})
        })
        .collect();
    let entries = st.view.current().map(|b| b.len()).unwrap_or(0);
    let status = if any_stored {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"documents": documents, "bank_entries": entries})),
    )
        .into_response())
}

async fn document(
    State(st): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("document id `{id}` is not a number")))?;
    let bank = st.view.current()?;
    let index = bank.position_of(id).ok_or_else(|| {
        ApiError::not_found(format!(
            "no document {id} in the bank ({} entries)",
            bank.len()
        ))
    })?;
    let entry = bank
        .read(index)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({
        "id": entry.id,
        "source": entry.source,
        "text": entry.text,
        "time_ms": entry.time_ms,
    })))
}

async fn bank_info(State(st): State<Shared>) -> Result<Json<Value>, ApiError> {
    let bank = st.view.current()?;
    let shape = bank.shape();
    Ok(Json(json!({
        "bank": bank.dir().display().to_string(),
        "entries": bank.len(),
        "n_tokens": shape.n_tokens,
        "d_mod": shape.d_mod,
        "key_dim": shape.key_dim,
        "bytes": bank.size_bytes(),
        "producer": bank.producer(),
        "read_only": st.ingest.is_none(),
    })))
}
