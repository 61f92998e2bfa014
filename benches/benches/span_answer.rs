//! Time to the first answer token of span memory on the real LM
//! (SmolLM2-135M-Instruct, fetched by `cargo xtask fetch`), in a chat frame
//! with three worked examples, for one question about a document of about
//! 150 tokens:
//!
//! - `rag1_document_in_prompt`: what a RAG stack does, and `rag@1` in the
//!   evaluation: the LM reads the frame, the document and the question;
//! - `span_recomputed`: span memory as it answers without a key/value
//!   store: the frame's preamble read once beforehand, the document's
//!   key/values recomputed, the span's kept;
//! - `span_stored_f32` / `span_stored_f16`: the document's key/values read
//!   from a store on disk (`mac ingest --store-kv`) instead.
//!
//! The store's bytes a document are printed beside.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use mac_bank::{BankShape, Precision};
use mac_lm::LoadedLm;
use mac_model::prompt::{framed_prompt, prompt_ids};
use mac_model::{
    AnswerFrame, AnswerGeneration, FrameExample, Preamble, SpanExtent, SpanRead, SpanReader,
};
use mac_runtime::KvStore;

const DOCUMENT: &str =
    "Velra Quellington is a marine biologist who was born in Port Vessa in 1971. \
She studied at the University of Halden, where she wrote a thesis on the migration of \
deep-water eels. In 2004 she joined the Ostrander Institute as a senior researcher, and in \
2015 she became its director. She is married to the painter Orrin Calloway, and the couple \
live in Breckmoor with their two children. Her book The Quiet Current won the Ardent Prize \
in 2019. She plays the cello in a local orchestra on weekends.";
const QUESTION: &str = "Which institute did Velra Quellington join in 2004?";

fn frame_examples() -> AnswerFrame {
    let example = |document: &str, question: &str, answer: &str| FrameExample {
        document: document.into(),
        question: question.into(),
        answer: answer.into(),
    };
    AnswerFrame::Chat {
        examples: vec![
            example(
                "Tomas Rell was born in Kirkby in 1950.",
                "Where was Tomas Rell born?",
                "Kirkby",
            ),
            example(
                "Ada Lune works for the Harrow Company as an engineer.",
                "Who does Ada Lune work for?",
                "the Harrow Company",
            ),
            example(
                "Ben Oakes plays the trumpet.",
                "Which instrument does Ben Oakes play?",
                "the trumpet",
            ),
        ],
    }
}

/// A store in `dir` holding the document's key/values at `precision`.
fn store(dir: &Path, lm: &LoadedLm, rows: &[f32], precision: Precision) -> KvStore {
    let layout = lm.model.kv_layout();
    let shape = BankShape {
        n_tokens: lm.model.max_positions(),
        d_mod: 2 * layout.n_layers * layout.kv_width(),
        key_dim: 0,
        rows_vary: true,
        precision,
    };
    let mut store = KvStore::open_or_create(dir, shape, "bench").expect("store");
    store
        .append(&[("bench", DOCUMENT, rows.to_vec())])
        .expect("stored");
    store
}

fn bench(c: &mut Criterion) {
    let Some((device, lm)) = mac_benches::fetched_lm() else {
        return;
    };
    let frame = frame_examples().chat_frame(&lm).expect("chat template");
    let preamble = Preamble::of(&lm, frame.clone()).expect("preamble");
    let reader = SpanReader {
        layer: 12,
        sink_tokens: 4,
        extent: SpanExtent::Sentence,
        copied: false,
    };
    let ids = SpanReader::document_ids(&lm, DOCUMENT).expect("tokens");
    let (start, end) = mac_model::answer_span(&lm, &ids, "the Ostrander Institute")
        .expect("tokens")
        .expect("the answer is in the document");
    let first = AnswerGeneration {
        max_tokens: 1,
        ..AnswerGeneration::default()
    };
    let rag_ids = prompt_ids(
        &lm.tokenizer,
        &framed_prompt(frame.as_ref(), Some(DOCUMENT), QUESTION),
    )
    .expect("tokens");
    let kv = reader
        .document_kv(&lm, &preamble, std::slice::from_ref(&ids))
        .expect("key/values")
        .remove(0);
    let rows: Vec<f32> = kv.into_data().try_to_vec().expect("floats");
    let dir = tempfile::tempdir().expect("temporary directory");
    let stores: Vec<(&str, KvStore)> = [Precision::F32, Precision::F16]
        .into_iter()
        .map(|p| (p.name(), store(&dir.path().join(p.name()), &lm, &rows, p)))
        .collect();
    eprintln!(
        "document of {} tokens ({} in the document-in-prompt prompt); store bytes a document: {}",
        ids.len(),
        rag_ids.len(),
        stores
            .iter()
            .map(|(name, s)| format!("{name} {:.2} MB", s.size_bytes() as f64 / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let answer = |stored: Option<&burn::tensor::Tensor<2>>| {
        let read = SpanRead {
            document: &ids,
            start,
            end,
            stored,
            exact: false,
        };
        reader
            .answer_after(
                &lm,
                &preamble,
                &[read],
                &[QUESTION],
                &[first],
                &mut |_, _| {},
            )
            .expect("answer")
    };
    let mut g = c.benchmark_group("span_answer_first_token");
    g.sample_size(10);
    g.bench_function("rag1_document_in_prompt", |b| {
        b.iter(|| {
            lm.model
                .generate(
                    std::slice::from_ref(&rag_ids),
                    None,
                    0,
                    0,
                    mac_lm::GenerateOptions {
                        max_new_tokens: 1,
                        stop_at_eos: false,
                        sampling: mac_lm::Sampling::GREEDY,
                    },
                )
                .expect("generation")
        })
    });
    g.bench_function("span_recomputed", |b| b.iter(|| answer(None)));
    let width = 2 * lm.model.kv_layout().n_layers * lm.model.kv_layout().kv_width();
    for (name, store) in &stores {
        g.bench_function(format!("span_stored_{name}"), |b| {
            b.iter(|| {
                let rows = store.rows(DOCUMENT).expect("read").expect("stored");
                let n = rows.len() / width;
                let t = burn::tensor::Tensor::from_data(
                    burn::tensor::TensorData::new(rows, [n, width]),
                    &device,
                );
                answer(Some(&t))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
