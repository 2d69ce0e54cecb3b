//! The synchronization primitives of the index and the writer gate, in one place so that a
//! model checker can replace them. A normal build re-exports `std`'s (and the helpers below are
//! the plain `std` calls, inlined). Built with `RUSTFLAGS="--cfg shuttle"` they come from
//! [shuttle](https://docs.rs/shuttle), which runs the threads of a test one at a time and picks
//! who runs next at every operation on these types: see `run-shuttle.sh` and
//! `tests/shuttle_index.rs`.
//!
//! Under shuttle every atomic behaves as `SeqCst` (shuttle does not model weaker orderings),
//! and every wait must call [`yield_now`] or [`spin_loop`]: shuttle runs one thread at a time,
//! so a loop that only re-reads memory would never let the thread it waits for run.

#[cfg(not(shuttle))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(shuttle))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(shuttle)]
pub(crate) use shuttle::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
#[cfg(shuttle)]
pub(crate) use shuttle::sync::{Mutex, MutexGuard};

/// `std::thread::yield_now`; under shuttle, a switch to another of the model's threads.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(shuttle))]
    std::thread::yield_now();
    #[cfg(shuttle)]
    shuttle::thread::yield_now();
}

/// `std::hint::spin_loop`; under shuttle, a switch to another of the model's threads (a spin
/// that re-reads memory would otherwise never let the thread it waits for run).
#[inline(always)]
pub(crate) fn spin_loop() {
    #[cfg(not(shuttle))]
    std::hint::spin_loop();
    #[cfg(shuttle)]
    shuttle::hint::spin_loop();
}

/// A point where the model checker may switch threads, before an access to shared state that
/// does not go through the types above (the `EpochCell` of the current table, a table's
/// `OnceLock` link to the next one). Nothing at all in a normal build.
#[inline(always)]
pub(crate) fn model_point() {
    // shuttle does not model time: a zero sleep is a plain context switch (unlike `yield_now`,
    // which also tells the PCT scheduler to deprioritize this thread).
    #[cfg(shuttle)]
    shuttle::thread::sleep(std::time::Duration::ZERO);
}
