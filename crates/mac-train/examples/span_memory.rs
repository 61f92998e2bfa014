//! Span memory on the `open` fact stream (every test answer a value training
//! never showed): train a span selector on the LM's residual states, then
//! answer the test split's questions from a few of a document's own
//! key/values, with the controls that say what the memory carries.
//!
//! `cargo xtask span`, or `cargo run --example span_memory -p mac-train --
//! [TRAIN_DOCS] [TEST_DOCS] [STEPS] [OUT.json] [DISTRACTORS]`
//! (needs the models: `cargo xtask fetch`).

use std::collections::BTreeMap;
use std::error::Error;
use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use mac_aggregation::ChosenSpan;
use mac_data::{exact_match, f1_score, FactStream, FactStreamConfig};
use mac_encoder::{Bert, EncoderTokenizer, Trainable};
use mac_eval::bootstrap::f1_interval;
use mac_lm::LoadedLm;
use mac_model::prompt::question_prompt;
use mac_model::{generate_answers, AnswerGeneration, SpanRead, SpanReader, DEFAULT_PRIOR_SCALE};
use mac_retrieval::Bm25Index;
use mac_train::span::{
    choose_spans, SpanFeatures, SpanQuestion, SpanRule, SpanTrainConfig, SpanTrainer,
};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// MiniLM's similarity prior `[Q, N]`: the scaled cosine of each question
/// with each document.
fn prior(
    questions: &[&str],
    documents: &[&str],
    device: &Device,
) -> Result<Tensor<2>, Box<dyn Error>> {
    let dir = mac_assets::default_encoder_dir();
    let bert = Bert::load(&dir, device, Trainable::None)?;
    let tok = EncoderTokenizer::from_file(dir.join("tokenizer.json"), 256)?;
    let embed = |texts: &[&str]| -> Result<Tensor<2>, Box<dyn Error>> {
        let mut rows = Vec::new();
        for chunk in texts.chunks(32) {
            let b = tok.encode_batch(chunk)?;
            rows.push(bert.sentence_embedding(b.ids_tensor(device), b.valid_tensor(device)));
        }
        Ok(Tensor::cat(rows, 0))
    };
    Ok(embed(questions)?.matmul(embed(documents)?.transpose()) * DEFAULT_PRIOR_SCALE)
}

/// What a question is answered from: a document of the memory, and the
/// first and last token of the span read from it.
type Read = (usize, usize, usize);

#[derive(serde::Serialize)]
struct Prediction {
    /// The question's document (its index in the test split).
    document: usize,
    question: String,
    answers: Vec<String>,
    prediction: String,
    /// The tokens handed to the LM besides the sink, decoded.
    span: String,
}

#[derive(Default, serde::Serialize)]
struct Score {
    #[serde(skip)]
    predictions: Vec<Prediction>,
    questions: usize,
    em: f64,
    f1: f64,
    /// 95% interval of the F1, resampling documents (`mac_eval::bootstrap`).
    f1_ci95: Option<[f64; 2]>,
    gold_document_top1: f64,
    span_exact: f64,
    gold_share: f64,
}

