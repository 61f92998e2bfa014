//! How cases are made from a seed: the deterministic families and the
//! random edits.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::{Campaign, Kind};

/// Extreme values written over length and count fields.
const EXTREMES: [u64; 7] = [
    0,
    1,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 40,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

impl Campaign<'_> {
    /// The deterministic cases: truncations, byte flips, extreme fields.
    pub(crate) fn deterministic_cases(&self) -> Vec<(String, Vec<u8>)> {
        let n = self.seed.len();
        let mut cases = Vec::new();
        for cut in sample(n, self.max_per_family) {
            cases.push((
                format!("truncated to {cut} bytes"),
                self.seed[..cut].to_vec(),
            ));
        }
        for at in sample(n, self.max_per_family) {
            let mut b = self.seed.to_vec();
            b[at] ^= 0xff;
            cases.push((format!("byte {at} inverted"), b));
        }
        let header = self.header_len.min(n);
        for at in 0..header {
            for &v in &EXTREMES {
                for width in [4usize, 8] {
                    if at + width <= n && (width == 8 || v <= u32::MAX as u64) {
                        let mut b = self.seed.to_vec();
                        b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
                        if b != self.seed {
                            cases.push((format!("u{} {v:#x} written at byte {at}", width * 8), b));
                        }
                    }
                }
            }
        }
        cases
    }

    /// One random case: 1–4 stacked edits of the seed.
    pub(crate) fn random_case(&self, rng: &mut ChaCha8Rng) -> (String, Vec<u8>) {
        let mut b = self.seed.to_vec();
        let mut what = Vec::new();
        for _ in 0..rng.random_range(1..=4) {
            what.push(edit(&mut b, rng, self.kind));
        }
        (what.join(", "), b)
    }
}

/// `0..n` when it has at most `max` values, else `max` values spread evenly
/// over it (the first and last included).
fn sample(n: usize, max: usize) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    (0..max).map(|i| i * (n - 1) / (max - 1).max(1)).collect()
}

/// One random edit of `b`, described.
fn edit(b: &mut Vec<u8>, rng: &mut ChaCha8Rng, kind: Kind) -> String {
    let n = b.len();
    if n == 0 {
        b.push(rng.random());
        return "a byte inserted".into();
    }
    let at = rng.random_range(0..n);
    let choices = if kind == Kind::Text { 9 } else { 7 };
    match rng.random_range(0..choices) {
        0 => {
            let bit = rng.random_range(0..8);
            b[at] ^= 1 << bit;
            format!("bit {bit} of byte {at} flipped")
        }
        1 => {
            let v: u8 = rng.random();
            b[at] = v;
            format!("byte {at} set to {v:#x}")
        }
        2 => {
            let len = rng.random_range(1..=16usize);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            b.splice(at..at, bytes);
            format!("{len} random bytes inserted at {at}")
        }
        3 => {
            let len = rng.random_range(1..=64usize).min(n - at);
            b.drain(at..at + len);
            format!("bytes {at}..{} deleted", at + len)
        }
        4 => {
            let len = rng.random_range(1..=64usize).min(n - at);
            let copy = b[at..at + len].to_vec();
            let to = rng.random_range(0..=b.len());
            b.splice(to..to, copy);
            format!("bytes {at}..{} copied to {to}", at + len)
        }
        5 | 6 => {
            let width = if rng.random() { 4 } else { 8 };
            let v = EXTREMES[rng.random_range(0..EXTREMES.len())];
            let at = at.min(n.saturating_sub(width));
            let end = (at + width).min(n);
            b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
            format!("u{} {v:#x} written at byte {at}", width * 8)
        }
        7 => {
            // A run of digits made huge (or negative, or fractional).
            let Some(start) = (at..n).chain(0..at).find(|&i| b[i].is_ascii_digit()) else {
                return "no digits to edit".into();
            };
            let end = (start..n).find(|&i| !b[i].is_ascii_digit()).unwrap_or(n);
            let replacement: &[u8] = [
                &b"99999999999999999999999"[..],
                b"18446744073709551616",
                b"-1",
                b"0",
                b"1e308",
                b"4294967296",
                b"0.5",
            ][rng.random_range(0..7)];
            b.splice(start..end, replacement.iter().copied());
            format!(
                "number at {start} replaced by {}",
                String::from_utf8_lossy(replacement)
            )
        }
        _ => {
            let v = [b'"', b'{', b'}', b'[', b']', b',', b':', b'\n', b'\\', 0]
                [rng.random_range(0..10)];
            b.insert(at, v);
            format!("{:?} inserted at {at}", v as char)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sampling_spreads_over_the_whole_range() {
        assert_eq!(sample(3, 10), vec![0, 1, 2]);
        let s = sample(1000, 5);
        assert_eq!(s.first(), Some(&0));
        assert_eq!(s.last(), Some(&999));
        assert_eq!(s.len(), 5);
    }

    #[test]
    fn deterministic_cases_cover_every_cut_and_flip_of_a_small_seed() {
        let seed = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let c = Campaign::new("t", &seed, Kind::Binary);
        let cases = c.deterministic_cases();
        for cut in 0..seed.len() {
            assert!(cases.iter().any(|(_, b)| b.as_slice() == &seed[..cut]));
        }
        let flips = cases.iter().filter(|(m, _)| m.contains("inverted")).count();
        assert_eq!(flips, seed.len());
        assert!(cases
            .iter()
            .any(|(_, b)| b.len() == seed.len() && b[..8] == u64::MAX.to_le_bytes()[..]));
    }

    #[test]
    fn random_cases_are_reproducible_from_the_rng_seed() {
        let seed = b"{\"a\": [1, 2, 3], \"b\": \"text\"}";
        let c = Campaign::new("t", seed, Kind::Text);
        let mut r1 = ChaCha8Rng::seed_from_u64(7);
        let mut r2 = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..50 {
            assert_eq!(c.random_case(&mut r1), c.random_case(&mut r2));
        }
    }
}
