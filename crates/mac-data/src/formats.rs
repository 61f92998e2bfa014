//! Loaders for the paper's dataset formats and a plain JSONL format.
//!
//! | format | file | fields read |
//! |---|---|---|
//! | [`Format::Jsonl`] | one JSON object per line | `document`, `question`, `answers` (list of strings) |
//! | [`Format::Squad`] | SQuAD v1.1 JSON | `data[].paragraphs[].context`, `qas[].question`, `qas[].answers[].text` |
//! | [`Format::StreamingQa`] | CSV with a header | `text`, `question`, `answers` (alternatives separated by `\`) |
//! | [`Format::ArchivalQa`] | CSV with a header | `ans_paragraph`, `question`, `answer` |
//!
//! Questions about the same document text are grouped into one
//! [`Document`], in order of first appearance. A malformed record is an
//! error naming the file and line, or, with [`LoadOptions::skip_malformed`],
//! skipped and listed in [`Loaded::skipped`].

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::{Dataset, Document, QaPair};

/// A dataset file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record is malformed (line is 1-based; 0 when the whole file is at fault).
    #[error("{path}:{line}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line (CSV: the record's first line).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The file holds no question at all.
    #[error("{path}: no usable question in the file")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The supported file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"document", "question", "answers": [...]}` per line.
    Jsonl,
    /// SQuAD v1.1 JSON.
    Squad,
    /// StreamingQA CSV.
    StreamingQa,
    /// ArchivalQA CSV.
    ArchivalQa,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "jsonl" => Ok(Self::Jsonl),
            "squad" => Ok(Self::Squad),
            "streamingqa" => Ok(Self::StreamingQa),
            "archivalqa" => Ok(Self::ArchivalQa),
            other => Err(format!(
                "unknown format `{other}` (expected jsonl, squad, streamingqa or archivalqa)"
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Jsonl => "jsonl",
            Self::Squad => "squad",
            Self::StreamingQa => "streamingqa",
            Self::ArchivalQa => "archivalqa",
        })
    }
}

impl Format {
    /// Guesses the format from the file name (`.jsonl`, `.json` → SQuAD, `.csv` → StreamingQA).
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "jsonl" => Some(Self::Jsonl),
            "json" => Some(Self::Squad),
            "csv" => Some(Self::StreamingQa),
            _ => None,
        }
    }
}

/// How strict a load is.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Skip malformed records (and count them) instead of failing.
    pub skip_malformed: bool,
}

/// A loaded dataset and the records that were skipped.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The documents with their questions.
    pub dataset: Dataset,
    /// `(line, reason)` of every skipped record.
    pub skipped: Vec<(usize, String)>,
}

/// Groups (document, question, answers) rows into documents.
#[derive(Default)]
struct Grouper {
    index: HashMap<String, usize>,
    documents: Vec<Document>,
}

impl Grouper {
    fn push(&mut self, text: String, qa: QaPair, line: usize) {
        let next = self.documents.len();
        let i = *self.index.entry(text.clone()).or_insert(next);
        if i == next {
            self.documents.push(Document {
                id: format!("line-{line}"),
                text,
                qas: Vec::new(),
            });
        }
        self.documents[i].qas.push(qa);
    }
}

struct Ctx<'a> {
    path: &'a Path,
    options: LoadOptions,
    skipped: Vec<(usize, String)>,
}

impl Ctx<'_> {
    /// Records a malformed record: an error, or a skip when allowed.
    fn bad(&mut self, line: usize, reason: String) -> Result<(), DataError> {
        if self.options.skip_malformed {
            self.skipped.push((line, reason));
            Ok(())
        } else {
            Err(DataError::Malformed {
                path: self.path.to_path_buf(),
                line,
                reason,
            })
        }
    }
}

fn check_row(document: &str, question: &str, answers: &[String]) -> Result<(), String> {
    if document.trim().is_empty() {
        return Err("empty document".into());
    }
    if question.trim().is_empty() {
        return Err("empty question".into());
    }
    if answers.is_empty() || answers.iter().all(|a| a.trim().is_empty()) {
        return Err("no non-empty answer".into());
    }
    Ok(())
}

/// Loads a dataset file of the given format.
pub fn load(
    path: impl AsRef<Path>,
    format: Format,
    options: LoadOptions,
) -> Result<Loaded, DataError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut ctx = Ctx {
        path,
        options,
        skipped: Vec::new(),
    };
    let mut grouper = Grouper::default();
    match format {
        Format::Jsonl => load_jsonl(&bytes, &mut ctx, &mut grouper)?,
        Format::Squad => load_squad(&bytes, &mut ctx, &mut grouper)?,
        Format::StreamingQa => load_csv(&bytes, &mut ctx, &mut grouper, CsvColumns::STREAMING)?,
        Format::ArchivalQa => load_csv(&bytes, &mut ctx, &mut grouper, CsvColumns::ARCHIVAL)?,
    }
    let dataset = Dataset {
        documents: grouper.documents,
    };
    if dataset.n_questions() == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Loaded {
        dataset,
        skipped: ctx.skipped,
    })
}

