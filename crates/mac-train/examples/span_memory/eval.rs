//! Scoring one method of the span-memory example: answers from a span of a
//! memory document (span memory and its references), or from a text prompt
//! (retrieval, oracles, no memory), with EM, F1 and its 95% interval.

use std::collections::BTreeMap;
use std::error::Error;
use std::time::Instant;

use mac_data::{exact_match, f1_score};
use mac_eval::bootstrap::f1_interval;
use mac_lm::LoadedLm;
use mac_model::prompt::ChatFrame;
use mac_model::{generate_answers, AnswerGeneration, SpanRead, SpanReader};
use mac_train::span::SpanFeatures;

/// What a question is answered from: a document of the memory, and the
/// first and last token of the span read from it.
pub type Read = (usize, usize, usize);

/// Most tokens of an answer.
pub const ANSWER_TOKENS: usize = 16;

#[derive(serde::Serialize)]
pub struct Prediction {
    /// The question's document (its index in its split).
    pub document: usize,
    pub question: String,
    pub answers: Vec<String>,
    pub prediction: String,
    /// The tokens handed to the LM besides the sink, decoded (span methods).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<String>,
}

#[derive(Default, serde::Serialize)]
pub struct Score {
    #[serde(skip)]
    pub predictions: Vec<Prediction>,
    pub questions: usize,
    pub em: f64,
    pub f1: f64,
    /// 95% interval of the F1, resampling documents (`mac_eval::bootstrap`).
    pub f1_ci95: Option<[f64; 2]>,
    /// Share of questions answered from their own document (span methods).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gold_document_top1: Option<f64>,
    /// Share of questions answered from exactly the gold span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_exact: Option<f64>,
    /// Mean share of the start distribution on the own document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gold_share: Option<f64>,
}

/// The scores of a run, by method name, and what answers them.
pub struct Evaluation<'a> {
    pub lm: &'a LoadedLm,
    pub reader: &'a SpanReader,
    pub methods: BTreeMap<String, Score>,
    started: Instant,
}

impl<'a> Evaluation<'a> {
    pub fn new(lm: &'a LoadedLm, reader: &'a SpanReader) -> Self {
        Self {
            lm,
            reader,
            methods: BTreeMap::new(),
            started: Instant::now(),
        }
    }

    /// Answers question `qs[i]` of `asked` from `reads[i]` (a document of
    /// `memory` and a span of it) and records the scores as `name`;
    /// `shares`: the gold document's share of the start distribution, where
    /// the method has one; `frame`: the chat frame the document is read in.
    #[allow(clippy::too_many_arguments)]
    pub fn spans(
        &mut self,
        name: &str,
        frame: Option<&ChatFrame>,
        memory: &SpanFeatures,
        asked: &SpanFeatures,
        qs: &[usize],
        reads: &[Read],
        shares: Option<Vec<f32>>,
    ) -> Result<(), Box<dyn Error>> {
        let gen = AnswerGeneration {
            max_tokens: ANSWER_TOKENS,
            ..AnswerGeneration::default()
        };
        let mut predictions = Vec::with_capacity(qs.len());
        for (chunk_q, chunk_r) in qs.chunks(16).zip(reads.chunks(16)) {
            let rs: Vec<SpanRead> = chunk_r
                .iter()
                .map(|&(d, a, b)| SpanRead {
                    document: &memory.documents[d],
                    start: a,
                    end: b,
                    stored: None,
                    exact: false,
                })
                .collect();
            let texts: Vec<&str> = chunk_q
                .iter()
                .map(|&q| asked.questions[q].text.as_str())
                .collect();
            let answers =
                self.reader
                    .answer_in(self.lm, frame, &rs, &texts, &vec![gen; texts.len()])?;
            for ((&q, a), r) in chunk_q.iter().zip(&answers).zip(&rs) {
                let tq = &asked.questions[q];
                predictions.push(Prediction {
                    document: tq.document,
                    question: tq.text.clone(),
                    answers: tq.answers.clone(),
                    prediction: a.text.clone(),
                    span: Some(self.lm.tokenizer.decode(&r.document[r.start..=r.end])?),
                });
            }
        }
        let n = qs.len().max(1) as f64;
        let mut score = Score::from_predictions(predictions);
        let hits = |hit: &dyn Fn(Read, usize) -> bool| {
            qs.iter().zip(reads).filter(|(&q, &r)| hit(r, q)).count() as f64 / n
        };
        score.gold_document_top1 = Some(hits(&|(d, _, _), q| d == asked.questions[q].document));
        score.span_exact = Some(hits(&|(d, a, b), q| {
            let tq = &asked.questions[q];
            d == tq.document && Some((a, b)) == tq.span
        }));
        score.gold_share = shares.map(|sh| sh.iter().map(|&x| x as f64).sum::<f64>() / n);
        self.record(name, score);
        Ok(())
    }

