//! A loaded MAC system: frozen base LM, trained MAC model and the encoder
//! tokenizers — everything needed to ingest documents and answer questions.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use mac_aggregation::{ChunkedMemory, SimilarityPrior};
use mac_encoder::{Bert, EncoderBackbone, EncoderFiles, EncoderTokenizer, Trainable};
use mac_lm::{LoadedLm, PrefixKv};
use serde::{Deserialize, Serialize};

use crate::answer::{
    generate_answers, generate_answers_each, AnswerGeneration, AnswerTimings, MAX_ANSWER_TOKENS,
};
use crate::prompt::question_prompt;
use crate::{Checkpoint, EncodedText, MacConfig, MacModel, ModelError};

/// One generated answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The decoded continuation (trimmed).
    pub text: String,
    /// Attention each document of the bank received (empty without a bank).
    pub doc_weights: Vec<f32>,
    /// Generation reached its token limit before the answer's line ended.
    pub hit_token_limit: bool,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Tokens of the prompt the LM read after the prefix.
    pub prompt_tokens: usize,
    /// Where the batch's time went (zero when no bank was read).
    pub timings: AnswerTimings,
}

/// The LM, the MAC model and the tokenizers, on one device.
pub struct MacRuntime {
    /// The frozen base LM and its tokenizer.
    pub lm: LoadedLm,
    /// The trained MAC modules.
    pub model: MacModel,
    /// Encoder tokenizer for documents.
    pub document_tokenizer: EncoderTokenizer,
    /// Encoder tokenizer for questions.
    pub question_tokenizer: EncoderTokenizer,
    /// The model's configuration.
    pub config: MacConfig,
    /// Where the model runs.
    pub device: Device,
    /// The pretrained sentence-embedding model, frozen and never trained,
    /// whose embeddings are the documents' and questions' retrieval keys
    /// (the similarity prior compares them); `None` when the encoder is not
    /// BERT-family.
    pub key_encoder: Option<Bert>,
    /// Names the model whose modulations this runtime produces (checkpoint
    /// and step); recorded in every bank it creates, which only it fills.
    pub producer: String,
}

/// Documents amortized for the bank: one row per document.
#[derive(Debug, Clone)]
pub struct Amortized {
    /// Modulations, each `[n · d_mod]` row-major.
    pub modulations: Vec<Vec<f32>>,
    /// Retrieval keys, each `[key_dim]` (empty rows without a key encoder).
    pub keys: Vec<Vec<f32>>,
    /// Per document: tokens cut off at the encoder's length limit.
    pub truncated: Vec<usize>,
}

/// How the aggregator reads a memory bank.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BankReading {
    /// Documents read and attended at a time (memory O(chunk)); exact
    /// aggregation gives the same answer for any chunk size.
    pub chunk: usize,
    /// The paper's hierarchical approximation (each chunk aggregated into
    /// one modulation, then those) instead of exact streamed aggregation.
    pub hierarchical: bool,
    /// Scale of the question–document similarity prior (`None` = off).
    pub prior_scale: Option<f64>,
}

impl Default for BankReading {
    fn default() -> Self {
        Self {
            chunk: 256,
            hierarchical: false,
            prior_scale: None,
        }
    }
}

impl MacRuntime {
    /// Assembles a runtime from parts already loaded; `producer` names the
    /// model (see [`Self::producer`]).
    pub fn new(
        lm: LoadedLm,
        model: MacModel,
        encoder_dir: &Path,
        config: MacConfig,
        device: Device,
        producer: String,
    ) -> Result<Self, ModelError> {
        let files = EncoderFiles::open(encoder_dir)?;
        Self::with_encoder_files(lm, model, &files, config, device, producer)
    }

