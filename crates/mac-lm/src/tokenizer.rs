//! Tokenizers: from a Hugging Face `tokenizer.json`, or rebuilt from the
//! vocabulary, merges and token types stored in a GGUF file's metadata.

use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::error::{LmError, Result};
use crate::gguf::{GgufFile, GgufValue};

/// GGUF token type of control (special) tokens.
const GGUF_TOKEN_CONTROL: u64 = 3;
/// GGUF token type of user-defined added tokens.
const GGUF_TOKEN_USER_DEFINED: u64 = 4;

/// A text tokenizer with the special ids a causal LM needs.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    source: PathBuf,
    /// End-of-sequence token id.
    pub eos_id: u32,
    /// Beginning-of-sequence token id, if the model has one.
    pub bos_id: Option<u32>,
    /// Id used for padding.
    pub pad_id: u32,
    /// Whether a BOS token is put in front of every encoded text.
    pub add_bos: bool,
    /// The model's chat template (Jinja source) when its files carry one:
    /// GGUF `tokenizer.chat_template`, or `chat_template` in the
    /// `tokenizer_config.json` beside `tokenizer.json`.
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("source", &self.source)
            .field("vocab", &self.vocab_size())
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

/// Reads a Hugging Face `tokenizer.json`.
///
/// The file is parsed as JSON first, so that a truncated or malformed file
/// is an error naming it (the `tokenizers` library panics on some malformed
/// input); a panic of the library on a well-formed file is turned into an
/// error too.
pub fn read_tokenizer_json(path: &Path) -> Result<Tokenizer> {
    let err = |reason: String| LmError::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| LmError::io(path, e))?;
    let json = serde_json::from_slice::<serde_json::Value>(&bytes)
        .map_err(|e| err(format!("not valid JSON: {e}")))?;
    let parsed = std::panic::catch_unwind(|| serde_json::from_value::<Tokenizer>(json));
    match parsed {
        Ok(result) => result.map_err(|e| err(e.to_string())),
        Err(_) => Err(err("the tokenizers library could not read this file".into())),
    }
}

/// The `tokenizer_config.json` beside `tokenizer_json`, parsed, if that
/// file exists; one that exists but is not JSON is an error naming it.
pub(crate) fn tokenizer_config_beside(tokenizer_json: &Path) -> Result<Option<serde_json::Value>> {
    let Some(config) = tokenizer_json
        .parent()
        .map(|d| d.join("tokenizer_config.json"))
    else {
        return Ok(None);
    };
    let bytes = match std::fs::read(&config) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LmError::io(&config, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| LmError::Tokenizer {
            path: config,
            reason: format!("not valid JSON: {e}"),
        })
}

