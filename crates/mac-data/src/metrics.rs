//! SQuAD v1.1 answer metrics (the official `evaluate-v1.1.py` definitions).

use std::collections::HashMap;

/// Lower-cases, removes punctuation, the articles `a`/`an`/`the` and extra
/// whitespace — SQuAD's `normalize_answer`.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !is_ascii_punctuation(*c))
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python's `string.punctuation` (ASCII only, as in the official script).
fn is_ascii_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
}

fn em_single(prediction: &str, truth: &str) -> bool {
    normalize_answer(prediction) == normalize_answer(truth)
}

fn f1_single(prediction: &str, truth: &str) -> f64 {
    let p = normalize_answer(prediction);
    let t = normalize_answer(truth);
    let p_tokens: Vec<&str> = p.split_whitespace().collect();
    let t_tokens: Vec<&str> = t.split_whitespace().collect();
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for w in &t_tokens {
        *counts.entry(w).or_default() += 1;
    }
    let mut same = 0i64;
    for w in &p_tokens {
        if let Some(c) = counts.get_mut(w) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p_tokens.len() as f64;
    let recall = same as f64 / t_tokens.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Exact match (1.0 or 0.0) against the best of several references.
pub fn exact_match(prediction: &str, references: &[String]) -> f64 {
    let hit = references.iter().any(|r| em_single(prediction, r));
    if hit {
        1.0
    } else {
        0.0
    }
}

/// Token F1 against the best of several references.
pub fn f1_score(prediction: &str, references: &[String]) -> f64 {
    references
        .iter()
        .map(|r| f1_single(prediction, r))
        .fold(0.0, f64::max)
}

/// The reference code's "EM": the normalised prediction *starts with* a
/// normalised reference. Reported beside, never instead of, [`exact_match`].
pub fn prefix_exact_match(prediction: &str, references: &[String]) -> f64 {
    let p = normalize_answer(prediction);
    let hit = references.iter().any(|r| {
        let r = normalize_answer(r);
        !r.is_empty() && p.starts_with(&r)
    });
    if hit {
        1.0
    } else {
        0.0
    }
}
