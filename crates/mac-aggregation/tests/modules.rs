//! The MAC modules on tiny configurations: padding invariance, flat vs
//! hierarchical aggregation, exact streamed aggregation, and gradients reaching
//! every trainable parameter through the frozen LM. (Over 500 lines: the
//! tests share the tiny configurations and reference computations.)
#![allow(clippy::needless_range_loop)] // index arithmetic over [B][T] grids reads clearer

use std::path::PathBuf;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Bool, Device, Distribution, Tensor, TensorData};
use mac_aggregation::*;
use mac_encoder::{Bert, Trainable};
use mac_lm::{BaseLm, Padding, TokenBatch};

fn device() -> Device {
    mac_device::select("flex").unwrap()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn max_abs_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

fn aggregator(d: usize) -> Aggregator {
    AggregatorConfig::new(d)
        .with_n_blocks(2)
        .with_n_heads(2)
        .with_d_head(8)
        .init(&device())
}

/// Both kinds of aggregator: without and with a learnt document selector.
fn aggregators(d: usize) -> [Aggregator; 2] {
    [
        aggregator(d),
        AggregatorConfig::new(d)
            .with_n_blocks(2)
            .with_n_heads(2)
            .with_d_head(8)
            .with_selector_dim(Some(4))
            .init(&device()),
    ]
}

#[test]
fn query_head_ignores_padding() {
    let device = device();
    let head = QueryTokenHeadConfig::new(16, 3, 8)
        .with_n_heads(2)
        .init(&device);
    let states = Tensor::<3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), &device);
    let valid = vec![true, true, true, true, true, true, true, true, false, false];
    let v = Tensor::<2, Bool>::from_data(TensorData::new(valid.clone(), [2, 5]), &device);
    let out = head.forward(states.clone(), v);
    // Append 4 padded positions holding garbage.
    let junk = Tensor::<3>::random([2, 4, 16], Distribution::Normal(5.0, 3.0), &device);
    let states_p = Tensor::cat(vec![states, junk], 1);
    let mut valid_p = Vec::new();
    for r in 0..2 {
        valid_p.extend_from_slice(&valid[r * 5..r * 5 + 5]);
        valid_p.extend_from_slice(&[false; 4]);
    }
    let vp = Tensor::<2, Bool>::from_data(TensorData::new(valid_p, [2, 9]), &device);
    let out_p = head.forward(states_p, vp);
    assert_eq!(out.dims(), [2, 3, 8]);
    let diff = max_abs_diff(out, out_p);
    assert!(diff < 1e-5, "padding changed the output by {diff}");
}

#[test]
fn hierarchical_equals_flat_when_the_bank_fits_and_uses_every_document_otherwise() {
    let device = device();
    let (n, d) = (2, 8);
    let agg = aggregator(d);
    let q = Tensor::<3>::random([2, n, d], Distribution::Normal(0.0, 1.0), &device);
    let docs = Tensor::<4>::random([2, 5, n, d], Distribution::Normal(0.0, 1.0), &device);
    let flat = agg.aggregate(q.clone(), docs.clone().reshape([2, 5 * n, d]));
    let hier = agg.aggregate_hierarchical(q.clone(), docs.clone(), None, 5);
    assert!(max_abs_diff(flat.modulation.clone(), hier.modulation) < 1e-6);
    let total: f32 = flat.doc_weights[0].iter().sum();
    assert!((total - 1.0).abs() < 1e-4, "weights sum to {total}");

    // N = 23 documents, chunks of M = 4 (three levels): perturbing the first,
    // a middle and the last document changes the answer. (A random
    // perturbation: a constant shift would vanish in the memory LayerNorm.)
    let many = Tensor::<4>::random([2, 23, n, d], Distribution::Normal(0.0, 1.0), &device);
    let base = agg.aggregate_hierarchical(q.clone(), many.clone(), None, 4);
    assert_eq!(base.doc_weights[0].len(), 23);
    let total: f32 = base.doc_weights[1].iter().sum();
    assert!(
        (total - 1.0).abs() < 1e-4,
        "hierarchical weights sum to {total}"
    );
    for k in [0usize, 11, 22] {
        let bump = Tensor::<4>::zeros([2, 23, n, d], &device).slice_assign(
            [0..2, k..k + 1, 0..n, 0..d],
            Tensor::<4>::random([2, 1, n, d], Distribution::Normal(0.0, 1.0), &device),
        );
        let out = agg.aggregate_hierarchical(q.clone(), many.clone() + bump, None, 4);
        let diff = max_abs_diff(base.modulation.clone(), out.modulation);
        assert!(
            diff > 1e-5,
            "document {k} did not influence the output ({diff})"
        );
    }
}

