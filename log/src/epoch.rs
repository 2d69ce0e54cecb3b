//! `EpochCell<T>`: a pointer that readers load without locks and writers replace, with the old
//! value freed only once no reader can hold it (crossbeam-epoch). The log's segment table and
//! segment memory, and the engine's index tables, all live in one of these.

use crossbeam_epoch::{Atomic, Guard, Owned, Shared};
use std::sync::atomic::Ordering;

pub use crossbeam_epoch::{Guard as EpochGuard, pin};

/// Hands this thread's deferred frees to the collector and runs those whose readers are gone.
/// Threads that replace big values (segments, index tables) call it, so the memory comes back
/// without waiting for the next hundred pins of this thread.
pub fn flush() {
    pin().flush();
}

/// Waits until every guard pinned before the call has been dropped (values replaced before
/// it can no longer be held by anyone): an RCU synchronize on top of crossbeam's epochs.
pub fn synchronize() {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let g = pin();
        let d = done.clone();
        g.defer(move || d.store(true, Ordering::Release));
        g.flush();
    }
    while !done.load(Ordering::Acquire) {
        pin().flush();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

pub struct EpochCell<T: Send + 'static> {
    ptr: Atomic<T>,
}

impl<T: Send + 'static> EpochCell<T> {
    pub fn new(v: T) -> Self {
        EpochCell {
            ptr: Atomic::new(v),
        }
    }

    /// The current value; valid for as long as `guard` is held.
    pub fn load<'g>(&'g self, guard: &'g Guard) -> &'g T {
        let s = self.ptr.load(Ordering::Acquire, guard);
        // SAFETY: the pointer is never null (set in `new`, only ever swapped for another
        // non-null pointer), and an old value is freed only through `defer_destroy`, i.e. after
        // every guard that could have loaded it (including `guard`) is dropped.
        unsafe { s.deref() }
    }

    /// Installs `v`; the old value is dropped once no reader can see it.
    pub fn replace(&self, v: T, guard: &Guard) {
        let old = self.ptr.swap(Owned::new(v), Ordering::AcqRel, guard);
        // SAFETY: `old` is no longer reachable from the cell; readers that loaded it hold
        // guards, and deferred destruction waits for them.
        unsafe { guard.defer_destroy(old) };
    }

    /// Installs `new` if the cell still holds `current` (compared by address). On success the
    /// old value is dropped once no reader can see it; on failure `new` is returned.
    pub fn compare_replace(&self, current: &T, new: T, guard: &Guard) -> Result<(), T> {
        let cur = Shared::from(current as *const T);
        match self.ptr.compare_exchange(
            cur,
            Owned::new(new),
            Ordering::AcqRel,
            Ordering::Acquire,
            guard,
        ) {
            Ok(_installed) => {
                // crossbeam returns the pointer it wrote; the one replaced is `cur`.
                // SAFETY: as in `replace`: `cur` is no longer reachable from the cell.
                unsafe { guard.defer_destroy(cur) };
                Ok(())
            }
            Err(e) => Err(*e.new.into_box()),
        }
    }
}

impl<T: Send + 'static> Drop for EpochCell<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self` means no other thread can load from this cell any more, and values
        // loaded earlier were bound to guards that ended before the owner could be dropped
        // (the owner outlives every `load` borrow).
        unsafe {
            let g = crossbeam_epoch::unprotected();
            let p = self.ptr.load(Ordering::Relaxed, g);
            if !p.is_null() {
                drop(p.into_owned());
            }
        }
    }
}

impl<T: Send + 'static + std::fmt::Debug> std::fmt::Debug for EpochCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.load(&pin()).fmt(f)
    }
}
