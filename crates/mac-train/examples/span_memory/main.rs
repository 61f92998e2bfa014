//! Span memory on the `open` fact stream (every test answer a value training
//! never showed): the selector trained and chosen on validation as `mac
//! train --preset span` does (`mac_train::span::train_span_memory`), then
//! the test split's questions answered from a few of a document's own
//! key/values, with the controls that say what the memory carries (beyond
//! `mac eval`'s: the similarity prior, BM25's top document, the own
//! document alone, the gold span); the same on a *novel* stream written
//! apart from the training generator.
//!
//! `cargo xtask span`, or `cargo run --example span_memory -p mac-train --
//! [TRAIN_DOCS] [TEST_DOCS] [STEPS] [OUT.json] [DISTRACTORS]`
//! (needs the models: `cargo xtask fetch`). `MAC_SPAN_SECTIONS` picks the
//! parts evaluated (comma-separated; all by default): `test` (the test
//! split's methods and references), `banks` (bank sizes), `fair` (the
//! question-only baseline and the oracle put with the chat template),
//! `retention` (stream order), `novel` (the novel stream).

mod eval;
mod memory;

use std::error::Error;
use std::path::Path;

use eval::Evaluation;
use mac_data::{novel_stream, Dataset, FactStream, FactStreamConfig};
use mac_eval::QuestionOnly;
use mac_lm::LoadedLm;
use mac_model::prompt::{chat_oracle_prompt, ChatExample, ChatFormat, ChatFrame};
use mac_model::{AnswerFrame, FrameExample, SpanCheckpoint};
use mac_train::span::{train_span_memory, SpanFeatures, SpanRunConfig};
use memory::{Chooser, Memory, PriorEncoder};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Whether `MAC_SPAN_SECTIONS` asks for `section` (all do when it is unset).
fn wanted(section: &str) -> bool {
    std::env::var("MAC_SPAN_SECTIONS").map_or(true, |v| v.split(',').any(|s| s.trim() == section))
}

/// The documented evaluation's parts, on a trained run: the test split's
/// methods, bank sizes, retention, the fair references and the novel stream.
struct Sections<'a> {
    lm: &'a LoadedLm,
    stream: &'a FactStream,
    memory: &'a Memory,
    chooser: &'a Chooser<'a>,
    frame: Option<&'a ChatFrame>,
    frame_examples: &'a [FrameExample],
    encoder: &'a PriorEncoder,
    device: &'a burn::tensor::Device,
}

fn main() -> Result<(), Box<dyn Error>> {
    mac_device::keep_freed_memory();
    let (n_train, n_test, steps) = (arg(1, 2000), arg(2, 200), arg(3, 1500));
    let out = std::env::args().nth(4).filter(|o| o != "--train-only");
    let train_only = std::env::args().nth(4).as_deref() == Some("--train-only");
    let n_distractors = arg(5, 800);
    let device = mac_device::select("flex")?;
    // Trained, and step, rule and frame chosen on validation, as `mac train
    // --preset span` does; the run (and its checkpoint) beside OUT.json.
    let mut config = SpanRunConfig::preset("span")?;
    config.train_documents = n_train;
    config.selector.steps = steps;
    config.selector.train_match = std::env::var("MAC_SPAN_TRAIN_MATCH").map_or(true, |v| v != "0");
    let run_dir = match &out {
        Some(o) => Path::new(o)
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf(),
        None => std::env::temp_dir().join("span-memory-example"),
    };
    std::fs::create_dir_all(&run_dir)?;
    let run = train_span_memory(&config, &run_dir, &device, &mut |l| eprintln!("{l}"))?;
    if train_only {
        return Ok(());
    }
    let checkpoint = SpanCheckpoint::open(&run.checkpoint)?;
    let selector = checkpoint.load_selector(&device)?;
    let reading = checkpoint.meta.reading.clone();
    let lm = LoadedLm::load(config.lm_path(), &device)?;
    let frame = reading.frame.chat_frame(&lm)?;
    let frame_examples = match &reading.frame {
        AnswerFrame::Chat { examples } => examples.clone(),
        AnswerFrame::Plain => Vec::new(),
    };
    let stream = FactStream::generate(&config.stream);
    let reader = reading.reader;
    let test = SpanFeatures::read(&lm, &reader, &stream.test, n_test, 16)?;
    let distractor_stream = FactStream::generate(&FactStreamConfig {
        seed: 2025,
        n_train: 0,
        n_validation: 0,
        n_test: n_distractors,
        ..FactStreamConfig::open()
    });
    let distractors = SpanFeatures::read(&lm, &reader, &distractor_stream.test, n_distractors, 16)?;
    let encoder = PriorEncoder::load(&device)?;
    let memory = Memory::new(
        test,
        texts(&stream.test),
        &distractors,
        &texts(&distractor_stream.test),
        &encoder,
        &device,
    )?;
    let chooser = Chooser {
        selector: &selector,
        rule: reading.rule,
        device: &device,
    };
    let parts = Sections {
        lm: &lm,
        stream: &stream,
        memory: &memory,
        chooser: &chooser,
        frame: frame.as_ref(),
        frame_examples: &frame_examples,
        encoder: &encoder,
        device: &device,
    };
    let mut eval = Evaluation::new(&lm, &reader);
    let novel_documents = parts.run(&mut eval)?;
    let json = serde_json::json!({
        "config": config, "chosen_step": run.chosen_step, "rule": run.rule, "train_documents": n_train,
        "test_documents": memory.own, "distractor_documents": distractors.documents.len(),
        "novel_documents": novel_documents, "frame": run.frame, "frames": run.frames,
        "sections": std::env::var("MAC_SPAN_SECTIONS").unwrap_or_else(|_| "all".into()),
        "test_questions": memory.questions().len(), "train_seconds": run.seconds[1], "curve": run.curve,
        "methods": eval.methods,
    });
    write_report(&json, &eval, out.as_deref())
}

