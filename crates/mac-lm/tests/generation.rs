//! Batched generation with options per row: token limits, early stops by
//! the caller and seeded sampling, each against the same rows generated
//! alone and greedily (tiny random Llama fixture).

mod common;

use common::*;
use mac_lm::{BaseLm, GenerateOptions, Generation, KvCache, Sampling};

fn model() -> BaseLm {
    BaseLm::load(fixtures().join("tiny-llama"), &device()).unwrap()
}

fn greedy(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        stop_at_eos: false,
        sampling: Sampling::GREEDY,
    }
}

#[test]
fn each_row_keeps_its_own_limit_and_early_stop() {
    let model = model();
    let prompts = vec![vec![5u32, 17, 99, 3], vec![42u32, 7], vec![8u32, 8, 1]];
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            model
                .generate(std::slice::from_ref(p), None, 0, 0, greedy(6))
                .unwrap()[0]
                .clone()
        })
        .collect();
    // Row 0: 6 tokens; row 1: 2; row 2: stopped by the caller after 3.
    let opts = [greedy(6), greedy(2), greedy(6)];
    let mut seen: Vec<Vec<u32>> = vec![Vec::new(); 3];
    let out = model
        .generate_each(&prompts, &opts, None, 0, 0, &mut |row, tokens| {
            // The row's tokens so far: what it had, and one more.
            assert_eq!(tokens[..tokens.len() - 1], seen[row][..], "row {row}");
            seen[row].push(tokens[tokens.len() - 1]);
            !(row == 2 && seen[row].len() == 3)
        })
        .unwrap();
    assert_eq!(out[0], alone[0]);
    assert_eq!(out[1], alone[1][..2]);
    assert_eq!(out[2], alone[2][..3]);
    assert_eq!(seen, out, "the callback sees every kept token, in order");
}

#[test]
fn sampling_is_seeded_per_row_and_greedy_rows_are_unchanged() {
    let model = model();
    let prompts = vec![vec![5u32, 17, 99, 3], vec![42u32, 7]];
    let sampled = |seed| GenerateOptions {
        sampling: Sampling {
            temperature: 1.5,
            top_p: 1.0,
            seed,
        },
        ..greedy(8)
    };
    let run = |opts: [GenerateOptions; 2]| {
        model
            .generate_each(&prompts, &opts, None, 0, 0, &mut |_, _| true)
            .unwrap()
    };
    let greedy_rows = run([greedy(8), greedy(8)]);
    let a = run([greedy(8), sampled(1)]);
    // A sampled row beside it does not change a greedy row.
    assert_eq!(a[0], greedy_rows[0]);
    // The same seed draws the same tokens; other seeds differ somewhere.
    assert_eq!(run([greedy(8), sampled(1)])[1], a[1]);
    let others: Vec<Vec<u32>> = (2..6)
        .map(|s| run([greedy(8), sampled(s)])[1].clone())
        .collect();
    assert!(
        others.iter().any(|o| *o != a[1]),
        "four other seeds all drew {:?}",
        a[1]
    );
    // Temperature 0 is greedy.
    let cold = GenerateOptions {
        sampling: Sampling {
            temperature: 0.0,
            top_p: 0.5,
            seed: 9,
        },
        ..greedy(8)
    };
    assert_eq!(run([cold, cold]), greedy_rows);
}

#[test]
fn mismatched_options_are_an_error() {
    let model = model();
    let err = model
        .generate_each(&[vec![1u32, 2]], &[], None, 0, 0, &mut |_, _| true)
        .unwrap_err();
    assert!(err.to_string().contains("1 prompts but 0"), "{err}");
}

/// Greedy tokens of `prompts` continuing `cache` (one row per prompt).
fn continue_cache(model: &BaseLm, cache: KvCache, prompts: &[Vec<u32>], n: usize) -> Vec<Vec<u32>> {
    let start = Generation {
        prefix: None,
        cache,
    };
    let opts = vec![greedy(n); prompts.len()];
    model
        .generate_after(start, prompts, &opts, 0, 0, &mut |_, _| true)
        .unwrap()
}

#[test]
fn a_prompt_continuing_a_cache_equals_the_whole_sequence() {
    let model = model();
    let document = vec![5u32, 17, 99, 3, 64, 12, 7];
    let prompt = vec![42u32, 7, 8];
    let whole: Vec<u32> = document.iter().chain(&prompt).copied().collect();
    let expected = model.generate(&[whole], None, 0, 0, greedy(6)).unwrap();
    let cache = model.cache_of(&document).unwrap();
    assert_eq!(cache.next_pos, vec![document.len()]);
    assert_eq!(
        continue_cache(&model, cache.clone(), std::slice::from_ref(&prompt), 6),
        expected
    );
    // Keeping every position changes nothing.
    let all: Vec<usize> = (0..document.len()).collect();
    let kept = cache.keep(0, &all).unwrap();
    assert_eq!(
        continue_cache(&model, kept, std::slice::from_ref(&prompt), 6),
        expected
    );

    // A cache of the document's beginning, extended by the rest, is the
    // document's cache.
    let mut extended = model.cache_of(&document[..3]).unwrap();
    model.extend_cache(&mut extended, &document[3..]).unwrap();
    assert_eq!(extended.next_pos, cache.next_pos);
    assert_eq!(extended.valid, cache.valid);
    for ((k, v), (k_all, v_all)) in extended.layers.iter().zip(&cache.layers) {
        let diff = |a: &burn::tensor::Tensor<4>, b: &burn::tensor::Tensor<4>| {
            (a.clone() - b.clone()).abs().max().into_scalar::<f32>()
        };
        assert!(diff(k, k_all) < 1e-5 && diff(v, v_all) < 1e-5);
    }
    assert_eq!(continue_cache(&model, extended, &[prompt], 6), expected);
}

