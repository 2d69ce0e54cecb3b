//! Group commit under `appendfsync always`: writers each loop SET, then wait until the log
//! is durable up to the tail (`engine.log().wait_durable(engine.tail_addr())`), as a server
//! does before it replies. One writer against sixteen, for each flush writer (pwrite and
//! io_uring). One sync covers every record below the durable address, so sixteen writers
//! should get far more than one writer's ops/s from the same disk.
//!
//! The primary figures are fixed-duration runs, printed to stderr with the SETs per fsync and
//! the per-SET latency: per flush writer, one engine, 0.5 s of warm-up, then
//! `SEGKV_GC_ROUNDS` (default 3) rounds in which every writer count runs for `SEGKV_GC_SECS`
//! (default 2 s), all its writers looping until a stop flag. Interleaving the writer counts
//! makes the ratio robust against the shared disk's ups and downs, and a fixed duration avoids
//! criterion's iteration count being skewed by one slow fsync in its warm-up. The criterion
//! figures that follow are kept for their confidence intervals.
//!
//! The data directory is a temporary directory under `$SEGKV_BENCH_DIR` (default: the system
//! temporary directory); it must be on a real disk, not a tmpfs, for the figure to mean anything.
//! `SEGKV_GC_WRITERS` (default `1,16`) lists the writer counts to run, e.g. `1,2,4,8,16,32`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use segkv_benches::{key, open_engine, value};
use segkv_engine::{Engine, FsyncPolicy, SetOptions, WriterKind};

/// Keys each writer cycles through.
const KEYS_PER_WRITER: usize = 10_000;

/// One durable SET by writer `t`, its `i`th.
fn durable_set(engine: &Engine, t: usize, i: usize) {
    let k = t * KEYS_PER_WRITER + i % KEYS_PER_WRITER;
    engine
        .set(0, &key(k), &value(k, i as u64), SetOptions::default())
        .expect("set");
    engine
        .log()
        .wait_durable(engine.tail_addr())
        .expect("durable");
}

/// `total` durable SETs shared out among `threads` writers; returns the wall time.
fn run_count(engine: &Engine, threads: usize, total: u64) -> Duration {
    let next = AtomicU64::new(0);
    let barrier = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (next, barrier) = (&next, &barrier);
            s.spawn(move || {
                barrier.wait();
                let mut i = 0usize;
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    durable_set(engine, t, i);
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

/// All `threads` writers loop for `secs`; returns (SETs, wall time, per-SET latencies in µs).
fn run_for(engine: &Engine, threads: usize, secs: Duration) -> (u64, Duration, Vec<u32>) {
    let stop = AtomicBool::new(false);
    let barrier = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, barrier) = (&stop, &barrier);
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(1 << 14);
                    barrier.wait();
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        durable_set(engine, t, i);
                        lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        i += 1;
                    }
                    barrier.wait();
                    lat
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        std::thread::sleep(secs);
        stop.store(true, Ordering::Relaxed);
        barrier.wait();
        let wall = t0.elapsed();
        let mut lat: Vec<u32> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer"))
            .collect();
        lat.sort_unstable();
        (lat.len() as u64, wall, lat)
    })
}

#[derive(Default)]
struct Tally {
    ops: u64,
    wall: Duration,
    fsyncs: u64,
    lat: Vec<u32>,
}

fn bench(c: &mut Criterion) {
    let base = std::env::var_os("SEGKV_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let secs = Duration::from_secs_f64(
        std::env::var("SEGKV_GC_SECS").map_or(2.0, |s| s.parse().expect("SEGKV_GC_SECS: seconds")),
    );
    let rounds: usize =
        std::env::var("SEGKV_GC_ROUNDS").map_or(3, |s| s.parse().expect("SEGKV_GC_ROUNDS"));
    let writers: Vec<usize> = std::env::var("SEGKV_GC_WRITERS")
        .unwrap_or_else(|_| "1,16".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("SEGKV_GC_WRITERS: comma-separated writer counts")
        })
        .collect();
    let mut group = c.benchmark_group("group_commit");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let mut summary = Vec::new();
    for (wname, writer) in [("pwrite", WriterKind::Pwrite), ("uring", WriterKind::Uring)] {
        let dir = tempfile::tempdir_in(&base).expect("tempdir");
        let engine = open_engine(dir.path(), FsyncPolicy::Always, writer);
        let expect = if writer == WriterKind::Pwrite {
            "pwrite"
        } else {
            "io_uring"
        };
        assert_eq!(engine.stats().writer, expect);
        run_for(
            &engine,
            writers.iter().copied().max().unwrap_or(1),
            Duration::from_millis(500),
        );
        // Rounds of every writer count in turn, rotating who goes first, so the disk's ups
        // and downs (it is shared) hit every count alike.
        let mut tally: Vec<Tally> = writers.iter().map(|_| Tally::default()).collect();
        for round in 0..rounds {
            for k in 0..writers.len() {
                let w = (k + round) % writers.len();
                let fsyncs0 = engine.stats().fsyncs;
                let (ops, wall, lat) = run_for(&engine, writers[w], secs);
                let t = &mut tally[w];
                t.ops += ops;
                t.wall += wall;
                t.fsyncs += engine.stats().fsyncs - fsyncs0;
                t.lat.extend(lat);
            }
        }
        let first = tally[0].ops as f64 / tally[0].wall.as_secs_f64();
        for (&threads, t) in writers.iter().zip(tally.iter_mut()) {
            t.lat.sort_unstable();
            let rate = t.ops as f64 / t.wall.as_secs_f64();
            let pct = |p: f64| {
                t.lat
                    .get(((t.lat.len() as f64 * p) as usize).min(t.lat.len().saturating_sub(1)))
                    .copied()
            };
            let line = format!(
                "group_commit/{wname}/{threads}_writers: {rate:.0} ops/s = {:.1}x {} writer(s) ({} durable SETs in \
                 {:.1} s, {:.1} SETs per fsync; latency p50 {} us p99 {} us max {} us)",
                rate / first,
                writers[0],
                t.ops,
                t.wall.as_secs_f64(),
                t.ops as f64 / t.fsyncs.max(1) as f64,
                pct(0.5).unwrap_or(0),
                pct(0.99).unwrap_or(0),
                t.lat.last().copied().unwrap_or(0),
            );
            eprintln!("{line}");
            summary.push(line);
        }
        for &threads in &writers {
            group.bench_function(format!("{wname}/{threads}_writers"), |b| {
                b.iter_custom(|iters| run_count(&engine, threads, iters))
            });
        }
    }
    group.finish();
    eprintln!(
        "\nfixed-duration summary ({rounds} rounds of {:.1} s per writer count):",
        secs.as_secs_f64()
    );
    for line in summary {
        eprintln!("{line}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
