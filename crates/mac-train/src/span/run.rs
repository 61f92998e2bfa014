//! A span memory training run, as `mac train --preset span` runs it: the
//! LM's states of a fact stream's training and validation documents read
//! once, the selector trained on banks drawn from the training split, and
//! everything the product then uses chosen on validation (never on test):
//! the step and span rule with the best span exact match, then the frame
//! the chosen span is put to the LM in, by the F1 of its answers. The
//! choice is saved as a span checkpoint (`RUN/checkpoint`), the run's
//! configuration and curve as `RUN/span-run.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::Device;
use mac_aggregation::{SpanRule, SpanSelector};
use mac_data::{training_updates, Dataset, FactStream, FactStreamConfig};
use mac_lm::LoadedLm;
use mac_model::{
    AnswerFrame, FrameExample, SentenceCheck, SentenceChecking, SpanCheckpoint, SpanCheckpointMeta,
    SpanExtent, SpanReader, SpanReading,
};
use serde::{Deserialize, Serialize};

use super::config::SpanRunConfig;
use super::recency::{changing_banks, choose_recency, kept, RecencyScore};
use super::replaced::{self, choose_beside_replaced, ReplacedChoice};
use super::sentence::{choose_sentence_check, SentenceCheckChoice};
use super::validation::{best_of, frame_f1s, mean, ValidationSpans};
use super::{answerable, choose_spans, Choosing, SpanFeatures, SpanTrainer};

/// The run's record beside its checkpoint.
pub const SPAN_RUN_FILE: &str = "span-run.json";

/// Span choice on the validation bank under one rule.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RuleScore {
    /// Share of questions whose chosen span is exactly the gold one.
    pub span_exact: f64,
    /// Share of questions whose span lies in their own document.
    pub top1: f64,
}

/// One validation during training.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidationPoint {
    /// Steps done.
    pub step: usize,
    /// Mean training loss since the previous point.
    pub loss: f64,
    /// Mean share of training starts right since the previous point.
    pub train_start_accuracy: f64,
    /// The joint rule's choice.
    pub joint: RuleScore,
    /// The document-first rule's choice.
    pub document_first: RuleScore,
}

/// What a run measured and chose.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpanRunReport {
    /// Its configuration.
    pub config: SpanRunConfig,
    /// Validation every `validate_every` steps.
    pub curve: Vec<ValidationPoint>,
    /// The step whose selector was kept.
    pub chosen_step: usize,
    /// The span rule kept.
    pub rule: SpanRule,
    /// Validation F1 of each frame, in the order tried; the best was kept.
    pub frames: Vec<(String, f64)>,
    /// The frame kept.
    pub frame: String,
    /// How much of the chosen document the LM is handed.
    #[serde(default)]
    pub extent: SpanExtent,
    /// Validation F1 of each extent in the kept frame; the best was kept.
    #[serde(default)]
    pub extents: Vec<(SpanExtent, f64)>,
    /// The span probability below which the whole document is handed.
    #[serde(default)]
    pub whole_below: Option<f32>,
    /// Validation F1 with each such floor tried; the best was kept.
    #[serde(default)]
    pub whole_belows: Vec<(Option<f32>, f64)>,
    /// Whether answers are copied from what the LM is handed.
    #[serde(default)]
    pub copied: bool,
    /// Validation F1 free and copied (each with its best floor); the
    /// better was kept.
    #[serde(default)]
    pub copies: Vec<(bool, f64)>,
    /// The sentence check's choice (absent: not tried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentence_check: Option<SentenceCheckChoice>,
    /// The recency margin kept (see [`mac_aggregation::Recency`]).
    #[serde(default)]
    pub recency: f32,
    /// The agreement kept with it.
    #[serde(default)]
    pub agreement: Option<f32>,
    /// Whether a later entry must name what the question names.
    #[serde(default)]
    pub recency_same_names: bool,
    /// How far below the best's a later entry's best span may score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recency_answers: Option<f32>,
    /// How far below the best's a later entry's best sentence may match
    /// the question, by the sentence encoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recency_sentences: Option<f32>,
    /// Whether a later entry passing either answer test is read (see
    /// [`mac_aggregation::Recency::either_answers`]).
    #[serde(default)]
    pub recency_either: bool,
    /// Whether the encoder's test reads the question and the entries
    /// without the question's names (see
    /// [`mac_aggregation::Recency::without_names`]).
    #[serde(default)]
    pub recency_without_names: bool,
    /// Whether a later entry must restate the best's fact the question
    /// asks about (see [`mac_aggregation::Recency::restates`]).
    #[serde(default)]
    pub recency_restates: bool,
    /// Whether the span is chosen among the documents naming what the
    /// question names first (kept with the recency).
    #[serde(default)]
    pub named_first: bool,
    /// Each recency choice tried on validation knowledge that changes.
    #[serde(default)]
    pub recencies: Vec<RecencyScore>,
    /// Whether a later entry is handed beside the value it replaces, and
    /// what that was chosen on (absent: not tried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<ReplacedChoice>,
    /// Seconds reading the documents' states, training, choosing the frame.
    pub seconds: [f64; 3],
    /// The checkpoint written.
    pub checkpoint: PathBuf,
}

