//! Span memory as the product runs it: a checkpoint's selector beside the
//! frozen LM, documents ingested into a bank of one row per token, and
//! questions answered from the span the selector chooses over the whole
//! bank, read a chunk of documents at a time.
//!
//! A bank entry is the document's text and, for each of its tokens as the
//! LM reads it ([`SpanReader::document_ids`]), the selector's start key, end
//! key and matching key: `2·d_key + d_match` floats. A question's document
//! logits (late interaction over the matching keys) and its start and end
//! logits over every token come chunk by chunk into a
//! [`StreamedSpanChoice`], so the choice is the whole bank's for any chunk
//! size; the chosen document's key/values are recomputed from its tokens,
//! or read from the bank's [`KvStore`] when it has one
//! ([`Memory::store_key_values`]).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use burn::tensor::{Bool, Device, Tensor, TensorData, TensorReadError};
use mac_aggregation::{push_chunk, ChosenSpan, SpanChoice, SpanSelector, StreamedSpanChoice};
use mac_bank::{content_hash, BankShape, MemoryBank, NewEntry, Precision};
use mac_lm::LoadedLm;

use mac_model::prompt::ChatFrame;
use mac_model::{
    beside_replaced, handed_span, names_every, question_names, AnswerGeneration, AnswerTimings,
    EntryTests, EntryTexts, Preamble, SentenceCheck, SpanCheckpoint, SpanRead, SpanReader,
    SpanReading,
};

use crate::service::{check_questions, most_attended};
use crate::{
    AnsweredSpan, AskOptions, Ingested, KvStore, KvStoreReport, Memory, NewDocument, RuntimeError,
    SourcedAnswer,
};

/// Documents read by the LM at a time while ingesting.
const INGEST_BATCH: usize = 8;

/// A trained span selector and the frozen LM it reads.
pub struct SpanMemory {
    /// The frozen LM.
    pub lm: LoadedLm,
    selector: SpanSelector,
    reading: SpanReading,
    /// The answer frame's preamble, read once.
    preamble: Preamble,
    /// The sentence encoder checking the span's sentence, where the
    /// checkpoint asks for it.
    sentence_check: Option<SentenceCheck>,
    producer: String,
    /// What the LM is, for the producer of a key/value store.
    lm_name: String,
    device: Device,
}

