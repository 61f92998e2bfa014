//! # mac-aggregation — from documents and questions to prefix key/values
//!
//! The trainable parts of MAC (Tack et al., 2024, §3):
//!
//! * [`QueryTokenHead`]: `n` learned query tokens cross-attend (padding
//!   masked) to an encoder's output; each token then passes its own MLP
//!   (LayerNorm → Linear(h, d) → tanh → Linear(d, d), plus a linear skip when
//!   h ≠ d). Over an encoder backbone (`mac_encoder`'s MiniLM) this is the
//!   **amortization network** (document → modulation `[n, d_mod]`) and the
//!   question encoder.
//! * [`Aggregator`]: pre-LayerNorm cross-attention blocks in which the
//!   question's `n` tokens attend over the flattened bank `[N·n, d_mod]`,
//!   whole, **streamed exactly** chunk by chunk from any [`ChunkedMemory`]
//!   (online softmax: equal to the whole-bank result in O(chunk) memory),
//!   or **hierarchically** as in the paper (chunks of `M` documents
//!   aggregated, then their results), with per-document attention weights
//!   for explanations.
//! * [`PrefixExpansion`]: the aggregated tokens become per-layer prefix
//!   keys and values for the frozen LM, sized by its KV width (GQA).
//! * [`SpanSelector`] (span memory): start and end logits of a question over
//!   every token of every document in memory — which span of which
//!   document's own LM key/values to hand the LM.
//!
//! ```
//! use burn::tensor::{Distribution, Tensor};
//! use mac_aggregation::{AggregatorConfig, InMemory};
//!
//! let device = mac_device::select("flex").unwrap();
//! let aggregator = AggregatorConfig::new(16).with_n_heads(2).with_d_head(8).init(&device);
//! let normal = Distribution::Normal(0.0, 1.0);
//! let question = Tensor::<3>::random([1, 4, 16], normal, &device); // [B, n, d_mod]
//! let bank = InMemory { modulations: Tensor::<3>::random([7, 4, 16], normal, &device), keys: None };
//! // Exact at any chunk size: 3 documents at a time equals all 7 at once.
//! let chunked = aggregator.aggregate_streamed(question.clone(), &bank, None, 3).unwrap();
//! let whole = aggregator.aggregate_streamed(question, &bank, None, 7).unwrap();
//! let gap: f32 = (chunked.modulation - whole.modulation).abs().max().into_scalar();
//! assert!(gap < 1e-5);
//! let weights = &whole.doc_weights[0]; // how much each document was attended to
//! assert!((weights.iter().sum::<f32>() - 1.0).abs() < 1e-4);
//! ```

mod aggregate;
mod copy;
mod expand;
mod head;
mod span;
mod span_choice;

pub use aggregate::{
    Aggregation, AggregationError, Aggregator, AggregatorConfig, ChunkedMemory, DocumentSelector,
    InMemory, MemoryChunk, SimilarityPrior,
};
pub use copy::{sharpen, CopyHead, CopyHeadConfig, CopyReader, CopyReaderConfig};
pub use expand::{ExpansionKind, ExpansionOutput, PrefixExpansion, PrefixExpansionConfig};
pub use head::{QueryTokenHead, QueryTokenHeadConfig};
pub use span::{
    best_span, document_shares, per_token, ChosenSpan, DocumentMatches, SpanLogits, SpanSelector,
    SpanSelectorConfig,
};
pub use span_choice::{push_chunk, LaterTests, Recency, SpanChoice, SpanRule, StreamedSpanChoice};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// Number of trainable scalars in a module: the elements of the float
/// parameters that require gradients (frozen backbone layers do not count).
pub fn trainable_params<M: Module>(m: &M) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                self.0 += param.shape().num_elements();
            }
        }
    }
    let mut count = Count(0);
    m.visit(&mut count);
    count.0
}
