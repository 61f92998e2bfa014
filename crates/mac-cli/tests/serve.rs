//! `mac serve` end to end with the real SmolLM2 + MiniLM, on a tiny
//! checkpoint of each memory (the paper's path and span memory):
//! documents in with curl, questions asked with the official `openai`
//! Python package (installed into a venv under MAC_HOME by this test), the
//! answers against `mac ask` on the same bank, every bad input answered
//! with a 4xx that changes nothing, and a SIGKILL during ingest that loses
//! no acknowledged document. (Over 500 lines: the tests share the trained
//! checkpoints and the server harness.)

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{mac, models_fetched, ok, s, train_tiny};
use serde_json::{json, Value};

mod common;

/// The `openai` package the compatibility test speaks with.
const OPENAI_PACKAGE: &str = "openai==3.57.0";

/// A tiny checkpoint of the paper's path, trained once for every test of
/// this file.
fn checkpoint() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let run = dir.join("run");
        train_tiny(&run);
        run
    })
}

/// A span memory run on the real SmolLM2 (`mac train --preset
/// span-tiny`: a selector trained a few steps; it does not answer well),
/// and what it chose on validation.
fn span_checkpoint() -> PathBuf {
    let run = tempfile::tempdir().unwrap().keep().join("span");
    let out = ok(&mac(&["train", "--preset", "span-tiny", "--out", s(&run)]));
    assert!(out.contains("chosen on validation"), "{out}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("span-run.json")).unwrap()).unwrap();
    // The step kept is one validated; the frame kept has the best validation F1.
    let curve = report["curve"].as_array().unwrap();
    assert!(
        curve.iter().any(|p| p["step"] == report["chosen_step"]),
        "{report}"
    );
    let frames = report["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 3, "{report}");
    let best = frames
        .iter()
        .map(|f| f[1].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let kept = frames.iter().find(|f| f[0] == report["frame"]).unwrap();
    assert_eq!(kept[1].as_f64().unwrap(), best, "{report}");
    // Every recency margin with every agreement was tried, and with the
    // names test every margin with the sentence encoder's test (alone and
    // with the selector's answer test, either admitting; reading with and
    // without the question's names), without and with the named-first
    // choice; the one kept has the best validation top-1 and is the
    // checkpoint's.
    let tried = report["recencies"].as_array().unwrap();
    assert_eq!(
        tried.len(),
        2 * (1 + 3 * (1 + 3) * 2 * 3 + (3 + 4) * 3 * (1 + 2) + 3 * 2),
        "{report}"
    );
    let named = tried.iter().filter(|r| r["named_first"] == true).count();
    assert_eq!(2 * named, tried.len(), "{report}");
    let top = tried
        .iter()
        .map(|r| r["top1"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let kept = |r: &&Value| {
        r["margin"] == report["recency"]
            && r["agreement"] == report["agreement"]
            && r["same_names"] == report["recency_same_names"]
            && r.get("answers") == report.get("recency_answers")
            && r.get("sentence_answers") == report.get("recency_sentences")
            && r.get("either_answers").unwrap_or(&false.into()) == &report["recency_either"]
            && r.get("without_names").unwrap_or(&false.into()) == &report["recency_without_names"]
            && r.get("restates").unwrap_or(&false.into()) == &report["recency_restates"]
            && r["named_first"] == report["named_first"]
    };
    let kept = tried.iter().find(kept).unwrap();
    assert_eq!(kept["top1"].as_f64().unwrap(), top, "{report}");
    // The floor below which the whole document is handed: the best of
    // those tried, the checkpoint's.
    let floors = report["whole_belows"].as_array().unwrap();
    assert_eq!(floors.len(), 10, "{report}");
    let best = floors
        .iter()
        .map(|f| f[1].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let kept = floors
        .iter()
        .find(|f| f[0] == report["whole_below"])
        .unwrap();
    assert_eq!(kept[1].as_f64().unwrap(), best, "{report}");
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoint").join("span.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["reading"]["recency"], report["recency"], "{meta}");
    let agreement = meta["reading"]
        .get("agreement")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(agreement, report["agreement"], "{meta}");
    let same_names = meta["reading"].get("recency_same_names").cloned();
    let same_names = same_names.unwrap_or(false.into());
    assert_eq!(same_names, report["recency_same_names"], "{meta}");
    let answers = meta["reading"].get("recency_answers");
    assert_eq!(answers, report.get("recency_answers"), "{meta}");
    let either = meta["reading"].get("recency_either").cloned();
    assert_eq!(either.unwrap_or(false.into()), report["recency_either"]);
    // Handing a chosen entry beside the value an earlier one answers: the
    // handing that scored best on the changing banks (as it is, beside a
    // passed-over entry's answer, beside any earlier report's; the first
    // of equals), the checkpoint's.
    let replaced = &report["replaced"];
    let f1: Vec<f64> = replaced["f1"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(f1.len(), 3, "{report}");
    let kept = (1..3).fold(0, |b, i| if f1[i] > f1[b] { i } else { b });
    assert_eq!(replaced["beside_replaced"], kept > 0, "{report}");
    assert_eq!(replaced["from_earlier"], kept == 2, "{report}");
    let flag = |name: &str| meta["reading"].get(name).cloned().unwrap_or(false.into());
    assert_eq!(flag("beside_replaced"), kept > 0, "{meta}");
    assert_eq!(flag("replaced_from_earlier"), kept == 2, "{meta}");
    let named_first = meta["reading"].get("named_first").cloned();
    assert_eq!(
        named_first.unwrap_or(false.into()),
        report["named_first"],
        "{meta}"
    );
    // Copied answers: kept where they scored better on validation.
    let copies = report["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 2, "{report}");
    let copied = copies[1][1].as_f64().unwrap() > copies[0][1].as_f64().unwrap();
    assert_eq!(report["copied"], copied, "{report}");
    let reader_copied = meta["reading"]["reader"].get("copied").cloned();
    assert_eq!(reader_copied.unwrap_or(false.into()), copied, "{meta}");
    let floor = meta["reading"]
        .get("whole_below")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(floor, report["whole_below"], "{meta}");
    // The sentence check: every slack tried, the best kept (the first of
    // equals: the most cautious), and the checkpoint's with the recency's.
    let check = &report["sentence_check"];
    let slacks = check["slacks"].as_array().unwrap();
    assert_eq!(slacks.len(), 8, "{report}");
    let best = slacks
        .iter()
        .map(|f| f[1].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let first_best = slacks
        .iter()
        .find(|f| f[1].as_f64().unwrap() == best)
        .unwrap();
    assert_eq!(first_best[0], check["slack"], "{report}");
    let recorded = &meta["reading"]["sentence_check"];
    assert_eq!(
        recorded.get("slack").cloned().unwrap_or(Value::Null),
        check["slack"],
        "{meta}"
    );
    assert_eq!(
        recorded.get("recency").cloned().unwrap_or(Value::Null),
        report
            .get("recency_sentences")
            .cloned()
            .unwrap_or(Value::Null),
        "{meta}"
    );
    let without_names = recorded.get("recency_without_names").cloned();
    assert_eq!(
        without_names.unwrap_or(false.into()),
        report["recency_without_names"],
        "{meta}"
    );
    let restates = recorded.get("recency_restates").cloned();
    assert_eq!(
        restates.unwrap_or(false.into()),
        report["recency_restates"],
        "{meta}"
    );
    // A second run into it is refused without --force.
    let again = mac(&["train", "--preset", "span-tiny", "--out", s(&run)]);
    assert_eq!(again.status.code(), Some(3), "{again:?}");
    run
}

/// A running `mac serve`, killed when dropped.
struct Served {
    child: Child,
    url: String,
}

impl Served {
    fn start(checkpoint: &Path, bank: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mac"))
            .args(["--device", "flex", "serve", "--bank", s(bank)])
            .args(["--checkpoint", s(checkpoint), "--addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in `{line}`"))
            .to_string();
        Self { child, url }
    }

    /// SIGTERM, and the exit status once it has finished what it held.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` a route: (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// A request from Rust: (status, JSON body).
fn request(method: &str, url: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let resp = match ureq::request(method, url)
        .set("Content-Type", content_type)
        .send_bytes(body)
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A Python with the `openai` package, in a venv under MAC_HOME.
fn openai_python() -> PathBuf {
    let venv = mac_assets::mac_home().join("openai-venv");
    let python = venv.join("bin/python");
    let has = |p: &Path| {
        Command::new(p)
            .args([
                "-c",
                "import openai, sys; sys.exit(openai.__version__ != sys.argv[1])",
            ])
            .arg(OPENAI_PACKAGE.trim_start_matches("openai=="))
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&python) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "python3 -m venv {}",
            venv.display()
        );
        let pip = Command::new(&python)
            .args(["-m", "pip", "install", "-q", OPENAI_PACKAGE])
            .status();
        assert!(
            pip.is_ok_and(|s| s.success()),
            "pip install {OPENAI_PACKAGE} failed"
        );
    }
    python
}

/// A bad request: method, path, content type, body, expected status, and
/// what the error message must say.
type BadCase<'a> = (&'a str, &'a str, &'a str, Vec<u8>, u16, &'a str);

const FACTS: [&str; 3] = [
    "Velra Quellington was born in Port Vessa. Velra Quellington works for Orvane Dynamics.",
    "Morrion Thrimsen specializes in glaciology. Morrion Thrimsen won the Ember Prize.",
    "Sabta Kessova was born on 3 May 1961. Sabta Kessova is a native of Zarnow.",
];

#[test]
fn serves_documents_and_answers_like_ask_with_the_openai_client() {
    if models_fetched() {
        serves_like_ask(checkpoint(), "mac", &[]);
    }
}

#[test]
fn serves_span_memory_like_ask_with_the_openai_client() {
    if models_fetched() {
        // With the documents' key/values stored beside the bank.
        serves_like_ask(&span_checkpoint(), "span memory", &["--store-kv", "f16"]);
    }
}

/// The server on `checkpoint` (a memory called `memory`): documents in,
/// answers out with the OpenAI client, bad input refused, and the same
/// answers as `mac ask` (the server started with `extra` arguments).
fn serves_like_ask(checkpoint: &Path, memory: &str, extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let bank = tmp.path().join("bank");
    let server = Served::start(checkpoint, &bank, extra);
    let url = server.url.clone();

    // Documents in with curl: a JSON list, a duplicate as text/plain.
    let list: Vec<Value> = FACTS
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"text": t, "source": format!("fact-{i}")}))
        .collect();
    let (code, body) = curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &Value::from(list).to_string(),
        &format!("{url}/v1/documents"),
    ]);
    assert_eq!(code, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<u64> = v["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [0, 1, 2], "{body}");
    assert_eq!(v["bank_entries"], 3);
    let (code, body) = curl(&[
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        FACTS[1],
        &format!("{url}/v1/documents"),
    ]);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["documents"][0],
        json!({"id": 1, "status": "duplicate", "truncated_tokens": 0})
    );
    let (code, body) = curl(&[&format!("{url}/v1/documents/2")]);
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (doc["text"].as_str(), doc["source"].as_str()),
        (Some(FACTS[2]), Some("fact-2"))
    );
    let (_, body) = curl(&[&format!("{url}/v1/bank")]);
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["entries"], 3, "{body}");
    assert_eq!(info["read_only"], false);
    assert_eq!(info["memory"], memory, "{body}");
    let (code, body) = curl(&[&format!("{url}/health")]);
    assert_eq!(
        (
            code,
            serde_json::from_str::<Value>(&body).unwrap()["status"].clone()
        ),
        (200, json!("ok"))
    );

    // Questions with the official client.
    let question = "Who won the Ember Prize?";
    let out = Command::new(openai_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py"))
        .args([&url, question])
        .output()
        .unwrap();
    let client: Value = serde_json::from_str(&ok(&out)).unwrap();
    let answer = client["chat"].as_str().unwrap().to_string();
    assert_eq!(client["streamed"], client["chat"], "{client}");
    assert_eq!(client["completion"], client["chat"], "{client}");
    assert_eq!(client["streamed_completion"], client["chat"], "{client}");
    // Streamed as it is generated: an answer of several words in pieces.
    if answer.contains(' ') {
        assert!(client["stream_pieces"].as_u64().unwrap() >= 2, "{client}");
    }
    // `length` when the 16 tokens ran out before the line ended.
    let finish = client["finish_reason"].as_str().unwrap();
    assert!(finish == "stop" || finish == "length", "{client}");
    // max_tokens is honoured: one token, the first of the greedy answer.
    let one = client["one_token"].as_str().unwrap();
    assert!(client["one_token_usage"].as_u64().unwrap() <= 1, "{client}");
    assert!(answer.starts_with(one), "{client}");
    if !one.is_empty() {
        assert_eq!(client["one_token_finish_reason"], "length", "{client}");
    }
    // Sampling with a seed is reproducible.
    assert_eq!(client["sampled"][0], client["sampled"][1], "{client}");
    assert_eq!(client["models"], json!(["mac"]));
    assert_eq!(client["unknown_model_status"], 404);
    assert!(client["usage_total"].as_u64().unwrap() > 0);
    let documents = client["documents"].as_array().unwrap().clone();
    assert_eq!(documents.len(), 3, "{client}");
    assert_eq!(client["stream_documents"], client["documents"]);

    // Bad input: a 4xx naming the problem, and the bank unchanged.
    let docs_url = "/v1/documents";
    let chat_url = "/v1/chat/completions";
    let json_ct = "application/json";
    let big_doc = json!({"text": "x".repeat(mac_serve::api::MAX_DOCUMENT_BYTES + 1)}).to_string();
    let long_q = json!({"messages": [{"role": "user", "content": "q".repeat(5000)}]}).to_string();
    let too_many =
        json!({"messages": vec![json!({"role": "user", "content": "q"}); 65]}).to_string();
    let cases: Vec<BadCase> = vec![
        (
            "POST",
            docs_url,
            json_ct,
            b"{\"text\": ".to_vec(),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            docs_url,
            json_ct,
            br#"{"text": 5}"#.to_vec(),
            400,
            "invalid type",
        ),
        (
            "POST",
            docs_url,
            json_ct,
            br#"{"text": "  "}"#.to_vec(),
            400,
            "empty",
        ),
        (
            "POST",
            docs_url,
            json_ct,
            br#"[{"text": "fine"}, {"txt": "typo"}]"#.to_vec(),
            400,
            "documents[1]",
        ),
        (
            "POST",
            docs_url,
            json_ct,
            big_doc.into_bytes(),
            413,
            "limit",
        ),
        (
            "POST",
            docs_url,
            "application/xml",
            b"<doc/>".to_vec(),
            415,
            "content type",
        ),
        (
            "POST",
            docs_url,
            "text/plain",
            b"caf\xe9".to_vec(),
            400,
            "UTF-8",
        ),
        (
            "POST",
            chat_url,
            json_ct,
            b"not json".to_vec(),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            chat_url,
            json_ct,
            br#"{"messages": "hi"}"#.to_vec(),
            400,
            "invalid type",
        ),
        (
            "POST",
            chat_url,
            json_ct,
            br#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]}"#.to_vec(),
            404,
            "does not exist",
        ),
        (
            "POST",
            chat_url,
            json_ct,
            br#"{"messages": [{"role": "user", "content": ""}]}"#.to_vec(),
            400,
            "empty",
        ),
        ("POST", chat_url, json_ct, long_q.into_bytes(), 413, "limit"),
        (
            "POST",
            chat_url,
            json_ct,
            too_many.into_bytes(),
            400,
            "at most 64",
        ),
        (
            "POST",
            chat_url,
            json_ct,
            br#"{"n": 3, "messages": [{"role": "user", "content": "q"}]}"#.to_vec(),
            400,
            "n = 3",
        ),
        (
            "POST",
            chat_url,
            json_ct,
            br#"{"max_tokens": 0, "messages": [{"role": "user", "content": "q"}]}"#.to_vec(),
            400,
            "max_tokens = 0",
        ),
        (
            "POST",
            "/v1/completions",
            json_ct,
            br#"{"temperature": 3, "prompt": "q", "stream": true}"#.to_vec(),
            400,
            "temperature = 3",
        ),
        (
            "GET",
            "/v1/documents/99",
            json_ct,
            Vec::new(),
            404,
            "no document 99",
        ),
        (
            "GET",
            "/v1/documents/abc",
            json_ct,
            Vec::new(),
            400,
            "not a number",
        ),
        (
            "DELETE",
            "/v1/bank",
            json_ct,
            Vec::new(),
            405,
            "not allowed",
        ),
        ("GET", "/v2/anything", json_ct, Vec::new(), 404, "no route"),
    ];
    for (method, path, ct, body, status, needle) in cases {
        let target = format!("{url}{path}");
        let (got, v) = request(method, &target, ct, &body);
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(got, status, "{method} {target}: {v}");
        assert!(
            message.contains(needle),
            "{method} {target}: `{message}` lacks `{needle}`"
        );
    }
    let (code, body) = curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("[{}]", vec![r#"{"text": "t"}"#; 300].join(",")),
        &format!("{url}{docs_url}"),
    ]);
    assert_eq!(code, 413, "{body}");
    let (_, body) = curl(&[&format!("{url}/v1/bank")]);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["entries"],
        3,
        "{body}"
    );

    let (_, metrics) = curl(&[&format!("{url}/metrics")]);
    assert!(metrics.contains("mac_bank_entries 3"), "{metrics}");
    assert!(
        metrics.contains("mac_documents_ingested_total{outcome=\"stored\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mac_documents_ingested_total{outcome=\"duplicate\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("mac_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 5"),
        "{metrics}"
    );

    // The `mac` extension: where the time went, and the span read.
    let body = json!({"messages": [{"role": "user", "content": question}]}).to_string();
    let (code, v) = request(
        "POST",
        &format!("{url}{chat_url}"),
        json_ct,
        body.as_bytes(),
    );
    assert_eq!(code, 200, "{v}");
    let timings = &v["mac"]["timings"];
    assert!(timings["generate_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert!(timings["read_bank_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["mac"]["span"].is_object(), memory == "span memory", "{v}");
    let stored = extra.contains(&"--store-kv");
    if memory == "span memory" {
        assert_eq!(v["mac"]["span"]["stored_kv"], stored, "{v}");
    }
    assert_eq!(
        v["choices"][0]["message"]["content"].as_str(),
        Some(answer.as_str())
    );

    // A graceful stop, then `mac ask` on the same bank answers the same.
    assert!(server.terminate().success());
    let out = ok(&mac(&[
        "ask",
        "--bank",
        s(&bank),
        "--checkpoint",
        s(checkpoint),
        question,
        "--json",
    ]));
    let asked: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(asked["answer"].as_str(), Some(answer.as_str()), "{out}");
    if memory == "span memory" {
        assert_eq!(asked["span"]["stored_kv"], stored, "{out}");
    }
    let by_cli = asked["documents"].as_array().unwrap();
    for (a, b) in documents.iter().zip(by_cli) {
        assert_eq!(
            (&a["id"], &a["source"]),
            (&b["id"], &b["source"]),
            "{a} vs {b}"
        );
        let (wa, wb) = (a["weight"].as_f64().unwrap(), b["weight"].as_f64().unwrap());
        assert!((wa - wb).abs() < 1e-5, "{a} vs {b}");
    }

    // Read-only: answers, refuses ingest, takes no lock (an ingest runs beside it).
    let server = Served::start(checkpoint, &bank, &["--read-only"]);
    let (code, v) = request(
        "POST",
        &format!("{}/v1/documents", server.url),
        json_ct,
        br#"{"text": "new"}"#,
    );
    assert_eq!(code, 403, "{v}");
    let doc = tmp.path().join("more.txt");
    std::fs::write(&doc, "Ilsa Marrow lives in Quent.").unwrap();
    ok(&mac(&[
        "ingest",
        "--bank",
        s(&bank),
        "--checkpoint",
        s(checkpoint),
        s(&doc),
        "--json",
    ]));
    let (_, v) = request("GET", &format!("{}/v1/bank", server.url), json_ct, b"");
    assert_eq!(
        v["entries"], 4,
        "a read-only server sees another process's appends: {v}"
    );
}

#[test]
fn sigkill_during_ingest_loses_no_acknowledged_document() {
    if !models_fetched() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bank = tmp.path().join("bank");
    let mut server = Served::start(checkpoint(), &bank, &[]);
    let url = format!("{}/v1/documents", server.url);
    // A client posts batches of documents, one request after the other, and
    // records what was acknowledged; the server is killed mid-stream.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, String)>::new()));
    let client = {
        let acknowledged = acknowledged.clone();
        std::thread::spawn(move || {
            for round in 0.. {
                let docs: Vec<String> = (0..4)
                    .map(|i| format!("Entity {round}-{i} was born in City {round}{i}. It works for Firm {i}{round}."))
                    .collect();
                let body = Value::from(docs.iter().map(|t| json!({"text": t})).collect::<Vec<_>>())
                    .to_string();
                match ureq::post(&url)
                    .set("Content-Type", "application/json")
                    .send_string(&body)
                {
                    Ok(resp) => {
                        let v: Value = resp.into_json().unwrap();
                        let mut acked = acknowledged.lock().unwrap();
                        for (d, t) in v["documents"].as_array().unwrap().iter().zip(docs) {
                            assert_eq!(d["status"], "stored");
                            acked.push((d["id"].as_u64().unwrap(), t));
                        }
                    }
                    Err(_) => return round,
                }
            }
            unreachable!()
        })
    };
    let t0 = Instant::now();
    while acknowledged.lock().unwrap().len() < 12 {
        assert!(t0.elapsed() < Duration::from_secs(120), "ingest too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(40));
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let rounds = client.join().unwrap();
    let acked = acknowledged.lock().unwrap().clone();
    assert!(rounds >= 3 && acked.len() >= 12);

    let verified: Value =
        serde_json::from_str(&ok(&mac(&["bank", "verify", "--bank", s(&bank), "--json"]))).unwrap();
    assert_eq!(verified["ok"], true);
    let stored = mac_bank::MemoryBank::open_read_only(&bank).unwrap();
    assert!(stored.len() >= acked.len());
    for (id, text) in &acked {
        assert_eq!(
            stored.find_text(text),
            Some(*id),
            "acknowledged document {id} lost"
        );
        let entry = stored.read(stored.position_of(*id).unwrap()).unwrap();
        assert_eq!(&entry.text, text);
    }
    // The server comes back on the same bank (the dead writer's lock is gone)
    // and knows every acknowledged document.
    let server = Served::start(checkpoint(), &bank, &[]);
    let (code, v) = request(
        "POST",
        &format!("{}/v1/documents", server.url),
        "application/json",
        json!({"text": acked[0].1}).to_string().as_bytes(),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["documents"][0],
        json!({"id": acked[0].0, "status": "duplicate", "truncated_tokens": 0})
    );
}