impl SpanMemory {
    /// Loads a span checkpoint and its LM (`lm` overrides the recorded
    /// path: a checkpoint moved to another machine).
    pub fn from_checkpoint(
        dir: &Path,
        lm: Option<&Path>,
        device: &Device,
    ) -> Result<Self, RuntimeError> {
        let checkpoint = SpanCheckpoint::open(dir)?;
        let lm_path = lm.unwrap_or(checkpoint.meta.lm.as_path());
        let lm_name = lm_path.file_name().map_or_else(
            || lm_path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let lm = LoadedLm::load(lm_path, device)?;
        checkpoint.meta.check_lm(&lm)?;
        let selector = checkpoint.load_selector(device)?;
        let frame = checkpoint.meta.reading.frame.chat_frame(&lm)?;
        let preamble = Preamble::of(&lm, frame)?;
        let sentence_check = match &checkpoint.meta.reading.sentence_check {
            Some(c) if c.slack.is_some() || c.recency.is_some() => {
                Some(SentenceCheck::load(&c.encoder, device)?)
            }
            _ => None,
        };
        Ok(Self {
            lm,
            selector,
            reading: checkpoint.meta.reading.clone(),
            preamble,
            sentence_check,
            producer: format!(
                "span memory {} (step {})",
                dir.display(),
                checkpoint.meta.step
            ),
            lm_name,
            device: device.clone(),
        })
    }

    /// Floats per token in a bank entry: start and end key, matching key.
    fn row_width(&self) -> usize {
        2 * self.selector.d_key + self.selector.w_match.val().dims()[1]
    }

    fn reader(&self) -> &SpanReader {
        &self.reading.reader
    }

    /// Each document's bank rows, `T_i · row_width` floats.
    fn rows(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let ids = texts
            .iter()
            .map(|t| SpanReader::document_ids(&self.lm, t))
            .collect::<Result<Vec<_>, _>>()?;
        self.reader()
            .token_states(&self.lm, &ids)?
            .into_iter()
            .map(|states| {
                let keys = self.selector.token_keys(states.clone());
                let matching = self.selector.match_keys(states);
                host(Tensor::cat(vec![keys, matching], 1))
            })
            .collect()
    }

    /// What a key/value store of this memory holds: the LM, its layout and
    /// the frame the documents are read in.
    fn kv_producer(&self) -> String {
        let l = self.lm.model.kv_layout();
        let read = match self.preamble.frame() {
            Some(f) => {
                let hash = content_hash(&f.preamble);
                let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("after a chat frame (preamble sha256 {hex}…)")
            }
            None => "from position 0".into(),
        };
        format!(
            "key/values of {} ({} layers, {} heads of {}) read {read}",
            self.lm_name, l.n_layers, l.n_kv_heads, l.head_dim
        )
    }

    /// The shape of a key/value store: a row per position, up to the LM's.
    fn kv_shape(&self, precision: Precision) -> BankShape {
        let l = self.lm.model.kv_layout();
        BankShape {
            n_tokens: self.lm.model.max_positions(),
            d_mod: 2 * l.n_layers * l.kv_width(),
            key_dim: 0,
            rows_vary: true,
            precision,
        }
    }

    /// Adds to `store` the key/values of those of `docs` (source, text) it
    /// lacks, a batch at a time; `progress` gets the count done.
    fn fill_store(
        &self,
        store: &mut KvStore,
        docs: &[(&str, &str)],
        progress: &mut dyn FnMut(usize),
    ) -> Result<usize, RuntimeError> {
        let missing: Vec<&(&str, &str)> = docs.iter().filter(|(_, t)| !store.holds(t)).collect();
        for (i, part) in missing.chunks(INGEST_BATCH).enumerate() {
            let ids = part
                .iter()
                .map(|(_, text)| SpanReader::document_ids(&self.lm, text))
                .collect::<Result<Vec<_>, _>>()?;
            let kv = self.reader().document_kv(&self.lm, &self.preamble, &ids)?;
            let rows = part
                .iter()
                .zip(kv)
                .map(|((source, text), rows)| Ok((*source, *text, host(rows)?)))
                .collect::<Result<Vec<_>, RuntimeError>>()?;
            store.append(&rows)?;
            progress((i * INGEST_BATCH + part.len()).min(missing.len()));
        }
        Ok(missing.len())
    }

    /// The stored key/values of each of the documents `texts`, or `None`
    /// where `bank` has no store or the store lacks the document.
    fn stored_kv(
        &self,
        bank: &MemoryBank,
        texts: &[String],
    ) -> Result<Vec<Option<Tensor<2>>>, RuntimeError> {
        let Some(store) = KvStore::open_read_only(bank.dir(), &self.kv_producer())? else {
            return Ok(vec![None; texts.len()]);
        };
        let width = self.kv_shape(store.precision()).d_mod;
        texts
            .iter()
            .map(|text| {
                Ok(store.rows(text)?.map(|rows| {
                    let n = rows.len() / width;
                    Tensor::from_data(TensorData::new(rows, [n, width]), &self.device)
                }))
            })
            .collect()
    }

    /// Each question's span over the whole bank, scored `chunk` documents
    /// at a time; a later entry is preferred as the checkpoint's recency
    /// says (entries lie in the order they were ingested); named first, the
    /// span is chosen among the entries that name what the question names,
    /// where any does.
    pub fn choose(
        &self,
        bank: &MemoryBank,
        questions: &[&str],
        chunk: usize,
    ) -> Result<Vec<SpanChoice>, RuntimeError> {
        self.choose_over(&mut BankTexts::new(bank), questions, chunk)
    }

    /// [`Self::choose`] over the bank of `texts`, the entries it reads
    /// kept there.
    fn choose_over(
        &self,
        texts: &mut BankTexts<'_>,
        questions: &[&str],
        chunk: usize,
    ) -> Result<Vec<SpanChoice>, RuntimeError> {
        let bank = texts.bank;
        let states = self.reader().question_states(&self.lm, questions)?;
        let summaries: Vec<Tensor<2>> = states.iter().cloned().map(SpanReader::summary).collect();
        let queries = self.selector.question_queries(Tensor::cat(summaries, 0));
        let (question_keys, question_valid) = self.padded_match_keys(&states);
        let mut choices: Vec<StreamedSpanChoice> = questions
            .iter()
            .map(|_| {
                StreamedSpanChoice::new(self.reading.rule, self.selector.max_span)
                    .with_recency(self.reading.recency())
                    .named_first(self.reading.named_first)
            })
            .collect();
        let names: Vec<Vec<Vec<&str>>> = questions.iter().map(|q| question_names(q)).collect();
        let key = 2 * self.selector.d_key;
        let width = self.row_width();
        for part in bank.chunks(chunk.max(1)) {
            let part = part?;
            let m: usize = part.rows.iter().sum();
            let rows = Tensor::<2>::from_data(TensorData::new(part.data, [m, width]), &self.device);
            let keys = rows.clone().narrow(1, 0, key);
            let (doc_keys, doc_valid) = padded(&rows.narrow(1, key, width - key), &part.rows);
            let matches = self.selector.document_matches(
                question_keys.clone(),
                question_valid.clone(),
                doc_keys,
                doc_valid,
            );
            let named: Vec<Vec<bool>> = match self.reading.named_first {
                true => names
                    .iter()
                    .map(|n| {
                        let every = |t: &String| !n.is_empty() && names_every(t, n);
                        part.texts.iter().map(every).collect()
                    })
                    .collect(),
                false => Vec::new(),
            };
            push_chunk(
                &mut choices,
                &self.selector,
                (queries.clone(), keys),
                matches,
                &part.rows,
                &named,
            )
            .map_err(read_error)?;
        }
        choices
            .into_iter()
            .zip(&names)
            .zip(questions)
            .map(|((c, names), &question)| {
                let check = self.sentence_check.as_ref();
                let mut tests = EntryTests::new(&mut *texts, question, names, check);
                c.finish_with(&mut tests)?.ok_or_else(|| {
                    RuntimeError::input(format!("the bank in {} is empty", bank.dir().display()))
                })
            })
            .collect()
    }

    /// The span handed for `choice` of `question` in `document` (its token
    /// ids), inside the document: the chosen span, or with the sentence
    /// check the sentence matching the question by more than its slack
    /// above the span's own.
    fn checked_span(
        &self,
        choice: &SpanChoice,
        question: &str,
        document: &[u32],
    ) -> Result<(usize, usize), RuntimeError> {
        if self.reading.hands_whole(choice.confidence) {
            let end = choice.span.end.min(document.len().saturating_sub(1));
            return Ok((choice.span.start.min(end), end));
        }
        self.checked_range(question, document, choice.span)
    }

    /// `span` of `document` (its token ids), or with the sentence check the
    /// sentence matching the question by more than its slack above the
    /// span's own.
    fn checked_range(
        &self,
        question: &str,
        document: &[u32],
        span: ChosenSpan,
    ) -> Result<(usize, usize), RuntimeError> {
        let slack = self.reading.sentence_check.as_ref().and_then(|c| c.slack);
        let check = self.sentence_check.as_ref().zip(slack);
        let span = (span.start, span.end);
        Ok(handed_span(&self.lm, check, question, document, span)?)
    }

    /// Where the checkpoint asks for it, each question's part of its chosen
    /// entry's handed text `handed` (`documents[i]`'s tokens `handed[i]`,
    /// checked) beside the answer of the entry it passed over, or of any
    /// earlier report it may supersede where the checkpoint says so (see
    /// [`beside_replaced`], [`SpanChoice::earlier`]); `None` where there is
    /// no such entry or its answer is not stated there.
    fn beside_replaced(
        &self,
        texts: &mut BankTexts<'_>,
        choices: &[SpanChoice],
        questions: &[&str],
        (documents, handed): (&[&[u32]], &[(usize, usize)]),
    ) -> Result<Vec<Option<(usize, usize)>>, RuntimeError> {
        let mut cuts = vec![None; choices.len()];
        if !self.reading.beside_replaced {
            return Ok(cuts);
        }
        let passed: Vec<(usize, ChosenSpan)> = choices
            .iter()
            .enumerate()
            .filter(|(_, c)| !self.reading.hands_whole(c.confidence))
            .filter_map(|(i, c)| {
                let earlier = match self.reading.replaced_from_earlier {
                    true => c.earlier,
                    false => c.passed_over,
                };
                earlier.map(|over| (i, over))
            })
            .collect();
        if passed.is_empty() {
            return Ok(cuts);
        }
        let earlier = passed
            .iter()
            .map(|(_, over)| {
                let text = texts.text(over.document)?;
                Ok(SpanReader::document_ids(&self.lm, text)?)
            })
            .collect::<Result<Vec<Vec<u32>>, RuntimeError>>()?;
        let reads = passed
            .iter()
            .zip(&earlier)
            .map(|(&(i, over), ids)| {
                let (start, end) = self.checked_range(questions[i], ids, over)?;
                Ok(SpanRead {
                    document: ids,
                    start,
                    end,
                    stored: None,
                    exact: false,
                })
            })
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        let asked: Vec<&str> = passed.iter().map(|&(i, _)| questions[i]).collect();
        let generation = vec![AnswerGeneration::default(); asked.len()];
        let stale = self.reader().answer_after(
            &self.lm,
            &self.preamble,
            &reads,
            &asked,
            &generation,
            &mut |_, _| {},
        )?;
        for (&(i, _), replaced) in passed.iter().zip(stale) {
            let (start, end) = handed[i];
            let range = self
                .reader()
                .extent
                .range(&self.lm, documents[i], start, end)?;
            cuts[i] = beside_replaced(&self.lm, documents[i], range, &replaced.text, questions[i])?;
        }
        Ok(cuts)
    }

    /// The entries `choices` chose, each read from the bank (where the
    /// choice did not already) and tokenized once, with their stored
    /// key/values where the bank keeps them.
    fn chosen_entries(
        &self,
        texts: &mut BankTexts<'_>,
        choices: &[SpanChoice],
    ) -> Result<ChosenEntries, RuntimeError> {
        let mut chosen = ChosenEntries::default();
        let mut read = Vec::new();
        for c in choices {
            if !chosen.entries.contains(&c.span.document) {
                let text = texts.text(c.span.document)?;
                chosen.ids.push(SpanReader::document_ids(&self.lm, text)?);
                chosen.entries.push(c.span.document);
                read.push(text.to_owned());
            }
        }
        chosen.stored = self.stored_kv(texts.bank, &read)?;
        Ok(chosen)
    }

    /// What each question is handed of its chosen entry: the first and
    /// last token, and whether that is a cut beside a replaced value (read
    /// exactly; see [`Self::beside_replaced`]).
    fn handed(
        &self,
        texts: &mut BankTexts<'_>,
        chosen: &ChosenEntries,
        choices: &[SpanChoice],
        questions: &[&str],
    ) -> Result<Vec<(usize, usize, bool)>, RuntimeError> {
        let ids: Vec<&[u32]> = choices
            .iter()
            .map(|c| chosen.ids[chosen.of(c)].as_slice())
            .collect();
        let spans = choices
            .iter()
            .zip(questions)
            .zip(&ids)
            .map(|((c, q), ids)| self.checked_span(c, q, ids))
            .collect::<Result<Vec<_>, _>>()?;
        let cuts = self.beside_replaced(texts, choices, questions, (&ids, &spans))?;
        Ok(spans
            .into_iter()
            .zip(cuts)
            .map(|((start, end), cut)| match cut {
                Some((start, end)) => (start, end, true),
                None => (start, end, false),
            })
            .collect())
    }

    /// The questions' matching keys padded to the longest, `[Q, Tq, d_match]`,
    /// and where tokens are.
    fn padded_match_keys(&self, states: &[Tensor<2>]) -> (Tensor<3>, Tensor<2, Bool>) {
        let lengths: Vec<usize> = states.iter().map(|s| s.dims()[0]).collect();
        let keys = self.selector.match_keys(Tensor::cat(states.to_vec(), 0));
        padded(&keys, &lengths)
    }
}

impl Memory for SpanMemory {
    fn name(&self) -> &'static str {
        "span memory"
    }

