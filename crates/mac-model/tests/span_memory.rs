//! Span memory's LM side on the tiny random Llama: an answer from the whole
//! document's key/values is the oracle-context answer (the same tokens, read
//! in two passes), answers batched over documents equal each alone, and
//! answer spans are found where the answer's tokens are.

use burn::tensor::{Tensor, TensorData};
use mac_lm::LoadedLm;
use mac_model::prompt::{
    chat_oracle_prompt, continuation_ids, oracle_prompt, prompt_ids, question_prompt, ChatExample,
    ChatFormat, ChatFrame,
};
use mac_model::{
    answer_span, beside_replaced, generate_answers, AnswerGeneration, Preamble, SentenceCheck,
    SpanExtent, SpanRead, SpanReader,
};

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
        extent: SpanExtent::Span,
        copied: false,
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
        stored: None,
        exact: false,
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
        extent: SpanExtent::Span,
        copied: false,
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
            stored: None,
            exact: false,
        },
        SpanRead {
            document: &docs[1],
            start: 3,
            end: 3,
            stored: None,
            exact: false,
        },
        SpanRead {
            document: &docs[0],
            start: 2,
            end: 9,
            stored: None,
            exact: false,
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
        stored: None,
        exact: false,
    };
    assert!(reader
        .answer(&lm, &[beyond], &questions[..1], &gen[..1])
        .is_err());
    let reversed = SpanRead {
        document: &docs[1],
        start: 3,
        end: 2,
        stored: None,
        exact: false,
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
        extent: SpanExtent::Span,
        copied: false,
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

#[test]
fn a_frame_that_leaves_no_room_for_the_question_is_an_error() {
    let lm = tiny();
    let reader = SpanReader {
        layer: 1,
        sink_tokens: 2,
        extent: SpanExtent::Span,
        copied: false,
    };
    // The tiny model reads characters and has 128 positions: the
    // instruction alone fills them.
    let frame = ChatFrame::new(
        ChatFormat::ChatMl {
            default_system: None,
        },
        &[],
    );
    let doc = SpanReader::document_ids(&lm, DOCUMENTS[0]).unwrap();
    let read = SpanRead {
        document: &doc,
        start: 1,
        end: 3,
        stored: None,
        exact: false,
    };
    let err = reader
        .answer_in(
            &lm,
            Some(&frame),
            &[read],
            &["Where?"],
            &[AnswerGeneration::default()],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("positions"), "{err}");
}

/// The worked example of the chat frames below.
const EXAMPLE: ChatExample<'static> = ChatExample {
    document: "Ada Brask was born in Elmford. Ada Brask works for Quorix Labs.",
    question: "Who employs Ada Brask?",
    answer: "Quorix Labs",
};

/// The real SmolLM2 with its chat template, when fetched.
fn smollm2() -> Option<LoadedLm> {
    let path = mac_assets::default_lm_path();
    mac_assets::fetched_or_skip(&path)
        .then(|| LoadedLm::load(&path, &mac_device::select("flex").unwrap()).unwrap())
}

#[test]
fn a_chat_framed_whole_document_answers_as_the_chat_oracle() {
    let Some(lm) = smollm2() else { return };
    let format = ChatFormat::recognise(lm.tokenizer.chat_template.as_deref().unwrap()).unwrap();
    let example = EXAMPLE;
    let frame = ChatFrame::new(format, &[example]);
    let text = "Velra Osk lives at 12 Fenwick Lane. Velra Osk holds 31 patents.";
    let question = "Where does Velra Osk live?";
    let doc = SpanReader::document_ids(&lm, text).unwrap();
    // The preamble, the document and the question are the oracle's tokens.
    let mut joined = prompt_ids(&lm.tokenizer, &frame.preamble).unwrap();
    joined.extend(&doc);
    joined.extend(continuation_ids(&lm.tokenizer, &frame.question(question)).unwrap());
    let oracle = chat_oracle_prompt(format, text, question, &[example]);
    assert_eq!(joined, prompt_ids(&lm.tokenizer, &oracle).unwrap());

    let reader = SpanReader {
        layer: 12,
        sink_tokens: 4,
        extent: SpanExtent::Span,
        copied: false,
    };
    let gen = AnswerGeneration {
        max_tokens: 16,
        ..Default::default()
    };
    let whole = SpanRead {
        document: &doc,
        start: 0,
        end: doc.len() - 1,
        stored: None,
        exact: false,
    };
    let framed = reader
        .answer_in(&lm, Some(&frame), &[whole], &[question], &[gen])
        .unwrap();
    let expected = generate_answers(&lm, &[oracle], None, 16).unwrap();
    assert_eq!(framed[0].text, expected[0]);
    assert!(expected[0].contains("Fenwick"), "{}", expected[0]);

    // The span alone (the address and its neighbours) still answers; a span
    // elsewhere in the document does not give the address.
    let (a, b) = answer_span(&lm, &doc, "12 Fenwick Lane").unwrap().unwrap();
    let span = SpanRead {
        document: &doc,
        start: a.saturating_sub(1),
        end: b + 1,
        stored: None,
        exact: false,
    };
    let answered = reader
        .answer_in(&lm, Some(&frame), &[span], &[question], &[gen])
        .unwrap();
    assert!(answered[0].text.contains("Fenwick"), "{}", answered[0].text);
    let (c, d) = answer_span(&lm, &doc, "31 patents").unwrap().unwrap();
    let elsewhere = SpanRead {
        document: &doc,
        start: c,
        end: d,
        stored: None,
        exact: false,
    };
    let answered = reader
        .answer_in(&lm, Some(&frame), &[elsewhere], &[question], &[gen])
        .unwrap();
    assert!(
        !answered[0].text.contains("Fenwick"),
        "{}",
        answered[0].text
    );
}

