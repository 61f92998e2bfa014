//! # mac-kernels — the numerical kernels under MAC's networks
//!
//! What the frozen LM (`mac-lm`), the encoders (`mac-encoder`) and the
//! aggregation (`mac-aggregation`) of *Online Adaptation of Language Models
//! with a Memory of Amortized Contexts* (Tack et al., NeurIPS 2024) compute
//! with, in one place: matrix products and linear layers ([`linear`]: on
//! OpenBLAS for the CPU backend with the `blas` feature, Burn's matmul
//! elsewhere), attention ([`attention`]), activations ([`activation`]),
//! products with weights kept as a GGUF file stores them ([`quantized`]),
//! and checkpoint tensors read by name with their shapes checked
//! ([`weights`]), each error naming the file ([`WeightError`]).
//!
//! No code here names a Burn backend: tensors live on the device the
//! caller passes.

pub mod activation;
pub mod attention;
mod error;
pub mod linear;
pub mod quantized;
mod simd;
mod team;
pub mod weights;

pub use error::{Result, WeightError};
