//! GET cost while an index resize is half done, against the same GETs after it finished.
//!
//! At 0054e88 a lookup in the old table walked over MOVED slots like occupied ones, and only
//! writes moved a resize along, so GETs stayed ~650x slower until enough writes came
//! (280 us against 430 ns per GET at 1.17M keys). Since c6e3c92 (MOVED_EMPTY ends a probe run)
//! and reads helping migration, the first GETs of the window pay for migrating chunks and the
//! resize ends within a few thousand reads; the figure printed is the mean over 20k GETs.
//!
//! `cargo run --profile bench -p segkv-benches --example resize_reads [KEYS]`

use std::hint::black_box;
use std::time::Instant;

use segkv_benches::{key, open_engine, shuffled, value};
use segkv_engine::{Engine, FsyncPolicy, SetOptions, WriterKind};

fn time_gets(e: &Engine, keys: usize, n: usize) -> f64 {
    let order = shuffled(keys, 99);
    let t = Instant::now();
    for &i in order.iter().cycle().take(n) {
        black_box(e.read(0, &key(i as usize), |c| c.value.len()).expect("hit"));
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let target: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |s| s.parse().expect("KEYS"));
    let dir = tempfile::tempdir().expect("tempdir");
    let e = open_engine(dir.path(), FsyncPolicy::No, WriterKind::Auto);
    let set = |i: usize, g: u64| {
        e.set(0, &key(i), &value(i, g), SetOptions::default())
            .expect("set");
    };
    // Insert until a resize starts at or after `target` keys (index bytes = old + new table).
    let mut n = 0;
    let mut bytes = e.stats().index_bytes;
    let t = Instant::now();
    let old_bytes = loop {
        set(n, 0);
        n += 1;
        let b = e.stats().index_bytes;
        if b > bytes && n >= target {
            break bytes;
        }
        bytes = b;
    };
    eprintln!(
        "{n} keys inserted in {:.2} s; resize started: table {old_bytes} B -> +{} B",
        t.elapsed().as_secs_f64(),
        e.stats().index_bytes - old_bytes
    );
    let old_slots = old_bytes / 8;
    // Half the migration: one chunk of 256 slots per write.
    let half = (old_slots / 256 / 2) as usize;
    for j in 0..half {
        set(j % n, 1);
    }
    eprintln!(
        "after {half} more writes (about half migrated): index {} B",
        e.stats().index_bytes
    );
    let during = time_gets(&e, n, 20_000);
    let mut writes = 0;
    while e.stats().index_bytes > old_bytes * 2 && writes < 10 * half + 1000 {
        set(writes % n, 2);
        writes += 1;
    }
    eprintln!(
        "resize finished after {writes} more writes: index {} B",
        e.stats().index_bytes
    );
    let after = time_gets(&e, n, 20_000);
    println!(
        "GET hit over {n} keys: {during:.0} ns/op with the resize half done, {after:.0} ns/op after it ({:.1}x)",
        during / after
    );
}
