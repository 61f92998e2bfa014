//! Threads that share a decode step's products with the calling thread,
//! handed each product by a spin on an atomic rather than a wake-up.
//!
//! A decode step makes some 120 products of 50–100 µs each. Handed to a
//! thread pool that sleeps between them, each pays a wake-up (a futex,
//! tens of µs) and the pool's idle threads compete with the caller for the
//! cores. Here the caller computes one part itself and the team's threads
//! (one fewer than the cores) the others; a thread that has finished a part
//! spins, waiting for the next, for [`SPIN`] before it sleeps, so within a
//! generation every hand-off costs a cache line, and after it the threads
//! sleep. One caller at a time: a second caller that finds the team busy
//! computes every part itself.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a thread spins, waiting for the next part, before it sleeps.
const SPIN: Duration = Duration::from_millis(2);

/// A part of a job: `f(part)`, run once for each part number.
type Job<'a> = dyn Fn(usize) + Sync + 'a;

/// What the caller and the team's threads share.
struct Shared {
    /// Bumped each time a job is posted.
    epoch: AtomicU64,
    /// The job posted, its lifetime erased (see [`Team::run`]), and its
    /// number of parts.
    job: Mutex<Option<(&'static Job<'static>, usize)>>,
    /// Parts of the posted job not yet finished by the team's threads.
    pending: AtomicUsize,
    /// Whether a part run by a team thread panicked.
    panicked: AtomicBool,
    /// Threads asleep, and their wake-up.
    asleep: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
}

/// The calling thread and `threads` more, sharing parts of a job.
struct Team {
    threads: usize,
    shared: &'static Shared,
    /// Held while a caller runs a job.
    busy: Mutex<()>,
}

/// The process's team: one thread fewer than the cores.
fn team() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Team::new(cores.saturating_sub(1))
    })
}

/// Threads that share [`run`]'s parts, the caller included.
pub(crate) fn width() -> usize {
    team().threads + 1
}

/// `f(0)`, …, `f(parts - 1)`, spread over the calling thread and the
/// team's: part 0 and every part past the team's on the caller. Returns
/// when every part has; a part's panic is raised again here.
pub(crate) fn run(parts: usize, f: &Job<'_>) {
    team().run(parts, f)
}

impl Team {
    fn new(threads: usize) -> Self {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            asleep: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        }));
        let spawned = (0..threads)
            .filter(|&i| {
                std::thread::Builder::new()
                    .name(format!("mac-team-{}", i + 1))
                    .spawn(move || work(shared, i + 1))
                    .is_ok()
            })
            .count();
        Self {
            // Parts are numbered by thread: where one failed to start its
            // part would go unserved, so the caller computes every part.
            threads: if spawned == threads { threads } else { 0 },
            shared,
            busy: Mutex::new(()),
        }
    }

    fn run(&self, parts: usize, f: &Job<'_>) {
        let guard = (parts > 1 && self.threads > 0)
            .then(|| self.busy.try_lock().ok())
            .flatten();
        let Some(_guard) = guard else {
            return each(0..parts, f);
        };
        let shared = self.shared;
        let helped = self.threads.min(parts - 1);
        // SAFETY: the reference is used by the team's threads only while
        // `pending` is non-zero, and this function does not return (nor
        // unwind) before it is zero again; the slot is cleared after.
        let job = unsafe { std::mem::transmute::<&Job<'_>, &'static Job<'static>>(f) };
        *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some((job, parts));
        shared.pending.store(self.threads, SeqCst);
        shared.epoch.fetch_add(1, SeqCst);
        if shared.asleep.load(SeqCst) > 0 {
            let _lock = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        let mine = panic::catch_unwind(AssertUnwindSafe(|| {
            each(std::iter::once(0).chain(helped + 1..parts), f)
        }));
        while shared.pending.load(SeqCst) > 0 {
            std::hint::spin_loop();
        }
        *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let theirs = shared.panicked.swap(false, SeqCst);
        if let Err(payload) = mine {
            panic::resume_unwind(payload);
        }
        if theirs {
            panic::resume_unwind(Box::new("a part of a team job panicked") as Box<dyn Any + Send>);
        }
    }
}

/// Each of `parts` on the calling thread, run even where one before it
/// panicked; the first panic raised again after the last part.
fn each(parts: impl Iterator<Item = usize>, f: &Job<'_>) {
    let mut first = None;
    for part in parts {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| f(part))) {
            first.get_or_insert(payload);
        }
    }
    if let Some(payload) = first {
        panic::resume_unwind(payload);
    }
}

/// A team thread's loop: wait for a job (spinning, then asleep), run its
/// part `part` where it has one, report.
fn work(shared: &'static Shared, part: usize) {
    let mut seen = 0u64;
    loop {
        let since = Instant::now();
        let mut spins = 0u32;
        while shared.epoch.load(SeqCst) == seen {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && since.elapsed() > SPIN {
                let lock = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
                shared.asleep.fetch_add(1, SeqCst);
                let _lock = shared
                    .wake
                    .wait_while(lock, |_| shared.epoch.load(SeqCst) == seen)
                    .unwrap_or_else(|e| e.into_inner());
                shared.asleep.fetch_sub(1, SeqCst);
            }
        }
        seen = shared.epoch.load(SeqCst);
        let job = *shared.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((job, _)) = job.filter(|&(_, parts)| part < parts) {
            if panic::catch_unwind(AssertUnwindSafe(|| job(part))).is_err() {
                shared.panicked.store(true, SeqCst);
            }
        }
        shared.pending.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many times each of `parts` parts ran.
    fn counts(parts: usize) -> Vec<usize> {
        let ran: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
        run(parts, &|p| {
            ran[p].fetch_add(1, SeqCst);
        });
        ran.iter().map(|c| c.load(SeqCst)).collect()
    }

    #[test]
    fn every_part_runs_once_however_many_there_are() {
        for parts in [0, 1, 2, 3, width(), width() + 5] {
            assert_eq!(counts(parts), vec![1; parts], "{parts} parts");
        }
        // After the team's threads have gone to sleep, too.
        std::thread::sleep(SPIN * 3);
        assert_eq!(counts(4), vec![1; 4]);
    }

    #[test]
    fn callers_at_once_each_get_every_part() {
        let callers: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..200).all(|_| counts(3) == [1, 1, 1])))
            .collect();
        for c in callers {
            assert!(c.join().unwrap());
        }
    }

    #[test]
    fn a_part_that_panics_panics_the_caller_after_every_part_is_done() {
        for bad in [0, 1] {
            let done = AtomicUsize::new(0);
            let caught = panic::catch_unwind(AssertUnwindSafe(|| {
                run(2, &|p| {
                    assert_ne!(p, bad, "part {p} fails");
                    done.fetch_add(1, SeqCst);
                })
            }));
            assert!(caught.is_err(), "part {bad}'s panic reached the caller");
            // The other part finished before the caller went on, whether
            // the team ran it or the caller did alone (the team busy).
            assert_eq!(done.load(SeqCst), 1);
        }
        assert_eq!(counts(2), [1, 1], "the team still works after a panic");
    }
}
