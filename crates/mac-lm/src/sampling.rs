//! How a generated token is picked from the LM's logits: greedy (argmax),
//! or drawn at a temperature from the nucleus (top-p) of the distribution,
//! reproducibly from a seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How one row of a batch picks its tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Logits are divided by it before the softmax; 0 means greedy.
    pub temperature: f32,
    /// Only the most probable tokens whose probabilities first reach this
    /// total are drawn from (1: every token).
    pub top_p: f32,
    /// Seed of the row's draws: the same seed, prompt and model give the
    /// same tokens.
    pub seed: u64,
}

impl Sampling {
    /// Always the most probable token.
    pub const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
    };

    /// Whether this picks the most probable token without drawing.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_p <= 0.0
    }

    /// The random source for one row's draws.
    pub(crate) fn rng(&self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed)
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Self::GREEDY
    }
}

/// The index of the largest logit (the first of equal ones).
pub(crate) fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best
}

/// Picks a token from one row of logits as `sampling` says, drawing from
/// `rng` unless it is greedy.
pub(crate) fn pick(logits: &[f32], sampling: &Sampling, rng: &mut impl Rng) -> usize {
    if sampling.is_greedy() || logits.len() < 2 {
        return argmax(logits);
    }
    let max = logits[argmax(logits)];
    let inv_t = 1.0 / f64::from(sampling.temperature);
    // Unnormalised probabilities, in f64 so that a long tail still sums exactly enough.
    let weights: Vec<f64> = logits
        .iter()
        .map(|&x| (f64::from(x - max) * inv_t).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    if sampling.top_p >= 1.0 {
        return draw(weights.iter().copied().enumerate(), total, rng);
    }
    // The nucleus: most probable first, until their share reaches top_p.
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_unstable_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
    let target = f64::from(sampling.top_p) * total;
    let (mut kept, mut mass) = (0, 0.0);
    for &i in &order {
        mass += weights[i];
        kept += 1;
        if mass >= target {
            break;
        }
    }
    draw(order[..kept].iter().map(|&i| (i, weights[i])), mass, rng)
}

/// Draws an index with probability proportional to its weight (`total` is
/// the weights' sum).
fn draw(weighted: impl Iterator<Item = (usize, f64)>, total: f64, rng: &mut impl Rng) -> usize {
    let mut u = rng.random::<f64>() * total;
    let mut last = 0;
    for (i, w) in weighted {
        last = i;
        if u < w {
            return i;
        }
        u -= w;
    }
    // Rounding left `u` just above the last weight.
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(temperature: f32, top_p: f32) -> Sampling {
        Sampling {
            temperature,
            top_p,
            seed: 7,
        }
    }

    /// How often each token is drawn in `n` draws.
    fn frequencies(logits: &[f32], s: &Sampling, n: usize) -> Vec<f64> {
        let mut rng = s.rng();
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[pick(logits, s, &mut rng)] += 1;
        }
        counts.iter().map(|&c| c as f64 / n as f64).collect()
    }

    #[test]
    fn greedy_picks_the_largest_logit() {
        let logits = [0.1, 2.0, -1.0, 2.0, 0.5];
        let mut rng = Sampling::GREEDY.rng();
        assert_eq!(pick(&logits, &Sampling::GREEDY, &mut rng), 1);
        assert_eq!(pick(&logits, &sampling(0.0, 0.9), &mut rng), 1);
        // A nucleus smaller than the top token holds only the top token.
        for _ in 0..50 {
            assert_eq!(pick(&logits[2..], &sampling(1.0, 1e-3), &mut rng), 1);
        }
    }

    #[test]
    fn draws_follow_the_softmax_at_the_temperature() {
        let logits = [1.0f32, 0.0, -1.0, 0.5];
        for t in [0.5f32, 1.0, 2.0] {
            // The softmax of logits / t, computed here on its own.
            let e: Vec<f64> = logits
                .iter()
                .map(|&x| (f64::from(x) / f64::from(t)).exp())
                .collect();
            let z: f64 = e.iter().sum();
            let got = frequencies(&logits, &sampling(t, 1.0), 40_000);
            for (g, w) in got.iter().zip(&e) {
                assert!((g - w / z).abs() < 0.01, "t = {t}: {got:?} vs {:?}", e);
            }
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_set_that_reaches_it() {
        // Probabilities 0.4, 0.3, 0.2, 0.1: top_p 0.5 keeps the first two,
        // renormalised to 4/7 and 3/7.
        let logits: Vec<f32> = [0.4f32, 0.3, 0.2, 0.1].iter().map(|p| p.ln()).collect();
        let got = frequencies(&logits, &sampling(1.0, 0.5), 40_000);
        assert_eq!((got[2], got[3]), (0.0, 0.0), "{got:?}");
        assert!((got[0] - 4.0 / 7.0).abs() < 0.01, "{got:?}");
        assert!((got[1] - 3.0 / 7.0).abs() < 0.01, "{got:?}");
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.7).sin()).collect();
        let draws = |seed: u64| {
            let s = Sampling {
                temperature: 1.0,
                top_p: 0.95,
                seed,
            };
            let mut rng = s.rng();
            (0..64)
                .map(|_| pick(&logits, &s, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
        assert_ne!(draws(3), draws(4));
    }
}
