//! What the run's choices on validation share: a validation set's
//! questions with the spans the kept selector chose for them, the F1 of
//! their answers, and how scores are compared.

use anyhow::Result;
use mac_data::f1_score;
use mac_lm::LoadedLm;
use mac_model::{AnswerFrame, AnswerGeneration, SpanRead, SpanReader};

use super::{QuestionSpan, SpanFeatures};

/// A validation set's questions and the spans the kept selector chose for
/// them over its documents.
pub(super) struct ValidationSpans<'a> {
    pub(super) features: &'a SpanFeatures,
    pub(super) questions: Vec<usize>,
    pub(super) spans: Vec<QuestionSpan>,
}

/// The F1 of each of a validation set's questions answered from its
/// chosen span, read in `frame`.
pub(super) fn frame_f1s(
    lm: &LoadedLm,
    reader: &SpanReader,
    frame: &AnswerFrame,
    set: &ValidationSpans<'_>,
) -> Result<Vec<f64>> {
    let (validation, questions, spans) = (set.features, &set.questions, &set.spans);
    let reads: Vec<SpanRead<'_>> = spans
        .iter()
        .map(|s| SpanRead {
            document: &validation.documents[s.span.document],
            start: s.span.start,
            end: s.span.end,
            stored: None,
            exact: false,
        })
        .collect();
    let answers = answers_to(lm, (reader, frame), validation, questions, &reads)?;
    Ok(answers
        .iter()
        .zip(questions)
        .map(|(a, &q)| f1_score(a, &validation.questions[q].answers))
        .collect())
}

/// The answers to `questions` (of `features`) read from `reads` in
/// `frame`, 16 at a time.
pub(super) fn answers_to(
    lm: &LoadedLm,
    (reader, frame): (&SpanReader, &AnswerFrame),
    features: &SpanFeatures,
    questions: &[usize],
    reads: &[SpanRead<'_>],
) -> Result<Vec<String>> {
    let chat = frame.chat_frame(lm)?;
    let mut out = Vec::with_capacity(questions.len());
    for (qs, reads) in questions.chunks(16).zip(reads.chunks(16)) {
        let texts: Vec<&str> = qs
            .iter()
            .map(|&q| features.questions[q].text.as_str())
            .collect();
        let generation = vec![AnswerGeneration::default(); texts.len()];
        let answers = reader.answer_in(lm, chat.as_ref(), reads, &texts, &generation)?;
        out.extend(answers.into_iter().map(|a| a.text));
    }
    Ok(out)
}

/// The mean, 0 for none.
pub(super) fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// The index of the highest score (the first of equals).
pub(super) fn best_of<T>(scores: &[(T, f64)]) -> usize {
    (0..scores.len())
        .rev()
        .max_by(|&a, &b| scores[a].1.total_cmp(&scores[b].1))
        .unwrap_or(0)
}
