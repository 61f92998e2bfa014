//! What clients send, checked before anything runs: the OpenAI requests
//! (chat and text completions) and documents to ingest, with the documented
//! limits. A request that fails here changes nothing.

use mac_model::{AnswerGeneration, Sampling, MAX_ANSWER_TOKENS};
use mac_runtime::NewDocument;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// Largest request body (bytes); above it: 413.
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// Largest document text (bytes of UTF-8); above it: 413. The encoder reads
/// the first 256 tokens of a document; longer ones are stored truncated.
pub const MAX_DOCUMENT_BYTES: usize = 256 << 10;
/// Most documents in one ingest request; above it: 413.
pub const MAX_DOCUMENTS_PER_REQUEST: usize = 256;
/// Largest `source` label (bytes); above it: 413.
pub const MAX_SOURCE_BYTES: usize = 1024;
/// Largest question (bytes); above it: 413.
pub const MAX_QUESTION_BYTES: usize = 4096;
/// Most messages in one chat request; above it: 400.
pub const MAX_MESSAGES: usize = 64;
/// Most tokens a completion may ask for (`max_tokens`); above it: 400.
/// Without `max_tokens` an answer has at most
/// [`mac_model::MAX_ANSWER_TOKENS`].
pub const MAX_COMPLETION_TOKENS: u64 = 256;
/// Highest `temperature` accepted (as OpenAI's API).
pub const MAX_TEMPERATURE: f64 = 2.0;

/// The source recorded for a document sent without one.
pub const DEFAULT_SOURCE: &str = "http";

/// Parses a JSON body into `T`, naming what is wrong.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::bad_request(format!("malformed JSON: {e}"))
        } else {
            ApiError::bad_request(format!("invalid request: {e}"))
        }
    })
}

/// The `model` of a request must be the one served (or absent).
pub fn check_model(requested: Option<&str>, served: &str) -> Result<(), ApiError> {
    match requested {
        Some(m) if m != served => Err(ApiError::unknown_model(m, served)),
        _ => Ok(()),
    }
}

/// Fields both completion routes share. The answer is the first non-empty line of
/// at most `max_tokens` generated tokens ([`mac_model::MAX_ANSWER_TOKENS`]
/// without it). Unlike OpenAI's API, a request without `temperature` is
/// answered greedily (temperature 0), so that it equals `mac ask`; with a
/// temperature above 0, tokens are drawn from the `top_p` nucleus,
/// reproducibly for a given `seed`. Other sampling parameters
/// (`presence_penalty`, `stop`, ...) are accepted and ignored.
#[derive(Debug, Deserialize)]
pub struct Common {
    /// The model asked for.
    #[serde(default)]
    pub model: Option<String>,
    /// Server-sent events instead of one JSON response.
    #[serde(default)]
    pub stream: bool,
    /// Choices asked for: only 1.
    #[serde(default)]
    pub n: Option<u64>,
    /// Most tokens to generate.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// The chat API's newer name for `max_tokens` (wins when both are given).
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// 0 (the default here): greedy; up to [`MAX_TEMPERATURE`].
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling's probability mass, in (0, 1]; 1 by default.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Seed of the draws (a fresh one per request without it).
    #[serde(default)]
    pub seed: Option<u64>,
}

impl Common {
    /// Checks the model and `n`.
    pub fn check(&self, served: &str) -> Result<(), ApiError> {
        check_model(self.model.as_deref(), served)?;
        match self.n {
            Some(n) if n != 1 => Err(ApiError::bad_request(format!(
                "n = {n}: this server returns exactly one choice (n = 1)"
            ))),
            _ => Ok(()),
        }
    }

    /// How the answer is generated, checked; `fresh_seed` is the seed of a
    /// request that names none.
    pub fn generation(&self, fresh_seed: u64) -> Result<AnswerGeneration, ApiError> {
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => MAX_ANSWER_TOKENS,
            Some(n @ 1..=MAX_COMPLETION_TOKENS) => n as usize,
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "max_tokens = {n}: it must be between 1 and {MAX_COMPLETION_TOKENS}"
                )))
            }
        };
        let temperature = self.temperature.unwrap_or(0.0);
        if !(0.0..=MAX_TEMPERATURE).contains(&temperature) {
            return Err(ApiError::bad_request(format!(
                "temperature = {temperature}: it must be between 0 and {MAX_TEMPERATURE}"
            )));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::bad_request(format!(
                "top_p = {top_p}: it must be above 0 and at most 1"
            )));
        }
        Ok(AnswerGeneration {
            max_tokens,
            sampling: Sampling {
                temperature: temperature as f32,
                top_p: top_p as f32,
                seed: self.seed.unwrap_or(fresh_seed),
            },
        })
    }
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Model, stream, n.
    #[serde(flatten)]
    pub common: Common,
    /// The conversation; the last `user` message is the question.
    pub messages: Vec<ChatMessage>,
}

/// One chat message.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// A string, or a list of `{"type": "text", "text": ...}` parts.
    #[serde(default)]
    pub content: Value,
}

