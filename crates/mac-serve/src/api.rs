//! What clients send, checked before anything runs: the OpenAI requests
//! (chat and text completions) and documents to ingest, with the documented
//! limits. A request that fails here changes nothing.

use mac_model::NewDocument;
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

/// Fields both completion routes share. Sampling parameters
/// (`temperature`, `top_p`, ...) are accepted and ignored: answers are
/// greedy, at most [`mac_model::MAX_ANSWER_TOKENS`] tokens, first line.
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
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn chat(body: &str) -> Result<String, ApiError> {
        parse_json::<ChatRequest>(body.as_bytes())?.question()
    }

    #[test]
    fn the_last_user_message_is_the_question() {
        let q = chat(
            r#"{"model": "mac", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "first?"},
                {"role": "assistant", "content": "an answer"},
                {"role": "user", "content": [{"type": "text", "text": "Where was"}, {"type": "text", "text": "X born?"}]}
            ], "temperature": 0.2}"#,
        )
        .unwrap();
        assert_eq!(q, "Where was\nX born?");
    }

    #[test]
    fn bad_chat_requests_name_the_problem() {
        let cases = [
            ("{", StatusCode::BAD_REQUEST, "malformed JSON"),
            (
                r#"{"messages": "hi"}"#,
                StatusCode::BAD_REQUEST,
                "invalid type",
            ),
            (
                r#"{"model": "m"}"#,
                StatusCode::BAD_REQUEST,
                "missing field `messages`",
            ),
            (r#"{"messages": []}"#, StatusCode::BAD_REQUEST, "empty"),
            (
                r#"{"messages": [{"role": "system", "content": "x"}]}"#,
                StatusCode::BAD_REQUEST,
                "no message with role `user`",
            ),
            (
                r#"{"messages": [{"role": "wizard", "content": "x"}]}"#,
                StatusCode::BAD_REQUEST,
                "messages[0].role",
            ),
            (
                r#"{"messages": [{"role": "user", "content": 7}]}"#,
                StatusCode::BAD_REQUEST,
                "must be a string",
            ),
            (
                r#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
                StatusCode::BAD_REQUEST,
                "only text parts",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "  "}]}"#,
                StatusCode::BAD_REQUEST,
                "the question is empty",
            ),
        ];
        for (body, status, needle) in cases {
            let e = chat(body).unwrap_err();
            assert_eq!(e.status, status, "{body}: {e:?}");
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
        let long = format!(
            r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#,
            "x".repeat(MAX_QUESTION_BYTES + 1)
        );
        assert_eq!(
            chat(&long).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let many = format!(
            r#"{{"messages": [{}]}}"#,
            vec![r#"{"role": "user", "content": "q"}"#; MAX_MESSAGES + 1].join(",")
        );
        assert!(chat(&many).unwrap_err().message.contains("at most"));
    }

    #[test]
    fn model_and_n_are_checked() {
        let req: ChatRequest =
            parse_json(br#"{"model": "gpt-4", "messages": [{"role": "user", "content": "q"}]}"#)
                .unwrap();
        let e = req.common.check("mac").unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::NOT_FOUND, "model_not_found")
        );
        let req: ChatRequest =
            parse_json(br#"{"n": 2, "messages": [{"role": "user", "content": "q"}]}"#).unwrap();
        assert_eq!(
            req.common.check("mac").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let req: ChatRequest = parse_json(
            br#"{"model": "mac", "n": 1, "messages": [{"role": "user", "content": "q"}]}"#,
        )
        .unwrap();
        req.common.check("mac").unwrap();
    }

    #[test]
    fn completion_prompts() {
        let q = |b: &str| parse_json::<CompletionRequest>(b.as_bytes()).and_then(|r| r.question());
        assert_eq!(q(r#"{"prompt": "Who?"}"#).unwrap(), "Who?");
        assert_eq!(q(r#"{"prompt": ["Who?"]}"#).unwrap(), "Who?");
        assert!(q(r#"{"prompt": ["a", "b"]}"#)
            .unwrap_err()
            .message
            .contains("exactly one"));
        assert!(q(r#"{"prompt": 3}"#).is_err());
        assert!(q(r#"{}"#).unwrap_err().message.contains("missing"));
    }

    #[test]
    fn documents_as_json_text_or_refused() {
        let docs = parse_documents(
            Some("application/json; charset=utf-8"),
            br#"[{"text": "A was born in B.", "source": "feed:1"}, {"text": "C works for D."}]"#,
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            (docs[0].source.as_str(), docs[1].source.as_str()),
            ("feed:1", DEFAULT_SOURCE)
        );
        let one = parse_documents(None, br#"{"text": "E won F."}"#).unwrap();
        assert_eq!(one[0].text, "E won F.");
        let plain = parse_documents(Some("text/plain"), "G lives in H.".as_bytes()).unwrap();
        assert_eq!(plain[0].text, "G lives in H.");

        let bad = |ct: &str, body: &[u8]| parse_documents(Some(ct), body).unwrap_err();
        let json = "application/json";
        assert!(bad(json, b"[{\"text\": 1}]")
            .message
            .contains("documents[0]"));
        assert!(bad(json, br#"{"txt": "typo"}"#)
            .message
            .contains("unknown field"));
        assert!(bad(json, br#"[{"text": "ok"}, {"text": " "}]"#)
            .message
            .contains("documents[1]: the text is empty"));
        assert!(bad(json, b"[]").message.contains("empty"));
        assert!(bad(json, b"\"just a string\"")
            .message
            .contains("must be a document"));
        assert!(bad(json, b"{not json").message.contains("malformed JSON"));
        assert_eq!(
            bad("text/plain", b"caf\xe9").status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            bad("application/xml", b"<d/>").status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let big = format!(r#"{{"text": "{}"}}"#, "x".repeat(MAX_DOCUMENT_BYTES + 1));
        assert_eq!(
            bad(json, big.as_bytes()).status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let many = format!(
            "[{}]",
            vec![r#"{"text": "t"}"#; MAX_DOCUMENTS_PER_REQUEST + 1].join(",")
        );
        assert_eq!(
            bad(json, many.as_bytes()).status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let source = format!(
            r#"{{"text": "t", "source": "{}"}}"#,
            "s".repeat(MAX_SOURCE_BYTES + 1)
        );
        assert_eq!(
            bad(json, source.as_bytes()).status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
