//! # mac-lm — the frozen base language model of MAC
//!
//! The base LM of *Online Adaptation of Language Models with a Memory of
//! Amortized Contexts* (Tack et al., NeurIPS 2024): a causal decoder whose
//! weights never change, that accepts per-layer **prefix key/values**
//! `[B, H_kv, p, d_h]` through which MAC's aggregated modulations steer it.
//!
//! Two architectures: [`llama::Llama`] (SmolLM2, LLaMA-2) and
//! [`gpt2::Gpt2`] (the paper's GPT-2 family). Weights load from GGUF
//! ([`gguf`], with F32/F16/BF16/Q8_0/Q4_0/Q4_1 dequantisation) or Hugging Face
//! safetensors + `config.json` ([`mac_kernels::weights`]); tokenizers from `tokenizer.json`
//! or GGUF metadata ([`tokenizer`]).
//!
//! No code here names a Burn backend: tensors live on the [`burn::tensor::Device`]
//! the caller passes (see the `mac-device` crate). Frozen weights stay on the
//! plain device; a prefix on an autodiff device receives gradients through
//! them while they themselves get none.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = burn::tensor::Device::default();
//! let lm = mac_lm::LoadedLm::load("SmolLM2-135M-Instruct.Q4_1.gguf", &device)?;
//! let prompt = lm.tokenizer.encode("The capital of France is")?;
//! let out = lm.model.generate(&[prompt], None, lm.tokenizer.pad_id, lm.tokenizer.eos_id,
//!     mac_lm::GenerateOptions::default())?;
//! println!("{}", lm.tokenizer.decode(&out[0])?);
//! # Ok(()) }
//! ```
//!
//! The same with the tiny random Llama the parity tests use (runs as a doctest):
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = burn::tensor::Device::default();
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-llama.gguf");
//! let lm = mac_lm::LoadedLm::load(path, &device)?;
//! let prompt = lm.tokenizer.encode("hello")?;
//! let options = mac_lm::GenerateOptions { max_new_tokens: 4, ..Default::default() };
//! let out = lm.model.generate(&[prompt], None, lm.tokenizer.pad_id, lm.tokenizer.eos_id, options)?;
//! assert!(out[0].len() <= 4);
//! # Ok(()) }
//! ```

pub mod batch;
pub mod cache;
pub mod error;
pub mod gguf;
pub mod gpt2;
pub mod llama;
mod load;
pub mod model;
pub mod prefix;
pub mod sampling;
pub mod tokenizer;

pub use batch::{Padding, TokenBatch};
pub use cache::KvCache;
pub use error::{check_config, LmError, Result, MAX_LAYERS};
pub use llama::HostDecoder;
pub use load::DECODE_ACTIVATIONS_VAR;
pub use model::{BaseLm, GenerateOptions, Generation, LoadedLm, TokenChoice};
pub use prefix::{KvLayout, PrefixKv};
pub use sampling::Sampling;
pub use tokenizer::TextTokenizer;