#[test]
fn extents_hand_the_span_its_sentence_or_the_whole_document() {
    let lm = tiny();
    // Within the 64 tokens the tiny model leaves a document.
    let text = "Velra was in Port Vessa. She paid 3.5 kg!\nDoran won.";
    let doc = SpanReader::document_ids(&lm, text).unwrap();
    let handed = |extent: SpanExtent, answer: &str| {
        let (s, e) = answer_span(&lm, &doc, answer).unwrap().unwrap();
        let (from, to) = extent.range(&lm, &doc, s, e).unwrap();
        assert!(from <= s && e <= to, "{extent:?} holds the span");
        lm.tokenizer.decode(&doc[from..=to]).unwrap()
    };
    assert_eq!(handed(SpanExtent::Span, "Vessa"), " Vessa");
    assert_eq!(
        handed(SpanExtent::Sentence, "Vessa").trim(),
        "Velra was in Port Vessa."
    );
    // A decimal point does not end a sentence; `!` does.
    assert_eq!(handed(SpanExtent::Sentence, "kg"), " She paid 3.5 kg!");
    assert_eq!(handed(SpanExtent::Sentence, "Doran").trim(), "Doran won.");
    assert_eq!(handed(SpanExtent::Document, "kg").trim(), text);
}

#[test]
fn the_document_extent_answers_as_the_oracle_context_from_any_span() {
    let lm = tiny();
    let reader = SpanReader {
        layer: 1,
        sink_tokens: 2,
        extent: SpanExtent::Document,
        copied: false,
    };
    let question = "Where was Velra born?";
    let doc = SpanReader::document_ids(&lm, DOCUMENTS[0]).unwrap();
    let (start, end) = answer_span(&lm, &doc, "Port").unwrap().unwrap();
    let read = SpanRead {
        document: &doc,
        start,
        end,
        stored: None,
        exact: false,
    };
    let gen = AnswerGeneration {
        max_tokens: 6,
        ..Default::default()
    };
    let from_memory = reader.answer(&lm, &[read], &[question], &[gen]).unwrap();
    let oracle = generate_answers(&lm, &[oracle_prompt(DOCUMENTS[0], question)], None, 6).unwrap();
    assert_eq!(from_memory[0].text, oracle[0]);
    let span_only = SpanReader {
        extent: SpanExtent::Span,
        copied: false,
        ..reader
    };
    let from_span = span_only.answer(&lm, &[read], &[question], &[gen]).unwrap();
    assert!(from_span[0].prompt_tokens < from_memory[0].prompt_tokens);
}

