//! A memory bank on disk read by the aggregator through [`BankMemory`]:
//! the same result as the same modulations held in memory, exact and
//! hierarchical, with and without the similarity prior.

use burn::tensor::{Device, Distribution, Tensor};
use mac_aggregation::{AggregatorConfig, InMemory, SimilarityPrior};
use mac_bank::{BankShape, MemoryBank, NewEntry, Precision};
use mac_model::ModelError;
use mac_runtime::{BankMemory, RuntimeError};

fn device() -> Device {
    mac_device::select("flex").unwrap()
}

fn max_abs_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn a_bank_on_disk_aggregates_like_the_same_modulations_in_memory() {
    let device = device();
    let (n, d, k, n_docs) = (2, 8, 3, 9);
    let agg = AggregatorConfig::new(d)
        .with_n_blocks(2)
        .with_n_heads(2)
        .with_d_head(8)
        .init(&device);
    let dir = tempfile::tempdir().unwrap();
    let shape = BankShape {
        n_tokens: n,
        d_mod: d,
        key_dim: k,
        rows_vary: false,
        precision: Precision::F32,
    };
    let mut bank = MemoryBank::create(dir.path(), shape, "test").unwrap();
    let q = Tensor::<3>::random([2, n, d], Distribution::Normal(0.0, 1.0), &device);
    let on_disk = BankMemory {
        bank: &bank,
        device: &device,
    };
    let empty = agg
        .aggregate_streamed(q.clone(), &on_disk, None, 4)
        .unwrap_err();
    assert!(
        matches!(empty, RuntimeError::Model(ModelError::Aggregation(_))),
        "{empty}"
    );
    assert!(empty.to_string().contains("empty"), "{empty}");

    let docs = Tensor::<3>::random([n_docs, n, d], Distribution::Normal(0.0, 1.0), &device);
    let keys = Tensor::<2>::random([n_docs, k], Distribution::Normal(0.0, 1.0), &device);
    let values: Vec<f32> = docs.clone().try_to_vec_as::<f32>().unwrap();
    let key_values: Vec<f32> = keys.clone().try_to_vec_as::<f32>().unwrap();
    for (i, (m, key)) in values.chunks(n * d).zip(key_values.chunks(k)).enumerate() {
        let text = format!("doc {i}");
        bank.append(NewEntry {
            source: "t",
            text: &text,
            modulation: m,
            key,
        })
        .unwrap();
    }
    let on_disk = BankMemory {
        bank: &bank,
        device: &device,
    };
    let in_memory = InMemory {
        modulations: docs,
        keys: Some(keys),
    };
    let prior = SimilarityPrior {
        question_keys: Tensor::<2>::random([2, k], Distribution::Normal(0.0, 1.0), &device),
        scale: 6.0,
    };
    for p in [None, Some(&prior)] {
        let a = agg.aggregate_streamed(q.clone(), &on_disk, p, 4).unwrap();
        let b = agg.aggregate_streamed(q.clone(), &in_memory, p, 4).unwrap();
        assert!(max_abs_diff(a.modulation, b.modulation) < 1e-6);
        assert_eq!(a.doc_weights, b.doc_weights);
        assert_eq!(a.doc_weights[0].len(), n_docs);
        let a = agg
            .aggregate_hierarchical_streamed(q.clone(), &on_disk, p, 4)
            .unwrap();
        let b = agg
            .aggregate_hierarchical_streamed(q.clone(), &in_memory, p, 4)
            .unwrap();
        assert!(max_abs_diff(a.modulation, b.modulation) < 1e-6);
    }
    let wide = SimilarityPrior {
        question_keys: Tensor::<2>::zeros([2, k + 1], &device),
        scale: 1.0,
    };
    let err = agg
        .aggregate_streamed(q, &on_disk, Some(&wide), 4)
        .unwrap_err();
    assert!(err.to_string().contains("keys of 4 values"), "{err}");
}