/// The `chat_template` of a parsed `tokenizer_config.json`, when it has
/// one (a string).
pub(crate) fn chat_template_of(config: Option<&serde_json::Value>) -> Option<String> {
    config?
        .get("chat_template")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; special ids come from the caller (config.json).
    pub fn from_file(
        path: impl AsRef<Path>,
        eos_id: u32,
        bos_id: Option<u32>,
        add_bos: bool,
    ) -> Result<Self> {
        let path = path.as_ref();
        let chat_template = chat_template_of(tokenizer_config_beside(path)?.as_ref());
        Self::with_template(path, eos_id, bos_id, add_bos, chat_template)
    }

    /// [`Self::from_file`] with the chat template given (read by the caller
    /// from the `tokenizer_config.json` it also takes `add_bos` from).
    pub(crate) fn with_template(
        path: impl AsRef<Path>,
        eos_id: u32,
        bos_id: Option<u32>,
        add_bos: bool,
        chat_template: Option<String>,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut inner = read_tokenizer_json(&path)?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| LmError::Tokenizer {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            inner,
            source: path,
            eos_id,
            bos_id,
            pad_id: eos_id,
            add_bos,
            chat_template,
        })
    }

    /// Rebuilds a byte-level BPE tokenizer from GGUF metadata
    /// (`tokenizer.ggml.model = "gpt2"`).
    ///
    /// The pre-tokenizer follows `tokenizer.ggml.pre`: `smollm` (and the
    /// StarCoder family) split every digit on its own before the GPT-2 regex,
    /// as the original `tokenizer.json` and llama.cpp do.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let path = gguf.path().to_path_buf();
        let err = |reason: String| LmError::Tokenizer {
            path: path.clone(),
            reason,
        };
        let model = gguf.require_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer model `{model}` is not supported (byte-level BPE `gpt2` is)"
            )));
        }
        let tokens = gguf_strings(gguf, "tokenizer.ggml.tokens")?;
        let inner = gguf_bpe(gguf, &tokens, &err)?;
        let token_id = |key: &str, id: u64| -> Result<u32> {
            u32::try_from(id)
                .ok()
                .filter(|&id| (id as usize) < tokens.len())
                .ok_or_else(|| LmError::Config {
                    path: path.clone(),
                    key: key.into(),
                    reason: format!(
                        "token id {id} is outside the {}-token vocabulary",
                        tokens.len()
                    ),
                })
        };
        let optional_id = |key: &str| -> Result<Option<u32>> {
            gguf.get(key)
                .and_then(GgufValue::as_u64)
                .map(|id| token_id(key, id))
                .transpose()
        };
        let eos_id = token_id(
            "tokenizer.ggml.eos_token_id",
            gguf.require_u64("tokenizer.ggml.eos_token_id")?,
        )?;
        let bos_id = optional_id("tokenizer.ggml.bos_token_id")?;
        let pad_id = optional_id("tokenizer.ggml.padding_token_id")?.unwrap_or(eos_id);
        let add_bos = matches!(
            gguf.get("tokenizer.ggml.add_bos_token"),
            Some(GgufValue::Bool(true))
        );
        let chat_template = gguf
            .get("tokenizer.chat_template")
            .and_then(GgufValue::as_str)
            .map(str::to_string);
        Ok(Self {
            inner,
            source: path,
            eos_id,
            bos_id,
            pad_id,
            add_bos,
            chat_template,
        })
    }

    /// Encodes text to ids (special-token strings in the text are recognised;
    /// BOS is prepended when the model asks for it).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| LmError::Tokenizer {
                path: self.source.clone(),
                reason: e.to_string(),
            })?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Decodes ids to text, dropping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| LmError::Tokenizer {
                path: self.source.clone(),
                reason: e.to_string(),
            })
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// The strings of the array at `key` of `gguf`.
fn gguf_strings(gguf: &GgufFile, key: &str) -> Result<Vec<String>> {
    let bad = |reason: &str| LmError::Config {
        path: gguf.path().to_path_buf(),
        key: key.into(),
        reason: reason.into(),
    };
    gguf.get(key)
        .and_then(GgufValue::as_array)
        .ok_or_else(|| bad("absent or not an array"))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad("holds a non-string item"))
        })
        .collect()
}

/// The byte-level BPE of a GGUF file's vocabulary `tokens`: its merges,
/// pre-tokenizer, decoder and added (control, user-defined) tokens.
fn gguf_bpe(
    gguf: &GgufFile,
    tokens: &[String],
    err: &dyn Fn(String) -> LmError,
) -> Result<Tokenizer> {
    // A byte-level vocabulary without merges is valid (every token one byte).
    let merges_raw = if gguf.get("tokenizer.ggml.merges").is_some() {
        gguf_strings(gguf, "tokenizer.ggml.merges")?
    } else {
        Vec::new()
    };
    let types: Vec<u64> = gguf
        .get("tokenizer.ggml.token_type")
        .and_then(GgufValue::as_array)
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
        .unwrap_or_default();
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut merges = Vec::with_capacity(merges_raw.len());
    for (i, m) in merges_raw.iter().enumerate() {
        let (a, b) = m
            .split_once(' ')
            .ok_or_else(|| err(format!("merge {i} `{m}` has no space")))?;
        merges.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut inner = Tokenizer::new(bpe);
    let pre = gguf
        .get("tokenizer.ggml.pre")
        .and_then(GgufValue::as_str)
        .unwrap_or("default");
    let byte_level: PreTokenizerWrapper = ByteLevel::new(false, true, true).into();
    let pre_tokenizer = match pre {
        "smollm" | "starcoder" | "refact" | "codeshell" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level])
        }
        _ => Sequence::new(vec![byte_level]),
    };
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == GGUF_TOKEN_CONTROL)
        .map(|(tok, _)| AddedToken::from(tok.clone(), true))
        .collect();
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == GGUF_TOKEN_USER_DEFINED)
        .map(|(tok, _)| AddedToken::from(tok.clone(), false))
        .collect();
    inner
        .add_special_tokens(special)
        .map_err(|e| err(e.to_string()))?;
    inner.add_tokens(user).map_err(|e| err(e.to_string()))?;
    Ok(inner)
}