fn main() -> Result<(), Box<dyn Error>> {
    mac_device::keep_freed_memory();
    let (n_train, n_test, steps) = (arg(1, 2000), arg(2, 200), arg(3, 1500));
    let out = std::env::args().nth(4);
    let n_distractors = arg(5, 800);
    let device = mac_device::select("flex")?;
    let lm = LoadedLm::load(mac_assets::default_lm_path(), &device)?;
    let stream = FactStream::generate(&FactStreamConfig::open());
    let config = SpanTrainConfig {
        steps,
        train_match: std::env::var("MAC_SPAN_TRAIN_MATCH").map_or(true, |v| v != "0"),
        ..SpanTrainConfig::default()
    };
    let reader = SpanReader {
        layer: config.layer,
        sink_tokens: 4,
    };

    let t0 = Instant::now();
    let train = SpanFeatures::read(&lm, &reader, &stream.train, n_train, 16)?;
    let validation = SpanFeatures::read(&lm, &reader, &stream.validation, 64, 16)?;
    let test = SpanFeatures::read(&lm, &reader, &stream.test, n_test, 16)?;
    let found = |f: &SpanFeatures| f.questions.iter().filter(|q| q.span.is_some()).count();
    eprintln!(
        "read {} + {} + {} documents in {:.0} s; answers found in their document: train {}/{}, test {}/{}",
        train.documents.len(), validation.documents.len(), test.documents.len(),
        t0.elapsed().as_secs_f64(), found(&train), train.questions.len(), found(&test), test.questions.len()
    );

    let t1 = Instant::now();
    let mut trainer = SpanTrainer::new(config.clone(), &train, &device)?;
    let val_bank: Vec<usize> = (0..validation.documents.len()).collect();
    let val_questions: Vec<usize> = (0..validation.questions.len())
        .filter(|&q| validation.questions[q].span.is_some())
        .collect();
    let (mut loss, mut acc) = (0.0, 0.0);
    let mut curve = Vec::new();
    // The selector kept is the one that does best on validation (span exact,
    // then document top-1): the test split never chooses a setting.
    let mut best = (
        f64::NEG_INFINITY,
        0usize,
        SpanRule::Joint,
        trainer.selector(),
    );
    for step in 1..=steps {
        let s = trainer.step(&train)?;
        loss += s.loss;
        acc += s.start_accuracy;
        if step % 100 == 0 {
            let selector = trainer.selector();
            let mut row = serde_json::json!({"step": step, "loss": loss / 100.0, "train_start_accuracy": acc / 100.0});
            for rule in [SpanRule::Joint, SpanRule::DocumentFirst] {
                let chosen = choose_spans(
                    &selector,
                    &validation,
                    &val_bank,
                    &validation,
                    &val_questions,
                    None,
                    rule,
                    &device,
                )?;
                let rate = |hit: &dyn Fn(&ChosenSpan, &SpanQuestion) -> bool| {
                    chosen
                        .iter()
                        .zip(&val_questions)
                        .filter(|(c, &q)| hit(&c.span, &validation.questions[q]))
                        .count() as f64
                        / val_questions.len() as f64
                };
                let exact =
                    rate(&|c, q| c.document == q.document && Some((c.start, c.end)) == q.span);
                let top1 = rate(&|c, q| c.document == q.document);
                eprintln!("step {step} ({rule:?}): loss {:.3}, train start accuracy {:.3}; validation (bank of {}): span exact {exact:.3}, document top-1 {top1:.3} ({:.0} s)",
                    loss / 100.0, acc / 100.0, val_bank.len(), t1.elapsed().as_secs_f64());
                row[format!("{rule:?}")] =
                    serde_json::json!({"validation_span_exact": exact, "validation_top1": top1});
                if exact + 1e-3 * top1 > best.0 {
                    best = (exact + 1e-3 * top1, step, rule, selector.clone());
                }
            }
            curve.push(row);
            loss = 0.0;
            acc = 0.0;
        }
    }
    let train_seconds = t1.elapsed().as_secs_f64();
    let (_, chosen_step, rule, selector) = best;
    eprintln!("selector of step {chosen_step}, rule {rule:?}, chosen on validation");
    if out.as_deref() == Some("--train-only") {
        return Ok(());
    }

    // The test split's documents, then distractors for larger banks: test
    // documents of another seed (their values never in training either).
    let extra_stream = FactStream::generate(&FactStreamConfig {
        seed: 2025,
        n_train: 0,
        n_validation: 0,
        n_test: n_distractors,
        ..FactStreamConfig::open()
    });
    let extra = SpanFeatures::read(&lm, &reader, &extra_stream.test, n_distractors, 16)?;
    let mut memory = test.clone();
    memory.documents.extend(extra.documents.iter().cloned());
    memory.states.extend(extra.states.iter().cloned());
    let mut d_texts: Vec<&str> = stream.test.documents[..test.documents.len()]
        .iter()
        .map(|d| d.text.as_str())
        .collect();
    d_texts.extend(extra_stream.test.documents.iter().map(|d| d.text.as_str()));
    let q_texts: Vec<&str> = test.questions.iter().map(|q| q.text.as_str()).collect();
    let prior_all = prior(&q_texts, &d_texts, &device)?; // [Q, test + distractors]
    let prior_for = |qs: &[usize], n: usize| {
        let rows: Vec<i64> = qs.iter().map(|&q| q as i64).collect();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [qs.len()]), &device);
        prior_all.clone().select(0, rows).narrow(1, 0, n)
    };
    let bm25 = Bm25Index::build(&d_texts[..test.documents.len()])?;

    let t2 = Instant::now();
    let mut report = BTreeMap::new();
    let gen = AnswerGeneration::default();
    // Answers each question `qs[i]` from `reads[i]` (a document of `memory`
    // and a span of it) and scores them; `shares`: the gold document's
    // share of the start distribution, where the method has one.
    let mut score = |name: &str,
                     qs: &[usize],
                     reads: &[Read],
                     shares: Option<Vec<f32>>|
     -> Result<(), Box<dyn Error>> {
        let mut s = Score {
            questions: qs.len(),
            ..Score::default()
        };
        let mut per_question = Vec::with_capacity(qs.len());
        for (chunk_q, chunk_r) in qs.chunks(16).zip(reads.chunks(16)) {
            let rs: Vec<SpanRead> = chunk_r
                .iter()
                .map(|&(d, a, b)| SpanRead {
                    document: &memory.documents[d],
                    start: a,
                    end: b,
                })
                .collect();
            let texts: Vec<&str> = chunk_q
                .iter()
                .map(|&q| test.questions[q].text.as_str())
                .collect();
            let answers = reader.answer(&lm, &rs, &texts, &vec![gen; texts.len()])?;
            for ((&q, a), r) in chunk_q.iter().zip(&answers).zip(&rs) {
                let gold = &test.questions[q].answers;
                s.em += exact_match(&a.text, gold);
                s.f1 += f1_score(&a.text, gold);
                per_question.push((test.questions[q].document, f1_score(&a.text, gold)));
                s.predictions.push(Prediction {
                    document: test.questions[q].document,
                    question: test.questions[q].text.clone(),
                    answers: gold.clone(),
                    prediction: a.text.clone(),
                    span: lm.tokenizer.decode(&r.document[r.start..=r.end])?,
                });
            }
        }
        for (&q, &(d, a, b)) in qs.iter().zip(reads) {
            let tq = &test.questions[q];
            s.gold_document_top1 += (d == tq.document) as u8 as f64;
            s.span_exact += (d == tq.document && Some((a, b)) == tq.span) as u8 as f64;
        }
        s.gold_share = shares.map_or(f64::NAN, |sh| {
            sh.iter().map(|&x| x as f64).sum::<f64>() / qs.len() as f64
        });
        let n = qs.len() as f64;
        s.em /= n;
        s.f1 /= n;
        s.gold_document_top1 /= n;
        s.span_exact /= n;
        s.f1_ci95 = f1_interval(per_question);
        let [lo, hi] = s.f1_ci95.unwrap_or([f64::NAN; 2]);
        eprintln!("{name:<36} EM {:.3}  F1 {:.3} [{lo:.3}, {hi:.3}]  top-1 {:.3}  span exact {:.3}  gold share {:.3} ({:.0} s)", s.em, s.f1, s.gold_document_top1, s.span_exact, s.gold_share, t2.elapsed().as_secs_f64());
        report.insert(name.to_string(), s);
        Ok(())
    };
    let over = |bank: &[usize],
                qs: &[usize],
                prior: Option<Tensor<2>>|
     -> Result<(Vec<Read>, Vec<f32>), Box<dyn Error>> {
        let chosen = choose_spans(&selector, &memory, bank, &memory, qs, prior, rule, &device)?;
        Ok((
            chosen
                .iter()
                .map(|c| (bank[c.span.document], c.span.start, c.span.end))
                .collect(),
            chosen.iter().map(|c| c.gold_share).collect(),
        ))
    };

    let n_test_docs = test.documents.len();
    let bank: Vec<usize> = (0..n_test_docs).collect();
    let questions: Vec<usize> = (0..test.questions.len()).collect();
    let (reads, shares) = over(&bank, &questions, None)?;
    score("span memory", &questions, &reads, Some(shares))?;
    let (reads, shares) = over(&bank, &questions, Some(prior_for(&questions, n_test_docs)))?;
    score("span memory+prior", &questions, &reads, Some(shares))?;
    // Over the BM25 top document (MAC+BM25's place), and that document whole (rag@1).
    let top: Vec<usize> = questions
        .iter()
        .map(|&q| {
            Ok::<_, Box<dyn Error>>(
                bm25.search(&test.questions[q].text, 1)?
                    .first()
                    .map_or(0, |h| h.document),
            )
        })
        .collect::<Result<_, _>>()?;
    let reads = questions
        .iter()
        .zip(&top)
        .map(|(&q, &d)| Ok::<_, Box<dyn Error>>(over(&[d], &[q], None)?.0[0]))
        .collect::<Result<Vec<_>, _>>()?;
    score("span memory over BM25 top-1", &questions, &reads, None)?;
    let reads: Vec<_> = top
        .iter()
        .map(|&d| (d, 0, memory.documents[d].len() - 1))
        .collect();
    score(
        "rag@1 (BM25 top-1 document whole)",
        &questions,
        &reads,
        None,
    )?;
    // The own document alone: only the span is chosen.
    let reads = questions
        .iter()
        .map(|&q| Ok::<_, Box<dyn Error>>(over(&[test.questions[q].document], &[q], None)?.0[0]))
        .collect::<Result<Vec<_>, _>>()?;
    score("span memory, own document", &questions, &reads, None)?;
    // Control: a bank of unrelated documents (the distractors).
    let unrelated: Vec<usize> =
        (n_test_docs..n_test_docs + n_test_docs.min(n_distractors)).collect();
    let (reads, _) = over(&unrelated, &questions, None)?;
    score("span memory, unrelated bank", &questions, &reads, None)?;
    // References: the gold span (an oracle selection) and the whole document (the oracle context).
    let reads: Vec<_> = questions
        .iter()
        .map(|&q| {
            let tq = &test.questions[q];
            let (a, b) = tq.span.unwrap_or((0, 0));
            (tq.document, a, b)
        })
        .collect();
    score("gold span (oracle)", &questions, &reads, None)?;
    let reads: Vec<_> = questions
        .iter()
        .map(|&q| {
            let d = test.questions[q].document;
            (d, 0, memory.documents[d].len() - 1)
        })
        .collect();
    score("whole document (oracle context)", &questions, &reads, None)?;
    // Bank size: the first 10 documents' questions in banks of 10 to all.
    let first: Vec<usize> = questions
        .iter()
        .copied()
        .filter(|&q| test.questions[q].document < 10)
        .collect();
    let mut size = 10;
    while size <= memory.documents.len() {
        let bank: Vec<usize> = (0..size).collect();
        let (reads, shares) = over(&bank, &first, None)?;
        score(
            &format!("bank of {size}: span memory"),
            &first,
            &reads,
            Some(shares),
        )?;
        let (reads, shares) = over(&bank, &first, Some(prior_for(&first, size)))?;
        score(
            &format!("bank of {size}: span memory+prior"),
            &first,
            &reads,
            Some(shares),
        )?;
        size = if size * 10 > memory.documents.len() && size < memory.documents.len() {
            memory.documents.len()
        } else {
            size * 10
        };
    }
    let prompts: Vec<String> = q_texts.iter().map(|q| question_prompt(q)).collect();
    let mut none = Score {
        questions: questions.len(),
        ..Score::default()
    };
    for (chunk, qs) in prompts.chunks(16).zip(questions.chunks(16)) {
        for (a, &q) in generate_answers(&lm, chunk, None, 16)?.iter().zip(qs) {
            none.em += exact_match(a, &test.questions[q].answers);
            none.f1 += f1_score(a, &test.questions[q].answers);
        }
    }
    none.em /= questions.len() as f64;
    none.f1 /= questions.len() as f64;
    eprintln!(
        "no memory                            EM {:.3}  F1 {:.3}",
        none.em, none.f1
    );
    report.insert("no memory".into(), none);

    let json = serde_json::json!({
        "config": config, "chosen_step": chosen_step, "rule": rule, "train_documents": train.documents.len(), "test_documents": test.documents.len(), "distractor_documents": extra.documents.len(),
        "test_questions": questions.len(), "train_seconds": train_seconds, "curve": curve, "methods": report,
    });
    if let Some(path) = &out {
        let mut lines = String::new();
        for (name, score) in &report {
            for p in &score.predictions {
                lines.push_str(&serde_json::to_string(
                    &serde_json::json!({"method": name, "prediction": p}),
                )?);
                lines.push('\n');
            }
        }
        std::fs::write(format!("{path}.predictions.jsonl"), lines)?;
    }
    let text = serde_json::to_string_pretty(&json)?;
    match out {
        Some(path) => std::fs::write(path, text)?,
        None => println!("{text}"),
    }
    Ok(())
}