fn max_weight_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

#[test]
fn streamed_aggregation_equals_whole_bank_aggregation() {
    for agg in aggregators(8) {
        streamed_equals_whole(&agg);
    }
}

fn streamed_equals_whole(agg: &Aggregator) {
    let device = device();
    let (b, n, d, k) = (2, 2, 8, 3);
    let q = Tensor::<3>::random([b, n, d], Distribution::Normal(0.0, 1.0), &device);
    let prior = SimilarityPrior {
        question_keys: Tensor::<2>::random([b, k], Distribution::Normal(0.0, 1.0), &device),
        scale: 6.0,
    };
    for n_docs in [1, 7, 256, 1000] {
        let docs = Tensor::<3>::random([n_docs, n, d], Distribution::Normal(0.0, 1.0), &device);
        let keys = Tensor::<2>::random([n_docs, k], Distribution::Normal(0.0, 1.0), &device);
        let memory = InMemory {
            modulations: docs.clone(),
            keys: Some(keys.clone()),
        };
        let whole_memory = docs.reshape([1, n_docs * n, d]).expand([b, n_docs * n, d]);
        for with_prior in [false, true] {
            let bias = with_prior.then(|| prior.logits(keys.clone()));
            let whole = agg.aggregate_with_prior(q.clone(), whole_memory.clone(), bias);
            for chunk in [1, 3, 64] {
                let streamed = agg
                    .aggregate_streamed(q.clone(), &memory, with_prior.then_some(&prior), chunk)
                    .unwrap();
                let diff = max_abs_diff(streamed.modulation, whole.modulation.clone());
                let wdiff = max_weight_diff(&streamed.doc_weights, &whole.doc_weights);
                assert!(
                    diff < 1e-5 && wdiff < 1e-5,
                    "N {n_docs}, chunk {chunk}, prior {with_prior}: modulation {diff}, weights {wdiff}"
                );
            }
        }
    }
}

#[test]
fn shared_memory_aggregation_equals_aggregation_over_copies() {
    for agg in aggregators(8) {
        shared_equals_copies(&agg);
    }
}

fn shared_equals_copies(agg: &Aggregator) {
    let device = device();
    let (b, n, d, k) = (3, 2, 8, 3);
    let q = Tensor::<3>::random([b, n, d], Distribution::Normal(0.0, 1.0), &device);
    let prior = SimilarityPrior {
        question_keys: Tensor::<2>::random([b, k], Distribution::Normal(0.0, 1.0), &device),
        scale: 6.0,
    };
    for n_docs in [1, 7, 64] {
        let docs = Tensor::<3>::random([n_docs, n, d], Distribution::Normal(0.0, 1.0), &device);
        let keys = Tensor::<2>::random([n_docs, k], Distribution::Normal(0.0, 1.0), &device);
        let copies = docs
            .clone()
            .reshape([1, n_docs * n, d])
            .expand([b, n_docs * n, d]);
        for with_prior in [false, true] {
            let bias = || with_prior.then(|| prior.logits(keys.clone()));
            let each = agg.aggregate_with_prior(q.clone(), copies.clone(), bias());
            let shared =
                agg.aggregate_shared(q.clone(), docs.clone().reshape([n_docs * n, d]), bias());
            let diff = max_abs_diff(shared.modulation, each.modulation);
            let wdiff = max_weight_diff(&shared.doc_weights, &each.doc_weights);
            assert!(
                diff < 1e-5 && wdiff < 1e-5,
                "N {n_docs}, prior {with_prior}: modulation {diff}, weights {wdiff}"
            );
            assert_eq!(shared.token_weights.len(), each.token_weights.len());
            for (s, e) in shared.token_weights.into_iter().zip(each.token_weights) {
                let tdiff = (s - e).abs().max().into_scalar::<f32>();
                assert!(tdiff < 1e-5, "N {n_docs}: token weights {tdiff}");
            }
        }
    }
}