    /// [`Self::new`] with the encoder directory already read: the frozen
    /// key encoder and both tokenizers come from it without reading it again.
    pub fn with_encoder_files(
        lm: LoadedLm,
        model: MacModel,
        files: &EncoderFiles,
        config: MacConfig,
        device: Device,
        producer: String,
    ) -> Result<Self, ModelError> {
        let key_encoder = match EncoderBackbone::from_files(files, &device, Trainable::None)? {
            EncoderBackbone::Bert(bert) => Some(bert),
            EncoderBackbone::T5(_) => None,
        };
        Ok(Self {
            document_tokenizer: files.tokenizer(config.max_document_tokens)?,
            question_tokenizer: files.tokenizer(config.max_question_tokens)?,
            lm,
            model,
            config,
            device,
            key_encoder,
            producer,
        })
    }

    /// Loads a checkpoint directory: the LM and encoder it records (or the
    /// overrides), and its parameters.
    pub fn from_checkpoint(
        dir: &Path,
        lm_override: Option<&Path>,
        encoder_override: Option<&Path>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let ckpt = Checkpoint::open(dir)?;
        let lm_path = lm_override.unwrap_or(&ckpt.meta.lm);
        let lm = LoadedLm::load(lm_path, device)?;
        if lm.model.kv_layout() != ckpt.meta.layout() {
            return Err(ModelError::Checkpoint {
                path: dir.to_path_buf(),
                reason: format!(
                    "trained for an LM with KV layout {:?}, but {} has {:?}",
                    ckpt.meta.kv_layout,
                    lm_path.display(),
                    lm.model.kv_layout()
                ),
            });
        }
        let encoder = encoder_override.unwrap_or(&ckpt.meta.encoder).to_path_buf();
        // The encoder directory is read once: the model's two encoders, the
        // key encoder and the tokenizers are all built from it.
        let files = EncoderFiles::open(&encoder)?;
        let model = ckpt.load_model_from(&files, device)?;
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let producer = format!(
            "mac-checkpoint {} step {}",
            canonical.display(),
            ckpt.meta.step
        );
        Self::with_encoder_files(
            lm,
            model,
            &files,
            ckpt.meta.config.clone(),
            device.clone(),
            producer,
        )
    }

    /// Documents → modulations `[B, n, d_mod]` (one forward pass).
    pub fn encode_documents(&self, texts: &[&str]) -> Result<EncodedText, ModelError> {
        self.model
            .encode_documents(&self.document_tokenizer, texts, &self.lm, &self.device)
    }

    /// Documents → modulation rows, retrieval-key rows and truncation, ready
    /// for a bank entry (`mac_bank::MemoryBank::append_batch`).
    pub fn amortize(&self, texts: &[&str]) -> Result<Amortized, ModelError> {
        let enc = self.encode_documents(texts)?;
        let keys = match &self.key_encoder {
            Some(_) => {
                Self::modulation_rows(self.keys(&self.document_tokenizer, texts)?.unsqueeze_dim(1))?
            }
            None => vec![Vec::new(); texts.len()],
        };
        Ok(Amortized {
            modulations: Self::modulation_rows(enc.tokens)?,
            keys,
            truncated: enc.truncated,
        })
    }

    /// Width of the retrieval keys (0 without a key encoder): the
    /// `key_dim` of the banks this runtime builds.
    pub fn key_dim(&self) -> usize {
        self.key_encoder.as_ref().map_or(0, Bert::hidden_size)
    }

    /// Texts → unit-length sentence embeddings `[B, key_dim]` of the frozen key encoder.
    fn keys(&self, tokenizer: &EncoderTokenizer, texts: &[&str]) -> Result<Tensor<2>, ModelError> {
        let encoder = self.key_encoder.as_ref().ok_or_else(|| {
            ModelError::Input(
                "retrieval keys need a BERT-family encoder (all-MiniLM-L6-v2); this one is not"
                    .into(),
            )
        })?;
        let batch = tokenizer.encode_batch(texts)?;
        Ok(encoder.sentence_embedding(
            batch.ids_tensor(&self.device),
            batch.valid_tensor(&self.device),
        ))
    }