#[derive(Deserialize)]
struct JsonlRecord {
    document: String,
    question: String,
    answers: Vec<String>,
    #[serde(default)]
    stale: Vec<String>,
}

fn load_jsonl(bytes: &[u8], ctx: &mut Ctx, grouper: &mut Grouper) -> Result<(), DataError> {
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let Ok(text) = std::str::from_utf8(raw) else {
            ctx.bad(line, "not valid UTF-8".into())?;
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<JsonlRecord>(text) {
            Ok(r) => match check_row(&r.document, &r.question, &r.answers) {
                Ok(()) => grouper.push(
                    r.document,
                    QaPair {
                        question: r.question.trim().to_string(),
                        answers: r.answers,
                        stale: r.stale,
                    },
                    line,
                ),
                Err(reason) => ctx.bad(line, reason)?,
            },
            Err(e) => ctx.bad(
                line,
                format!("not a {{document, question, answers}} object: {e}"),
            )?,
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct SquadFile {
    data: Vec<SquadArticle>,
}
#[derive(Deserialize)]
struct SquadArticle {
    paragraphs: Vec<SquadParagraph>,
}
#[derive(Deserialize)]
struct SquadParagraph {
    context: String,
    qas: Vec<SquadQa>,
}
#[derive(Deserialize)]
struct SquadQa {
    question: String,
    answers: Vec<SquadAnswer>,
}
#[derive(Deserialize)]
struct SquadAnswer {
    text: String,
}

fn load_squad(bytes: &[u8], ctx: &mut Ctx, grouper: &mut Grouper) -> Result<(), DataError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DataError::Malformed {
        path: ctx.path.to_path_buf(),
        line: line_of_offset(bytes, e.valid_up_to()),
        reason: "not valid UTF-8".into(),
    })?;
    let file: SquadFile = serde_json::from_str(text).map_err(|e| DataError::Malformed {
        path: ctx.path.to_path_buf(),
        line: e.line(),
        reason: format!("not SQuAD v1.1 JSON: {e}"),
    })?;
    let mut n = 0;
    for article in file.data {
        for p in article.paragraphs {
            for qa in p.qas {
                n += 1;
                let answers: Vec<String> = qa.answers.into_iter().map(|a| a.text).collect();
                match check_row(&p.context, &qa.question, &answers) {
                    Ok(()) => grouper.push(
                        p.context.clone(),
                        QaPair {
                            question: qa.question.trim().to_string(),
                            answers,
                            stale: Vec::new(),
                        },
                        n,
                    ),
                    // SQuAD is one JSON document: "line" is the question's ordinal.
                    Err(reason) => ctx.bad(0, format!("question #{n}: {reason}"))?,
                }
            }
        }
    }
    Ok(())
}

fn line_of_offset(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}

struct CsvColumns {
    document: &'static str,
    question: &'static str,
    answers: &'static str,
    /// Separator between alternative answers inside the cell.
    separator: Option<char>,
}

impl CsvColumns {
    const STREAMING: Self = Self {
        document: "text",
        question: "question",
        answers: "answers",
        separator: Some('\\'),
    };
    const ARCHIVAL: Self = Self {
        document: "ans_paragraph",
        question: "question",
        answers: "answer",
        separator: None,
    };
}

fn load_csv(
    bytes: &[u8],
    ctx: &mut Ctx,
    grouper: &mut Grouper,
    cols: CsvColumns,
) -> Result<(), DataError> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(bytes);
    let headers = reader.byte_headers().map_err(|e| DataError::Malformed {
        path: ctx.path.to_path_buf(),
        line: 1,
        reason: format!("unreadable CSV header: {e}"),
    })?;
    let find = |name: &str| -> Result<usize, DataError> {
        headers
            .iter()
            .position(|h| h == name.as_bytes())
            .ok_or_else(|| DataError::Malformed {
                path: ctx.path.to_path_buf(),
                line: 1,
                reason: format!("missing column `{name}`"),
            })
    };
    let (di, qi, ai) = (
        find(cols.document)?,
        find(cols.question)?,
        find(cols.answers)?,
    );
    for record in reader.byte_records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                ctx.bad(line, format!("bad CSV record: {e}"))?;
                continue;
            }
        };
        let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
        let field = |i: usize| std::str::from_utf8(record.get(i).unwrap_or_default());
        let (Ok(doc), Ok(q), Ok(a)) = (field(di), field(qi), field(ai)) else {
            ctx.bad(line, "not valid UTF-8".into())?;
            continue;
        };
        let answers: Vec<String> = match cols.separator {
            Some(sep) => a
                .split(sep)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            None => vec![a.trim().to_string()],
        };
        match check_row(doc, q, &answers) {
            Ok(()) => grouper.push(
                doc.to_string(),
                QaPair {
                    question: q.trim().to_string(),
                    answers,
                    stale: Vec::new(),
                },
                line,
            ),
            Err(reason) => ctx.bad(line, reason)?,
        }
    }
    Ok(())
}