#[test]
fn hierarchical_streaming_matches_in_memory_hierarchical() {
    let device = device();
    let (n, d, k) = (2, 8, 3);
    let agg = aggregator(d);
    let docs = Tensor::<3>::random([9, n, d], Distribution::Normal(0.0, 1.0), &device);
    let keys = Tensor::<2>::random([9, k], Distribution::Normal(0.0, 1.0), &device);
    let memory = InMemory {
        modulations: docs.clone(),
        keys: Some(keys.clone()),
    };
    let q = Tensor::<3>::random([1, n, d], Distribution::Normal(0.0, 1.0), &device);
    let per_question = docs.unsqueeze_dim::<4>(0);
    let a = agg
        .aggregate_hierarchical_streamed(q.clone(), &memory, None, 4)
        .unwrap();
    let b = agg.aggregate_hierarchical(q.clone(), per_question.clone(), None, 4);
    assert!(max_abs_diff(a.modulation, b.modulation) < 1e-5);
    assert_eq!(a.doc_weights[0].len(), 9);
    // With the similarity prior: the keys stream with the modulations.
    let prior = SimilarityPrior {
        question_keys: Tensor::<2>::random([1, k], Distribution::Normal(0.0, 1.0), &device),
        scale: 6.0,
    };
    let a = agg
        .aggregate_hierarchical_streamed(q.clone(), &memory, Some(&prior), 4)
        .unwrap();
    let b = agg.aggregate_hierarchical(q, per_question, Some(prior.logits(keys)), 4);
    assert!(max_abs_diff(a.modulation, b.modulation) < 1e-5);
    assert!(max_weight_diff(&a.doc_weights, &b.doc_weights) < 1e-5);
}

#[test]
fn streamed_aggregation_reports_what_the_memory_lacks() {
    let device = device();
    let (n, d, k) = (2, 8, 3);
    let agg = aggregator(d);
    let q = Tensor::<3>::random([1, n, d], Distribution::Normal(0.0, 1.0), &device);
    let prior = |width: usize| SimilarityPrior {
        question_keys: Tensor::<2>::ones([1, width], &device),
        scale: 1.0,
    };
    let empty = InMemory {
        modulations: Tensor::<3>::zeros([0, n, d], &device),
        keys: None,
    };
    let err = agg
        .aggregate_streamed(q.clone(), &empty, None, 4)
        .unwrap_err();
    assert_eq!(err, AggregationError::EmptyMemory);
    assert!(err.to_string().contains("empty"), "{err}");
    let docs = Tensor::<3>::random([5, n, d], Distribution::Normal(0.0, 1.0), &device);
    let keyless = InMemory {
        modulations: docs.clone(),
        keys: None,
    };
    for chunk in [2, 8] {
        let err = agg
            .aggregate_streamed(q.clone(), &keyless, Some(&prior(k)), chunk)
            .unwrap_err();
        assert_eq!(err, AggregationError::MissingKeys);
    }
    let keyed = InMemory {
        modulations: docs,
        keys: Some(Tensor::<2>::ones([5, k], &device)),
    };
    let err = agg
        .aggregate_streamed(q.clone(), &keyed, Some(&prior(k + 1)), 2)
        .unwrap_err();
    assert!(err.to_string().contains("keys of 4 values"), "{err}");
    let narrow = InMemory {
        modulations: Tensor::<3>::zeros([5, n, d - 1], &device),
        keys: None,
    };
    let err = agg.aggregate_streamed(q, &narrow, None, 2).unwrap_err();
    assert!(matches!(err, AggregationError::Shape { .. }), "{err}");
}