    /// Answers question `qs[i]` of `asked` from the text prompt
    /// `prompts[i]` (greedy, first non-empty line) and records the scores.
    pub fn prompts(
        &mut self,
        name: &str,
        asked: &SpanFeatures,
        qs: &[usize],
        prompts: &[String],
    ) -> Result<(), Box<dyn Error>> {
        let mut predictions = Vec::with_capacity(qs.len());
        for (chunk_q, chunk_p) in qs.chunks(16).zip(prompts.chunks(16)) {
            let answers = generate_answers(self.lm, chunk_p, None, ANSWER_TOKENS)?;
            for (&q, a) in chunk_q.iter().zip(answers) {
                let tq = &asked.questions[q];
                predictions.push(Prediction {
                    document: tq.document,
                    question: tq.text.clone(),
                    answers: tq.answers.clone(),
                    prediction: a,
                    span: None,
                });
            }
        }
        self.record(name, Score::from_predictions(predictions));
        Ok(())
    }

    /// Records `answers[i]` as the answer to question `qs[i]` of `asked`
    /// (a method that needs no LM).
    pub fn fixed(&mut self, name: &str, asked: &SpanFeatures, qs: &[usize], answers: Vec<String>) {
        let predictions = qs
            .iter()
            .zip(answers)
            .map(|(&q, a)| {
                let tq = &asked.questions[q];
                Prediction {
                    document: tq.document,
                    question: tq.text.clone(),
                    answers: tq.answers.clone(),
                    prediction: a,
                    span: None,
                }
            })
            .collect();
        self.record(name, Score::from_predictions(predictions));
    }

    fn record(&mut self, name: &str, score: Score) {
        let [lo, hi] = score.f1_ci95.unwrap_or([f64::NAN; 2]);
        let opt = |x: Option<f64>| x.map_or("  –  ".to_string(), |x| format!("{x:.3}"));
        eprintln!(
            "{name:<44} EM {:.3}  F1 {:.3} [{lo:.3}, {hi:.3}]  top-1 {}  span exact {}  gold share {} ({:.0} s)",
            score.em,
            score.f1,
            opt(score.gold_document_top1),
            opt(score.span_exact),
            opt(score.gold_share),
            self.started.elapsed().as_secs_f64()
        );
        self.methods.insert(name.to_string(), score);
    }
}

impl Score {
    fn from_predictions(predictions: Vec<Prediction>) -> Self {
        let n = predictions.len().max(1) as f64;
        let f1: Vec<(usize, f64)> = predictions
            .iter()
            .map(|p| (p.document, f1_score(&p.prediction, &p.answers)))
            .collect();
        Self {
            questions: predictions.len(),
            em: predictions
                .iter()
                .map(|p| exact_match(&p.prediction, &p.answers))
                .sum::<f64>()
                / n,
            f1: f1.iter().map(|(_, f)| f).sum::<f64>() / n,
            f1_ci95: f1_interval(f1),
            predictions,
            ..Self::default()
        }
    }
}
