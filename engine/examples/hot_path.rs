//! Single-thread SET then GET of 1M 16-byte keys with 32-byte values, for profiling:
//! `cargo run --release -p segkv-engine --example hot_path` (or under perf record).
use segkv_engine::{Config, Engine, FsyncPolicy, SetOptions};

fn main() {
    let n = 1_000_000u64;
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::new(dir.path());
    c.appendfsync = FsyncPolicy::No;
    let e = Engine::open(c).unwrap();
    let keys: Vec<[u8; 16]> = (0..n)
        .map(|i| (i.wrapping_mul(0x9E3779B97F4A7C15) as u128).to_le_bytes())
        .collect();
    let t = std::time::Instant::now();
    for k in &keys {
        e.set(0, k, &[7u8; 32], SetOptions::default()).unwrap();
    }
    let set_insert = t.elapsed();
    let rounds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let t = std::time::Instant::now();
    for r in 0..rounds {
        for k in &keys {
            e.set(0, k, &[r as u8; 32], SetOptions::default()).unwrap();
        }
    }
    let set_over = t.elapsed() / rounds as u32;
    let t = std::time::Instant::now();
    let mut hits = 0usize;
    for _ in 0..3 {
        for k in &keys {
            hits += e.read(0, k, |c| c.value.len()).unwrap_or(0);
        }
    }
    let get = t.elapsed();
    assert_eq!(hits, 3 * 32 * n as usize);
    let ns = |d: std::time::Duration, ops: u64| d.as_nanos() as f64 / ops as f64;
    println!(
        "insert {:.0} ns/op, overwrite {:.0} ns/op, get {:.0} ns/op",
        ns(set_insert, n),
        ns(set_over, n),
        ns(get, 3 * n)
    );
}
