//! Restart time: 1M keys (16-byte keys, 32-byte values) are written once and the engine is
//! dropped (which flushes and closes the log cleanly); then `Engine::open` of that directory
//! is timed. Each open scans and CRC-checks every record and rebuilds the index. The files
//! are in the page cache (they were just written), as they are for redis-server's RDB load in
//! `scripts/redis_rdb_load.sh`, the figure this is compared with.

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use segkv_benches::{N_KEYS, load, open_engine};
use segkv_engine::{FsyncPolicy, WriterKind};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let engine = open_engine(dir.path(), FsyncPolicy::No, WriterKind::Auto);
        let t = Instant::now();
        load(&engine, N_KEYS);
        let s = engine.stats();
        eprintln!(
            "wrote {N_KEYS} keys in {:.3} s: log {} B in {} segments",
            t.elapsed().as_secs_f64(),
            s.log_bytes_written,
            s.segments
        );
    }

    let mut group = c.benchmark_group("recovery");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(3));
    let mut reported = Vec::new();
    group.bench_function("open_1M_keys", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let engine = open_engine(dir.path(), FsyncPolicy::No, WriterKind::Auto);
                total += t.elapsed();
                let r = engine.recovery();
                assert_eq!(r.keys_loaded, N_KEYS as u64, "recovery lost keys");
                reported.push(r.seconds);
                drop(engine);
            }
            total
        })
    });
    group.finish();
    reported.sort_by(f64::total_cmp);
    if !reported.is_empty() {
        eprintln!(
            "engine.recovery().seconds over {} opens: min {:.3} median {:.3} max {:.3}",
            reported.len(),
            reported[0],
            reported[reported.len() / 2],
            reported[reported.len() - 1]
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
