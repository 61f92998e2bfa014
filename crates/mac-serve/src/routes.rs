//! The HTTP routes and their responses.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{MatchedPath, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mac_bank::AppendOutcome;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::api::{self, ChatRequest, CompletionRequest, MAX_BODY_BYTES};
use crate::completion::StreamFormat;
use crate::error::ApiError;
use crate::state::AppState;
use crate::workers::IngestJob;

type Shared = Arc<AppState>;
type Body = Result<Bytes, BytesRejection>;

/// A body that could not be read: 413 over the limit, else 400 (or 500).
impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::too_large(format!("the request body is over {} bytes", MAX_BODY_BYTES))
        } else if status.is_client_error() {
            Self::bad_request(format!("cannot read the request body: {}", r.body_text()))
        } else {
            Self::internal(format!("cannot read the request body: {}", r.body_text()))
        }
    }
}

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
        "memory": st.memory.name(),
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

async fn chat_completions(State(st): State<Shared>, body: Body) -> Result<Response, ApiError> {
    let req: ChatRequest = api::parse_json(&body?)?;
    req.common.check(&st.model_name)?;
    let asked = st.request(req.question()?, "chatcmpl");
    let chunk = {
        let (id, created, model) = (asked.id.clone(), asked.created, st.model_name.clone());
        move |delta: Value, finish: Value| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]})
        }
    };
    if req.common.stream {
        let opening = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
        let format = StreamFormat {
            opening: Some(opening),
            piece: Box::new(move |text, finish| {
                // The finishing chunk's delta is empty, as OpenAI's.
                let delta = if text.is_empty() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                chunk(delta, finish)
            }),
        };
        return st.clone().stream(asked, &req.common, format).await;
    }
    let c = st.complete(asked, &req.common).await?;
    let full = json!({
        "id": c.id,
        "object": "chat.completion",
        "created": c.created,
        "model": st.model_name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": c.answer.text},
            "finish_reason": c.finish_reason(),
            "logprobs": null,
        }],
    });
    Ok(Json(c.with_usage_and_sources(full)).into_response())
}

async fn completions(State(st): State<Shared>, body: Body) -> Result<Response, ApiError> {
    let req: CompletionRequest = api::parse_json(&body?)?;
    req.common.check(&st.model_name)?;
    let asked = st.request(req.question()?, "cmpl");
    let body = {
        let (id, created, model) = (asked.id.clone(), asked.created, st.model_name.clone());
        move |text: &str, finish: Value| {
            json!({"id": id, "object": "text_completion", "created": created, "model": model,
                   "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}]})
        }
    };
    if req.common.stream {
        let format = StreamFormat {
            opening: None,
            piece: Box::new(body),
        };
        return st.clone().stream(asked, &req.common, format).await;
    }
    let c = st.complete(asked, &req.common).await?;
    Ok(Json(c.with_usage_and_sources(body(&c.answer.text, c.finish_reason()))).into_response())
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
        "memory": st.memory.name(),
        "read_only": st.ingest.is_none(),
    })))
}