impl ChatRequest {
    /// The question: the text of the last `user` message.
    pub fn question(&self) -> Result<String, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::bad_request("`messages` is empty"));
        }
        if self.messages.len() > MAX_MESSAGES {
            return Err(ApiError::bad_request(format!(
                "{} messages: at most {MAX_MESSAGES} are accepted",
                self.messages.len()
            )));
        }
        for (i, m) in self.messages.iter().enumerate() {
            if !matches!(
                m.role.as_str(),
                "system" | "developer" | "user" | "assistant" | "tool"
            ) {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].role `{}` is not one of system, developer, user, assistant, tool",
                    m.role
                )));
            }
        }
        let (i, last) = self
            .messages
            .iter()
            .enumerate()
            .rev()
            .find(|(_, m)| m.role == "user")
            .ok_or_else(|| {
                ApiError::bad_request("no message with role `user`: nothing to answer")
            })?;
        let text = message_text(&last.content, &format!("messages[{i}].content"))?;
        check_question(&text, &format!("messages[{i}].content"))?;
        Ok(text)
    }
}

fn message_text(content: &Value, what: &str) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push(t.as_str()),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "{what}[{j}]: only text parts ({{\"type\": \"text\", \"text\": ...}}) are understood"
                        )))
                    }
                }
            }
            Ok(text.join("\n"))
        }
        Value::Null => Err(ApiError::bad_request(format!("{what} is missing"))),
        _ => Err(ApiError::bad_request(format!(
            "{what} must be a string or a list of text parts"
        ))),
    }
}

fn check_question(text: &str, what: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(format!(
            "{what}: the question is empty"
        )));
    }
    if text.len() > MAX_QUESTION_BYTES {
        return Err(ApiError::too_large(format!(
            "{what}: the question has {} bytes, the limit is {MAX_QUESTION_BYTES}",
            text.len()
        )));
    }
    Ok(())
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// Model, stream, n.
    #[serde(flatten)]
    pub common: Common,
    /// The question: a string, or a list holding one string.
    #[serde(default)]
    pub prompt: Value,
}

impl CompletionRequest {
    /// The question.
    pub fn question(&self) -> Result<String, ApiError> {
        let text = match &self.prompt {
            Value::String(s) => s.clone(),
            Value::Array(items) => match items.as_slice() {
                [Value::String(s)] => s.clone(),
                _ => return Err(ApiError::bad_request(
                    "`prompt` as a list must hold exactly one string (one question per request)",
                )),
            },
            Value::Null => return Err(ApiError::bad_request("`prompt` is missing")),
            _ => return Err(ApiError::bad_request("`prompt` must be a string")),
        };
        check_question(&text, "prompt")?;
        Ok(text)
    }
}

/// One document as JSON: `{"text": ..., "source": ...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentIn {
    text: String,
    #[serde(default)]
    source: Option<String>,
}

/// The documents of a `POST /v1/documents` body: JSON (one object or a list
/// of them) or `text/plain` (the body is one document). All are checked
/// before any is stored.
pub fn parse_documents(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<NewDocument>, ApiError> {
    let media = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|| "application/json".into());
    let docs = match media.as_str() {
        "application/json" => match parse_json::<Value>(body)? {
            Value::Array(items) => {
                if items.len() > MAX_DOCUMENTS_PER_REQUEST {
                    return Err(ApiError::too_large(format!(
                        "{} documents in one request: the limit is {MAX_DOCUMENTS_PER_REQUEST}",
                        items.len()
                    )));
                }
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| document(v, &format!("documents[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?
            }
            v @ Value::Object(_) => vec![document(v, "the document")?],
            _ => return Err(ApiError::bad_request(
                "the body must be a document {\"text\": ..., \"source\": ...} or a list of them",
            )),
        },
        "text/plain" => {
            let text = std::str::from_utf8(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the text/plain body is not valid UTF-8 (first bad byte at offset {})",
                    e.valid_up_to()
                ))
            })?;
            vec![checked(text.to_string(), None, "the document")?]
        }
        other => {
            return Err(ApiError::unsupported_media(format!(
                "content type `{other}`: send application/json or text/plain"
            )))
        }
    };
    if docs.is_empty() {
        return Err(ApiError::bad_request("the list of documents is empty"));
    }
    Ok(docs)
}

fn document(v: Value, what: &str) -> Result<NewDocument, ApiError> {
    let d: DocumentIn =
        serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))?;
    checked(d.text, d.source, what)
}

fn checked(text: String, source: Option<String>, what: &str) -> Result<NewDocument, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(format!("{what}: the text is empty")));
    }
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(ApiError::too_large(format!(
            "{what}: the text has {} bytes, the limit is {MAX_DOCUMENT_BYTES}",
            text.len()
        )));
    }
    let source = source.unwrap_or_else(|| DEFAULT_SOURCE.to_string());
    if source.len() > MAX_SOURCE_BYTES {
        return Err(ApiError::too_large(format!(
            "{what}: the source has {} bytes, the limit is {MAX_SOURCE_BYTES}",
            source.len()
        )));
    }
    Ok(NewDocument { source, text })
}

#[cfg(test)]
mod tests;
