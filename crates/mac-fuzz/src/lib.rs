//! Mutation testing of parsers on stable Rust.
//!
//! Every file a parser reads is hostile until checked. A [`Campaign`] takes a
//! small valid file (the seed) and hands the parser under test, one at a
//! time: the seed cut at every byte, every byte flipped, every 4- and 8-byte
//! window of its first bytes overwritten with extreme lengths (0, 1, 2^31−1,
//! 2^32−1, 2^40, 2^63−1, 2^64−1), and random stacks of edits (bit flips,
//! byte sets, insertions, deletions, duplicated ranges, extreme integers,
//! digit runs made huge for text formats) from a seeded generator. The
//! property checked for every case: the parser returns — `Ok`, or an error
//! whose message names the file — and neither panics nor makes a single
//! allocation beyond a bound proportional to the input's size.
//!
//! Allocations are seen by [`TrackingAllocator`], which a fuzz test binary
//! installs as its global allocator; it records the largest request made
//! by the thread running the case. An allocation so large that the system
//! refuses it aborts the test binary, which fails the test loudly too.
//!
//! The number of random cases comes from [`Budget::from_env`]:
//! `MAC_FUZZ_SECONDS` runs random cases for that long per target
//! (`cargo xtask fuzz --minutes N`), otherwise a fixed count keeps CI quick;
//! `MAC_FUZZ_SEED` changes the random cases (the same seed, the same cases).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    /// Whether this thread is running a case (its panics are expected and
    /// counted, not printed).
    static IN_CASE: Cell<bool> = const { Cell::new(false) };
    /// Where the last panic of a case happened.
    static PANIC_AT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Installs, once per process, a panic hook that stays quiet for panics of
/// a case and hands every other panic to the hook that was there before.
fn quiet_panics_in_cases() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_CASE.with(Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                PANIC_AT.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info)
            }
        }));
    });
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|c| {
        if size > c.get() {
            c.set(size)
        }
    });
}

/// The system allocator, recording the largest single request of each
/// thread. Install it in a fuzz test binary:
/// `#[global_allocator] static ALLOC: mac_fuzz::TrackingAllocator = mac_fuzz::TrackingAllocator;`
pub struct TrackingAllocator;

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping
// touches only a const-initialised thread-local `Cell` (no allocation).
unsafe impl GlobalAlloc for TrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

/// Resets this thread's record and returns the largest request since the
/// last reset.
fn take_largest() -> usize {
    LARGEST.with(|c| c.replace(0))
}

/// Whether [`TrackingAllocator`] is this binary's global allocator.
pub fn tracking_installed() -> bool {
    take_largest();
    let probe = std::hint::black_box(vec![0u8; 3 << 20]);
    drop(probe);
    take_largest() >= 3 << 20
}

/// How many random cases each target runs.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// This many random cases (after the deterministic ones).
    Cases(usize),
    /// Random cases until this much time has passed.
    Time(Duration),
}

impl Budget {
    /// `MAC_FUZZ_SECONDS` (seconds of random cases per target) when set,
    /// otherwise `default_cases` random cases.
    pub fn from_env(default_cases: usize) -> Self {
        match std::env::var("MAC_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
        {
            Some(s) if s > 0.0 => Budget::Time(Duration::from_secs_f64(s)),
            _ => Budget::Cases(default_cases),
        }
    }
}

/// What the seed is, which decides the random edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A binary format: integers and length fields are edited.
    Binary,
    /// A text format (JSON, CSV): digit runs, quotes and brackets are edited too.
    Text,
}

/// A case that broke the property.
#[derive(Debug, Clone)]
pub struct Failure {
    /// How the case was made from the seed.
    pub mutation: String,
    /// The panic message, the oversized allocation, or the error that does
    /// not name the file.
    pub problem: String,
}

/// What a campaign ran and found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target's name.
    pub target: String,
    /// Size of the seed in bytes.
    pub seed_len: usize,
    /// Deterministic cases run (truncations, flips, extreme fields).
    pub deterministic: usize,
    /// Random cases run.
    pub random: usize,
    /// Cases the parser accepted.
    pub accepted: usize,
    /// Cases that panicked.
    pub panics: usize,
    /// Cases with an allocation beyond the bound.
    pub oversized: usize,
    /// Cases whose error did not name the file.
    pub unnamed: usize,
    /// The largest single allocation of any case, in bytes.
    pub largest_allocation: usize,
    /// The first failures (at most 8), to reproduce.
    pub failures: Vec<Failure>,
}

impl Report {
    /// Whether every case kept the property.
    pub fn passed(&self) -> bool {
        self.panics == 0 && self.oversized == 0 && self.unnamed == 0
    }

    /// One line for the test log.
    pub fn summary(&self) -> String {
        format!(
            "fuzz {}: {} cases ({} deterministic + {} random) of a {}-byte seed, {} accepted; \
             {} panics, {} oversized allocations, {} errors not naming the file; largest allocation {} bytes",
            self.target,
            self.deterministic + self.random,
            self.deterministic,
            self.random,
            self.seed_len,
            self.accepted,
            self.panics,
            self.oversized,
            self.unnamed,
            self.largest_allocation
        )
    }

    /// Panics with every failure listed when a case broke the property.
    pub fn assert_passed(&self) {
        println!("{}", self.summary());
        if !self.passed() {
            let listed: Vec<String> = self
                .failures
                .iter()
                .map(|f| format!("  {}: {}", f.mutation, f.problem))
                .collect();
            panic!("{}\n{}", self.summary(), listed.join("\n"));
        }
    }
}