/// The texts of a dataset's documents.
fn texts(d: &Dataset) -> Vec<String> {
    d.documents.iter().map(|d| d.text.clone()).collect()
}

/// Writes the report (and its predictions beside it) to `out`, or prints it.
fn write_report(
    json: &serde_json::Value,
    eval: &Evaluation<'_>,
    out: Option<&str>,
) -> Result<(), Box<dyn Error>> {
    let text = serde_json::to_string_pretty(json)?;
    let Some(path) = out else {
        println!("{text}");
        return Ok(());
    };
    let mut lines = String::new();
    for (name, score) in &eval.methods {
        for p in &score.predictions {
            lines.push_str(&serde_json::to_string(
                &serde_json::json!({"method": name, "prediction": p}),
            )?);
            lines.push('\n');
        }
    }
    std::fs::write(format!("{path}.predictions.jsonl"), lines)?;
    std::fs::write(path, text)?;
    Ok(())
}

impl Sections<'_> {
    /// Every part `MAC_SPAN_SECTIONS` asks for; the novel stream's documents.
    fn run(&self, eval: &mut Evaluation<'_>) -> Result<usize, Box<dyn Error>> {
        if wanted("test") {
            self.chooser
                .methods(eval, self.memory, "", true, self.frame)?;
        }
        if wanted("banks") {
            self.bank_sizes(eval)?;
        }
        if wanted("retention") {
            self.retention(eval)?;
        }
        if wanted("fair") {
            self.fair(eval)?;
        }
        if wanted("novel") {
            return self.novel(eval);
        }
        Ok(0)
    }

    /// The first 10 documents' questions in banks of 10 to all.
    fn bank_sizes(&self, eval: &mut Evaluation<'_>) -> Result<(), Box<dyn Error>> {
        let first = self.memory.questions_of_first(10);
        let total = self.memory.features.documents.len();
        let mut size = 10;
        while size <= total {
            let bank: Vec<usize> = (0..size).collect();
            let name = format!("bank of {size}");
            self.chooser
                .both(eval, self.memory, &bank, &first, &name, self.frame)?;
            size = if size * 10 > total && size < total {
                total
            } else {
                size * 10
            };
        }
        Ok(())
    }

    /// Stream order: the first tenth's questions when 10%, 50% and all of
    /// the stream has been ingested.
    fn retention(&self, eval: &mut Evaluation<'_>) -> Result<(), Box<dyn Error>> {
        let n = self.memory.own;
        let first = self.memory.questions_of_first(n / 10);
        for percent in [10, 50, 100] {
            let bank: Vec<usize> = (0..n * percent / 100).collect();
            let name = format!("retention at {percent}%");
            self.chooser
                .both(eval, self.memory, &bank, &first, &name, self.frame)?;
        }
        Ok(())
    }

    /// The question-only baseline (the best fixed answer per question
    /// form, fitted on training) and the oracle context put fairly to the
    /// instruct model: its chat template, the short-answer instruction,
    /// without and with the frame's worked examples.
    fn fair(&self, eval: &mut Evaluation<'_>) -> Result<(), Box<dyn Error>> {
        let (m, questions) = (&self.memory.features, self.memory.questions());
        let fixed = QuestionOnly::fit(&self.stream.train)?;
        let answers = questions
            .iter()
            .map(|&q| fixed.answer(&m.questions[q].text))
            .collect::<Result<Vec<_>, _>>()?;
        let name = "question-only (best fixed answer per question form)";
        eval.fixed(name, m, &questions, answers);
        let format = self
            .lm
            .tokenizer
            .chat_template
            .as_deref()
            .and_then(ChatFormat::recognise)
            .ok_or("the LM's chat template is not ChatML")?;
        let shots: Vec<ChatExample> = self
            .frame_examples
            .iter()
            .map(FrameExample::as_chat)
            .collect();
        let text_of = |q: usize| self.memory.texts[m.questions[q].document].as_str();
        for (name, examples) in [
            ("", &shots[..0]),
            (", with the frame's examples", &shots[..]),
        ] {
            if name.is_empty() || !examples.is_empty() {
                let prompts: Vec<String> = questions
                    .iter()
                    .map(|&q| {
                        chat_oracle_prompt(format, text_of(q), &m.questions[q].text, examples)
                    })
                    .collect();
                let method =
                    format!("oracle context, chat template + short-answer instruction{name}");
                eval.prompts(&method, m, &questions, &prompts)?;
            }
        }
        Ok(())
    }

    /// A stream written apart from the generator (other names, wording,
    /// values and attribute kinds); its unrelated bank is the test split.
    fn novel(&self, eval: &mut Evaluation<'_>) -> Result<usize, Box<dyn Error>> {
        let (m, n) = (&self.memory.features, self.memory.own);
        let novel = novel_stream(11, n);
        let reader = *eval.reader;
        let features = SpanFeatures::read(self.lm, &reader, &novel, n, 16)?;
        let documents = features.documents.len();
        let unrelated = SpanFeatures {
            documents: m.documents[..n].to_vec(),
            texts: m.texts[..n].to_vec(),
            states: m.states[..n].to_vec(),
            questions: Vec::new(),
            d_lm: m.d_lm,
        };
        let novel_memory = Memory::new(
            features,
            texts(&novel),
            &unrelated,
            &self.memory.texts[..n],
            self.encoder,
            self.device,
        )?;
        self.chooser
            .methods(eval, &novel_memory, "novel: ", false, self.frame)?;
        Ok(documents)
    }
}
