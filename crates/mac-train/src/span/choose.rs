//! Choosing spans for questions over a bank of span features, scored a
//! chunk of documents at a time.

use anyhow::Result;
use burn::tensor::{Device, Tensor};
use mac_aggregation::{
    push_chunk, ChosenSpan, Recency, SpanChoice, SpanRule, SpanSelector, StreamedSpanChoice,
};

use mac_model::{names_every, question_names};

use super::{document_matches, SpanFeatures};

/// What a selector chose for one question over a bank.
#[derive(Debug, Clone, Copy)]
pub struct QuestionSpan {
    /// The span (document index within the bank).
    pub span: ChosenSpan,
    /// The share of the start distribution on the question's own document.
    pub gold_share: f32,
    /// The span's probability within its document.
    pub confidence: f32,
}

/// Documents of a bank scored at a time by [`choose_spans`].
pub const BANK_CHUNK: usize = 64;

/// How spans are chosen over a bank: the rule, the preference for later
/// entries (see [`StreamedSpanChoice`]) and the documents scored at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choosing {
    /// The span rule.
    pub rule: SpanRule,
    /// When a later entry is chosen instead of the best.
    pub recency: Recency,
    /// Documents scored at a time.
    pub chunk: usize,
}

impl Choosing {
    /// By `rule`, without a preference for later entries, [`BANK_CHUNK`]
    /// documents at a time.
    pub fn by(rule: SpanRule) -> Self {
        Self {
            rule,
            recency: Recency::NONE,
            chunk: BANK_CHUNK,
        }
    }
}

/// Spans chosen for `questions` (indices into `asked`) over a bank of
/// `bank` documents (indices into `memory`) by `rule`, with an optional
/// per-document prior `[Q, N]` (row `i` for `questions[i]`); the bank is
/// scored [`BANK_CHUNK`] documents at a time.
#[allow(clippy::too_many_arguments)]
pub fn choose_spans(
    selector: &SpanSelector,
    memory: &SpanFeatures,
    bank: &[usize],
    asked: &SpanFeatures,
    questions: &[usize],
    prior: Option<Tensor<2>>,
    rule: SpanRule,
    device: &Device,
) -> Result<Vec<QuestionSpan>> {
    let choosing = Choosing::by(rule);
    choose_spans_chunked(
        selector, memory, bank, asked, questions, prior, choosing, device,
    )
}

/// [`choose_spans`] as `choosing` says: the choice and the shares are those
/// over the whole bank for any `choosing.chunk` ([`StreamedSpanChoice`]);
/// the logits held are one chunk's.
#[allow(clippy::too_many_arguments)]
pub fn choose_spans_chunked(
    selector: &SpanSelector,
    memory: &SpanFeatures,
    bank: &[usize],
    asked: &SpanFeatures,
    questions: &[usize],
    prior: Option<Tensor<2>>,
    choosing: Choosing,
    device: &Device,
) -> Result<Vec<QuestionSpan>> {
    let same = std::ptr::eq(memory, asked);
    let chunk = choosing.chunk.max(1);
    let mut out = Vec::with_capacity(questions.len());
    for (c, qs) in questions.chunks(64).enumerate() {
        let queries = selector.question_queries(asked.summaries(qs, device));
        let mut choices: Vec<StreamedSpanChoice> = qs
            .iter()
            .map(|_| {
                StreamedSpanChoice::new(choosing.rule, selector.max_span)
                    .with_recency(choosing.recency)
            })
            .collect();
        for (b, documents) in bank.chunks(chunk).enumerate() {
            let lengths = memory.lengths(documents);
            let n = documents.len();
            let keys = selector.token_keys(memory.bank_states(documents, device));
            let mut matches = document_matches(selector, memory, documents, asked, qs, device);
            if let Some(p) = &prior {
                matches.logits = matches.logits
                    + p.clone()
                        .narrow(0, c * 64, qs.len())
                        .narrow(1, b * chunk, n);
            }
            push_chunk(
                &mut choices,
                selector,
                queries.clone(),
                keys,
                matches,
                &lengths,
            )
            .map_err(|e| anyhow::anyhow!("reading span scores: {e:?}"))?;
        }
        for (choice, &q) in choices.into_iter().zip(qs) {
            let names = question_names(&asked.questions[q].text);
            let SpanChoice {
                span,
                confidence,
                shares,
            } = choice
                .finish_where(|d| names_every(&memory.texts[bank[d]], &names))
                .ok_or_else(|| anyhow::anyhow!("an empty bank"))?;
            let own = bank
                .iter()
                .position(|&d| same && d == asked.questions[q].document);
            out.push(QuestionSpan {
                span,
                gold_share: own.map_or(0.0, |o| shares[o]),
                confidence,
            });
        }
    }
    Ok(out)
}
