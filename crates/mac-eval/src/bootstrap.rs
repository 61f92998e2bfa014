//! Confidence intervals of a method's F1 by the bootstrap over documents:
//! the stream's documents are drawn with replacement, each bringing all of
//! its questions (questions about one document are not independent), and
//! the 2.5th and 97.5th percentiles of the resampled mean F1 bound the
//! interval. The draws are seeded: the same predictions give the same
//! interval.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::methods::{MethodResult, Prediction};

/// Resamples per interval.
pub const RESAMPLES: usize = 2000;

/// The 95% interval of the mean F1 of `scores` (`(document, f1)` per
/// question), resampling documents; `None` without questions.
pub fn f1_interval(scores: impl IntoIterator<Item = (usize, f64)>) -> Option<[f64; 2]> {
    // Per document: the sum of its questions' F1 and their number.
    let mut by_doc: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    for (doc, f1) in scores {
        let e = by_doc.entry(doc).or_default();
        e.0 += f1;
        e.1 += 1;
    }
    let docs: Vec<(f64, usize)> = by_doc.into_values().collect();
    if docs.is_empty() {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x6d61_6372);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let (mut sum, mut n) = (0.0, 0usize);
            for _ in 0..docs.len() {
                let (s, k) = docs[rng.random_range(0..docs.len())];
                sum += s;
                n += k;
            }
            sum / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    Some([at(0.025), at(0.975)])
}

/// Sets each method's `f1_ci95` from its predictions.
pub(crate) fn add_intervals(methods: &mut BTreeMap<String, MethodResult>, preds: &[Prediction]) {
    for (name, result) in methods.iter_mut() {
        result.f1_ci95 = f1_interval(
            preds
                .iter()
                .filter(|p| &p.method == name)
                .map(|p| (p.document, p.f1)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_scores_give_a_point_and_none_give_nothing() {
        assert_eq!(f1_interval((0..30).map(|d| (d, 0.5))), Some([0.5, 0.5]));
        assert_eq!(f1_interval(std::iter::empty()), None);
    }

    #[test]
    fn the_interval_matches_the_normal_approximation() {
        // 400 documents, one question each, F1 1 for 30% of them: the mean's
        // standard error is sqrt(0.3 · 0.7 / 400) = 0.0229, so the interval
        // is about 0.3 ± 1.96 · 0.0229 = [0.255, 0.345].
        let scores = (0..400).map(|d| (d, if d % 10 < 3 { 1.0 } else { 0.0 }));
        let [lo, hi] = f1_interval(scores).unwrap();
        let half = 1.96 * (0.3f64 * 0.7 / 400.0).sqrt();
        assert!((lo - (0.3 - half)).abs() < 0.01, "{lo}");
        assert!((hi - (0.3 + half)).abs() < 0.01, "{hi}");
    }

    #[test]
    fn questions_of_one_document_move_together() {
        // 40 documents of 10 questions each, all right or all wrong: the
        // interval is that of 40 draws, not of 400.
        let scores = (0..400).map(|q| (q / 10, if (q / 10) % 2 == 0 { 1.0 } else { 0.0 }));
        let [lo, hi] = f1_interval(scores).unwrap();
        let per_document = 2.0 * 1.96 * (0.25f64 / 40.0).sqrt();
        assert!(((hi - lo) - per_document).abs() < 0.04, "{lo}..{hi}");
    }
}
