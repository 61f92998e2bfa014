//! MAC + retrieval with k ≥ N is MAC: retrieval then returns every document,
//! and aggregating a question over them (in retrieval order) equals the flat
//! aggregation over the bank.

use burn::tensor::{Distribution, Tensor};
use mac_aggregation::AggregatorConfig;
use mac_retrieval::Bm25Index;

#[test]
fn mac_with_retrieval_of_k_at_least_n_equals_mac() {
    let docs = [
        "Velra Quellington was born in Port Vessa.",
        "Morrion Thrimsen won the Ember Prize.",
        "Sabta Kessova works for Orvane Dynamics.",
        "An unrelated note about tides.",
    ];
    let index = Bm25Index::build(&docs).unwrap();
    for k in [4, 9] {
        let mut hits =
            mac_eval::retrieve(&index, "Where was Velra Quellington born?", k, docs.len()).unwrap();
        assert_eq!(hits[0], 0);
        hits.sort();
        assert_eq!(hits, vec![0, 1, 2, 3]);
    }
    assert_eq!(
        mac_eval::retrieve(&index, "Ember Prize", 1, 4).unwrap(),
        vec![1]
    );

    let device = mac_device::select("flex").unwrap();
    let (n, d) = (3, 16);
    let agg = AggregatorConfig::new(d)
        .with_n_blocks(2)
        .with_n_heads(2)
        .with_d_head(8)
        .init(&device);
    let bank = Tensor::<3>::random([4, n, d], Distribution::Normal(0.0, 1.0), &device);
    let q = Tensor::<3>::random([2, n, d], Distribution::Normal(0.0, 1.0), &device);
    let flat = agg
        .aggregate(
            q.clone(),
            bank.clone().reshape([1, 4 * n, d]).expand([2, 4 * n, d]),
        )
        .modulation;
    // Retrieval order differs per question; the set is the whole bank.
    let order = |o: [i64; 4]| {
        let idx = Tensor::<1, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(o.to_vec(), [4]),
            &device,
        );
        bank.clone().select(0, idx)
    };
    let each = agg.aggregate_each(q, vec![order([0, 2, 1, 3]), order([3, 1, 0, 2])]);
    let diff = (flat - each).abs().max().into_scalar::<f32>();
    assert!(diff < 1e-5, "MAC+RAG@N differs from MAC by {diff}");
}
