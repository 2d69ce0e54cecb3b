//! Index memory per key at several key counts: `cargo run --release -p segkv-engine --example index_memory`.
use segkv_engine::{Config, Engine, FsyncPolicy, SetOptions};

fn main() {
    for n in [1_000_000u64, 2_000_000, 3_000_000, 5_000_000, 10_000_000] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::new(dir.path());
        c.appendfsync = FsyncPolicy::No;
        let e = Engine::open(c).unwrap();
        let t = std::time::Instant::now();
        for i in 0..n {
            let key = format!("key:{i:012}");
            e.set(0, key.as_bytes(), &[7u8; 32], SetOptions::default())
                .unwrap();
        }
        let s = e.stats();
        println!(
            "{n:>9} keys: index {:>10} bytes = {:.2} bytes/key (load {:.0}s)",
            s.index_bytes,
            s.index_bytes as f64 / n as f64,
            t.elapsed().as_secs_f64()
        );
    }
}
