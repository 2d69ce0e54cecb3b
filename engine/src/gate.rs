//! The writer gate: every write operation enters it (a per-thread-shard counter, no shared
//! cache line on the hot path); the rare operations that need a clean cut through the stream
//! of writes (FLUSHDB, FLUSHALL, SWAPDB, starting an index resize) close it, which waits for
//! the writes in flight to finish and holds new ones back for the few microseconds the cut takes.
//! Readers never touch the gate.

use std::cell::Cell;

use crate::sync::{AtomicBool, AtomicUsize, Mutex, MutexGuard, Ordering};

const SHARDS: usize = 64;

#[repr(align(128))]
#[derive(Default)]
struct Shard(AtomicUsize);

pub(crate) struct Gate {
    closed: AtomicBool,
    closers: Mutex<()>,
    shards: Box<[Shard]>,
}

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Hands out shards to threads (not part of the protocol: any assignment is correct).
static NEXT_SHARD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn my_shard() -> usize {
    SHARD.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        s.get()
    })
}

pub(crate) struct Entered<'a> {
    gate: &'a Gate,
    shard: usize,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.gate.shards[self.shard]
            .0
            .fetch_sub(1, Ordering::Release);
    }
}

pub(crate) struct Closed<'a> {
    gate: &'a Gate,
    _serial: MutexGuard<'a, ()>,
}

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.gate.closed.store(false, Ordering::SeqCst);
    }
}

impl Gate {
    pub(crate) fn new() -> Gate {
        Gate {
            closed: AtomicBool::new(false),
            closers: Mutex::new(()),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    /// Enter for one write operation. Never call `close` while holding this.
    pub(crate) fn enter(&self) -> Entered<'_> {
        let shard = my_shard();
        let c = &self.shards[shard].0;
        loop {
            c.fetch_add(1, Ordering::SeqCst);
            if !self.closed.load(Ordering::SeqCst) {
                return Entered { gate: self, shard };
            }
            c.fetch_sub(1, Ordering::SeqCst);
            while self.closed.load(Ordering::SeqCst) {
                crate::sync::yield_now();
            }
        }
    }

    /// Waits for the writes in flight and holds back new ones until the result is dropped.
    pub(crate) fn close(&self) -> Closed<'_> {
        let serial = self.closers.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, Ordering::SeqCst);
        for s in self.shards.iter() {
            let mut spins = 0u32;
            while s.0.load(Ordering::SeqCst) != 0 {
                spins += 1;
                if spins < 100 {
                    crate::sync::spin_loop();
                } else {
                    crate::sync::yield_now();
                }
            }
        }
        Closed {
            gate: self,
            _serial: serial,
        }
    }
}

#[cfg(all(test, not(shuttle)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    /// While the gate is closed no writer is inside: the writers' "inside" count, read by the
    /// closer, is always zero.
    #[test]
    fn close_excludes_every_writer() {
        let gate = Arc::new(Gate::new());
        let inside = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (gate, inside, stop) = (gate.clone(), inside.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _e = gate.enter();
                        inside.fetch_add(1, Ordering::SeqCst);
                        std::hint::spin_loop();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for _ in 0..2000 {
            let _c = gate.close();
            assert_eq!(inside.load(Ordering::SeqCst), 0);
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
    }
}
