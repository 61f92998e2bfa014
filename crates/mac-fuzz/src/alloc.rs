//! The allocator that sees each case's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
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
pub(crate) fn take_largest() -> usize {
    LARGEST.with(|c| c.replace(0))
}

/// Whether [`TrackingAllocator`] is this binary's global allocator.
pub fn tracking_installed() -> bool {
    take_largest();
    let probe = std::hint::black_box(vec![0u8; 3 << 20]);
    drop(probe);
    take_largest() >= 3 << 20
}
