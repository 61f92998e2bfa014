//! What the evaluation and the comparison share: a method's result, its
//! predictions and their scoring, progress bars, and MAC over retrieved
//! documents (`mac+rag@k`).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::{Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use mac_bank::MemoryBank;
use mac_data::{exact_match, f1_score, prefix_exact_match, QaPair};
use mac_model::prompt::{framed_prompt, ChatFrame};
use mac_model::MacRuntime;
use mac_model::{generate_answers, generate_copied_answers, MAX_ANSWER_TOKENS};
use mac_retrieval::Bm25Index;
use serde::{Deserialize, Serialize};

use crate::rss::peak_rss_mb;

/// The scores and costs of one method.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodResult {
    /// SQuAD exact match (0..1).
    pub em: f64,
    /// SQuAD token F1 (0..1).
    pub f1: f64,
    /// 95% interval of the F1, by the bootstrap over documents
    /// ([`crate::bootstrap`]); absent in reports written before it.
    #[serde(default)]
    pub f1_ci95: Option<[f64; 2]>,
    /// The reference code's prefix match (0..1), for comparison only.
    pub prefix_em: f64,
    /// Questions scored.
    pub n_questions: usize,
    /// Adaptation time per document, ms (encoder pass + durable append for MAC; 0 otherwise).
    pub adapt_ms_per_doc: f64,
    /// Answer latency per question, ms (batched generation).
    pub answer_ms_per_question: f64,
    /// Peak resident memory during the method, MiB.
    pub peak_rss_mb: Option<f64>,
    /// Bytes stored per document (bank on disk for MAC; 0 otherwise).
    pub storage_bytes_per_doc: f64,
}

impl MethodResult {
    /// A method's result from its scores (as [`score`] returns them) and its
    /// timings; peak memory is read now.
    pub(crate) fn measured(
        scores: (f64, f64, f64),
        n_questions: usize,
        answer_seconds: f64,
        adapt_ms_per_doc: f64,
        storage_bytes_per_doc: f64,
    ) -> Self {
        let (em, f1, prefix_em) = scores;
        Self {
            em,
            f1,
            f1_ci95: None,
            prefix_em,
            n_questions,
            adapt_ms_per_doc,
            answer_ms_per_question: 1000.0 * answer_seconds / n_questions.max(1) as f64,
            peak_rss_mb: peak_rss_mb(),
            storage_bytes_per_doc,
        }
    }

    pub(crate) fn with_adapt_ms(self, adapt_ms_per_doc: f64) -> Self {
        Self {
            adapt_ms_per_doc,
            ..self
        }
    }
}

/// Writes one JSON line per prediction to `path`.
pub(crate) fn write_predictions(path: &Path, preds: &[Prediction]) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("{}: cannot write", path.display()))?;
    for p in preds {
        writeln!(f, "{}", serde_json::to_string(p)?)?;
    }
    Ok(())
}

/// One answered question.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prediction {
    /// Method name.
    pub method: String,
    /// Index of the document in the stream.
    pub document: usize,
    /// The question.
    pub question: String,
    /// The generated answer.
    pub prediction: String,
    /// The accepted answers.
    pub answers: Vec<String>,
    /// Exact match.
    pub em: f64,
    /// Token F1.
    pub f1: f64,
}