    /// Questions → query tokens `[B, n, d_mod]`.
    pub fn encode_questions(&self, questions: &[&str]) -> Result<Tensor<3>, ModelError> {
        Ok(self
            .model
            .question_encoder
            .encode_texts(&self.question_tokenizer, questions, None, &self.device)?
            .tokens)
    }

    /// Greedy answers to `questions` with the LM alone (`prefix = None`) or with a prefix.
    pub fn generate(
        &self,
        prompts: &[String],
        prefix: Option<&PrefixKv>,
        max_new_tokens: usize,
    ) -> Result<Vec<String>, ModelError> {
        generate_answers(&self.lm, prompts, prefix, max_new_tokens)
    }

    /// Question tokens `[B, n, d]` and one document set per question
    /// (`docs[i]`: `[k_i, n, d]`) → `[B, n, d]`; see [`mac_aggregation::Aggregator::aggregate_each`].
    pub fn aggregate_per_question(&self, questions: Tensor<3>, docs: Vec<Tensor<3>>) -> Tensor<3> {
        self.model.aggregate_each(questions, docs)
    }

    /// Greedy answers with an already aggregated modulation `[B, n, d]`.
    pub fn answer_with_modulation(
        &self,
        questions: &[&str],
        modulation: Tensor<3>,
    ) -> Result<Vec<String>, ModelError> {
        let prefix = self.model.prefix(&self.lm.model, modulation)?;
        let prompts: Vec<String> = questions.iter().map(|q| question_prompt(q)).collect();
        self.generate(&prompts, Some(&prefix), MAX_ANSWER_TOKENS)
    }

    /// Answers questions from documents held in memory, `docs [N, n, d]`,
    /// aggregated hierarchically in chunks of `chunk` documents.
    pub fn answer_from_modulations(
        &self,
        questions: &[&str],
        docs: Tensor<3>,
        chunk: usize,
    ) -> Result<Vec<Answer>, ModelError> {
        let q = self.encode_questions(questions)?;
        let b = questions.len();
        let [n_docs, n, d] = docs.dims();
        let Some(aggregator) = self.model.aggregator() else {
            // Copy mode reads every slot of the memory at once.
            let memory = docs.reshape([1, n_docs * n, d]).expand([b, n_docs * n, d]);
            let agg = self.model.aggregate(q, memory, None);
            return self.answer_with_defaults(questions, agg);
        };
        let docs = docs.unsqueeze_dim::<4>(0).expand([b, n_docs, n, d]);
        let agg = aggregator.aggregate_hierarchical(q, docs, None, chunk);
        self.answer_with_defaults(questions, agg)
    }

