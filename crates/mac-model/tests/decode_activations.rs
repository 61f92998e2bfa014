//! Quantized decode activations against f32 ones on the real SmolLM2: how
//! many greedy answers to the open stream's first test questions, each
//! asked after its document (the oracle prompt, eight prompts decoded
//! together), they change. Eight bits: measured 6 of 100 (free answers of
//! up to 16 tokens drift once one token differs), so they stay an option
//! and the bound here guards against a larger drift; sixteen bits must
//! leave at least 99 of 100 unchanged.

use mac_data::{FactStream, FactStreamConfig};
use mac_kernels::quantized::Activations;
use mac_lm::LoadedLm;
use mac_model::generate_answers;
use mac_model::prompt::oracle_prompt;

/// Questions asked (the first test documents' questions).
const QUESTIONS: usize = 100;

#[test]
fn quantized_activations_leave_greedy_answers_unchanged() {
    let path = mac_assets::default_lm_path();
    if !mac_assets::fetched_or_skip(&path) {
        return;
    }
    let mut lm = LoadedLm::load(&path, &mac_device::select("flex").unwrap()).unwrap();
    let test = FactStream::generate(&FactStreamConfig::open()).test;
    let prompts: Vec<String> = test
        .documents
        .iter()
        .flat_map(|d| d.qas.iter().map(|qa| oracle_prompt(&d.text, &qa.question)))
        .take(QUESTIONS)
        .collect();
    assert_eq!(prompts.len(), QUESTIONS);
    let answers = |lm: &LoadedLm| -> Vec<String> {
        prompts
            .chunks(8)
            .flat_map(|batch| generate_answers(lm, batch, None, 16).unwrap())
            .collect()
    };
    let exact = answers(&lm);
    for (activations, most_changed) in [(Activations::Q8, 10), (Activations::Q16, 1)] {
        lm.model.set_decode_activations(activations);
        let quantized = answers(&lm);
        let differ: Vec<(&String, &String)> = exact
            .iter()
            .zip(&quantized)
            .filter(|(a, b)| a != b)
            .collect();
        eprintln!(
            "{} of {QUESTIONS} greedy answers differ with {activations:?} activations: {differ:?}",
            differ.len()
        );
        assert!(differ.len() <= most_changed, "{activations:?}: {differ:?}");
    }
}
