//! BM25 ranks the gold document first on hand-made cases.

use mac_retrieval::Bm25Index;

#[test]
fn bm25_ranks_the_gold_document_first() {
    let docs = [
        "Velra Quellington was born in Port Vessa. Velra Quellington works for Orvane Dynamics.",
        "Morrion Thrimsen specializes in glaciology. Morrion Thrimsen won the Ember Prize.",
        "Sabta Kessova was born on 3 May 1961. Sabta Kessova is a native of Zarnow.",
        "The Ember Prize is awarded every year in Port Vessa.",
    ];
    let index = Bm25Index::build(&docs).unwrap();
    assert_eq!(index.len(), 4);
    let cases = [
        ("Where was Velra Quellington born?", 0),
        ("What does Morrion Thrimsen specialize in?", 1),
        ("When was Sabta Kessova born?", 2),
        ("Which prize did Thrimsen win?", 1),
        ("Who employs Quellington? (AND: -OR)", 0),
    ];
    for (q, gold) in cases {
        let hits = index.search(q, 3).unwrap();
        assert_eq!(hits[0].document, gold, "{q}: {hits:?}");
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
    assert!(index.search("", 3).unwrap().is_empty());
    assert!(index.search("Velra", 0).unwrap().is_empty());
}

#[test]
fn documents_added_later_are_found_with_their_stream_positions() {
    let mut index = Bm25Index::build(&["alpha beta"]).unwrap();
    index.add(&["gamma delta", "epsilon"]).unwrap();
    assert_eq!(index.search("delta", 5).unwrap()[0].document, 1);
    assert_eq!(index.search("epsilon", 5).unwrap()[0].document, 2);
}