    /// Answers questions from `memory` (a bank on disk, or any
    /// [`ChunkedMemory`]), read `reading.chunk` documents at a time (memory
    /// O(chunk), not O(N)): exact streamed aggregation, or the paper's
    /// hierarchical approximation. With a prior scale, the aggregator adds
    /// the [`SimilarityPrior`] of that scale (the memory must hold retrieval
    /// keys). In copy mode the reader reads the whole memory at once (exact;
    /// memory O(N)): `chunk` and `hierarchical` do not apply. Answer `i` is
    /// generated as `generation[i]`; `on_text(i, so_far)` watches each
    /// answer grow (see [`generate_answers_each`]).
    pub fn answer_from_memory<M>(
        &self,
        questions: &[&str],
        generation: &[AnswerGeneration],
        memory: &M,
        reading: &BankReading,
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<Answer>, M::Error>
    where
        M: ChunkedMemory,
        M::Error: From<ModelError>,
    {
        if generation.len() != questions.len() {
            return Err(ModelError::Input(format!(
                "{} questions but {} generation settings",
                questions.len(),
                generation.len()
            ))
            .into());
        }
        let t0 = std::time::Instant::now();
        let q = self.encode_questions(questions)?;
        let prior = match reading.prior_scale {
            Some(scale) => Some(SimilarityPrior {
                question_keys: self.keys(&self.question_tokenizer, questions)?,
                scale,
            }),
            None => None,
        };
        let agg = match self.model.aggregator() {
            None => self.read_whole(q, memory, prior.as_ref())?,
            Some(aggregator) if reading.hierarchical => aggregator
                .aggregate_hierarchical_streamed(q, memory, prior.as_ref(), reading.chunk)?,
            Some(aggregator) => {
                aggregator.aggregate_streamed(q, memory, prior.as_ref(), reading.chunk)?
            }
        };
        let read = std::time::Instant::now();
        let mut answers = self.answer_with(questions, generation, agg, on_text)?;
        let timings = AnswerTimings::since(t0, read);
        for a in &mut answers {
            a.timings = timings;
        }
        Ok(answers)
    }

    /// Copy mode over a whole memory: every entry read (memory O(N)), the
    /// prior's logits from the stored keys when asked for.
    fn read_whole<M>(
        &self,
        q: Tensor<3>,
        memory: &M,
        prior: Option<&SimilarityPrior>,
    ) -> Result<mac_aggregation::Aggregation, M::Error>
    where
        M: ChunkedMemory,
        M::Error: From<ModelError>,
    {
        let chunk = memory.read(0, memory.n_documents())?;
        let [n_docs, n, d] = chunk.modulations.dims();
        let b = q.dims()[0];
        let flat = chunk
            .modulations
            .reshape([1, n_docs * n, d])
            .expand([b, n_docs * n, d]);
        let prior_logits = match (prior, chunk.keys) {
            (Some(p), Some(keys)) => Some(p.logits(keys)),
            (Some(_), None) => {
                return Err(ModelError::Input(
                    "the similarity prior needs retrieval keys; this memory stores none".into(),
                )
                .into())
            }
            (None, _) => None,
        };
        Ok(self.model.aggregate(q, flat, prior_logits))
    }

    /// [`Self::answer_with`] with the default generation and nobody watching.
    fn answer_with_defaults(
        &self,
        questions: &[&str],
        agg: mac_aggregation::Aggregation,
    ) -> Result<Vec<Answer>, ModelError> {
        let generation = vec![AnswerGeneration::default(); questions.len()];
        self.answer_with(questions, &generation, agg, &mut |_, _| {})
    }

    fn answer_with(
        &self,
        questions: &[&str],
        generation: &[AnswerGeneration],
        agg: mac_aggregation::Aggregation,
        on_text: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<Answer>, ModelError> {
        let prefix = self.model.prefix(&self.lm.model, agg.modulation)?;
        let prompts: Vec<String> = questions.iter().map(|q| question_prompt(q)).collect();
        let answers =
            generate_answers_each(&self.lm, &prompts, generation, Some(&prefix), on_text)?;
        Ok(answers
            .into_iter()
            .zip(agg.doc_weights)
            .map(|(a, doc_weights)| Answer {
                text: a.text,
                doc_weights,
                hit_token_limit: a.hit_token_limit,
                generated_tokens: a.generated_tokens,
                prompt_tokens: a.prompt_tokens,
                timings: AnswerTimings::default(),
            })
            .collect())
    }

    /// Modulations `[N, n, d]` (or keys `[N, 1, k]`) as one flat row-major
    /// `Vec` per document, for the bank.
    pub fn modulation_rows(tokens: Tensor<3>) -> Result<Vec<Vec<f32>>, ModelError> {
        let [b, n, d] = tokens.dims();
        let flat: Vec<f32> = tokens
            .try_to_vec_as::<f32>()
            .map_err(|e| ModelError::Input(format!("reading tensor values: {e:?}")))?;
        Ok(flat.chunks(n * d).take(b).map(<[f32]>::to_vec).collect())
    }

    /// Rebuilds `[N, n, d]` from rows.
    pub fn modulations_tensor(&self, rows: &[Vec<f32>]) -> Tensor<3> {
        let (n, d) = self.config.memory_shape();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), n, d]), &self.device)
    }
}