#[test]
fn stored_key_values_in_a_chat_frame_answer_as_recomputed_ones() {
    let Some(lm) = smollm2() else { return };
    let format = ChatFormat::recognise(lm.tokenizer.chat_template.as_deref().unwrap()).unwrap();
    let example = EXAMPLE;
    let preamble = Preamble::of(&lm, Some(ChatFrame::new(format, &[example]))).unwrap();
    let text = "Velra Osk lives at 12 Fenwick Lane. Velra Osk holds 31 patents.";
    let question = "Where does Velra Osk live?";
    let doc = SpanReader::document_ids(&lm, text).unwrap();
    let reader = SpanReader {
        layer: 12,
        sink_tokens: 4,
        extent: SpanExtent::Sentence,
        copied: false,
    };
    let kv = reader
        .document_kv(&lm, &preamble, std::slice::from_ref(&doc))
        .unwrap()
        .remove(0);
    // The document's own tokens (a BOS of its own would be the preamble's).
    let bos = lm.tokenizer.add_bos && lm.tokenizer.bos_id == doc.first().copied();
    assert_eq!(kv.dims()[0], doc.len() - usize::from(bos));
    let (a, b) = answer_span(&lm, &doc, "12 Fenwick Lane").unwrap().unwrap();
    let gen = AnswerGeneration {
        max_tokens: 16,
        ..Default::default()
    };
    let answer = |stored| {
        let read = SpanRead {
            document: &doc,
            start: a,
            end: b,
            stored,
            exact: false,
        };
        reader
            .answer_after(&lm, &preamble, &[read], &[question], &[gen], &mut |_, _| {})
            .unwrap()
            .remove(0)
            .text
    };
    let recomputed = answer(None);
    assert!(recomputed.contains("Fenwick"), "{recomputed}");
    assert_eq!(answer(Some(&kv)), recomputed, "the same floats");
    // Rounded to half floats (as a store of f16 keeps them): every value
    // within half's precision, and the answer names the same street.
    let values: Vec<f32> = kv.to_data().try_to_vec().unwrap();
    let half: Vec<f32> = values
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    let worst = values
        .iter()
        .zip(&half)
        .map(|(v, h)| (v - h).abs() / v.abs().max(1e-3))
        .fold(0.0f32, f32::max);
    assert!(worst <= 1.0 / 1024.0, "relative error {worst}");
    let rounded = Tensor::<2>::from_data(TensorData::new(half, kv.dims()), &kv.device());
    assert!(answer(Some(&rounded)).contains("Fenwick"));
    // Rows of another document's length are refused.
    let short = kv.clone().narrow(0, 0, 3);
    let read = SpanRead {
        document: &doc,
        start: a,
        end: b,
        stored: Some(&short),
        exact: false,
    };
    let err = reader
        .answer_after(&lm, &preamble, &[read], &[question], &[gen], &mut |_, _| {})
        .unwrap_err();
    assert!(
        err.to_string().contains("stored key/value positions"),
        "{err}"
    );
}

/// Whether `answer` is a run of whole words of `text` (any case).
fn whole_words_of(text: &str, answer: &str) -> bool {
    let (text, answer) = (text.to_lowercase(), answer.to_lowercase());
    let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    text.match_indices(&answer).any(|(i, _)| {
        !word(text[..i].chars().next_back()) && !word(text[i + answer.len()..].chars().next())
    })
}

#[test]
fn copied_answers_are_whole_words_of_what_the_lm_is_handed() {
    // The tiny random model writes characters at random: free, its answers
    // are no copy; copied, each is whole words of its document (or empty,
    // where none of its likeliest characters starts one).
    let lm = tiny();
    let free = SpanReader {
        layer: 1,
        sink_tokens: 2,
        extent: SpanExtent::Document,
        copied: false,
    };
    let copied = SpanReader {
        copied: true,
        ..free
    };
    let docs: Vec<Vec<u32>> = DOCUMENTS
        .iter()
        .map(|d| SpanReader::document_ids(&lm, d).unwrap())
        .collect();
    let reads: Vec<SpanRead<'_>> = docs.iter().map(|d| SpanRead::whole(d)).collect();
    let questions = ["Where was Velra born?", "What did Doran win?"];
    let gen = [AnswerGeneration {
        max_tokens: 8,
        ..Default::default()
    }; 2];
    let free = free.answer(&lm, &reads, &questions, &gen).unwrap();
    let copies = copied.answer(&lm, &reads, &questions, &gen).unwrap();
    assert!(
        free.iter()
            .zip(DOCUMENTS)
            .any(|(a, d)| !a.text.is_empty() && !whole_words_of(d, &a.text)),
        "{free:?}"
    );
    for (a, d) in copies.iter().zip(DOCUMENTS) {
        assert!(
            a.text.is_empty() || whole_words_of(d, &a.text),
            "{a:?} of {d}"
        );
    }
    assert!(copies.iter().any(|a| !a.text.is_empty()), "{copies:?}");
}

#[test]
fn a_copied_answer_reads_the_value_the_document_holds() {
    let Some(lm) = smollm2() else { return };
    let format = ChatFormat::recognise(lm.tokenizer.chat_template.as_deref().unwrap()).unwrap();
    let preamble = Preamble::of(&lm, Some(ChatFrame::new(format, &[EXAMPLE]))).unwrap();
    let text = "Tomasz Vasquez has swapped instruments and now plays the chromatic trombone.";
    let doc = SpanReader::document_ids(&lm, text).unwrap();
    let reader = SpanReader {
        layer: 12,
        sink_tokens: 4,
        extent: SpanExtent::Sentence,
        copied: true,
    };
    let (a, b) = answer_span(&lm, &doc, "chromatic trombone")
        .unwrap()
        .unwrap();
    let read = SpanRead {
        document: &doc,
        start: a,
        end: b,
        stored: None,
        exact: false,
    };
    let gen = AnswerGeneration {
        max_tokens: 16,
        ..Default::default()
    };
    let answer = reader
        .answer_after(
            &lm,
            &preamble,
            &[read],
            &["What instrument does Tomasz Vasquez play?"],
            &[gen],
            &mut |_, _| {},
        )
        .unwrap()
        .remove(0)
        .text;
    assert!(whole_words_of(text, &answer), "{answer}");
    assert!(answer.contains("chromatic trombone"), "{answer}");
}

