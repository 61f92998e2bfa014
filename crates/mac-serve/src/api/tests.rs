//! Requests checked before anything runs: questions, generation settings,
//! documents and their limits.

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

fn generation(body: &str) -> Result<AnswerGeneration, ApiError> {
    parse_json::<ChatRequest>(body.as_bytes())?
        .common
        .generation(99)
}

#[test]
fn generation_settings_are_read_and_default_to_greedy() {
    let msgs = r#""messages": [{"role": "user", "content": "q?"}]"#;
    let g = generation(&format!("{{{msgs}}}")).unwrap();
    assert_eq!(g.max_tokens, MAX_ANSWER_TOKENS);
    assert!(g.sampling.is_greedy());
    let g = generation(&format!(
        r#"{{{msgs}, "max_tokens": 40, "temperature": 0.7, "top_p": 0.9, "seed": 5}}"#
    ))
    .unwrap();
    assert_eq!(g.max_tokens, 40);
    assert_eq!(
        g.sampling,
        Sampling {
            temperature: 0.7,
            top_p: 0.9,
            seed: 5
        }
    );
    // The newer name wins; a request without a seed gets the fresh one.
    let g = generation(&format!(
        r#"{{{msgs}, "max_tokens": 40, "max_completion_tokens": 3, "temperature": 1}}"#
    ))
    .unwrap();
    assert_eq!((g.max_tokens, g.sampling.seed), (3, 99));
}

#[test]
fn generation_settings_out_of_range_are_refused() {
    let msgs = r#""messages": [{"role": "user", "content": "q?"}]"#;
    let cases = [
        (r#""max_tokens": 0"#, "max_tokens = 0"),
        (r#""max_tokens": 100000"#, "max_tokens = 100000"),
        (r#""max_completion_tokens": 257"#, "max_tokens = 257"),
        (r#""max_tokens": -1"#, "invalid"),
        (r#""max_tokens": "ten""#, "invalid"),
        (r#""temperature": 2.5"#, "temperature = 2.5"),
        (r#""temperature": -0.1"#, "temperature = -0.1"),
        (r#""top_p": 0"#, "top_p = 0"),
        (r#""top_p": 1.5"#, "top_p = 1.5"),
        (r#""seed": -3"#, "invalid"),
    ];
    for (field, needle) in cases {
        let e = generation(&format!("{{{msgs}, {field}}}")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{field}");
        assert!(e.message.contains(needle), "{field}: {}", e.message);
    }
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
    let req: ChatRequest =
        parse_json(br#"{"model": "mac", "n": 1, "messages": [{"role": "user", "content": "q"}]}"#)
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
