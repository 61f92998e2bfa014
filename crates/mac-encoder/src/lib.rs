//! # mac-encoder — encoder backbones for MAC
//!
//! The amortization network and the question encoder of MAC (Tack et al.,
//! 2024, §3.1) read text with a pretrained encoder. This crate loads one from
//! real weights: [`bert::Bert`] (BERT family; the default is
//! all-MiniLM-L6-v2, fetched by `cargo xtask fetch`) and [`t5::T5Encoder`]
//! (the paper's backbone), behind [`EncoderBackbone`], with padding masked in
//! every attention. Weights are ordinary trainable Burn parameters; which
//! layers train is chosen with [`Trainable`].

pub mod backbone;
pub mod bert;
pub mod t5;
pub mod text;

pub use backbone::{EncoderBackbone, EncoderFiles};
pub use bert::{Bert, BertConfig};
pub use t5::{T5Config, T5Encoder};
pub use text::{EncodedBatch, EncoderTokenizer};

/// Which backbone layers receive gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Trainable {
    /// Every parameter trains.
    All,
    /// Only the top `k` transformer layers train (embeddings and lower layers frozen).
    TopLayers(usize),
    /// The backbone is frozen.
    None,
}
