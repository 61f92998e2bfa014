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
//!
//! ```
//! use mac_fuzz::{Budget, Campaign, Kind};
//!
//! #[global_allocator]
//! static ALLOC: mac_fuzz::TrackingAllocator = mac_fuzz::TrackingAllocator;
//!
//! /// `LEN:PAYLOAD` files, read carefully.
//! fn parse(bytes: &[u8]) -> Result<(), String> {
//!     let text = std::str::from_utf8(bytes).map_err(|e| format!("toy.txt: {e}"))?;
//!     let (len, payload) = text.split_once(':').ok_or("toy.txt: no `:`")?;
//!     let len: usize = len.parse().map_err(|e| format!("toy.txt: length: {e}"))?;
//!     match payload.len() == len {
//!         true => Ok(()),
//!         false => Err(format!("toy.txt: {} bytes, not {len}", payload.len())),
//!     }
//! }
//!
//! fn main() {
//!     let report = Campaign::new("toy", b"5:hello", Kind::Text)
//!         .budget(Budget::Cases(200))
//!         .run(&["toy.txt"], parse);
//!     report.assert_passed(); // no panic, no oversized allocation, every error names toy.txt
//!     assert!(report.deterministic + report.random > 200);
//! }
//! ```

mod alloc;
mod mutate;

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use alloc::take_largest;
pub use alloc::{tracking_installed, TrackingAllocator};

thread_local! {
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
