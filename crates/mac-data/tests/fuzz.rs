//! Mutation tests of the dataset loaders: JSONL, SQuAD,
//! StreamingQA and ArchivalQA files cut at every byte, with every byte
//! flipped and with random edits (`MAC_FUZZ_SECONDS` runs them longer:
//! `cargo xtask fuzz`), strict and skipping, load or fail with an error
//! naming the file — never a panic or an allocation beyond a bound
//! proportional to the file's size.

use std::fs;

use mac_data::{load, Format, LoadOptions};
use mac_fuzz::{Campaign, Kind};

#[global_allocator]
static ALLOC: mac_fuzz::TrackingAllocator = mac_fuzz::TrackingAllocator;

fn campaign(format: Format, file: &str, seed: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    Campaign::new(format!("{format} loader"), seed, Kind::Text)
        .header_len(0)
        .run(&[file], |bytes| {
            fs::write(&path, bytes).unwrap();
            let skipping = LoadOptions {
                skip_malformed: true,
            };
            let strict = load(&path, format, LoadOptions::default());
            let lenient = load(&path, format, skipping);
            // Skipping malformed records never loses a record a strict load keeps.
            if let (Ok(s), Ok(l)) = (&strict, &lenient) {
                if l.dataset.n_questions() < s.dataset.n_questions() {
                    return Err(format!("{file}: skipping lost questions"));
                }
            }
            strict.map(|_| ()).map_err(|e| e.to_string())?;
            lenient.map(|_| ()).map_err(|e| e.to_string())
        })
        .assert_passed();
}

#[test]
fn jsonl() {
    campaign(
        Format::Jsonl,
        "d.jsonl",
        br#"{"document": "A was born in X.", "question": "Where was A born?", "answers": ["X"]}
{"document": "A was born in X.", "question": "Who was born in X?", "answers": ["A", "a"], "source": "s"}
{"document": "B works at Y.", "question": "Where does B work?", "answers": ["Y"]}
"#,
    );
}

#[test]
fn squad() {
    campaign(
        Format::Squad,
        "s.json",
        br#"{"version": "1.1", "data": [{"title": "T", "paragraphs": [
  {"context": "Paris is in France.", "qas": [
     {"id": "1", "question": "Where is Paris?", "answers": [{"answer_start": 12, "text": "France"}]},
     {"id": "2", "question": "What is in France?", "answers": [{"answer_start": 0, "text": "Paris"}]}]}]}]}"#,
    );
}

#[test]
fn streaming_qa() {
    campaign(
        Format::StreamingQa,
        "s.csv",
        b"question,answers,text,extra\nWho won?,Ann\\Ann Smith,\"Ann won, again.\",1\nWhere?,Rome,\"In Rome, it rained.\",3\n",
    );
}

#[test]
fn archival_qa() {
    campaign(
        Format::ArchivalQa,
        "a.csv",
        b"doc_id,para_num,question,answer,ans_paragraph\n7,1,Who?,Bob,Bob came.\n8,1,Where?,Oslo,\"It was Oslo, then.\"\n",
    );
}
