//! GET-hit and SET throughput of the segkv engine beside the concurrent maps a Rust user would
//! otherwise reach for: `DashMap<Box<[u8]>, Box<[u8]>>` and papaya's `HashMap<Box<[u8]>,
//! Box<[u8]>>` (one `pin()` per operation), both with their default hasher. 1M keys of 16 bytes,
//! values of 32 bytes; the engine runs with `appendfsync no` in a temporary directory.
//!
//! A GET copies the value out into a reused buffer (what a server does when it writes the
//! reply), so each side pays for one lookup and one 32-byte copy. Keys are visited in a fixed
//! shuffled order. SET/overwrite stores a fresh value under an existing key; SET/insert stores
//! keys never seen before (the structures grow past 1M while it runs).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use dashmap::DashMap;
use segkv_benches::{N_KEYS, key, load, open_engine, shuffled, value};
use segkv_engine::{Engine, FsyncPolicy, SetOptions, WriterKind};

type Papaya = papaya::HashMap<Box<[u8]>, Box<[u8]>>;

struct Fixture {
    _dir: tempfile::TempDir,
    engine: Engine,
    dash: DashMap<Box<[u8]>, Box<[u8]>>,
    papaya: Papaya,
    order: Vec<u32>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open_engine(dir.path(), FsyncPolicy::No, WriterKind::Auto);
    let t = Instant::now();
    load(&engine, N_KEYS);
    eprintln!(
        "load {N_KEYS} fresh keys: segkv {:.3} s ({})",
        t.elapsed().as_secs_f64(),
        engine.stats().writer
    );

    let dash = DashMap::new();
    let t = Instant::now();
    for i in 0..N_KEYS {
        dash.insert(Box::from(&key(i)[..]), Box::from(&value(i, 0)[..]));
    }
    eprintln!(
        "load {N_KEYS} fresh keys: dashmap {:.3} s",
        t.elapsed().as_secs_f64()
    );

    let papaya = Papaya::new();
    let t = Instant::now();
    for i in 0..N_KEYS {
        papaya
            .pin()
            .insert(Box::from(&key(i)[..]), Box::from(&value(i, 0)[..]));
    }
    eprintln!(
        "load {N_KEYS} fresh keys: papaya {:.3} s",
        t.elapsed().as_secs_f64()
    );

    let s = engine.stats();
    eprintln!(
        "segkv after load: keys {} index {} B ({:.1} B/key) log {} B in {} segments",
        s.keys[0],
        s.index_bytes,
        s.index_bytes as f64 / N_KEYS as f64,
        s.log_bytes_written,
        s.segments
    );
    Fixture {
        _dir: dir,
        engine,
        dash,
        papaya,
        order: shuffled(N_KEYS, 0x5e9c),
    }
}

/// A GET: look `i` up and copy its value into `buf`. Panics on a miss (these are all hits).
trait Store: Sync {
    fn get_into(&self, k: &[u8], buf: &mut Vec<u8>);
    fn set(&self, k: &[u8], v: &[u8]);
}

impl Store for Engine {
    #[inline]
    fn get_into(&self, k: &[u8], buf: &mut Vec<u8>) {
        buf.clear();
        self.read(0, k, |c| buf.extend_from_slice(c.value))
            .expect("hit");
    }
    #[inline]
    fn set(&self, k: &[u8], v: &[u8]) {
        Engine::set(self, 0, k, v, SetOptions::default()).expect("set");
    }
}

impl Store for DashMap<Box<[u8]>, Box<[u8]>> {
    #[inline]
    fn get_into(&self, k: &[u8], buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(&self.get(k).expect("hit"));
    }
    #[inline]
    fn set(&self, k: &[u8], v: &[u8]) {
        self.insert(Box::from(k), Box::from(v));
    }
}

