//! The span-memory example's memories (a split's span features, texts and
//! similarity prior) and the methods answered from them.

use std::error::Error;

use burn::tensor::{Device, Int, Tensor, TensorData};
use mac_aggregation::SpanSelector;
use mac_encoder::{Bert, EncoderTokenizer, Trainable};
use mac_model::prompt::{question_prompt, ChatFrame};
use mac_retrieval::Bm25Index;
use mac_runtime::DEFAULT_PRIOR_SCALE;
use mac_train::span::{choose_spans, SpanFeatures, SpanQuestion, SpanRule};

use crate::eval::{Evaluation, Read};

/// MiniLM, loaded once, for the similarity prior.
pub struct PriorEncoder {
    bert: Bert,
    tok: EncoderTokenizer,
}

impl PriorEncoder {
    pub fn load(device: &Device) -> Result<Self, Box<dyn Error>> {
        let dir = mac_assets::default_encoder_dir();
        Ok(Self {
            bert: Bert::load(&dir, device, Trainable::None)?,
            tok: EncoderTokenizer::from_file(dir.join("tokenizer.json"), 256)?,
        })
    }

    /// The similarity prior `[Q, N]`: the scaled cosine of each question
    /// with each document.
    fn prior(
        &self,
        questions: &[&str],
        documents: &[&str],
        device: &Device,
    ) -> Result<Tensor<2>, Box<dyn Error>> {
        let embed = |texts: &[&str]| -> Result<Tensor<2>, Box<dyn Error>> {
            let mut rows = Vec::new();
            for chunk in texts.chunks(32) {
                let b = self.tok.encode_batch(chunk)?;
                rows.push(
                    self.bert
                        .sentence_embedding(b.ids_tensor(device), b.valid_tensor(device)),
                );
            }
            Ok(Tensor::cat(rows, 0))
        };
        Ok(embed(questions)?.matmul(embed(documents)?.transpose()) * DEFAULT_PRIOR_SCALE)
    }
}

/// Rows `qs` and the first `n` columns of a prior `[Q, N]`.
fn prior_rows(prior: &Tensor<2>, qs: &[usize], n: usize) -> Tensor<2> {
    let rows: Vec<i64> = qs.iter().map(|&q| q as i64).collect();
    let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [qs.len()]), &prior.device());
    prior.clone().select(0, rows).narrow(1, 0, n)
}

/// A memory of span features: its documents' texts, the features (the
/// evaluated split's documents first, then others that only fill banks),
/// and a prior of every question over every document.
pub struct Memory {
    pub features: SpanFeatures,
    pub texts: Vec<String>,
    /// Documents of the evaluated split (the rest fill banks).
    pub own: usize,
    prior: Tensor<2>,
}

impl Memory {
    pub fn new(
        asked: SpanFeatures,
        texts: Vec<String>,
        others: &SpanFeatures,
        other_texts: &[String],
        encoder: &PriorEncoder,
        device: &Device,
    ) -> Result<Self, Box<dyn Error>> {
        let own = asked.documents.len();
        let mut features = asked;
        features.documents.extend(others.documents.iter().cloned());
        features.states.extend(others.states.iter().cloned());
        let mut texts = texts;
        texts.truncate(own);
        texts.extend(other_texts.iter().cloned());
        let q: Vec<&str> = features.questions.iter().map(|q| q.text.as_str()).collect();
        let d: Vec<&str> = texts.iter().map(String::as_str).collect();
        let prior = encoder.prior(&q, &d, device)?;
        Ok(Self {
            features,
            texts,
            own,
            prior,
        })
    }

    /// Every question of the evaluated split.
    pub fn questions(&self) -> Vec<usize> {
        (0..self.features.questions.len()).collect()
    }

    /// The questions of the first `n` documents.
    pub fn questions_of_first(&self, n: usize) -> Vec<usize> {
        self.questions()
            .into_iter()
            .filter(|&q| self.features.questions[q].document < n)
            .collect()
    }
}

/// The selector kept and how it chooses.
pub struct Chooser<'a> {
    pub selector: &'a SpanSelector,
    pub rule: SpanRule,
    pub device: &'a Device,
}

