//! # mac-encoder — encoder backbones for MAC
//!
//! The amortization network and the question encoder of MAC (Tack et al.,
//! 2024, §3.1) read text with a pretrained encoder. This crate loads one from
//! real weights: [`bert::Bert`] (BERT family; the default is
//! all-MiniLM-L6-v2, fetched by `cargo xtask fetch`) and [`t5::T5Encoder`]
//! (the paper's backbone), behind [`EncoderBackbone`], with padding masked in
//! every attention. Weights are ordinary trainable Burn parameters; which
//! layers train is chosen with [`Trainable`].
//!
//! ```
//! use burn::tensor::{Bool, Int, Tensor, TensorData};
//! use mac_encoder::{EncoderBackbone, Trainable};
//!
//! let device = mac_device::select("flex").unwrap();
//! // The tiny random BERT the parity tests use (MiniLM loads the same way).
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-bert");
//! let encoder = EncoderBackbone::load(dir, &device, Trainable::None)?;
//! let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 5, 7, 2], [1, 4]), &device);
//! let valid = Tensor::<2, Bool>::from_data(TensorData::new(vec![true, true, true, false], [1, 4]), &device);
//! let hidden = encoder.forward(ids, valid); // [B, T, d]; the padding is masked
//! assert_eq!(hidden.dims(), [1, 4, encoder.hidden_size()]);
//! # Ok::<(), mac_encoder::EncoderError>(())
//! ```

pub mod backbone;
pub mod bert;
mod error;
pub mod t5;
pub mod text;

pub use backbone::{EncoderBackbone, EncoderFiles};
pub use bert::{Bert, BertConfig};
pub use error::{EncoderError, Result};
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
