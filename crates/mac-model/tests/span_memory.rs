//! Span memory's LM side on the tiny random Llama: an answer from the whole
//! document's key/values is the oracle-context answer (the same tokens, read
//! in two passes), answers batched over documents equal each alone, and
//! answer spans are found where the answer's tokens are.

use mac_lm::LoadedLm;
use mac_model::prompt::{continuation_ids, oracle_prompt, prompt_ids, question_prompt};
use mac_model::{answer_span, generate_answers, AnswerGeneration, SpanRead, SpanReader};

fn tiny() -> LoadedLm {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../mac-lm/tests/fixtures/tiny-llama.gguf"
    );
    LoadedLm::load(path, &mac_device::select("flex").unwrap()).unwrap()
}

// Short: the tiny model reads characters and has 128 positions.
const DOCUMENTS: [&str; 2] = [
    "Velra was born in Port Vessa.",
    "Doran won the Calder Prize.",
];

#[test]
fn the_whole_document_answers_as_the_oracle_context() {
    let lm = tiny();
    let reader = SpanReader {
        layer: 1,
        sink_tokens: 4,
    };
    let question = "Where was Velra born?";
    let doc = SpanReader::document_ids(&lm, DOCUMENTS[0]).unwrap();
    // The two passes read the same tokens as the one-pass oracle prompt.
    let mut joined = doc.clone();
    joined.extend(continuation_ids(&lm.tokenizer, &question_prompt(question)).unwrap());
    assert_eq!(
        joined,
        prompt_ids(&lm.tokenizer, &oracle_prompt(DOCUMENTS[0], question)).unwrap()
    );
    let gen = AnswerGeneration {
        max_tokens: 6,
        ..Default::default()
    };
    let whole = SpanRead {
        document: &doc,
        start: 0,
        end: doc.len() - 1,
    };
    let from_memory = reader.answer(&lm, &[whole], &[question], &[gen]).unwrap();
    let oracle = generate_answers(&lm, &[oracle_prompt(DOCUMENTS[0], question)], None, 6).unwrap();
    assert!(!oracle[0].is_empty(), "an answer to compare");
    assert_eq!(from_memory[0].text, oracle[0]);
}

#[test]
fn answers_batched_over_documents_equal_each_alone() {
    let lm = tiny();
    let reader = SpanReader {
        layer: 1,
        sink_tokens: 2,
    };
    let docs: Vec<Vec<u32>> = DOCUMENTS
        .iter()
        .map(|d| SpanReader::document_ids(&lm, d).unwrap())
        .collect();
    let reads = [
        SpanRead {
            document: &docs[0],
            start: 6,
            end: 8,
        },
        SpanRead {
            document: &docs[1],
            start: 3,
            end: 3,
        },
        SpanRead {
            document: &docs[0],
            start: 2,
            end: 9,
        },
    ];
    let questions = [
        "Where was she born?",
        "What did he study?",
        "Who employs her?",
    ];
    let gen = vec![
        AnswerGeneration {
            max_tokens: 5,
            ..Default::default()
        };
        3
    ];
    let together = reader.answer(&lm, &reads, &questions, &gen).unwrap();
    for i in 0..3 {
        let alone = reader
            .answer(&lm, &reads[i..=i], &questions[i..=i], &gen[..1])
            .unwrap();
        assert_eq!(together[i], alone[0], "question {i}");
    }
    // Bad spans are errors, not panics.
    let beyond = SpanRead {
        document: &docs[1],
        start: 2,
        end: docs[1].len(),
    };
    assert!(reader
        .answer(&lm, &[beyond], &questions[..1], &gen[..1])
        .is_err());
    let reversed = SpanRead {
        document: &docs[1],
        start: 3,
        end: 2,
    };
    assert!(reader
        .answer(&lm, &[reversed], &questions[..1], &gen[..1])
        .is_err());
    assert!(reader
        .answer(&lm, &reads[..1], &questions[..2], &gen[..1])
        .is_err());
}

#[test]
fn kept_positions_and_answer_spans() {
    let lm = tiny();
    let reader = SpanReader {
        layer: 1,
        sink_tokens: 3,
    };
    assert_eq!(reader.kept_positions(5, 7, 20), vec![0, 1, 2, 5, 6, 7]);
    assert_eq!(
        reader.kept_positions(1, 4, 20),
        vec![0, 1, 2, 3, 4],
        "no position twice"
    );
    assert_eq!(
        reader.kept_positions(18, 30, 20),
        vec![0, 1, 2, 18, 19],
        "clipped to the document"
    );
    let doc = SpanReader::document_ids(&lm, DOCUMENTS[1]).unwrap();
    let (s, e) = answer_span(&lm, &doc, "Calder Prize")
        .unwrap()
        .expect("the answer is in the document");
    let answer = continuation_ids(&lm.tokenizer, " Calder Prize").unwrap();
    assert_eq!(doc[s..=e], answer[..]);
    assert_eq!(answer_span(&lm, &doc, "Port Vessa").unwrap(), None);
    // Summaries: last and mean state of each question prompt, 2·d wide.
    let questions = reader
        .question_states(&lm, &["Who?", "What did he study?"])
        .unwrap();
    assert_eq!(questions.len(), 2);
    for states in questions {
        assert_eq!(
            SpanReader::summary(states).dims(),
            [1, 2 * lm.model.hidden_width()]
        );
    }
    let states = reader
        .token_states(&lm, std::slice::from_ref(&doc))
        .unwrap();
    assert_eq!(states[0].dims(), [doc.len(), lm.model.hidden_width()]);
}
