//! Bank size: the same questions asked of banks of each size. The stream's
//! first documents are asked; a bank smaller than them holds them in
//! consecutive groups of its size (each question asked of its own group's
//! bank), a larger one holds all of them followed by unrelated documents up
//! to its size — so every size answers the same questions, each from a
//! bank of exactly that many documents that holds its own. Each answer,
//! with where it was read from, is written to `bank-sizes.jsonl`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use mac_bank::MemoryBank;
use mac_data::{Dataset, Document};
use mac_runtime::Memory;
use serde::{Deserialize, Serialize};

use crate::asking::{ask_all, attention_stats, clear_eval_bank, ingest, read_from, EvalOptions};
use crate::methods::{score, Question};

/// The producer of the banks a bank-size measurement makes.
const SIZES_BANK: &str = "mac-eval bank sizes";

/// The same questions answered from banks of one size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BankSizePoint {
    /// Documents in each bank.
    pub documents: usize,
    /// EM on the questions.
    pub em: f64,
    /// F1 on them.
    pub f1: f64,
    /// Share of them answered from their own document.
    pub gold_top1: f64,
    /// Questions asked.
    #[serde(default)]
    pub questions: usize,
    /// Banks of this size they were asked of.
    #[serde(default)]
    pub banks: usize,
    /// Wall time per question answered (selection, reading, decoding).
    #[serde(default)]
    pub answer_ms: f64,
}

/// One question answered from a bank of one size: where the answer was
/// read from, for looking at what a larger bank confuses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizedAnswer {
    /// Documents in the bank it was asked of.
    pub documents: usize,
    /// Its document's index in the stream.
    pub document: usize,
    /// The question.
    pub question: String,
    /// The generated answer.
    pub prediction: String,
    /// The accepted answers.
    pub answers: Vec<String>,
    /// Token F1.
    pub f1: f64,
    /// Whether the answer was read from its own document.
    pub own_document: bool,
    /// The span read, for a memory that reads spans.
    #[serde(default)]
    pub span: Option<String>,
    /// The most attended documents' starts, highest share first.
    pub attended: Vec<String>,
}

/// What a bank size's banks answered, summed over its banks.
#[derive(Default)]
struct Tally {
    em: f64,
    f1: f64,
    top1: f64,
    questions: usize,
    banks: usize,
    seconds: f64,
    answers: Vec<SizedAnswer>,
}

