//! Batched generation with options per row: token limits, early stops by
//! the caller and seeded sampling, each against the same rows generated
//! alone and greedily (tiny random Llama fixture).

mod common;

use common::*;
use mac_lm::{BaseLm, GenerateOptions, Sampling};

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
