//! Restart time of N keys (default 1M; 16-byte keys, 32-byte values), replaying the whole log
//! and then from an index checkpoint:
//! `cargo run --release -p segkv-engine --example recovery_time [N]`.
use segkv_engine::{Config, Engine, FsyncPolicy, SetOptions};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let cfg = || {
        let mut c = Config::new(dir.path());
        c.appendfsync = FsyncPolicy::No;
        c
    };
    {
        let e = Engine::open(cfg()).unwrap();
        for i in 0..n {
            let k = (i.wrapping_mul(0x9E3779B97F4A7C15) as u128).to_le_bytes();
            e.set(0, &k, &[7u8; 32], SetOptions::default()).unwrap();
        }
    }
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let e = Engine::open(cfg()).unwrap();
        let wall = t.elapsed().as_secs_f64();
        assert_eq!(e.len(0), n);
        println!(
            "open: {wall:.3} s wall, {} keys loaded",
            e.recovery().keys_loaded
        );
    }
    {
        let e = Engine::open(cfg()).unwrap();
        let c = e.checkpoint().unwrap();
        println!(
            "checkpoint: {:.3} s, {} bytes, {} keys",
            c.seconds, c.bytes, c.keys
        );
    }
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let e = Engine::open(cfg()).unwrap();
        let wall = t.elapsed().as_secs_f64();
        assert_eq!(e.len(0), n);
        assert!(e.recovery().checkpoint.is_some());
        println!(
            "open from the checkpoint: {wall:.3} s wall, {} keys loaded",
            e.recovery().keys_loaded
        );
    }
}
