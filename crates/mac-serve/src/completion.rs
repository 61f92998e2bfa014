//! Answering a completion request: the question sent to the answerer with
//! its generation settings, and the answer returned whole or streamed as
//! server-sent events, token by token as it settles.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use mac_runtime::SourcedAnswer;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::api::Common;
use crate::error::ApiError;
use crate::state::AppState;
use crate::workers::AskJob;

type Reply = oneshot::Receiver<Result<SourcedAnswer, ApiError>>;

/// A question on its way to an answer, named for its response.
pub(crate) struct Request {
    /// The response id (`chatcmpl-…`, `cmpl-…`).
    pub id: String,
    /// When it was asked (Unix seconds).
    pub created: u64,
    question: String,
    /// The seed of its draws when it names none: its own.
    fresh_seed: u64,
}

/// An answered question, with what every completion response carries.
pub(crate) struct Completion {
    /// The response id.
    pub id: String,
    /// When it was asked (Unix seconds).
    pub created: u64,
    /// The answer and its documents.
    pub answer: SourcedAnswer,
    usage: Value,
}

impl Completion {
    /// OpenAI's `finish_reason`: `length` when the token limit cut the
    /// answer, else `stop`.
    pub fn finish_reason(&self) -> Value {
        json!(if self.answer.hit_token_limit {
            "length"
        } else {
            "stop"
        })
    }

    /// `v` with the token counts and the `mac` extension field (the
    /// documents the answer drew on, the span read for a memory that reads
    /// spans, and where the answer's time went).
    pub fn with_usage_and_sources(&self, mut v: Value) -> Value {
        v["usage"] = self.usage.clone();
        let a = &self.answer;
        v["mac"] = json!({"documents": a.documents, "bank_entries": a.bank_entries,
                          "timings": a.timings});
        if let Some(span) = &a.span {
            v["mac"]["span"] = json!(span);
        }
        v
    }
}

/// Writes the chunk that carries a piece of text, with a finish reason.
pub(crate) type PieceChunk = Box<dyn Fn(&str, Value) -> Value + Send>;