/// Trains, chooses on validation and saves a span memory run in `out`;
/// `log` gets a line at each validation.
pub fn train_span_memory(
    config: &SpanRunConfig,
    out: &Path,
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<SpanRunReport> {
    anyhow::ensure!(
        config.validate_every >= 1,
        "validate_every must be at least 1"
    );
    let lm_path = config.lm_path();
    let lm = LoadedLm::load(&lm_path, device)
        .with_context(|| format!("{}: cannot load the LM", lm_path.display()))?;
    let stream = FactStream::generate(&config.stream);
    let t0 = Instant::now();
    let (train, validation, unseen, checked) = read_features(config, &lm, &stream)?;
    // The sentence check's second validation set (the unseen stream's
    // where it is the same stream).
    let checked = config
        .sentence_check_validation
        .as_ref()
        .and(checked.as_ref().or(unseen.as_ref()));
    let read = t0.elapsed().as_secs_f64();
    log(&format!(
        "read {} training and {} validation documents ({} of another stream) in {read:.0} s",
        train.documents.len(),
        validation.documents.len(),
        unseen.as_ref().map_or(0, |u| u.documents.len())
    ));
    let t1 = Instant::now();
    let (curve, chosen) = train_and_validate(config, &train, &validation, device, log)?;
    let trained = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let validations: Vec<&SpanFeatures> = [Some(&validation), unseen.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let choice = choose_answering(
        config,
        &lm,
        &stream.train,
        &validations,
        &chosen,
        device,
        log,
    )?;
    let encoder = config.sentence_encoder_dir();
    let (check, sentence) = match checked {
        Some(other) => {
            let sets = [&validation, other];
            let (check, sentence) = check_sentences(
                &lm,
                &encoder,
                (config, &chosen, &choice),
                &sets,
                device,
                log,
            )?;
            (Some(check), Some(sentence))
        }
        None => (None, None),
    };
    let choosing = (chosen.rule, check.as_ref());
    let banks = changing_banks(config, &lm)?;
    let recencies = choose_recency(&banks, &chosen.selector, choosing, device, log)?;
    let recency = recencies[kept(&recencies)].recency;
    let named_first = recencies[kept(&recencies)].named_first;
    let handing = replaced::Handing {
        reader: &choice.reader,
        frame: &choice.frame,
        whole_below: choice.whole_below,
        check: check.as_ref().zip(sentence.as_ref().and_then(|s| s.slack)),
    };
    let choosing = Choosing {
        named_first,
        sentences: check.as_ref(),
        ..Choosing::by(chosen.rule)
    };
    let by = (&chosen.selector, choosing, recency);
    let replaced = choose_beside_replaced(&lm, &handing, &banks, by, device, log)?;
    let reading = SpanReading {
        reader: choice.reader,
        rule: chosen.rule,
        frame: choice.frame,
        recency: recency.margin,
        agreement: recency.agreement,
        recency_same_names: recency.same_names,
        recency_answers: recency.answers,
        recency_either: recency.either_answers,
        named_first,
        whole_below: choice.whole_below,
        sentence_check: check.is_some().then(|| SentenceChecking {
            slack: sentence.as_ref().and_then(|s| s.slack),
            recency: recency.sentence_answers,
            recency_without_names: recency.without_names,
            recency_restates: recency.restates,
            encoder: encoder.clone(),
        }),
        beside_replaced: replaced.beside_replaced,
        replaced_from_earlier: replaced.from_earlier,
    };
    let meta = SpanCheckpointMeta::new(&chosen.config, reading, lm_path);
    let checkpoint = out.join("checkpoint");
    SpanCheckpoint::save(&checkpoint, &chosen.selector, &meta)?;
    let report = SpanRunReport {
        config: config.clone(),
        curve,
        chosen_step: chosen.step,
        rule: chosen.rule,
        frame: choice.frame_name,
        frames: choice.frames,
        extent: choice.reader.extent,
        extents: choice.extents,
        whole_below: choice.whole_below,
        whole_belows: choice.floors,
        copied: choice.reader.copied,
        copies: choice.copies,
        sentence_check: sentence,
        recency: recency.margin,
        agreement: recency.agreement,
        recency_same_names: recency.same_names,
        recency_answers: recency.answers,
        recency_sentences: recency.sentence_answers,
        recency_either: recency.either_answers,
        recency_without_names: recency.without_names,
        recency_restates: recency.restates,
        named_first,
        recencies,
        replaced: Some(replaced),
        seconds: [read, trained, t2.elapsed().as_secs_f64()],
        checkpoint,
    };
    let path = out.join(SPAN_RUN_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(report)
}

/// The LM's states of the run's training documents (with the knowledge
/// that changes it joins), its validation documents, those of its unseen
/// stream and those of the sentence check's stream where it is another.
fn read_features(
    config: &SpanRunConfig,
    lm: &LoadedLm,
    stream: &FactStream,
) -> Result<(
    SpanFeatures,
    SpanFeatures,
    Option<SpanFeatures>,
    Option<SpanFeatures>,
)> {
    let reader = config.reader();
    let (n_validation, batch) = (config.validation_documents, 16);
    let mut train = SpanFeatures::read(lm, &reader, &stream.train, config.train_documents, batch)?;
    if config.train_updates > 0 {
        let changing = unchanged_questions(training_updates(&config.stream, config.train_updates));
        train.extend(SpanFeatures::read(
            lm,
            &reader,
            &changing,
            usize::MAX,
            batch,
        )?);
    }
    let validation = SpanFeatures::read(lm, &reader, &stream.validation, n_validation, batch)?;
    let unseen = match &config.unseen_validation {
        Some(other) => Some(read_validation(config, lm, other)?),
        None => None,
    };
    let checked = match &config.sentence_check_validation {
        Some(other) if config.unseen_validation.as_ref() != Some(other) => {
            Some(read_validation(config, lm, other)?)
        }
        _ => None,
    };
    Ok((train, validation, unseen, checked))
}

/// The sentence encoder in `encoder` and the sentence check's slack chosen
/// with it over `validations` for the answering the run chose.
fn check_sentences(
    lm: &LoadedLm,
    encoder: &Path,
    (config, chosen, choice): (&SpanRunConfig, &Chosen, &Answering),
    validations: &[&SpanFeatures],
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<(SentenceCheck, SentenceCheckChoice)> {
    let check = SentenceCheck::load(encoder, device)
        .with_context(|| format!("{}: cannot load the sentence encoder", encoder.display()))?;
    let sets = validations
        .iter()
        .map(|v| validation_spans(config, chosen, v, device))
        .collect::<Result<Vec<_>>>()?;
    let answering = (&choice.reader, &choice.frame);
    let sentence = choose_sentence_check(lm, &check, answering, choice.whole_below, &sets, log)?;
    Ok((check, sentence))
}

/// The LM's states of the first validation documents of `other`, a stream
/// beside the run's.
fn read_validation(
    config: &SpanRunConfig,
    lm: &LoadedLm,
    other: &FactStreamConfig,
) -> Result<SpanFeatures> {
    let documents = &FactStream::generate(other).validation;
    SpanFeatures::read(
        lm,
        &config.reader(),
        documents,
        config.validation_documents,
        16,
    )
}

/// `dataset` without the questions whose answer a later document changed
/// (without the entry's place in the stream, the earlier document answers
/// them as well as the later).
fn unchanged_questions(mut dataset: Dataset) -> Dataset {
    for document in &mut dataset.documents {
        document.qas.retain(|qa| qa.stale.is_empty());
    }
    dataset
}

/// How the kept selector's spans are put to the LM, chosen on validation.
struct Answering {
    reader: SpanReader,
    frame: AnswerFrame,
    frame_name: String,
    frames: Vec<(String, f64)>,
    extents: Vec<(SpanExtent, f64)>,
    whole_below: Option<f32>,
    floors: Vec<(Option<f32>, f64)>,
    copies: Vec<(bool, f64)>,
}

/// Span probabilities below which the whole document may be handed,
/// tried on validation (none: never).
const WHOLE_BELOW: [Option<f32>; 10] = [
    None,
    Some(0.05),
    Some(0.1),
    Some(0.2),
    Some(0.3),
    Some(0.4),
    Some(0.5),
    Some(0.6),
    Some(0.7),
    Some(0.8),
];

/// Chooses on validation F1 the frame the chosen spans are read in (with
/// the span alone), then how much of the document is handed in that frame,
/// then below which span probability the whole document is handed instead,
/// then whether answers are copied from what is handed: each by the mean
/// F1 over the first questions of every validation set (each its own bank).
fn choose_answering(
    config: &SpanRunConfig,
    lm: &LoadedLm,
    train: &Dataset,
    validations: &[&SpanFeatures],
    chosen: &Chosen,
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<Answering> {
    let frames = candidate_frames(train);
    // The chosen selector's spans, the same whichever frame reads them.
    let sets = validations
        .iter()
        .map(|&v| validation_spans(config, chosen, v, device))
        .collect::<Result<Vec<_>>>()?;
    let f1s_of = |reader: &SpanReader, frame: &AnswerFrame| -> Result<Vec<f64>> {
        let mut f1s = Vec::new();
        for set in &sets {
            f1s.extend(frame_f1s(lm, reader, frame, set)?);
        }
        Ok(f1s)
    };
    let mut reader = config.reader();
    let (mut scores, mut span_f1s) = (Vec::new(), Vec::new());
    for (name, frame) in &frames {
        let f1s = f1s_of(&reader, frame)?;
        log(&format!(
            "validation F1 in the {name} frame: {:.3}",
            mean(&f1s)
        ));
        scores.push((name.to_string(), mean(&f1s)));
        span_f1s.push(f1s);
    }
    let best = best_of(&scores);
    let (frame_name, frame) = frames[best].clone();
    let mut by_extent = vec![(SpanExtent::Span, span_f1s.swap_remove(best))];
    for extent in [SpanExtent::Sentence, SpanExtent::Document] {
        let read = SpanReader { extent, ..reader };
        let f1s = f1s_of(&read, &frame)?;
        log(&format!(
            "validation F1 handing the {}: {:.3}",
            extent.name(),
            mean(&f1s)
        ));
        by_extent.push((extent, f1s));
    }
    let extents: Vec<(SpanExtent, f64)> = by_extent.iter().map(|(e, f)| (*e, mean(f))).collect();
    let kept = best_of(&extents);
    reader.extent = extents[kept].0;
    let confidences: Vec<f32> = sets
        .iter()
        .flat_map(|set| set.spans.iter().map(|s| s.confidence))
        .collect();
    let floors = whole_below_scores(&confidences, &by_extent[kept].1, &by_extent[2].1);
    for (floor, f1) in &floors {
        log(&format!(
            "validation F1 handing the document below span probability {floor:?}: {f1:.3}"
        ));
    }
    let copied = SpanReader {
        copied: true,
        ..reader
    };
    let copied_floors = copied_floor_scores(&f1s_of, &copied, &frame, &confidences)?;
    let (free, copy) = (best_of(&floors), best_of(&copied_floors));
    let copies = vec![(false, floors[free].1), (true, copied_floors[copy].1)];
    log(&format!(
        "validation F1 with answers copied from what is handed: {:.3} (free: {:.3})",
        copies[1].1, copies[0].1
    ));
    let (reader, whole_below, floors) = match best_of(&copies) {
        1 => (copied, copied_floors[copy].0, copied_floors),
        _ => (reader, floors[free].0, floors),
    };
    Ok(Answering {
        reader,
        frame,
        frame_name: frame_name.to_string(),
        frames: scores,
        extents,
        whole_below,
        floors,
        copies,
    })
}

/// The first `config.frame_questions` questions of `v` and the spans the
/// chosen selector picks for them over `v`'s documents.
fn validation_spans<'a>(
    config: &SpanRunConfig,
    chosen: &Chosen,
    v: &'a SpanFeatures,
    device: &Device,
) -> Result<ValidationSpans<'a>> {
    let bank: Vec<usize> = (0..v.documents.len()).collect();
    let questions: Vec<usize> = (0..v.questions.len())
        .take(config.frame_questions)
        .collect();
    let spans = choose_spans(
        &chosen.selector,
        v,
        &bank,
        v,
        &questions,
        None,
        chosen.rule,
        device,
    )?;
    Ok(ValidationSpans {
        features: v,
        questions,
        spans,
    })
}

/// Each floor of [`WHOLE_BELOW`] with its F1 when `copied` (its extent
/// around the span, or the whole document below the floor) answers by
/// copying from what it hands.
fn copied_floor_scores(
    f1s_of: &dyn Fn(&SpanReader, &AnswerFrame) -> Result<Vec<f64>>,
    copied: &SpanReader,
    frame: &AnswerFrame,
    confidences: &[f32],
) -> Result<Vec<(Option<f32>, f64)>> {
    let kept = f1s_of(copied, frame)?;
    let document = match copied.extent {
        SpanExtent::Document => kept.clone(),
        _ => f1s_of(
            &SpanReader {
                extent: SpanExtent::Document,
                ..*copied
            },
            frame,
        )?,
    };
    Ok(whole_below_scores(confidences, &kept, &document))
}

/// Each floor of [`WHOLE_BELOW`] with its F1: the whole document's answer
/// (`document[i]`) where question `i`'s span probability is below it, the
/// kept extent's (`kept[i]`) elsewhere.
fn whole_below_scores(
    confidences: &[f32],
    kept: &[f64],
    document: &[f64],
) -> Vec<(Option<f32>, f64)> {
    WHOLE_BELOW
        .iter()
        .map(|&floor| {
            let f1s: Vec<f64> = (0..kept.len())
                .map(|i| match floor.is_some_and(|f| confidences[i] < f) {
                    true => document[i],
                    false => kept[i],
                })
                .collect();
            (floor, mean(&f1s))
        })
        .collect()
}

/// The selector a run keeps, and how it reads.
struct Chosen {
    score: f64,
    step: usize,
    rule: SpanRule,
    selector: SpanSelector,
    config: mac_aggregation::SpanSelectorConfig,
}

/// Trains `config.selector.steps` steps, validating every
/// `validate_every`: the curve and the best (step, rule, selector) by span
/// exact match (document top-1 breaks ties).
fn train_and_validate(
    config: &SpanRunConfig,
    train: &SpanFeatures,
    validation: &SpanFeatures,
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<(Vec<ValidationPoint>, Chosen)> {
    let mut trainer = SpanTrainer::new(config.selector.clone(), train, device)?;
    let mut chosen: Option<Chosen> = None;
    let mut curve = Vec::new();
    let (mut loss, mut accuracy, mut since) = (0.0, 0.0, 0usize);
    let steps = config.selector.steps;
    for step in 1..=steps {
        let s = trainer.step(train)?;
        (loss, accuracy, since) = (loss + s.loss, accuracy + s.start_accuracy, since + 1);
        if step % config.validate_every != 0 && step != steps {
            continue;
        }
        let selector = trainer.selector();
        let [joint, document_first] = [SpanRule::Joint, SpanRule::DocumentFirst]
            .map(|rule| validate(&selector, validation, rule, device));
        let (joint, document_first) = (joint?, document_first?);
        for (rule, score) in [
            (SpanRule::Joint, joint),
            (SpanRule::DocumentFirst, document_first),
        ] {
            let value = score.span_exact + 1e-3 * score.top1;
            if chosen.as_ref().is_none_or(|c| value > c.score) {
                chosen = Some(Chosen {
                    score: value,
                    step,
                    rule,
                    selector: selector.clone(),
                    config: trainer.selector_config(),
                });
            }
        }
        let n = since.max(1) as f64;
        let point = ValidationPoint {
            step,
            loss: loss / n,
            train_start_accuracy: accuracy / n,
            joint,
            document_first,
        };
        log(&format!(
            "step {step}: loss {:.3}; validation span exact {:.3} (joint) {:.3} (document first), top-1 {:.3} / {:.3}",
            point.loss, joint.span_exact, document_first.span_exact, joint.top1, document_first.top1
        ));
        curve.push(point);
        (loss, accuracy, since) = (0.0, 0.0, 0);
    }
    let chosen = chosen.context("no step was trained")?;
    Ok((curve, chosen))
}

/// How `selector` chooses under `rule` over the whole validation bank.
fn validate(
    selector: &SpanSelector,
    validation: &SpanFeatures,
    rule: SpanRule,
    device: &Device,
) -> Result<RuleScore> {
    let bank: Vec<usize> = (0..validation.documents.len()).collect();
    let questions = answerable(validation);
    let chosen = choose_spans(
        selector, validation, &bank, validation, &questions, None, rule, device,
    )?;
    let n = questions.len().max(1) as f64;
    let (mut exact, mut top1) = (0.0, 0.0);
    for (c, &q) in chosen.iter().zip(&questions) {
        let gold = &validation.questions[q];
        if c.span.document == gold.document {
            top1 += 1.0;
            if Some((c.span.start, c.span.end)) == gold.span {
                exact += 1.0;
            }
        }
    }
    Ok(RuleScore {
        span_exact: exact / n,
        top1: top1 / n,
    })
}

/// The frames tried: plain, the chat template, and the chat template with
/// three worked examples (the first questions of training documents).
fn candidate_frames(train: &Dataset) -> Vec<(&'static str, AnswerFrame)> {
    let examples = train
        .documents
        .iter()
        .filter_map(|d| {
            let qa = d.qas.first()?;
            Some(FrameExample {
                document: d.text.clone(),
                question: qa.question.clone(),
                answer: qa.answers.first()?.clone(),
            })
        })
        .take(3)
        .collect();
    vec![
        ("plain", AnswerFrame::Plain),
        (
            "chat",
            AnswerFrame::Chat {
                examples: Vec::new(),
            },
        ),
        ("chat, 3-shot", AnswerFrame::Chat { examples }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_floor_the_documents_answer_counts() {
        // Question 0: an unsure span the sentence answers wrongly and the
        // document rightly; question 1: a sure span, the other way round.
        let floors = whole_below_scores(&[0.15, 0.9], &[0.0, 1.0], &[1.0, 0.0]);
        let f1 = |floor: Option<f32>| floors.iter().find(|(f, _)| *f == floor).unwrap().1;
        assert_eq!(f1(None), 0.5);
        assert_eq!(f1(Some(0.1)), 0.5);
        assert_eq!(f1(Some(0.2)), 1.0);
        assert_eq!(f1(Some(0.8)), 1.0);
        // The first of the best is kept: the lowest floor that helps.
        assert_eq!(floors[best_of(&floors)].0, Some(0.2));
    }
}
