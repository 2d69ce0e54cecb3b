//! A plain loop of GETs or SETs over the benchmark data set, for a profiler:
//!
//! ```text
//! cargo build --profile bench -p segkv-benches --example profile_ops
//! valgrind --tool=callgrind --toggle-collect='*hot_loop*' \
//!     target/release/examples/profile_ops segkv get 200000 200000
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | head -60
//! ```
//!
//! Arguments: `segkv|dashmap|papaya`, `get|set|reopen`, keys to load, operations to run.
//! Only `hot_loop*` is collected, so the load does not show in the profile. `reopen` (segkv
//! only) drops the loaded engine and profiles one `Engine::open` of its directory (recovery).

use std::hint::black_box;
use std::time::Instant;

use dashmap::DashMap;
use segkv_benches::{key, load, open_engine, shuffled, value};
use segkv_engine::{Engine, FsyncPolicy, SetOptions, WriterKind};

type Papaya = papaya::HashMap<Box<[u8]>, Box<[u8]>>;

enum Store {
    Segkv(Box<Engine>),
    Dash(DashMap<Box<[u8]>, Box<[u8]>>),
    Papaya(Papaya),
}

#[inline(never)]
fn hot_loop_open(dir: &std::path::Path) -> Engine {
    open_engine(dir, FsyncPolicy::No, WriterKind::Auto)
}

#[inline(never)]
fn hot_loop(store: &Store, op: &str, order: &[u32]) -> usize {
    let mut buf = Vec::with_capacity(64);
    let mut hits = 0;
    for (n, &i) in order.iter().enumerate() {
        let i = i as usize;
        let k = key(i);
        if op == "get" {
            buf.clear();
            let hit = match store {
                Store::Segkv(e) => e.read(0, &k, |c| buf.extend_from_slice(c.value)).is_some(),
                Store::Dash(m) => m.get(&k[..]).map(|v| buf.extend_from_slice(&v)).is_some(),
                Store::Papaya(m) => m
                    .pin()
                    .get(&k[..])
                    .map(|v| buf.extend_from_slice(v))
                    .is_some(),
            };
            hits += usize::from(hit);
            black_box(&buf);
        } else {
            let v = value(i, n as u64 + 1);
            match store {
                Store::Segkv(e) => {
                    e.set(0, &k, &v, SetOptions::default()).expect("set");
                }
                Store::Dash(m) => {
                    m.insert(Box::from(&k[..]), Box::from(&v[..]));
                }
                Store::Papaya(m) => {
                    m.pin().insert(Box::from(&k[..]), Box::from(&v[..]));
                }
            }
            hits += 1;
        }
    }
    hits
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map_or("segkv", String::as_str);
    let op = args.get(2).map_or("get", String::as_str).to_string();
    let n: usize = args.get(3).map_or(1_000_000, |s| s.parse().expect("keys"));
    let m: usize = args.get(4).map_or(1_000_000, |s| s.parse().expect("ops"));
    let dir = tempfile::tempdir().expect("tempdir");
    if op == "reopen" {
        let e = open_engine(dir.path(), FsyncPolicy::No, WriterKind::Auto);
        load(&e, n);
        drop(e);
        let t = Instant::now();
        let e = hot_loop_open(dir.path());
        println!(
            "segkv reopen of {n} keys: {:.3} s wall, recovery().seconds {:.3}",
            t.elapsed().as_secs_f64(),
            e.recovery().seconds
        );
        return;
    }
    let store = match which {
        "segkv" => {
            let e = open_engine(dir.path(), FsyncPolicy::No, WriterKind::Auto);
            load(&e, n);
            Store::Segkv(Box::new(e))
        }
        "dashmap" => {
            let d = DashMap::new();
            for i in 0..n {
                d.insert(Box::from(&key(i)[..]), Box::from(&value(i, 0)[..]));
            }
            Store::Dash(d)
        }
        "papaya" => {
            let p = Papaya::new();
            for i in 0..n {
                p.pin()
                    .insert(Box::from(&key(i)[..]), Box::from(&value(i, 0)[..]));
            }
            Store::Papaya(p)
        }
        other => panic!("unknown store {other}: segkv, dashmap or papaya"),
    };
    let order: Vec<u32> = shuffled(n, 0x5e9c).into_iter().cycle().take(m).collect();
    let t = Instant::now();
    let hits = hot_loop(&store, &op, &order);
    let d = t.elapsed();
    assert_eq!(hits, m, "every operation should hit");
    println!(
        "{which} {op}: {m} ops over {n} keys in {:.3} s = {:.0} ns/op",
        d.as_secs_f64(),
        d.as_nanos() as f64 / m as f64
    );
}