impl Store for Papaya {
    #[inline]
    fn get_into(&self, k: &[u8], buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(self.pin().get(k).expect("hit"));
    }
    #[inline]
    fn set(&self, k: &[u8], v: &[u8]) {
        self.pin().insert(Box::from(k), Box::from(v));
    }
}

/// `iters` GETs on each of `threads` threads, each thread starting at its own place in `order`.
/// CPU time this thread has run, in ns (`/proc/thread-self/schedstat`, first field).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `iters` GETs on each of `threads` threads; returns the wall time. With `cpu`, adds the
/// threads' CPU time to it (time a thread spends descheduled by other processes is not CPU
/// time, so CPU time per GET shows how a second thread slows the first down through shared
/// cache lines, independently of how many cores other work leaves free).
fn gets(
    store: &dyn Store,
    order: &[u32],
    threads: usize,
    iters: u64,
    start: &AtomicUsize,
    cpu: Option<&AtomicU64>,
) -> Duration {
    let base = start.fetch_add(iters as usize * threads, Ordering::Relaxed);
    let run = |t: usize| {
        let c0 = cpu.map(|_| thread_cpu_ns());
        let mut buf = Vec::with_capacity(64);
        let mut p = (base + t * (order.len() / threads.max(1))) % order.len();
        for _ in 0..iters {
            store.get_into(&key(order[p] as usize), &mut buf);
            black_box(&buf);
            p += 1;
            if p == order.len() {
                p = 0;
            }
        }
        if let (Some(cpu), Some(c0)) = (cpu, c0) {
            cpu.fetch_add(thread_cpu_ns().saturating_sub(c0), Ordering::Relaxed);
        }
    };
    if threads == 1 {
        let t0 = Instant::now();
        run(0);
        return t0.elapsed();
    }
    let barrier = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (run, barrier) = (&run, &barrier);
            s.spawn(move || {
                barrier.wait();
                run(t);
                barrier.wait();
            });
        }
        barrier.wait();
        let t0 = Instant::now();
        barrier.wait();
        t0.elapsed()
    })
}

/// Operations per store per round of an interleaved comparison.
const BLOCK: u64 = 200_000;
const ROUNDS: u64 = 8;

/// Runs `op(store, round)` (which does `BLOCK` operations per thread and returns the wall
/// time) for every store in turn, `ROUNDS` times, rotating who goes first, and prints each
/// store's throughput and segkv's ratios. Interleaving in short blocks makes the ratios
/// robust against load from other processes that comes and goes (this machine is shared).
fn interleaved(
    label: &str,
    threads: usize,
    names: &[&str],
    mut op: impl FnMut(usize, u64) -> Duration,
) {
    let mut total = vec![Duration::ZERO; names.len()];
    for round in 0..ROUNDS {
        for k in 0..names.len() {
            let s = (k + round as usize) % names.len();
            total[s] += op(s, round);
        }
    }
    let ops = (BLOCK * ROUNDS) as f64 * threads as f64;
    let rate: Vec<f64> = total.iter().map(|t| ops / t.as_secs_f64()).collect();
    let mut line = format!("interleaved {label}:");
    for (n, r) in names.iter().zip(&rate) {
        line += &format!(" {n} {:.3} Mops/s;", r / 1e6);
    }
    for (n, r) in names.iter().zip(&rate).skip(1) {
        line += &format!(" {}/{n} {:.2}x", names[0], rate[0] / r);
    }
    eprintln!("{line}");
}