#[test]
fn kept_positions_are_a_memory_of_those_tokens_at_their_positions() {
    let model = model();
    let (doc_a, doc_b) = (vec![5u32, 17, 99, 3, 64, 12, 7], vec![8u32, 8, 1, 90, 33]);
    let (keep_a, keep_b) = (vec![0usize, 3, 4], vec![0usize, 1, 2, 3, 4]);
    let prompts = vec![vec![42u32, 7, 8], vec![11u32, 2]];
    let cache_a = model.cache_of(&doc_a).unwrap().keep(0, &keep_a).unwrap();
    let cache_b = model.cache_of(&doc_b).unwrap().keep(0, &keep_b).unwrap();
    assert_eq!(cache_a.len(), 3);
    assert_eq!(
        cache_a.next_pos,
        vec![doc_a.len()],
        "later tokens keep their positions"
    );
    let alone_a = continue_cache(&model, cache_a.clone(), &prompts[..1], 5);
    let alone_b = continue_cache(&model, cache_b.clone(), &prompts[1..], 5);
    // Rows of different lengths in one batch: each as it was alone.
    let both = KvCache::stack(&[cache_a.clone(), cache_b]).unwrap();
    assert_eq!(both.valid[0], vec![false, false, true, true, true]);
    let together = continue_cache(&model, both, &prompts, 5);
    assert_eq!(together, vec![alone_a[0].clone(), alone_b[0].clone()]);
    // Dropping tokens is not a no-op: the full document answers otherwise
    // for at least one of a few prompts.
    let full_a = model.cache_of(&doc_a).unwrap();
    let differs = (0..6u32).any(|p| {
        let prompt = vec![vec![p * 13 + 1, 7, 8]];
        continue_cache(&model, full_a.clone(), &prompt, 5)
            != continue_cache(&model, cache_a.clone(), &prompt, 5)
    });
    assert!(
        differs,
        "keeping 3 of 7 tokens should change some continuation"
    );
}

#[test]
fn kept_positions_and_continued_caches_are_checked() {
    let model = model();
    let cache = model.cache_of(&[5, 17, 99]).unwrap();
    assert!(cache.keep(0, &[2, 1]).is_err(), "descending");
    assert!(cache.keep(0, &[0, 3]).is_err(), "beyond the cache");
    assert!(cache.keep(1, &[0]).is_err(), "no such row");
    assert!(cache.keep(0, &[]).is_err(), "nothing kept");
    assert!(KvCache::stack(&[]).is_err());
    let start = Generation {
        prefix: None,
        cache,
    };
    let two = vec![vec![1u32], vec![2u32]];
    let err = model
        .generate_after(start, &two, &[greedy(2), greedy(2)], 0, 0, &mut |_, _| true)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("2 prompts continue a cache of 1 rows"),
        "{err}"
    );
}

#[test]
fn a_cache_as_token_rows_reads_back_as_the_same_cache() {
    let model = model();
    let layout = model.kv_layout();
    let w = layout.kv_width();
    let (preamble, document) = (vec![5u32, 17, 99], vec![3u32, 64, 12, 7]);
    let whole: Vec<u32> = preamble.iter().chain(&document).copied().collect();
    let cache = model.cache_of(&whole).unwrap();
    let rows = cache.token_rows(0, preamble.len()).unwrap();
    assert_eq!(rows.dims(), [document.len(), 2 * layout.n_layers * w]);
    // Position 1 of the rows is cache position 4: layer 1's value, head 0.
    let (_, v1) = &cache.layers[1];
    let want = v1
        .clone()
        .narrow(1, 0, 1)
        .narrow(2, 4, 1)
        .flatten::<1>(0, 3);
    let got = rows
        .clone()
        .narrow(0, 1, 1)
        .narrow(1, 3 * w, layout.head_dim);
    assert_eq!(got.flatten::<1>(0, 1).into_data(), want.into_data());

    let stored = KvCache::from_token_rows(rows.clone(), layout, whole.len(), &device()).unwrap();
    assert_eq!(stored.next_pos, vec![whole.len()]);
    let joined = model.cache_of(&preamble).unwrap().then(&stored).unwrap();
    assert_eq!(joined.valid, cache.valid);
    for ((k, v), (k_all, v_all)) in joined.layers.iter().zip(&cache.layers) {
        let diff = |a: &burn::tensor::Tensor<4>, b: &burn::tensor::Tensor<4>| {
            (a.clone() - b.clone()).abs().max().into_scalar::<f32>()
        };
        assert!(diff(k, k_all) < 1e-5 && diff(v, v_all) < 1e-5);
    }
    let prompt = vec![vec![42u32, 7, 8]];
    assert_eq!(
        continue_cache(&model, joined.keep(0, &[0, 1, 4, 6]).unwrap(), &prompt, 6),
        continue_cache(&model, cache.keep(0, &[0, 1, 4, 6]).unwrap(), &prompt, 6)
    );

    // Misfits are errors, not panics.
    assert!(cache.token_rows(1, 0).is_err(), "no such row");
    assert!(
        cache.token_rows(0, whole.len()).is_err(),
        "nothing from there"
    );
    let narrow = rows.clone().narrow(1, 0, w);
    assert!(KvCache::from_token_rows(narrow, layout, 9, &device()).is_err());
    assert!(
        KvCache::from_token_rows(rows, layout, 2, &device()).is_err(),
        "four positions before position 2"
    );
    let two = KvCache::stack(&[cache.clone(), cache.clone()]).unwrap();
    assert!(two.then(&stored).is_err(), "two rows");
}