#[test]
fn similarity_prior_is_scaled_cosine_and_a_strong_one_reads_one_document() {
    let device = device();
    // logits = scale · cos(question key, document key), keys of any length.
    let prior = SimilarityPrior {
        question_keys: Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 0.0], [1, 2]), &device),
        scale: 10.0,
    };
    let doc_keys = TensorData::new(vec![1.0f32, 0.0, 0.0, 3.0, 1.0, 1.0, -1.0, 0.0], [4, 2]);
    let logits: Vec<f32> = prior
        .logits(Tensor::from_data(doc_keys, &device))
        .try_to_vec_as()
        .unwrap();
    let expected = [10.0, 0.0, 10.0 / 2f32.sqrt(), -10.0];
    for (got, want) in logits.iter().zip(expected) {
        assert!((got - want).abs() < 1e-5, "{logits:?} vs {expected:?}");
    }

    let (n, d) = (2, 8);
    let agg = aggregator(d);
    let q = Tensor::<3>::random([2, n, d], Distribution::Normal(0.0, 1.0), &device);
    let docs = Tensor::<4>::random([2, 5, n, d], Distribution::Normal(0.0, 1.0), &device);
    let memory = docs.clone().reshape([2, 5 * n, d]);
    // Equal logits change nothing (softmax is shift-invariant).
    let plain = agg.aggregate(q.clone(), memory.clone());
    let flat_prior = Tensor::<2>::ones([2, 5], &device) * 3.0;
    let shifted = agg.aggregate_with_prior(q.clone(), memory.clone(), Some(flat_prior));
    assert!(max_abs_diff(plain.modulation, shifted.modulation) < 1e-5);
    // A prior far stronger than the learnt logits on document 3 (question 0)
    // and 1 (question 1): each question reads that document alone.
    let strong: Vec<f32> = (0..10)
        .map(|i| if i == 3 || i == 5 + 1 { 100.0 } else { 0.0 })
        .collect();
    let strong = Tensor::<2>::from_data(TensorData::new(strong, [2, 5]), &device);
    let read = agg.aggregate_with_prior(q.clone(), memory, Some(strong.clone()));
    for (row, doc) in [(0usize, 3usize), (1, 1)] {
        let alone = agg.aggregate(
            q.clone().narrow(0, row, 1),
            docs.clone()
                .narrow(0, row, 1)
                .narrow(1, doc, 1)
                .reshape([1, n, d]),
        );
        let diff = max_abs_diff(read.modulation.clone().narrow(0, row, 1), alone.modulation);
        assert!(diff < 1e-4, "question {row}: {diff}");
        assert!(read.doc_weights[row][doc] > 0.999, "{:?}", read.doc_weights);
    }
    // Hierarchically (chunks of 2, three chunks), the document still gets
    // (nearly) all the weight through the chunks' log-sum-exp priors.
    let hier = agg.aggregate_hierarchical(q, docs, Some(strong), 2);
    assert!(hier.doc_weights[0][3] > 0.999, "{:?}", hier.doc_weights);
    assert!(hier.doc_weights[1][1] > 0.999, "{:?}", hier.doc_weights);
}

