//! Whether a later entry is handed without the value it replaces
//! ([`mac_model::beside_replaced`]): chosen on validation F1 over the
//! changing banks' questions where the kept recency reads a later entry
//! and the earlier entry's answer lies in what the later one hands — the
//! only questions it changes — with everything else the run chose kept.

use anyhow::Result;
use burn::tensor::Device;
use mac_aggregation::{ChosenSpan, Recency, SpanSelector};
use mac_data::f1_score;
use mac_lm::LoadedLm;
use mac_model::{beside_replaced, AnswerFrame, SentenceCheck, SpanRead, SpanReader};
use serde::{Deserialize, Serialize};

use super::recency::ChangingBank;
use super::validation::{answers_to, mean};
use super::{answerable, choose_spans_each, Choosing};

/// The choice and what it was chosen on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplacedChoice {
    /// Whether a later entry is handed beside the replaced value.
    pub beside_replaced: bool,
    /// Questions of the changing banks where that hands another part.
    pub questions: usize,
    /// Their mean F1 handed as they are, then beside the replaced value.
    pub f1: [f64; 2],
}

/// How the run answers: its reader and frame, the floor below which the
/// whole document is handed, and the sentence check with its slack.
pub(super) struct Handing<'a> {
    pub(super) reader: &'a SpanReader,
    pub(super) frame: &'a AnswerFrame,
    pub(super) whole_below: Option<f32>,
    pub(super) check: Option<(&'a SentenceCheck, f32)>,
}

impl Handing<'_> {
    /// The span handed for `span` of `document`, before its extent.
    fn checked(
        &self,
        lm: &LoadedLm,
        question: &str,
        document: &[u32],
        span: ChosenSpan,
    ) -> Result<(usize, usize)> {
        let range = (span.start, span.end.min(document.len().saturating_sub(1)));
        Ok(match self.check {
            Some((check, slack)) => check.checked(lm, question, document, range, slack)?,
            None => range,
        })
    }
}

/// One question a cut changes: the later entry's read as it is, and beside
/// the replaced value.
struct Cut<'a> {
    question: usize,
    plain: SpanRead<'a>,
    cut: SpanRead<'a>,
}

/// Chooses on `banks` whether the recency's later entries (spans chosen by
/// `selector` as `choosing` and `recency` say) are handed beside the
/// replaced value, answered as `handing` says.
pub(super) fn choose_beside_replaced(
    lm: &LoadedLm,
    handing: &Handing<'_>,
    banks: &[ChangingBank],
    (selector, choosing, recency): (&SpanSelector, Choosing<'_>, Recency),
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<ReplacedChoice> {
    let (mut plain, mut cut) = (Vec::new(), Vec::new());
    for bank in banks {
        let features = &bank.features;
        let all: Vec<usize> = (0..features.documents.len()).collect();
        let questions = answerable(features);
        let mut each = choose_spans_each(
            selector,
            features,
            &all,
            features,
            &questions,
            None,
            choosing,
            &[recency],
            device,
        )?;
        let spans = each.pop().unwrap_or_default();
        let cuts = cuts_of(lm, handing, bank, &questions, &spans)?;
        let asked: Vec<usize> = cuts.iter().map(|c| c.question).collect();
        let pair = (handing.reader, handing.frame);
        let reads: Vec<SpanRead<'_>> = cuts.iter().map(|c| c.plain).collect();
        let as_is = answers_to(lm, pair, features, &asked, &reads)?;
        let reads: Vec<SpanRead<'_>> = cuts.iter().map(|c| c.cut).collect();
        let beside = answers_to(lm, pair, features, &asked, &reads)?;
        for ((&q, a), b) in asked.iter().zip(&as_is).zip(&beside) {
            let answers = &features.questions[q].answers;
            plain.push(f1_score(a, answers));
            cut.push(f1_score(b, answers));
        }
    }
    let f1 = [mean(&plain), mean(&cut)];
    log(&format!(
        "validation F1 of the {} questions a later entry answers beside the value it replaces: {:.3} as it is, {:.3} beside it",
        plain.len(),
        f1[0],
        f1[1]
    ));
    Ok(ReplacedChoice {
        beside_replaced: f1[1] > f1[0],
        questions: plain.len(),
        f1,
    })
}

/// The questions of `bank` whose later entry, read instead of an earlier
/// one, hands the earlier one's answer: each with its read as it is and
/// beside that answer.
fn cuts_of<'a>(
    lm: &LoadedLm,
    handing: &Handing<'_>,
    bank: &'a ChangingBank,
    questions: &[usize],
    spans: &[super::QuestionSpan],
) -> Result<Vec<Cut<'a>>> {
    let features = &bank.features;
    let mut read = Vec::new();
    for (&q, s) in questions.iter().zip(spans) {
        let whole = handing.whole_below.is_some_and(|f| s.confidence < f);
        let Some(over) = s.passed_over.filter(|_| !whole) else {
            continue;
        };
        let question = &features.questions[q].text;
        let earlier = &features.documents[over.document];
        let (start, end) = handing.checked(lm, question, earlier, over)?;
        let stale = SpanRead {
            document: earlier,
            start,
            end,
            stored: None,
            exact: false,
        };
        read.push((q, s.span, stale));
    }
    let asked: Vec<usize> = read.iter().map(|r| r.0).collect();
    let stale_reads: Vec<SpanRead<'_>> = read.iter().map(|r| r.2).collect();
    let pair = (handing.reader, handing.frame);
    let stale = answers_to(lm, pair, features, &asked, &stale_reads)?;
    let mut cuts = Vec::new();
    for ((q, span, _), replaced) in read.into_iter().zip(stale) {
        let question = &features.questions[q].text;
        let later = &features.documents[span.document];
        let (start, end) = handing.checked(lm, question, later, span)?;
        let plain = SpanRead {
            document: later,
            start,
            end,
            stored: None,
            exact: false,
        };
        let handed = handing.reader.extent.range(lm, later, start, end)?;
        if let Some((a, b)) = beside_replaced(lm, later, handed, &replaced, question)? {
            let cut = SpanRead {
                start: a,
                end: b,
                exact: true,
                ..plain
            };
            cuts.push(Cut {
                question: q,
                plain,
                cut,
            });
        }
    }
    Ok(cuts)
}
