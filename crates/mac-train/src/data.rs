//! The data a run trains on: its three splits, and the documents and
//! questions of each step's batches (a pure function of seed and step).

use std::path::Path;

use anyhow::Result;
use mac_data::{load, Dataset, FactStream, Format, LoadOptions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::DataSource;

/// The three splits a run uses.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Meta-training documents.
    pub train: Dataset,
    /// Validation documents.
    pub validation: Dataset,
    /// The test stream.
    pub test: Dataset,
}

/// Loads (or generates) the data of a configuration.
pub fn load_splits(source: &DataSource) -> Result<Splits> {
    match source {
        DataSource::FactStream(cfg) => {
            let s = FactStream::generate(cfg);
            Ok(Splits {
                train: s.train,
                validation: s.validation,
                test: s.test,
            })
        }
        DataSource::Files {
            train,
            validation,
            test,
            format,
        } => {
            let format: Format = format.parse().map_err(anyhow::Error::msg)?;
            let get = |p: &Path| -> Result<Dataset> {
                Ok(load(p, format, LoadOptions::default())?.dataset)
            };
            Ok(Splits {
                train: get(train)?,
                validation: get(validation)?,
                test: get(test)?,
            })
        }
    }
}

/// One micro-batch: documents, the questions asked of them, and which
/// documents carry gradients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainBatch {
    /// Indices into the training documents; together they are the bank.
    pub documents: Vec<usize>,
    /// (position in `documents`, question index within that document).
    pub questions: Vec<(usize, usize)>,
    /// Per position in `documents`: encoded with gradients (backprop dropout).
    pub keep: Vec<bool>,
}

/// A seed per (run, step, micro-batch): batches do not depend on history.
pub(crate) fn step_rng(seed: u64, step: usize, micro: usize) -> ChaCha8Rng {
    let mix = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((step as u64) << 16)
        .wrapping_add(micro as u64);
    ChaCha8Rng::seed_from_u64(mix)
}