impl Tally {
    /// Asks `questions` (documents counted within `bank`, the first of
    /// them document `from` of the stream) of `bank`.
    fn ask(
        &mut self,
        memory: &dyn Memory,
        bank: &MemoryBank,
        (questions, from): (&[Question<'_>], usize),
        opts: &EvalOptions,
    ) -> Result<()> {
        let label = format!("bank of {}", bank.len());
        let t0 = Instant::now();
        let answers = ask_all(memory, bank, questions, opts, None, &label)?;
        self.seconds += t0.elapsed().as_secs_f64();
        let n = questions.len() as f64;
        self.top1 += n * attention_stats(questions, &answers, bank.len()).gold_top1;
        let texts: Vec<String> = answers.iter().map(|a| a.text.clone()).collect();
        let mut preds = Vec::new();
        let (em, f1, _) = score("bank size", questions, &texts, &mut preds);
        (self.em, self.f1) = (self.em + n * em, self.f1 + n * f1);
        for ((p, a), (doc, _)) in preds.into_iter().zip(&answers).zip(questions) {
            self.answers.push(SizedAnswer {
                documents: bank.len(),
                document: from + doc,
                question: p.question,
                prediction: p.prediction,
                answers: p.answers,
                f1: p.f1,
                own_document: read_from(*doc, a),
                span: a.span.as_ref().map(|s| s.text.clone()),
                attended: a.documents.iter().map(|d| d.snippet.clone()).collect(),
            });
        }
        self.questions += questions.len();
        self.banks += 1;
        Ok(())
    }

    fn point(&self, documents: usize) -> BankSizePoint {
        let n = self.questions.max(1) as f64;
        BankSizePoint {
            documents,
            em: self.em / n,
            f1: self.f1 / n,
            gold_top1: self.top1 / n,
            questions: self.questions,
            banks: self.banks,
            answer_ms: 1000.0 * self.seconds / n,
        }
    }
}

/// The questions of the first `opts.bank_size_documents` of `docs` asked
/// of banks of each of `opts.bank_sizes` documents, filled from `control`
/// (unrelated documents) where the asked ones are fewer; banks are made
/// under `out_dir/bank-sizes` and each answer written to
/// `out_dir/bank-sizes.jsonl`. A size that `control` cannot fill is
/// skipped.
pub(crate) fn bank_size_points(
    memory: &dyn Memory,
    docs: &[Document],
    questions: &[Question<'_>],
    control: &Dataset,
    out_dir: &Path,
    opts: &EvalOptions,
) -> Result<Vec<BankSizePoint>> {
    let asked = opts.bank_size_documents.clamp(1, docs.len().max(1));
    let docs = &docs[..asked.min(docs.len())];
    let questions: Vec<Question<'_>> = questions.iter().copied().filter(|q| q.0 < asked).collect();
    let dir = out_dir.join("bank-sizes");
    let mut grown: Option<MemoryBank> = None;
    let mut unrelated = control.documents.iter();
    let (mut points, mut answers) = (Vec::new(), Vec::new());
    for &size in &opts.bank_sizes {
        let mut tally = Tally::default();
        if size < docs.len() {
            for (g, group) in docs.chunks(size.max(1)).enumerate() {
                let pad = size.saturating_sub(group.len());
                if pad > control.documents.len() {
                    continue;
                }
                let bank = fresh_bank(
                    memory,
                    &dir.join("group"),
                    &[group, &control.documents[..pad]],
                )?;
                let from = g * size.max(1);
                let own: Vec<Question<'_>> = questions
                    .iter()
                    .filter(|q| (from..from + group.len()).contains(&q.0))
                    .map(|&(d, qa)| (d - from, qa))
                    .collect();
                tally.ask(memory, &bank, (&own, from), opts)?;
            }
        } else {
            let bank = match grown.as_mut() {
                Some(bank) => bank,
                None => grown.insert(fresh_bank(memory, &dir.join("bank"), &[docs])?),
            };
            fill(memory, bank, &mut unrelated, size, opts)?;
            if bank.len() < size {
                break;
            }
            tally.ask(memory, bank, (&questions, 0), opts)?;
        }
        if tally.banks > 0 {
            points.push(tally.point(size));
            answers.append(&mut tally.answers);
        }
    }
    write_sized_answers(&out_dir.join("bank-sizes.jsonl"), &answers)?;
    Ok(points)
}

/// Writes one JSON line per answer to `path`.
fn write_sized_answers(path: &Path, answers: &[SizedAnswer]) -> Result<()> {
    let mut text = String::new();
    for a in answers {
        text.push_str(&serde_json::to_string(a)?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))
}

/// A new bank in `dir` (one an evaluation made there is cleared first)
/// holding `parts` in order.
fn fresh_bank(memory: &dyn Memory, dir: &Path, parts: &[&[Document]]) -> Result<MemoryBank> {
    clear_eval_bank(dir, SIZES_BANK)?;
    let mut bank = MemoryBank::create(dir, memory.bank_shape(), SIZES_BANK)?;
    for part in parts.iter().filter(|p| !p.is_empty()) {
        ingest(memory, &mut bank, part)?;
    }
    Ok(bank)
}

/// Adds documents from `unrelated` to `bank` until it holds `size` (or
/// they run out), a batch at a time.
fn fill<'a>(
    memory: &dyn Memory,
    bank: &mut MemoryBank,
    unrelated: &mut impl Iterator<Item = &'a Document>,
    size: usize,
    opts: &EvalOptions,
) -> Result<()> {
    while bank.len() < size {
        let batch: Vec<Document> = unrelated
            .by_ref()
            .take((size - bank.len()).min(opts.ingest_batch.max(1)))
            .cloned()
            .collect();
        if batch.is_empty() {
            break;
        }
        ingest(memory, bank, &batch)?;
    }
    Ok(())
}