    fn lm(&self) -> &LoadedLm {
        &self.lm
    }

    fn frame(&self) -> Option<&ChatFrame> {
        self.preamble.frame()
    }

    fn copies_answers(&self) -> bool {
        self.reading.reader.copied
    }

    fn document_token_limit(&self) -> usize {
        self.lm.model.max_positions()
    }

    /// The shape of the banks this memory fills: one row per token, up to
    /// the LM's positions.
    fn bank_shape(&self) -> BankShape {
        BankShape {
            n_tokens: self.lm.model.max_positions(),
            d_mod: self.row_width(),
            key_dim: 0,
            rows_vary: true,
            precision: Precision::F32,
        }
    }

    /// Opens the bank in `dir` as its writer, creating it if needed.
    fn open_bank_writer(&self, dir: &Path) -> Result<MemoryBank, RuntimeError> {
        Ok(MemoryBank::open_or_create(
            dir,
            self.bank_shape(),
            &self.producer,
        )?)
    }

    /// Reads each document once and appends it to `bank` (duplicates are
    /// reported, not stored again); `progress` gets the count done.
    fn ingest(
        &self,
        bank: &mut MemoryBank,
        docs: &[NewDocument],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Ingested>, RuntimeError> {
        let mut done = Vec::with_capacity(docs.len());
        // The bank's key/value store, opened once for the whole ingest.
        let mut store = KvStore::open(bank, &self.kv_producer())?;
        for chunk in docs.chunks(INGEST_BATCH) {
            if let Some(d) = chunk.iter().find(|d| d.text.trim().is_empty()) {
                return Err(RuntimeError::input(format!(
                    "document from `{}` is empty",
                    d.source
                )));
            }
            let texts: Vec<&str> = chunk.iter().map(|d| d.text.as_str()).collect();
            let rows = self.rows(&texts)?;
            let entries: Vec<NewEntry<'_>> = chunk
                .iter()
                .zip(&rows)
                .map(|(d, r)| NewEntry {
                    source: &d.source,
                    text: &d.text,
                    modulation: r,
                    key: &[],
                })
                .collect();
            for outcome in bank.append_batch(&entries)? {
                done.push(Ingested {
                    outcome,
                    truncated_tokens: 0,
                });
            }
            if let Some(store) = store.as_mut() {
                let docs: Vec<(&str, &str)> = chunk
                    .iter()
                    .map(|d| (d.source.as_str(), d.text.as_str()))
                    .collect();
                self.fill_store(store, &docs, &mut |_| {})?;
            }
            progress(done.len());
        }
        Ok(done)
    }

    /// Creates the bank's key/value store at `precision` (or opens the one
    /// there) and reads into it every document of the bank it lacks.
    fn store_key_values(
        &self,
        bank: &MemoryBank,
        precision: Precision,
        progress: &mut dyn FnMut(usize),
    ) -> Result<KvStoreReport, RuntimeError> {
        if !bank.is_writer() {
            return Err(RuntimeError::input(format!(
                "{}: storing key/values needs the bank's writer",
                bank.dir().display()
            )));
        }
        let mut store =
            KvStore::open_or_create(bank.dir(), self.kv_shape(precision), &self.kv_producer())?;
        let entries = (0..bank.len())
            .map(|i| bank.read(i).map(|e| (e.source, e.text)))
            .collect::<Result<Vec<_>, _>>()?;
        let docs: Vec<(&str, &str)> = entries
            .iter()
            .map(|(s, t)| (s.as_str(), t.as_str()))
            .collect();
        let added = self.fill_store(&mut store, &docs, progress)?;
        Ok(KvStoreReport {
            documents: store.len(),
            added,
            bytes: store.size_bytes(),
            precision: store.precision(),
        })
    }

    /// Answers `questions` from `bank`, scored `opts.chunk` documents at a
    /// time, each with its span and the `opts.top` documents of the highest
    /// share of the start distribution.
    fn ask_with(
        &self,
        bank: &MemoryBank,
        questions: &[&str],
        generation: &[AnswerGeneration],
        opts: &AskOptions,
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<SourcedAnswer>, RuntimeError> {
        check_questions(questions, generation)?;
        let shape = bank.shape();
        if shape != self.bank_shape() {
            return Err(RuntimeError::input(format!(
                "{}: the bank holds entries of shape {shape:?}; this span memory reads {:?}",
                bank.dir().display(),
                self.bank_shape()
            )));
        }
        let t0 = Instant::now();
        let mut entries = BankTexts::new(bank);
        let choices = self.choose_over(&mut entries, questions, opts.chunk)?;
        let read = Instant::now();
        let chosen = self.chosen_entries(&mut entries, &choices)?;
        let handed = self.handed(&mut entries, &chosen, &choices, questions)?;
        let reads: Vec<SpanRead<'_>> = choices
            .iter()
            .zip(&handed)
            .map(|(c, &(start, end, exact))| {
                let i = chosen.of(c);
                let ids = chosen.ids[i].as_slice();
                let read = match self.reading.hands_whole(c.confidence) {
                    true => SpanRead::whole(ids),
                    false => SpanRead {
                        document: ids,
                        start,
                        end,
                        stored: None,
                        exact,
                    },
                };
                SpanRead {
                    stored: chosen.stored[i].as_ref(),
                    ..read
                }
            })
            .collect();
        let answers = self.reader().answer_after(
            &self.lm,
            &self.preamble,
            &reads,
            questions,
            generation,
            on_text,
        )?;
        let timings = AnswerTimings::since(t0, read);
        answers
            .into_iter()
            .zip(&choices)
            .zip(reads.iter().zip(handed))
            .map(|((answer, choice), (read, (start, end, _)))| {
                let span_ids = &read.document[start..=end];
                Ok(SourcedAnswer {
                    text: answer.text,
                    documents: most_attended(bank, &choice.shares, opts.top)?,
                    shares: choice.shares.clone(),
                    bank_entries: bank.len(),
                    hit_token_limit: answer.hit_token_limit,
                    generated_tokens: answer.generated_tokens,
                    prompt_tokens: answer.prompt_tokens,
                    timings,
                    span: Some(AnsweredSpan {
                        id: bank.entries()[choice.span.document].id,
                        tokens: [start, end],
                        text: self.lm.tokenizer.decode(span_ids)?,
                        whole_document: self.reading.hands_whole(choice.confidence),
                        stored_kv: read.stored.is_some(),
                    }),
                })
            })
            .collect()
    }
}

/// Consecutive rows `[Σ lengths, d]` as `[N, T, d]`, padded with zeros to
/// the longest, with where rows are, `[N, T]`.
fn padded(rows: &Tensor<2>, lengths: &[usize]) -> (Tensor<3>, Tensor<2, Bool>) {
    let device = rows.device();
    let d = rows.dims()[1];
    let t = lengths.iter().copied().max().unwrap_or(0).max(1);
    let mut parts = Vec::with_capacity(lengths.len());
    let mut valid = vec![false; lengths.len() * t];
    let mut from = 0;
    for (i, &len) in lengths.iter().enumerate() {
        let mut part = rows.clone().narrow(0, from, len);
        if len < t {
            part = Tensor::cat(vec![part, Tensor::zeros([t - len, d], &device)], 0);
        }
        parts.push(part.unsqueeze_dim::<3>(0));
        valid[i * t..i * t + len].fill(true);
        from += len;
    }
    (
        Tensor::cat(parts, 0),
        Tensor::from_data(TensorData::new(valid, [lengths.len(), t]), &device),
    )
}

fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, RuntimeError> {
    t.try_to_vec_as::<f32>().map_err(read_error)
}

fn read_error(e: TensorReadError) -> RuntimeError {
    RuntimeError::input(format!("reading span scores: {e:?}"))
}

/// The entries chosen for one ask: each entry's index in the bank, its
/// token ids and its stored key/values (where the bank keeps them).
#[derive(Default)]
struct ChosenEntries {
    entries: Vec<usize>,
    ids: Vec<Vec<u32>>,
    stored: Vec<Option<Tensor<2>>>,
}

impl ChosenEntries {
    /// Where `choice`'s entry is among these.
    fn of(&self, choice: &SpanChoice) -> usize {
        self.entries
            .iter()
            .position(|&d| d == choice.span.document)
            .expect("every chosen entry is read")
    }
}

/// The bank's entry texts, each read from disk once while answering.
struct BankTexts<'a> {
    bank: &'a MemoryBank,
    texts: HashMap<usize, String>,
}

impl<'a> BankTexts<'a> {
    fn new(bank: &'a MemoryBank) -> Self {
        Self {
            bank,
            texts: HashMap::new(),
        }
    }
}

impl EntryTexts for BankTexts<'_> {
    type Error = RuntimeError;

