//! What the signing and identity benches share: their criterion settings, and a
//! global allocator that counts allocations for their allocations per operation. A
//! bench includes it with `#[path = "common/mod.rs"] mod common;`, which installs the
//! allocator as that bench's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::Criterion;

/// Short runs (1 s warm-up, 2 s measured, 50 samples, no plots), overridable from
/// the command line: each row's mean is steady to a few percent at these settings.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .without_plots()
        .configure_from_args()
}

/// Counts allocations (and reallocations, which are allocations too) process-wide.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged;
// counting has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Mean allocations per call of `op` over `n` calls.
pub fn allocations_per_op(n: u64, mut op: impl FnMut()) -> f64 {
    op(); // warm: caches, lazy statics, thread-locals
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..n {
        op();
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / n as f64
}
