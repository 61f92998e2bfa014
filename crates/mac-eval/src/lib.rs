//! # mac-eval — online adaptation, measured
//!
//! Tack et al. (2024), §4: stream the test documents into a fresh memory
//! bank on disk (one encoder pass each, no gradient step anywhere), then
//! answer every test question greedily with the aggregated prefix
//! (exact streamed aggregation over the bank on disk, read in chunks). In the same run, the
//! lower and upper references: **no adaptation** (the base LM alone) and
//! **oracle context** (the gold document in the prompt). Knowledge
//! **retention**: F1 on the questions of the first documents as the bank
//! grows. Metrics are the standard SQuAD EM and F1 (and the reference's
//! prefix match, named `prefix_em`). Beside MAC: `mac+prior` (the
//! aggregator with the question–document similarity prior), `mac+rag@k`
//! (MAC over the top-k BM25 documents), and controls that swap the right
//! documents for unrelated ones (`*_unrelated*`), and, given the training
//! split, the question-only baseline (the best fixed answer per question
//! form: what a model scores without reading anything). On a stream whose
//! later documents change earlier facts, each method's share of answers
//! with the new value and with the stale one ([`UpdateShare`]).
//!
//! ```
//! use mac_data::{FactStream, FactStreamConfig};
//! use mac_eval::{bootstrap::f1_interval, QuestionOnly};
//!
//! // The question-only baseline: what answering without reading scores.
//! let config = FactStreamConfig { n_train: 200, n_validation: 4, n_test: 20, ..Default::default() };
//! let stream = FactStream::generate(&config);
//! let fixed = QuestionOnly::fit(&stream.train).unwrap();
//! let answer = fixed.answer(&stream.test.documents[0].qas[0].question).unwrap();
//! assert!(!answer.is_empty());
//!
//! // A 95% interval of a mean F1, resampling documents (not questions).
//! let scores = [(0, 1.0), (0, 0.5), (1, 0.0), (1, 0.0), (2, 1.0), (2, 1.0)];
//! let [lo, hi] = f1_interval(scores).unwrap();
//! assert!(lo <= 3.5 / 6.0 && 3.5 / 6.0 <= hi && lo < hi);
//! ```

mod asking;
mod beside;
pub mod bootstrap;
mod compare;
mod methods;
mod online;
mod question_only;
mod report;
mod rss;
mod sizes;
mod updates;

pub use asking::{AttentionStats, EvalOptions, DEFAULT_PRIOR_SCALE};
pub use compare::{compare, compare_markdown, CompareOptions, CompareReport, SweepRow};
pub use methods::{retrieve, MethodResult, Prediction};
pub use online::{evaluate, method_key, EvalReport, RetentionPoint};
pub use question_only::{question_form, QuestionOnly};
pub use report::write_markdown;
pub use rss::{peak_rss_mb, reset_peak_rss};
pub use sizes::BankSizePoint;
pub use updates::{carries, update_shares, UpdateShare};
