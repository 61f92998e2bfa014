//! Whether a later entry is handed without the value it replaces
//! ([`mac_model::beside_replaced`]), and which earlier entry's answer that
//! is — one the kept recency passed over, or the earlier report of any
//! chosen entry ([`mac_aggregation::SpanChoice::earlier`]): chosen on
//! validation F1 over the changing banks' questions where the earlier
//! entry's answer lies in what the chosen one hands — the only questions
//! a cut changes — with everything else the run chose kept.

use anyhow::Result;
use burn::tensor::Device;
use mac_aggregation::{ChosenSpan, Recency, SpanSelector};
use mac_data::f1_score;
use mac_lm::LoadedLm;
use mac_model::{
    beside_replaced, handed_span, hands_whole, AnswerFrame, SentenceCheck, SpanRead, SpanReader,
};
use serde::{Deserialize, Serialize};

use super::recency::ChangingBank;
use super::validation::{answers_to, mean};
use super::{answerable, choose_spans_each, Choosing, QuestionSpan};

/// The choice and what it was chosen on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplacedChoice {
    /// Whether a later entry is handed beside the replaced value.
    pub beside_replaced: bool,
    /// Whether the replaced value is any earlier report's, not only a
    /// passed-over entry's.
    #[serde(default)]
    pub from_earlier: bool,
    /// Questions of the changing banks where a cut hands another part.
    pub questions: usize,
    /// Their mean F1 handed as they are, beside a passed-over entry's
    /// answer, and (where tried) beside any earlier report's.
    pub f1: Vec<f64>,
}

/// Which earlier entry's answer a cut takes as replaced.
type Earlier = fn(&QuestionSpan) -> Option<ChosenSpan>;

/// The cuts tried, in the order kept among equals: a passed-over entry's
/// answer, then any earlier report's.
const EARLIER: [Earlier; 2] = [|s| s.passed_over, |s| s.earlier];

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
        let span = (span.start, span.end);
        Ok(handed_span(lm, self.check, question, document, span)?)
    }
}

/// One question a cut changes: the later entry's read as it is, and beside
/// the replaced value.
struct Cut<'a> {
    question: usize,
    plain: SpanRead<'a>,
    cut: SpanRead<'a>,
}

/// Chooses on `banks` whether the recency's chosen entries (spans chosen by
/// `selector` as `choosing` and `recency` say) are handed beside the
/// replaced value, and whose, answered as `handing` says.
pub(super) fn choose_beside_replaced(
    lm: &LoadedLm,
    handing: &Handing<'_>,
    banks: &[ChangingBank],
    (selector, choosing, recency): (&SpanSelector, Choosing<'_>, Recency),
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<ReplacedChoice> {
    let mut f1s: Vec<Vec<f64>> = vec![Vec::new(); 1 + EARLIER.len()];
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
        let cuts = EARLIER
            .iter()
            .map(|&earlier| cuts_of(lm, handing, bank, (&questions, &spans), earlier))
            .collect::<Result<Vec<_>>>()?;
        let mut asked: Vec<usize> = cuts.iter().flatten().map(|c| c.question).collect();
        asked.sort_unstable();
        asked.dedup();
        let pair = (handing.reader, handing.frame);
        for (h, f1) in f1s.iter_mut().enumerate() {
            let reads: Vec<SpanRead<'_>> = asked.iter().map(|&q| read_of(&cuts, q, h)).collect();
            let answered = answers_to(lm, pair, features, &asked, &reads)?;
            for (&q, a) in asked.iter().zip(&answered) {
                f1.push(f1_score(a, &features.questions[q].answers));
            }
        }
    }
    let f1: Vec<f64> = f1s.iter().map(|f| mean(f)).collect();
    log(&format!(
        "validation F1 of the {} questions a chosen entry answers beside the value an earlier one answers: {:.3} as it is, {:.3} beside a passed-over entry's, {:.3} beside any earlier report's",
        f1s[0].len(),
        f1[0],
        f1[1],
        f1[2]
    ));
    let kept = (1..f1.len()).fold(0, |b, i| if f1[i] > f1[b] { i } else { b });
    Ok(ReplacedChoice {
        beside_replaced: kept > 0,
        from_earlier: kept == 2,
        questions: f1s[0].len(),
        f1,
    })
}

/// What question `q` (one some cut changes) is handed under handing `h`:
/// as it is (0), or as cut `h − 1` of `cuts` hands it where that cut
/// changes it.
fn read_of<'a>(cuts: &[Vec<Cut<'a>>], q: usize, h: usize) -> SpanRead<'a> {
    let of = |c: &&Cut<'a>| c.question == q;
    let cut = h.checked_sub(1).and_then(|i| cuts[i].iter().find(of));
    match cut {
        Some(c) => c.cut,
        None => {
            cuts.iter()
                .flatten()
                .find(of)
                .expect("a question a cut changes")
                .plain
        }
    }
}

/// The questions of `bank` whose chosen entry hands the answer of the
/// earlier entry `earlier` names: each with its read as it is and beside
/// that answer.
fn cuts_of<'a>(
    lm: &LoadedLm,
    handing: &Handing<'_>,
    bank: &'a ChangingBank,
    (questions, spans): (&[usize], &[QuestionSpan]),
    earlier: Earlier,
) -> Result<Vec<Cut<'a>>> {
    let features = &bank.features;
    let mut read = Vec::new();
    for (&q, s) in questions.iter().zip(spans) {
        let whole = hands_whole(handing.whole_below, s.confidence);
        let Some(over) = earlier(s).filter(|_| !whole) else {
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
