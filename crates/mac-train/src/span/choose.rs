//! Choosing spans for questions over a bank of span features, scored a
//! chunk of documents at a time.

use anyhow::Result;
use burn::tensor::{Device, Tensor};
use mac_aggregation::{
    push_chunk, ChosenSpan, Recency, SpanChoice, SpanRule, SpanSelector, StreamedSpanChoice,
};

use mac_model::{names_every, question_names, EntryTests, SentenceCheck, TextsInOrder};

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
    /// Where a later entry was read, the best entry's best span (see
    /// [`SpanChoice::passed_over`]).
    pub passed_over: Option<ChosenSpan>,
    /// The earlier report the span may supersede (see
    /// [`SpanChoice::earlier`]).
    pub earlier: Option<ChosenSpan>,
}

/// Documents of a bank scored at a time by [`choose_spans`].
pub const BANK_CHUNK: usize = 64;

/// How spans are chosen over a bank: the rule and the documents scored at
/// a time.
#[derive(Debug, Clone, Copy)]
pub struct Choosing<'a> {
    /// The span rule.
    pub rule: SpanRule,
    /// Documents scored at a time.
    pub chunk: usize,
    /// Chosen among the documents that name what the question names, where
    /// any does ([`StreamedSpanChoice::named_first`]).
    pub named_first: bool,
    /// The sentence encoder judging a later entry where a recency asks
    /// ([`Recency::sentence_answers`]); none: that test passes.
    pub sentences: Option<&'a SentenceCheck>,
}

impl Choosing<'_> {
    /// By `rule`, [`BANK_CHUNK`] documents at a time, among all documents.
    pub fn by(rule: SpanRule) -> Self {
        Self {
            rule,
            chunk: BANK_CHUNK,
            named_first: false,
            sentences: None,
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
    let (choosing, each) = (Choosing::by(rule), [Recency::NONE]);
    let mut spans = choose_spans_each(
        selector, memory, bank, asked, questions, prior, choosing, &each, device,
    )?;
    Ok(spans.pop().unwrap_or_default())
}

/// The spans each of `recencies` chooses (one vector per recency, in
/// order) by `choosing.rule`, the bank scored once, `choosing.chunk`
/// documents at a time: for any chunk the choice and the shares are those
/// over the whole bank ([`StreamedSpanChoice`]); the logits held are one
/// chunk's.
#[allow(clippy::too_many_arguments)]
pub fn choose_spans_each(
    selector: &SpanSelector,
    memory: &SpanFeatures,
    bank: &[usize],
    asked: &SpanFeatures,
    questions: &[usize],
    prior: Option<Tensor<2>>,
    choosing: Choosing<'_>,
    recencies: &[Recency],
    device: &Device,
) -> Result<Vec<Vec<QuestionSpan>>> {
    let same = std::ptr::eq(memory, asked);
    let chunk = choosing.chunk.max(1);
    let mut out = vec![Vec::with_capacity(questions.len()); recencies.len()];
    for (c, qs) in questions.chunks(64).enumerate() {
        let queries = selector.question_queries(asked.summaries(qs, device));
        let mut choices: Vec<StreamedSpanChoice> = qs
            .iter()
            .map(|_| {
                StreamedSpanChoice::new(choosing.rule, selector.max_span)
                    .keeping_for(recencies)
                    .named_first(choosing.named_first)
            })
            .collect();
        let names: Vec<Vec<Vec<&str>>> = qs
            .iter()
            .map(|&q| question_names(&asked.questions[q].text))
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
            let named = match choosing.named_first {
                true => named_in(memory, documents, &names),
                false => Vec::new(),
            };
            push_chunk(
                &mut choices,
                selector,
                (queries.clone(), keys),
                matches,
                &lengths,
                &named,
            )
            .map_err(|e| anyhow::anyhow!("reading span scores: {e:?}"))?;
        }
        for (choice, &q) in choices.iter().zip(qs) {
            let names = question_names(&asked.questions[q].text);
            let own = bank
                .iter()
                .position(|&d| same && d == asked.questions[q].document);
            let mut texts = TextsInOrder {
                texts: &memory.texts,
                order: bank,
            };
            let question = &asked.questions[q].text;
            let mut later = EntryTests::new(&mut texts, question, &names, choosing.sentences);
            for (spans, &recency) in out.iter_mut().zip(recencies) {
                let SpanChoice {
                    span,
                    confidence,
                    shares,
                    passed_over,
                    earlier,
                } = choice
                    .finish_as(recency, &mut later)?
                    .ok_or_else(|| anyhow::anyhow!("an empty bank"))?;
                spans.push(QuestionSpan {
                    span,
                    gold_share: own.map_or(0.0, |o| shares[o]),
                    confidence,
                    passed_over,
                    earlier,
                });
            }
        }
    }
    Ok(out)
}

/// Whether each of `documents` (of `memory`) names every name of each
/// question (`[Q][N]`); a question naming nothing marks none.
fn named_in(
    memory: &SpanFeatures,
    documents: &[usize],
    names: &[Vec<Vec<&str>>],
) -> Vec<Vec<bool>> {
    names
        .iter()
        .map(|n| {
            documents
                .iter()
                .map(|&d| !n.is_empty() && names_every(&memory.texts[d], n))
                .collect()
        })
        .collect()
}