/// A parser under test and how its inputs are made.
pub struct Campaign<'a> {
    target: String,
    seed: &'a [u8],
    kind: Kind,
    budget: Budget,
    rng_seed: u64,
    /// Bytes of the seed whose 4- and 8-byte windows get extreme values
    /// (the header, where lengths and counts live).
    header_len: usize,
    /// Most deterministic cases of each family (truncation, flip); larger
    /// seeds are sampled evenly.
    max_per_family: usize,
    /// Allowed allocation: `slack + factor × input length` bytes.
    allocation_slack: usize,
    allocation_factor: usize,
}

/// The random cases' seed unless `MAC_FUZZ_SEED` gives another.
pub const DEFAULT_RNG_SEED: u64 = 0x6d61_632d_7273;

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

impl<'a> Campaign<'a> {
    /// A campaign over mutations of `seed`, a small valid input of `target`.
    pub fn new(target: impl Into<String>, seed: &'a [u8], kind: Kind) -> Self {
        Self {
            target: target.into(),
            seed,
            kind,
            budget: Budget::from_env(400),
            rng_seed: std::env::var("MAC_FUZZ_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(DEFAULT_RNG_SEED),
            header_len: 256,
            max_per_family: 4096,
            allocation_slack: 32 << 20,
            allocation_factor: 64,
        }
    }

    /// Random cases: `Budget::from_env(default_cases)` unless set here.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// The seed of the random generator (the same seed, the same cases).
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = seed;
        self
    }

    /// How many leading bytes get extreme 4- and 8-byte values.
    pub fn header_len(mut self, len: usize) -> Self {
        self.header_len = len;
        self
    }

    /// Most cases per deterministic family (larger seeds are sampled).
    pub fn max_per_family(mut self, n: usize) -> Self {
        self.max_per_family = n.max(1);
        self
    }

    /// The allocation bound: `slack + factor × input length` bytes.
    pub fn allocation_bound(mut self, slack: usize, factor: usize) -> Self {
        self.allocation_slack = slack;
        self.allocation_factor = factor;
        self
    }

    /// The deterministic cases: truncations, byte flips, extreme fields.
    fn deterministic_cases(&self) -> Vec<(String, Vec<u8>)> {
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
    fn random_case(&self, rng: &mut ChaCha8Rng) -> (String, Vec<u8>) {
        let mut b = self.seed.to_vec();
        let mut what = Vec::new();
        for _ in 0..rng.random_range(1..=4) {
            what.push(edit(&mut b, rng, self.kind));
        }
        (what.join(", "), b)
    }

    /// Runs every case through `parse`, which writes the bytes where the
    /// parser reads them and returns `Ok` or the error's message; an `Err`
    /// must contain one of `names` (the files the error may rightly blame).
    pub fn run(
        &self,
        names: &[&str],
        mut parse: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Report {
        assert!(
            tracking_installed(),
            "install mac_fuzz::TrackingAllocator as the test binary's #[global_allocator]"
        );
        let mut report = Report {
            target: self.target.clone(),
            seed_len: self.seed.len(),
            deterministic: 0,
            random: 0,
            accepted: 0,
            panics: 0,
            oversized: 0,
            unnamed: 0,
            largest_allocation: 0,
            failures: Vec::new(),
        };
        // The seed itself must parse: otherwise every case tests the same error.
        if let Err(e) = parse(self.seed) {
            panic!("fuzz {}: the seed does not parse: {e}", self.target);
        }
        quiet_panics_in_cases();
        let mut check = |report: &mut Report, mutation: String, bytes: &[u8]| {
            take_largest();
            IN_CASE.with(|c| c.set(true));
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| parse(bytes)));
            IN_CASE.with(|c| c.set(false));
            let largest = take_largest();
            report.largest_allocation = report.largest_allocation.max(largest);
            let bound = self
                .allocation_slack
                .saturating_add(self.allocation_factor.saturating_mul(bytes.len()));
            let mut problem = None;
            match outcome {
                Ok(Ok(())) => report.accepted += 1,
                Ok(Err(message)) if !names.iter().any(|n| message.contains(n)) => {
                    report.unnamed += 1;
                    problem = Some(format!("error naming none of {names:?}: {message}"));
                }
                Ok(Err(_)) => {}
                Err(payload) => {
                    report.panics += 1;
                    let message = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "(no message)".into());
                    let at = PANIC_AT.with(|p| p.borrow().clone());
                    problem = Some(format!("panicked at {at}: {message}"));
                }
            }
            if largest > bound {
                report.oversized += 1;
                problem.get_or_insert(format!(
                    "allocated {largest} bytes at once for a {}-byte input (bound {bound})",
                    bytes.len()
                ));
            }
            if let Some(problem) = problem {
                if report.failures.len() < 8 {
                    report.failures.push(Failure { mutation, problem });
                }
            }
        };
        for (mutation, bytes) in self.deterministic_cases() {
            check(&mut report, mutation, &bytes);
            report.deterministic += 1;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.rng_seed);
        let start = Instant::now();
        loop {
            let more = match self.budget {
                Budget::Cases(n) => report.random < n,
                Budget::Time(t) => start.elapsed() < t,
            };
            if !more {
                break;
            }
            let (mutation, bytes) = self.random_case(&mut rng);
            let mutation = format!("random #{}: {mutation}", report.random);
            check(&mut report, mutation, &bytes);
            report.random += 1;
        }
        report
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
