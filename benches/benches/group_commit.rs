//! Group commit under `appendfsync always`: writers each loop SET, then wait until the log
//! is durable up to the tail (`engine.log().wait_durable(engine.tail_addr())`), as a server
//! does before it replies. One writer against sixteen, for each flush writer (pwrite and
//! io_uring). One sync covers every record below the durable address, so sixteen writers
//! should get far more than one writer's ops/s from the same disk.
//!
//! The data directory is a temporary directory under `$SEGKV_BENCH_DIR` (default: the system
//! temporary directory); it must be on a real disk, not a tmpfs, for the figure to mean anything.
//! `SEGKV_GC_WRITERS` (default `1,16`) lists the writer counts to run, e.g. `1,2,4,8,16,32`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use segkv_benches::{key, open_engine, value};
use segkv_engine::{Engine, FsyncPolicy, SetOptions, WriterKind};

/// Keys each writer cycles through.
const KEYS_PER_WRITER: usize = 10_000;

/// `total` durable SETs shared out among `threads` writers; returns the wall time.
fn run(engine: &Engine, threads: usize, total: u64) -> Duration {
    let next = AtomicU64::new(0);
    let barrier = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (next, barrier) = (&next, &barrier);
            s.spawn(move || {
                barrier.wait();
                let mut i = 0usize;
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let k = t * KEYS_PER_WRITER + i % KEYS_PER_WRITER;
                    engine
                        .set(0, &key(k), &value(k, i as u64), SetOptions::default())
                        .expect("set");
                    engine
                        .log()
                        .wait_durable(engine.tail_addr())
                        .expect("durable");
                    i += 1;
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let t0 = Instant::now();
        barrier.wait();
        t0.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let base = std::env::var_os("SEGKV_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let mut group = c.benchmark_group("group_commit");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let writers: Vec<usize> = std::env::var("SEGKV_GC_WRITERS")
        .unwrap_or_else(|_| "1,16".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("SEGKV_GC_WRITERS: comma-separated writer counts")
        })
        .collect();
    for (wname, writer) in [("pwrite", WriterKind::Pwrite), ("uring", WriterKind::Uring)] {
        for &threads in &writers {
            let dir = tempfile::tempdir_in(&base).expect("tempdir");
            let engine = open_engine(dir.path(), FsyncPolicy::Always, writer);
            assert_eq!(
                engine.stats().writer,
                if writer == WriterKind::Pwrite {
                    "pwrite"
                } else {
                    "io_uring"
                }
            );
            let (mut ops, mut t) = (0u64, Duration::ZERO);
            let fsyncs0 = engine.stats().fsyncs;
            group.bench_function(format!("{wname}/{threads}_writers"), |b| {
                b.iter_custom(|iters| {
                    let d = run(&engine, threads, iters);
                    ops += iters;
                    t += d;
                    d
                })
            });
            let fsyncs = engine.stats().fsyncs - fsyncs0;
            eprintln!(
                "group_commit/{wname}/{threads}_writers: {ops} durable SETs in {:.2} s = {:.0} ops/s, {fsyncs} fsyncs ({:.1} SETs per fsync)",
                t.as_secs_f64(),
                ops as f64 / t.as_secs_f64(),
                ops as f64 / fsyncs.max(1) as f64
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