pub(crate) fn bar(show: bool, len: usize, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len as u64);
    b.set_style(
        ProgressStyle::with_template(&format!(
            "{what:>14} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// The LM's greedy answers to text prompts, `batch` at a time, answer `i`
/// copied from `sources[i]` where given; `pb` advances with each batch.
pub(crate) fn answer_prompts(
    lm: &mac_lm::LoadedLm,
    prompts: &[String],
    sources: Option<&[&str]>,
    batch: usize,
    pb: &ProgressBar,
) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(prompts.len());
    let batch = batch.max(1);
    for (i, chunk) in prompts.chunks(batch).enumerate() {
        out.extend(match sources {
            Some(s) => {
                let s = &s[i * batch..(i * batch + chunk.len()).min(s.len())];
                generate_copied_answers(lm, chunk, s, MAX_ANSWER_TOKENS)?
            }
            None => generate_answers(lm, chunk, None, MAX_ANSWER_TOKENS)?,
        });
        pb.inc(chunk.len() as u64);
    }
    Ok(out)
}

pub(crate) type Question<'a> = (usize, &'a QaPair);

/// Scores answers; appends predictions.
pub(crate) fn score(
    method: &str,
    questions: &[Question<'_>],
    answers: &[String],
    preds: &mut Vec<Prediction>,
) -> (f64, f64, f64) {
    let (mut em, mut f1, mut pem) = (0.0, 0.0, 0.0);
    for ((doc, qa), a) in questions.iter().zip(answers) {
        let e = exact_match(a, &qa.answers);
        let f = f1_score(a, &qa.answers);
        em += e;
        f1 += f;
        pem += prefix_exact_match(a, &qa.answers);
        preds.push(Prediction {
            method: method.into(),
            document: *doc,
            question: qa.question.clone(),
            prediction: a.clone(),
            answers: qa.answers.clone(),
            em: e,
            f1: f,
        });
    }
    let n = questions.len().max(1) as f64;
    (em / n, f1 / n, pem / n)
}

/// The top-`k` documents for `question` among the first `n` indexed, best
/// first; documents no query word matches follow in stream order, so `k ≥ n`
/// returns every document (MAC+RAG@N is MAC).
pub fn retrieve(index: &Bm25Index, question: &str, k: usize, n: usize) -> Result<Vec<usize>> {
    let k = k.min(n);
    let mut hits: Vec<usize> = index
        .search(question, k)?
        .iter()
        .map(|h| h.document)
        .filter(|&d| d < n)
        .collect();
    let mut next = 0;
    while hits.len() < k {
        if !hits.contains(&next) {
            hits.push(next);
        }
        next += 1;
    }
    Ok(hits)
}

/// The `hits` documents in the prompt before `question`, in `frame`
/// ([`framed_prompt`]).
pub(crate) fn rag_prompt(
    frame: Option<&ChatFrame>,
    docs: &[mac_data::Document],
    hits: &[usize],
    question: &str,
) -> String {
    framed_prompt(frame, Some(&rag_context(docs, hits)), question)
}

/// The retrieved documents' text as `rag@k` hands it to the LM.
pub(crate) fn rag_context(docs: &[mac_data::Document], hits: &[usize]) -> String {
    let texts: Vec<&str> = hits.iter().map(|&h| docs[h].text.trim()).collect();
    texts.join("\n")
}

/// Each document index moved `shift` places along a bank of `n` (wrapping).
pub(crate) fn shifted(hits: &[usize], shift: usize, n: usize) -> Vec<usize> {
    hits.iter().map(|&h| (h + shift) % n.max(1)).collect()
}

/// MAC+RAG@k answers: aggregate only the top-k documents' modulations.
///
/// With `shift > 0` each retrieved document `h` is replaced by document
/// `(h + shift) mod N` of the bank: the control that keeps everything but
/// the documents' content (same pipeline, same number of documents, about
/// another entity whenever retrieval found the right one).
pub(crate) fn mac_rag_answers(
    rt: &MacRuntime,
    index: &Bm25Index,
    bank: &MemoryBank,
    qs: &[Question<'_>],
    k: usize,
    batch: usize,
    shift: usize,
) -> Result<Vec<String>> {
    let (n, d) = rt.config.memory_shape();
    let mut out = Vec::with_capacity(qs.len());
    for chunk in qs.chunks(batch.max(1)) {
        let texts: Vec<&str> = chunk.iter().map(|(_, q)| q.question.as_str()).collect();
        let q_tokens = rt.encode_questions(&texts)?;
        let mut per_q = Vec::with_capacity(chunk.len());
        for (_, q) in chunk {
            let hits = shifted(
                &retrieve(index, &q.question, k, index.len())?,
                shift,
                bank.len(),
            );
            let mut data = Vec::with_capacity(hits.len() * n * d);
            for &h in &hits {
                data.extend(bank.modulations(h, 1)?.data);
            }
            per_q.push(Tensor::<3>::from_data(
                TensorData::new(data, [hits.len(), n, d]),
                &rt.device,
            ));
        }
        let modulation = rt.aggregate_per_question(q_tokens, per_q);
        out.extend(rt.answer_with_modulation(&texts, modulation)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::shifted;

    #[test]
    fn shifted_documents_wrap_around_the_bank_and_never_stay_put() {
        assert_eq!(shifted(&[0, 3, 4], 2, 5), vec![2, 0, 1]);
        assert_eq!(shifted(&[1], 0, 5), vec![1]);
        for h in 0..7 {
            assert_ne!(shifted(&[h], 7 / 2, 7), vec![h]);
        }
    }
}