#[test]
fn expansion_shapes_and_parameter_counts() {
    let device = device();
    let lm = BaseLm::load(repo().join("mac-lm/tests/fixtures/tiny-llama"), &device).unwrap();
    let layout = lm.kv_layout();
    let per_slot = PrefixExpansionConfig::new(32, 3)
        .with_d_hidden(16)
        .init(layout, &device);
    let shared = PrefixExpansionConfig::new(32, 3)
        .with_d_hidden(16)
        .with_kind(ExpansionKind::SharedWithSlotEmbeddings)
        .init(layout, &device);
    let virtual_tokens = PrefixExpansionConfig::new(32, 3)
        .with_d_hidden(16)
        .with_kind(ExpansionKind::VirtualTokens {
            width: lm.hidden_width(),
        })
        .init(layout, &device);
    let soft_prompt = PrefixExpansionConfig::new(32, 3)
        .with_d_hidden(16)
        .with_zero_output(true)
        .with_kind(ExpansionKind::SoftPrompt {
            width: lm.hidden_width(),
        })
        .init(layout, &device);
    let tokens = Tensor::<3>::random([2, 3, 32], Distribution::Normal(0.0, 1.0), &device);
    for e in [&per_slot, &shared, &virtual_tokens, &soft_prompt] {
        let p = e.forward(tokens.clone()).into_prefix(&lm).unwrap();
        p.validate(&layout, 2).unwrap();
        assert_eq!(p.len(), 2);
    }
    // Virtual tokens are the LM's width; the LM makes every layer's keys
    // and values from them (so the expansion alone has no key/values).
    match virtual_tokens.forward(tokens.clone()) {
        ExpansionOutput::VirtualTokens(h) => assert_eq!(h.dims(), [2, 2, lm.hidden_width()]),
        _ => panic!("virtual tokens expected"),
    }
    // A soft prompt asked to start quiet still starts non-zero (zeros
    // would give the LM's RMS norm an unbounded gradient), and small.
    match soft_prompt.forward(tokens.clone()) {
        ExpansionOutput::SoftPrompt(e) => {
            assert_eq!(e.dims(), [2, 2, lm.hidden_width()]);
            let rms = e.powf_scalar(2.0).mean().sqrt().into_scalar::<f32>();
            assert!(rms > 1e-4 && rms < 1.0, "soft-prompt rms {rms}");
        }
        _ => panic!("soft-prompt tokens expected"),
    }
    eprintln!(
        "expansion params: per-slot {}, shared {}",
        per_slot.num_params(),
        shared.num_params()
    );
    assert!(shared.num_params() * 4 < per_slot.num_params());
}

struct GradCheck<'a> {
    grads: &'a burn::tensor::Gradients,
    total: usize,
    with_grad: usize,
    zero: Vec<String>,
}

impl ModuleVisitor for GradCheck<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        self.total += 1;
        match param.val().grad(self.grads) {
            Some(g) => {
                self.with_grad += 1;
                if g.abs().sum().into_scalar::<f32>() == 0.0 {
                    self.zero.push(format!("{:?}", param.id));
                }
            }
            None => self.zero.push(format!("{:?} (none)", param.id)),
        }
    }
}