/// The fetched sentence encoder (all-MiniLM-L6-v2), when fetched.
fn sentence_check() -> Option<SentenceCheck> {
    let dir = mac_assets::default_encoder_dir();
    mac_assets::fetched_or_skip(&dir)
        .then(|| SentenceCheck::load(&dir, &mac_device::select("flex").unwrap()).unwrap())
}

#[test]
fn the_sentence_check_hands_the_sentence_that_answers_the_question() {
    let (Some(lm), Some(check)) = (smollm2(), sentence_check()) else {
        return;
    };
    // A text's cosine with itself is 1; with an unrelated one, well below.
    let same = check
        .similarities(
            "Who is Noor Ivanova's spouse?",
            &[
                "Who is Noor Ivanova's spouse?",
                "The harbour froze in 1911.",
            ],
        )
        .unwrap();
    assert!((same[0] - 1.0).abs() < 1e-4, "{same:?}");
    assert!(same[1] < 0.5, "{same:?}");
    let text = "Noor Ivanova laughs easily. Noor Ivanova is married to Nikolai Szymanski. \
                Noor Ivanova plays the bass flute.";
    let doc = SpanReader::document_ids(&lm, text).unwrap();
    let question = "Who is Noor Ivanova's spouse?";
    let sentence_of = |needle: &str| {
        let at = (0..doc.len())
            .find(|&i| lm.tokenizer.decode(&doc[..=i]).unwrap().contains(needle))
            .unwrap();
        SpanExtent::Sentence.range(&lm, &doc, at, at).unwrap()
    };
    let (laughs, married) = (sentence_of("laughs"), sentence_of("married"));
    // A span in the wrong sentence: the check finds the spouse's sentence,
    // whole, and by how much it matches better.
    let better = check
        .better_sentence(&lm, question, &doc, laughs)
        .unwrap()
        .expect("another sentence matches better");
    assert_eq!((better.start, better.end), married);
    assert!(better.gap > 0.0);
    let handed = lm
        .tokenizer
        .decode(&doc[better.start..=better.end])
        .unwrap();
    assert!(handed.contains("married to Nikolai Szymanski."), "{handed}");
    assert!(
        !handed.contains("laughs") && !handed.contains("flute"),
        "{handed}"
    );
    // A span in the right sentence stays where it is.
    assert_eq!(
        check.better_sentence(&lm, question, &doc, married).unwrap(),
        None
    );
    // A later report of what was asked matches it as well as the first
    // report does; one about another fact of the same person does not.
    let matches = check
        .best_matches(
            "How many marathons has Yara Yilmaz finished?",
            &[
                "A keen runner, Yara Yilmaz has 17 marathons behind them. Yara Yilmaz swims.",
                "Yara Yilmaz's tally has grown to 22 marathons.",
                "Yara Yilmaz has switched to the fretless accordion.",
                "",
            ],
        )
        .unwrap();
    eprintln!("best sentence matches: {matches:?}");
    assert!(matches[1] > matches[0] - 0.1, "{matches:?}");
    assert!(matches[2] < matches[1] - 0.2, "{matches:?}");
    assert_eq!(matches[3], -1.0);
}

#[test]
fn a_later_report_is_handed_beside_the_value_it_replaces() {
    let lm = tiny();
    let question = "What does Mira play?";
    let cut = |text: &str, replaced: &str| {
        let ids = SpanReader::document_ids(&lm, text).unwrap();
        let handed = (0, ids.len() - 1);
        beside_replaced(&lm, &ids, handed, replaced, question)
            .unwrap()
            .map(|(a, b)| lm.tokenizer.decode(&ids[a..=b]).unwrap())
    };
    // The old value before the new: the part after it.
    let after = cut("Mira put away the oboe and now plays the lute.", "the oboe").unwrap();
    assert!(
        after.contains("plays the lute") && !after.contains("oboe"),
        "{after:?}"
    );
    // After the new: the part before it; the answer's punctuation aside.
    let before = cut("Mira plays the lute, no longer the oboe.", "oboe.").unwrap();
    assert!(
        before.contains("Mira plays the lute") && !before.contains("oboe"),
        "{before:?}"
    );
    // Not stated, a name the question names, a function word: nothing cut.
    assert_eq!(cut("Mira plays the lute.", "the harp"), None);
    assert_eq!(cut("Mira plays the lute, not Tom.", "Mira"), None);
    assert_eq!(cut("Mira plays the lute.", "the"), None);
    // Nothing but punctuation beside it: nothing to hand.
    assert_eq!(cut("The oboe.", "The oboe"), None);
}
