//! Whether span memory checks the span's sentence with a frozen sentence
//! encoder ([`mac_model::SentenceCheck`]), and with what slack: chosen on
//! validation F1 over the training stream's validation questions and those
//! of a stream whose kinds and wording training never states (where the
//! span head's sentence is least sure), with everything else the run chose
//! kept as it is.

use anyhow::Result;
use mac_lm::LoadedLm;
use mac_model::{hands_whole, AnswerFrame, SentenceCheck, SpanReader};
use serde::{Deserialize, Serialize};

use super::validation::{best_of, frame_f1s, mean, ValidationSpans};
use super::QuestionSpan;

/// The slacks tried, the most cautious first (`None`: no check).
pub const SLACKS: [Option<f32>; 8] = [
    None,
    Some(0.4),
    Some(0.3),
    Some(0.2),
    Some(0.1),
    Some(0.05),
    Some(0.02),
    Some(0.0),
];

/// The sentence check the run chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentenceCheckChoice {
    /// The slack kept (`None`: no check).
    pub slack: Option<f32>,
    /// Validation F1 at each slack tried (none, then from 0.4 down to 0), in order.
    pub slacks: Vec<(Option<f32>, f64)>,
    /// Each validation set's share of questions whose sentence another
    /// matched better (what a slack of 0 would move).
    pub better: Vec<f64>,
}

/// One question's span: the one answered without the check (the whole
/// document below the floor), and the better sentence with its gap.
struct Checked {
    kept: QuestionSpan,
    better: Option<(QuestionSpan, f32)>,
}

/// Chooses the slack on `sets` answered by `reader` in `frame`, the whole
/// document handed below span probability `whole_below` (never moved).
pub(super) fn choose_sentence_check(
    lm: &LoadedLm,
    check: &SentenceCheck,
    (reader, frame): (&SpanReader, &AnswerFrame),
    whole_below: Option<f32>,
    sets: &[ValidationSpans<'_>],
    log: &mut dyn FnMut(&str),
) -> Result<SentenceCheckChoice> {
    let (mut kept_f1s, mut moved) = (Vec::new(), Vec::new());
    let mut better = Vec::new();
    for set in sets {
        let checked = checked_spans(lm, check, whole_below, set)?;
        let kept = ValidationSpans {
            features: set.features,
            questions: set.questions.clone(),
            spans: checked.iter().map(|c| c.kept).collect(),
        };
        let f1s = frame_f1s(lm, reader, frame, &kept)?;
        let which: Vec<usize> = (0..checked.len())
            .filter(|&i| checked[i].better.is_some())
            .collect();
        let moved_set = ValidationSpans {
            features: set.features,
            questions: which.iter().map(|&i| set.questions[i]).collect(),
            spans: which
                .iter()
                .filter_map(|&i| checked[i].better.as_ref().map(|b| b.0))
                .collect(),
        };
        let moved_f1s = frame_f1s(lm, reader, frame, &moved_set)?;
        better.push(which.len() as f64 / checked.len().max(1) as f64);
        let offset = kept_f1s.len();
        for (&i, f1) in which.iter().zip(moved_f1s) {
            let gap = checked[i].better.as_ref().map_or(0.0, |b| b.1);
            moved.push((offset + i, gap, f1));
        }
        kept_f1s.extend(f1s);
    }
    let slacks: Vec<(Option<f32>, f64)> = SLACKS
        .iter()
        .map(|&slack| (slack, mean(&with_slack(&kept_f1s, &moved, slack))))
        .collect();
    for (slack, f1) in &slacks {
        log(&format!(
            "validation F1 with the sentence check at slack {slack:?}: {f1:.3}"
        ));
    }
    Ok(SentenceCheckChoice {
        slack: slacks[best_of(&slacks)].0,
        slacks,
        better,
    })
}

/// Each question's F1 where the check, at `slack`, moves the questions of
/// `moved` (index, gap, F1 when moved) whose gap exceeds it.
fn with_slack(kept: &[f64], moved: &[(usize, f32, f64)], slack: Option<f32>) -> Vec<f64> {
    let mut f1s = kept.to_vec();
    if let Some(slack) = slack {
        for &(i, gap, f1) in moved {
            if gap > slack {
                f1s[i] = f1;
            }
        }
    }
    f1s
}

/// Each of `set`'s questions' span as answered without the check, and the
/// sentence the check prefers with its gap (none below the floor).
fn checked_spans(
    lm: &LoadedLm,
    check: &SentenceCheck,
    whole_below: Option<f32>,
    set: &ValidationSpans<'_>,
) -> Result<Vec<Checked>> {
    set.questions
        .iter()
        .zip(&set.spans)
        .map(|(&q, s)| {
            let document = &set.features.documents[s.span.document];
            let whole = hands_whole(whole_below, s.confidence);
            if whole {
                let mut kept = *s;
                kept.span.start = 0;
                kept.span.end = document.len().saturating_sub(1);
                return Ok(Checked { kept, better: None });
            }
            let question = &set.features.questions[q].text;
            let better = check
                .better_sentence(lm, question, document, (s.span.start, s.span.end))?
                .map(|b| {
                    let mut moved = *s;
                    moved.span.start = b.start;
                    moved.span.end = b.end;
                    (moved, b.gap)
                });
            Ok(Checked { kept: *s, better })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slack_moves_only_the_questions_whose_gap_exceeds_it() {
        let kept = [0.0, 1.0, 0.5];
        let moved = [(0, 0.3, 1.0), (1, 0.05, 0.0)];
        assert_eq!(with_slack(&kept, &moved, None), vec![0.0, 1.0, 0.5]);
        assert_eq!(with_slack(&kept, &moved, Some(0.1)), vec![1.0, 1.0, 0.5]);
        assert_eq!(with_slack(&kept, &moved, Some(0.0)), vec![1.0, 0.0, 0.5]);
        assert_eq!(with_slack(&kept, &moved, Some(0.3)), vec![0.0, 1.0, 0.5]);
    }
}