/// How a streamed completion is written: its opening chunk (if any), a
/// chunk for a piece of the answer, and the last chunk (empty piece, the
/// finish reason, usage and sources).
pub(crate) struct StreamFormat {
    /// Sent before any text (the chat API's role chunk).
    pub opening: Option<Value>,
    /// The chunk carrying `text`, with `finish_reason`.
    pub piece: PieceChunk,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl AppState {
    /// Names a request for `question` (`id_prefix-…`).
    pub(crate) fn request(&self, question: String, id_prefix: &str) -> Request {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        Request {
            id: format!("{id_prefix}-{}-{n}", self.created),
            created: now_secs(),
            question,
            fresh_seed: (self.created << 20) ^ n,
        }
    }

    /// Sends the question to the answerer with the generation `common`
    /// asks for; `progress` receives the settled answer as it grows.
    fn send(
        &self,
        req: &Request,
        common: &Common,
        progress: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<Reply, ApiError> {
        let generation = common.generation(req.fresh_seed)?;
        let (reply, answer) = oneshot::channel();
        self.ask
            .send(AskJob {
                question: req.question.clone(),
                generation,
                progress,
                reply,
            })
            .map_err(|_| ApiError::unavailable())?;
        Ok(answer)
    }

    /// The whole answer to `req`.
    pub(crate) async fn complete(
        &self,
        req: Request,
        common: &Common,
    ) -> Result<Completion, ApiError> {
        let reply = self.send(&req, common, None)?;
        let answer = received(reply.await)?;
        Ok(self.completion(&req, answer))
    }

    fn completion(&self, req: &Request, answer: SourcedAnswer) -> Completion {
        let prompt = answer.prompt_tokens;
        let completion = answer.generated_tokens;
        Completion {
            id: req.id.clone(),
            created: req.created,
            usage: json!({"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}),
            answer,
        }
    }

    /// The answer to `req` as server-sent events: each piece of the answer
    /// as soon as it is settled, then the finishing chunk and `[DONE]`.
    /// An error before the first piece is an ordinary error response; one
    /// after it, an `{"error": ...}` event.
    pub(crate) async fn stream(
        self: Arc<Self>,
        req: Request,
        common: &Common,
        format: StreamFormat,
    ) -> Result<Response, ApiError> {
        let (progress, mut settled) = mpsc::unbounded_channel();
        let reply = self.send(&req, common, Some(progress))?;
        // The answerer drops `progress` once it has replied: no piece means
        // the answer, or its error, is already there.
        let pending = settled.recv().await;
        let (reply, answer) = match pending {
            Some(_) => (Some(reply), None),
            None => (None, Some(received(reply.await)?)),
        };
        let state = Streaming {
            app: self,
            req,
            format,
            pending,
            settled,
            reply,
            answer,
            emitted: String::new(),
            stage: Stage::Opening,
        };
        let events = futures_util::stream::unfold(state, Streaming::next_events)
            .flat_map(futures_util::stream::iter)
            .chain(futures_util::stream::once(async {
                Event::default().data("[DONE]")
            }))
            .map(Ok::<_, Infallible>);
        Ok(Sse::new(events).into_response())
    }
}

/// Where a streamed answer is.
enum Stage {
    Opening,
    Pieces,
    Finish,
    Done,
}

/// A streamed answer between events.
struct Streaming {
    app: Arc<AppState>,
    req: Request,
    format: StreamFormat,
    /// A settled text received and not yet sent.
    pending: Option<String>,
    settled: mpsc::UnboundedReceiver<String>,
    reply: Option<Reply>,
    answer: Option<SourcedAnswer>,
    /// The answer's text sent so far.
    emitted: String,
    stage: Stage,
}

fn event(v: &Value) -> Event {
    Event::default().data(v.to_string())
}

impl Streaming {
    /// The next events to send, or `None` after the last.
    async fn next_events(mut self) -> Option<(Vec<Event>, Self)> {
        loop {
            match self.stage {
                Stage::Opening => {
                    self.stage = Stage::Pieces;
                    if let Some(v) = self.format.opening.take() {
                        return Some((vec![event(&v)], self));
                    }
                }
                Stage::Pieces => {
                    // Closed once the answer is sent (at once when it came
                    // before any piece).
                    let text = match self.pending.take() {
                        Some(t) => Some(t),
                        None => self.settled.recv().await,
                    };
                    match text {
                        Some(t) => {
                            if let Some(piece) = self.advance(&t) {
                                let chunk = (self.format.piece)(&piece, Value::Null);
                                return Some((vec![event(&chunk)], self));
                            }
                        }
                        None => self.stage = Stage::Finish,
                    }
                }
                Stage::Finish => {
                    self.stage = Stage::Done;
                    let answer = match (self.answer.take(), self.reply.take()) {
                        (Some(a), _) => Ok(a),
                        (None, Some(reply)) => received(reply.await),
                        (None, None) => Err(ApiError::internal("the answer went missing")),
                    };
                    let events = match answer {
                        Ok(a) => {
                            let mut out = Vec::new();
                            if let Some(piece) = self.advance(&a.text) {
                                out.push(event(&(self.format.piece)(&piece, Value::Null)));
                            }
                            let c = self.app.completion(&self.req, a);
                            let last = (self.format.piece)("", c.finish_reason());
                            out.push(event(&c.with_usage_and_sources(last)));
                            out
                        }
                        Err(e) => vec![event(&e.body())],
                    };
                    return Some((events, self));
                }
                Stage::Done => return None,
            }
        }
    }

    /// The part of `text` past what was sent, when `text` extends it (the
    /// settled answer only grows).
    fn advance(&mut self, text: &str) -> Option<String> {
        if text.len() > self.emitted.len() && text.starts_with(self.emitted.as_str()) {
            let piece = text[self.emitted.len()..].to_string();
            self.emitted = text.to_string();
            Some(piece)
        } else {
            None
        }
    }
}

fn received(
    r: Result<Result<SourcedAnswer, ApiError>, oneshot::error::RecvError>,
) -> Result<SourcedAnswer, ApiError> {
    r.map_err(|_| ApiError::internal("the answering worker stopped"))?
}