impl Chooser<'_> {
    /// Spans for questions `qs` of `memory` over the documents `bank`, with
    /// or without the prior; and the gold document's share of each.
    pub fn over(
        &self,
        memory: &Memory,
        bank: &[usize],
        qs: &[usize],
        with_prior: bool,
    ) -> Result<(Vec<Read>, Vec<f32>), Box<dyn Error>> {
        // The bank is a prefix of the memory wherever a prior is used.
        let prior = with_prior.then(|| prior_rows(&memory.prior, qs, bank.len()));
        let chosen = choose_spans(
            self.selector,
            &memory.features,
            bank,
            &memory.features,
            qs,
            prior,
            self.rule,
            self.device,
        )?;
        Ok((
            chosen
                .iter()
                .map(|c| (bank[c.span.document], c.span.start, c.span.end))
                .collect(),
            chosen.iter().map(|c| c.gold_share).collect(),
        ))
    }

    /// `span memory` and `span memory+prior` for questions `qs` over
    /// `bank` (a prefix of the memory), named `label: method`.
    pub fn both(
        &self,
        eval: &mut Evaluation,
        memory: &Memory,
        bank: &[usize],
        qs: &[usize],
        label: &str,
        frame: Option<&ChatFrame>,
    ) -> Result<(), Box<dyn Error>> {
        let m = &memory.features;
        for (with_prior, name) in [(false, "span memory"), (true, "span memory+prior")] {
            let (reads, shares) = self.over(memory, bank, qs, with_prior)?;
            eval.spans(
                &format!("{label}: {name}"),
                frame,
                m,
                m,
                qs,
                &reads,
                Some(shares),
            )?;
        }
        Ok(())
    }

    /// The BM25 top document of each question among the memory's own
    /// documents.
    pub fn bm25_top(memory: &Memory, qs: &[usize]) -> Result<Vec<usize>, Box<dyn Error>> {
        let texts: Vec<&str> = memory.texts[..memory.own]
            .iter()
            .map(String::as_str)
            .collect();
        let bm25 = Bm25Index::build(&texts)?;
        qs.iter()
            .map(|&q| {
                let hits = bm25.search(&memory.features.questions[q].text, 1)?;
                Ok(hits.first().map_or(0, |h| h.document))
            })
            .collect()
    }

    /// The main methods, controls and references on `memory`'s split, named
    /// `prefix` + method.
    pub fn methods(
        &self,
        eval: &mut Evaluation,
        memory: &Memory,
        prefix: &str,
        own_document: bool,
        frame: Option<&ChatFrame>,
    ) -> Result<(), Box<dyn Error>> {
        let m = &memory.features;
        let qs = memory.questions();
        let mut record = |name: &str, reads: &[Read], shares: Option<Vec<f32>>| {
            eval.spans(&format!("{prefix}{name}"), frame, m, m, &qs, reads, shares)
        };
        let all: Vec<usize> = (0..memory.own).collect();
        let (reads, shares) = self.over(memory, &all, &qs, false)?;
        record("span memory", &reads, Some(shares))?;
        let (reads, shares) = self.over(memory, &all, &qs, true)?;
        record("span memory+prior", &reads, Some(shares))?;
        // Over the BM25 top document (MAC+BM25's place), and that document whole (rag@1).
        let top = Self::bm25_top(memory, &qs)?;
        let reads = qs
            .iter()
            .zip(&top)
            .map(|(&q, &d)| Ok::<_, Box<dyn Error>>(self.over(memory, &[d], &[q], false)?.0[0]))
            .collect::<Result<Vec<_>, _>>()?;
        record("span memory over BM25 top-1", &reads, None)?;
        let reads: Vec<Read> = top
            .iter()
            .map(|&d| (d, 0, m.documents[d].len() - 1))
            .collect();
        record("rag@1 (BM25 top-1 document whole)", &reads, None)?;
        if own_document {
            let reads = qs
                .iter()
                .map(|&q| {
                    let own = m.questions[q].document;
                    Ok::<_, Box<dyn Error>>(self.over(memory, &[own], &[q], false)?.0[0])
                })
                .collect::<Result<Vec<_>, _>>()?;
            record("span memory, own document", &reads, None)?;
        }
        // Control: a bank of unrelated documents (those after the split's own).
        let unrelated: Vec<usize> = (memory.own..m.documents.len()).take(memory.own).collect();
        let (reads, _) = self.over(memory, &unrelated, &qs, false)?;
        record("span memory, unrelated bank", &reads, None)?;
        // References: the gold span (an oracle selection), the whole document
        // (the oracle context) and no memory.
        let gold = |q: usize| -> &SpanQuestion { &m.questions[q] };
        let reads: Vec<Read> = qs
            .iter()
            .map(|&q| {
                let (a, b) = gold(q).span.unwrap_or((0, 0));
                (gold(q).document, a, b)
            })
            .collect();
        record("gold span (oracle)", &reads, None)?;
        let reads: Vec<Read> = qs
            .iter()
            .map(|&q| (gold(q).document, 0, m.documents[gold(q).document].len() - 1))
            .collect();
        record("whole document (oracle context)", &reads, None)?;
        let prompts: Vec<String> = qs.iter().map(|&q| question_prompt(&gold(q).text)).collect();
        eval.prompts(&format!("{prefix}no memory"), m, &qs, &prompts)
    }
}