#[test]
fn gradients_reach_every_trainable_parameter_through_the_frozen_lm() {
    let device = device();
    let ad = device.clone().autodiff();
    let lm = BaseLm::load(repo().join("mac-lm/tests/fixtures/tiny-llama"), &device).unwrap();
    let layout = lm.kv_layout();
    let bert_dir = repo().join("mac-encoder/tests/fixtures/tiny-bert");
    let (n, d) = (3, layout.kv_width());
    let doc_bert = Bert::load(&bert_dir, &ad, Trainable::All).unwrap();
    let q_bert = Bert::load(&bert_dir, &ad, Trainable::TopLayers(1)).unwrap();
    let doc_head = QueryTokenHeadConfig::new(32, n, d)
        .with_n_heads(2)
        .init(&ad);
    let q_head = QueryTokenHeadConfig::new(32, n, d)
        .with_n_heads(2)
        .init(&ad);
    let agg = AggregatorConfig::new(d)
        .with_n_blocks(2)
        .with_n_heads(2)
        .with_d_head(8)
        .init(&ad);
    let expand = PrefixExpansionConfig::new(d, n)
        .with_d_hidden(16)
        .init(layout, &ad);

    let ids = |rows: &[&[i64]]| {
        let t = rows[0].len();
        let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::<2, burn::tensor::Int>::from_data(TensorData::new(flat, [rows.len(), t]), &ad)
    };
    let valid = Tensor::<2, Bool>::from_data(
        TensorData::new(
            vec![true, true, true, true, true, true, true, false],
            [2, 4],
        ),
        &ad,
    );
    // Two documents form the bank; each question aggregates over both.
    let docs = doc_head.forward(
        doc_bert.forward(ids(&[&[5, 6, 7, 8], &[9, 10, 11, 0]]), valid.clone()),
        valid.clone(),
    );
    let qs = q_head.forward(
        q_bert.forward(ids(&[&[12, 13, 14, 15], &[16, 17, 18, 0]]), valid.clone()),
        valid,
    );
    let bank = docs.reshape([1, 2 * n, d]).expand([2, 2 * n, d]);
    let prefix = expand
        .forward(agg.aggregate(qs, bank).modulation)
        .kv()
        .unwrap();
    let batch = TokenBatch::padded(&[vec![3, 4, 5], vec![6, 7]], 0, Padding::Right).unwrap();
    let loss = lm
        .weighted_nll(
            &batch,
            &[vec![4, 5, 9], vec![7, 8, 0]],
            &[vec![1.0, 1.0, 1.0], vec![1.0, 1.0, 0.0]],
            Some(&prefix),
        )
        .unwrap();
    let grads = loss.backward();
    let mut check = GradCheck {
        grads: &grads,
        total: 0,
        with_grad: 0,
        zero: vec![],
    };
    doc_bert.visit(&mut check);
    q_bert.visit(&mut check);
    doc_head.visit(&mut check);
    q_head.visit(&mut check);
    agg.visit(&mut check);
    expand.visit(&mut check);
    eprintln!(
        "{} trainable tensors, {} with gradient",
        check.total, check.with_grad
    );
    assert!(check.total > 50);
    assert!(
        check.zero.is_empty(),
        "no or zero gradient: {:?}",
        check.zero
    );
    // The question encoder's frozen lower layer really is frozen, and is not
    // counted as trainable.
    assert!(!q_bert.layers[0].query.weight.is_require_grad());
    assert_eq!(trainable_params(&doc_bert), doc_bert.num_params());
    assert!(trainable_params(&q_bert) < q_bert.num_params());
}

#[test]
fn zero_output_expansion_starts_with_zero_prefixes_and_still_learns() {
    let device = device();
    let ad = device.clone().autodiff();
    let lm = BaseLm::load(repo().join("mac-lm/tests/fixtures/tiny-llama"), &device).unwrap();
    let layout = lm.kv_layout();
    let expand = PrefixExpansionConfig::new(32, 3)
        .with_d_hidden(16)
        .with_kind(ExpansionKind::SharedWithSlotEmbeddings)
        .with_zero_output(true)
        .init(layout, &ad);
    let tokens = Tensor::<3>::random([2, 3, 32], Distribution::Normal(0.0, 1.0), &ad);
    let prefix = expand.forward(tokens).kv().unwrap();
    for (k, v) in &prefix.layers {
        assert_eq!(k.clone().abs().max().into_scalar::<f32>(), 0.0);
        assert_eq!(v.clone().abs().max().into_scalar::<f32>(), 0.0);
    }
    let batch = TokenBatch::padded(&[vec![3, 4, 5], vec![6, 7, 8]], 0, Padding::Right).unwrap();
    let loss = lm
        .weighted_nll(
            &batch,
            &[vec![4, 5, 9], vec![7, 8, 1]],
            &[vec![1.0; 3], vec![1.0; 3]],
            Some(&prefix),
        )
        .unwrap();
    let grads = loss.backward();
    // The output layer gets a gradient at once (the hidden layer does after
    // the output layer has moved off zero).
    let g = expand.w2.val().grad(&grads).expect("w2 has a gradient");
    assert!(g.abs().sum().into_scalar::<f32>() > 0.0);
}
