//! A 512 MB value round-trips through set, get and a restart:
//! `cargo run --release -p segkv-engine --example big_value [MB]`.
use segkv_engine::{Config, Engine, FsyncPolicy, SetOptions};

fn main() {
    let mb: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(512);
    let dir = tempfile::tempdir().unwrap();
    let cfg = || {
        let mut c = Config::new(dir.path());
        c.appendfsync = FsyncPolicy::EverySec;
        c
    };
    let value: Vec<u8> = (0..mb << 20).map(|i| (i % 251) as u8).collect();
    let t = std::time::Instant::now();
    {
        let e = Engine::open(cfg()).unwrap();
        e.set(0, b"small-before", b"1", SetOptions::default())
            .unwrap();
        e.set(0, b"big", &value, SetOptions::default()).unwrap();
        e.set(0, b"small-after", b"2", SetOptions::default())
            .unwrap();
        assert!(e.read(0, b"big", |c| c.value == &value[..]).unwrap());
        e.sync().unwrap();
    }
    println!("wrote {mb} MB value in {:.2} s", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let e = Engine::open(cfg()).unwrap();
    assert!(e.read(0, b"big", |c| c.value == &value[..]).unwrap());
    assert_eq!(e.get(0, b"small-after").as_deref(), Some(&b"2"[..]));
    println!(
        "reopened and verified in {:.2} s; segments: {}",
        t.elapsed().as_secs_f64(),
        e.stats().segments
    );
}
