//! What the read path pays per operation for memory reclamation: enter a critical section,
//! make one protected load of an atomic pointer, read through it, leave. crossbeam-epoch
//! (what segkv uses today: `pin()` + `Atomic::load` + drop guard) against seize 0.5
//! (`Collector::enter()` + `Guard::protect` + drop guard), on one thread and on two threads
//! at once (the two-thread figure is the time per operation *per thread*: equal to the
//! one-thread figure when the scheme scales perfectly).

use std::hint::black_box;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use seize::Guard as _;

struct Cb {
    ptr: crossbeam_epoch::Atomic<u64>,
}

impl Cb {
    fn new() -> Self {
        Cb {
            ptr: crossbeam_epoch::Atomic::new(42),
        }
    }
    #[inline]
    fn read(&self) -> u64 {
        let g = crossbeam_epoch::pin();
        let p = self.ptr.load(Ordering::Acquire, &g);
        // SAFETY: the pointer is set in `new`, never replaced, and freed only in `drop`.
        unsafe { *p.deref() }
    }
}

impl Drop for Cb {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no reader is left.
        unsafe {
            drop(
                self.ptr
                    .load(Ordering::Relaxed, crossbeam_epoch::unprotected())
                    .into_owned(),
            )
        }
    }
}

struct Sz {
    collector: seize::Collector,
    ptr: AtomicPtr<u64>,
}

impl Sz {
    fn new() -> Self {
        Sz {
            collector: seize::Collector::new(),
            ptr: AtomicPtr::new(Box::into_raw(Box::new(42))),
        }
    }
    #[inline]
    fn read(&self) -> u64 {
        let g = self.collector.enter();
        let p = g.protect(&self.ptr, Ordering::Acquire);
        // SAFETY: the pointer is set in `new`, never replaced, and freed only in `drop`.
        unsafe { *p }
    }
}

impl Drop for Sz {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no reader is left; the box came from `Box::into_raw`.
        unsafe { drop(Box::from_raw(*self.ptr.get_mut())) }
    }
}

/// Runs `op` `iters` times on each of `threads` threads at once; returns the wall time.
fn concurrent(threads: usize, iters: u64, op: &(impl Fn() -> u64 + Sync)) -> Duration {
    let barrier = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                barrier.wait();
                let mut acc = 0u64;
                for _ in 0..iters {
                    acc = acc.wrapping_add(op());
                }
                black_box(acc);
                barrier.wait();
            });
        }
        barrier.wait();
        let t0 = Instant::now();
        barrier.wait();
        t0.elapsed()
    })
}

/// Rounds of 20M reads per scheme in turn (both thread counts), rotating who goes first, so
/// load from other processes hits both schemes alike; prints ns per read per thread.
fn interleaved(cb: &Cb, sz: &Sz) {
    const N: u64 = 20_000_000;
    const ROUNDS: usize = 5;
    for threads in [1usize, 2] {
        let mut total = [Duration::ZERO; 2];
        for round in 0..ROUNDS {
            for k in 0..2 {
                let which = (k + round) % 2;
                total[which] += if which == 0 {
                    concurrent(threads, N, &|| cb.read())
                } else {
                    concurrent(threads, N, &|| sz.read())
                };
            }
        }
        let ns = |d: Duration| d.as_nanos() as f64 / (N * ROUNDS as u64) as f64;
        eprintln!(
            "interleaved epoch/{threads}t: crossbeam {:.2} ns/op, seize {:.2} ns/op (per thread; seize/crossbeam {:.2}x)",
            ns(total[0]),
            ns(total[1]),
            ns(total[1]) / ns(total[0])
        );
    }
}

fn bench(c: &mut Criterion) {
    let cb = Cb::new();
    let sz = Sz::new();
    if std::env::var_os("SEGKV_BENCH_NO_INTERLEAVED").is_none() {
        interleaved(&cb, &sz);
    }
    let mut group = c.benchmark_group("epoch");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
    group.bench_function("crossbeam_pin_load/1t", |b| {
        b.iter(|| black_box(&cb).read())
    });
    group.bench_function("seize_enter_protect/1t", |b| {
        b.iter(|| black_box(&sz).read())
    });
    // Time is per operation per thread; throughput counts both threads' operations.
    group.throughput(Throughput::Elements(2));
    group.bench_function("crossbeam_pin_load/2t", |b| {
        b.iter_custom(|iters| concurrent(2, iters, &|| cb.read()))
    });
    group.bench_function("seize_enter_protect/2t", |b| {
        b.iter_custom(|iters| concurrent(2, iters, &|| sz.read()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