    fn text(&mut self, entry: usize) -> Result<&str, RuntimeError> {
        if !self.texts.contains_key(&entry) {
            let text = self.bank.read(entry)?.text;
            self.texts.insert(entry, text);
        }
        Ok(&self.texts[&entry])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mac_aggregation::{LaterTests, Recency, SpanRule};

    /// A bank of `texts` (one placeholder row each: only the texts are read).
    fn bank_of(dir: &Path, texts: &[&str]) -> MemoryBank {
        let shape = BankShape {
            n_tokens: 1,
            d_mod: 1,
            key_dim: 0,
            rows_vary: false,
            precision: Precision::F32,
        };
        let mut bank = MemoryBank::create(dir, shape, "test").unwrap();
        for text in texts {
            let entry = NewEntry {
                source: "test",
                text,
                modulation: &[0.0],
                key: &[],
            };
            bank.append(entry).unwrap();
        }
        bank
    }

    #[test]
    fn a_later_entry_is_read_where_it_names_the_question_and_its_sentence_answers() {
        let encoder = mac_assets::default_encoder_dir();
        if !mac_assets::fetched_or_skip(&encoder) {
            return;
        }
        let device = mac_device::select("flex").unwrap();
        let check = SentenceCheck::load(&encoder, &device).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bank = bank_of(
            dir.path(),
            &[
                "Mira Holt plays the oboe in a quartet. Mira Holt lives by the sea.",
                "Lately Mira Holt has switched to the tuba.",
                "Mira Holt bakes bread every winter.",
                "Tom Reyes has switched to the tuba.",
            ],
        );
        let question = "What instrument does Mira Holt play?";
        let names = question_names(question);
        let mut texts = BankTexts::new(&bank);
        let mut tests = EntryTests::new(&mut texts, question, &names, Some(&check));
        assert!(tests.names_the_same(1).unwrap() && !tests.names_the_same(3).unwrap());
        let mut matches = |without: bool| -> Vec<f32> {
            (0..3)
                .map(|e| tests.best_match(e, without).unwrap().unwrap())
                .collect()
        };
        let (m, unnamed) = (matches(false), matches(true));
        // The report of a new instrument matches as the first report does;
        // another fact of hers does not...
        assert!(m[1] > m[2] + 0.1, "{m:?}");
        // ...and further apart where her name is left out of both.
        assert!(unnamed[1] - unnamed[2] > m[1] - m[2], "{m:?} {unnamed:?}");
        assert_eq!(tests.matches_computed(), 6);
        // The report of a new instrument restates the instrument the first
        // report gives, not where she lives; the baking does neither.
        assert_eq!(tests.restates(1, 0, true).unwrap(), Some(true));
        assert_eq!(tests.restates(2, 0, true).unwrap(), Some(false));
        // Entry 0 best; 1, 2 and 3 within the margin, 3 naming another.
        let chosen = |slack: f32, tests: &mut EntryTests<'_, '_, BankTexts<'_>>| {
            let recency = Recency {
                same_names: true,
                sentence_answers: Some(slack),
                ..Recency::margin(1.0)
            };
            let mut choice =
                StreamedSpanChoice::new(SpanRule::DocumentFirst, 4).with_recency(recency);
            for logit in [5.0, 4.8, 4.7, 4.9] {
                choice.push(&[logit], &[], &[0.0, 1.0], &[0.0, 1.0], &[2]);
            }
            choice.finish_with(tests).unwrap().unwrap().span.document
        };
        let between = (m[0] - m[1]).max(0.0) + 0.5 * (m[1] - m[2]);
        assert_eq!(chosen(between, &mut tests), 1);
        assert_eq!(chosen(m[0] - m[2] + 0.01, &mut tests), 2);
        // Without an encoder the sentence test passes: the latest named.
        let mut unchecked = EntryTests::new(&mut texts, question, &names, None);
        assert_eq!(chosen(0.0, &mut unchecked), 2);
        // Asked where she lives, the new instrument restates nothing.
        let lives = "Where does Mira Holt live?";
        let mut asked = EntryTests::new(&mut texts, lives, &names, Some(&check));
        assert_eq!(asked.restates(1, 0, true).unwrap(), Some(false));
        // Each entry read from the bank once, for every test of all three.
        assert_eq!(texts.texts.len(), 4);
    }
}