fn interleaved_all(f: &Fixture, stores: &[(&str, &dyn Store)]) {
    let names: Vec<&str> = stores.iter().map(|s| s.0).collect();
    let mut cpu_per_get = Vec::new();
    for threads in [1usize, 2] {
        let starts: Vec<AtomicUsize> = stores.iter().map(|_| AtomicUsize::new(0)).collect();
        let cpu: Vec<AtomicU64> = stores.iter().map(|_| AtomicU64::new(0)).collect();
        interleaved(&format!("get_hit/{threads}t"), threads, &names, |s, _| {
            gets(
                stores[s].1,
                &f.order,
                threads,
                BLOCK,
                &starts[s],
                Some(&cpu[s]),
            )
        });
        let ops = (BLOCK * ROUNDS * threads as u64) as f64;
        cpu_per_get.push(
            cpu.iter()
                .map(|c| c.load(Ordering::Relaxed) as f64 / ops)
                .collect::<Vec<_>>(),
        );
    }
    let mut line = "CPU ns per GET, 1 thread -> 2 threads:".to_string();
    for (k, n) in names.iter().enumerate() {
        let (one, two) = (cpu_per_get[0][k], cpu_per_get[1][k]);
        line += &format!(" {n} {one:.0} -> {two:.0} ({:.2}x);", two / one);
    }
    eprintln!("{line}");
    let mut pos = vec![0usize; stores.len()];
    interleaved("set_overwrite/1t", 1, &names, |s, round| {
        let store = stores[s].1;
        let t0 = Instant::now();
        for _ in 0..BLOCK {
            let i = f.order[pos[s]] as usize;
            store.set(&key(i), &value(i, 1000 + round));
            pos[s] = (pos[s] + 1) % N_KEYS;
        }
        t0.elapsed()
    });
    // Fresh keys from 10M on: disjoint from the loaded keys and from set_insert's.
    let mut next = vec![10 * N_KEYS; stores.len()];
    interleaved("set_insert/1t", 1, &names, |s, _| {
        let store = stores[s].1;
        let t0 = Instant::now();
        for _ in 0..BLOCK {
            store.set(&key(next[s]), &value(next[s], 0));
            next[s] += 1;
        }
        t0.elapsed()
    });
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    let stores: [(&str, &dyn Store); 3] = [
        ("segkv", &f.engine),
        ("dashmap", &f.dash),
        ("papaya", &f.papaya),
    ];
    if std::env::var_os("SEGKV_BENCH_NO_INTERLEAVED").is_none() {
        interleaved_all(&f, &stores);
    }

    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("get_hit/{threads}t"));
        configure(&mut group);
        // Time is per GET per thread; throughput counts every thread's GETs.
        group.throughput(Throughput::Elements(threads as u64));
        for (name, store) in stores {
            let start = AtomicUsize::new(0);
            group.bench_function(name, |b| {
                b.iter_custom(|iters| gets(store, &f.order, threads, iters, &start, None))
            });
        }
        if threads == 1 {
            // The allocating convenience call, for reference.
            let mut p = 0usize;
            group.bench_function("segkv_get_vec", |b| {
                b.iter(|| {
                    p = (p + 1) % N_KEYS;
                    black_box(f.engine.get(0, &key(f.order[p] as usize)))
                })
            });
        }
        group.finish();
    }

    let mut group = c.benchmark_group("set_overwrite/1t");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    for (name, store) in stores {
        let generation = AtomicU64::new(1);
        let mut p = 0usize;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let g = generation.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                for _ in 0..iters {
                    let i = f.order[p] as usize;
                    store.set(&key(i), &value(i, g));
                    p += 1;
                    if p == N_KEYS {
                        p = 0;
                    }
                }
                t0.elapsed()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("set_insert/1t");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));
    for (name, store) in stores {
        // Fresh keys: numbered from N_KEYS on, disjoint from the loaded set.
        let mut next = N_KEYS;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    store.set(&key(next), &value(next, 0));
                    next += 1;
                }
                t0.elapsed()
            })
        });
        eprintln!(
            "set_insert/1t/{name}: {} keys inserted in all",
            next - N_KEYS
        );
    }
    group.finish();

    let s = f.engine.stats();
    eprintln!(
        "segkv at the end: keys {} index {} B log {} B in {} segments",
        s.keys[0], s.index_bytes, s.log_bytes_written, s.segments
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
