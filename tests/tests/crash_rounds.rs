//! Nothing acknowledged is ever lost: 8 writers under `appendfsync always`, the server killed
//! with SIGKILL at pseudo-random moments over many rounds, garbage written after the last record
//! of the newest segment before some restarts. After every restart every write acknowledged in
//! any round is there with its value. With `everysec`, what is lost is bounded to the last
//! moments before the kill.

use redis::cmd;
use segkv_e2e::Server;
use segkv_log::inspect::{Item, segment_files};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn value_of(key: &str) -> String {
    format!("{key}={}", key.len() * 7919 % 1000)
}

/// Writes garbage right after the last valid record of the newest segment that has data,
/// as a torn write would leave it.
fn garbage_after_last_record(dir: &Path, seed: u64) {
    let files = segment_files(dir).unwrap();
    for f in files.iter().rev() {
        let seg = f.load().unwrap();
        let end = seg
            .items(false)
            .iter()
            .filter_map(|i| match i {
                Item::Record { offset, padded, .. } | Item::Invalid { offset, padded } => {
                    Some(offset + *padded as u64)
                }
                Item::Damaged { .. } => None,
            })
            .max();
        if let Some(end) = end {
            let mut bytes = seg.data;
            let garbage: Vec<u8> = (0..97u64)
                .map(|i| (seed.wrapping_mul(31).wrapping_add(i * 131) % 251) as u8 | 0x80)
                .collect();
            let end = end as usize;
            if bytes.len() < end + garbage.len() {
                bytes.resize(end + garbage.len(), 0);
            }
            bytes[end..end + garbage.len()].copy_from_slice(&garbage);
            std::fs::write(&f.path, &bytes).unwrap();
            return;
        }
    }
}

/// Runs 8 writers until `kill_after` writes are acknowledged, kills the server, and returns
/// what was acknowledged: key → (value, when).
fn round(s: &mut Server, round: u32, kill_after: u64) -> HashMap<String, (String, Instant)> {
    let port = s.port;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let mut mine = HashMap::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("r{round}:w{w}:{i}");
                    let value = value_of(&key);
                    if cmd("SET")
                        .arg(&key)
                        .arg(&value)
                        .query::<()>(&mut c)
                        .is_err()
                    {
                        break;
                    }
                    mine.insert(key, (value, Instant::now()));
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                mine
            })
        })
        .collect();
    while acked.load(Ordering::Relaxed) < kill_after && writers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(Duration::from_millis(1));
    }
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect()
}

#[test]
fn sigkill_rounds_under_appendfsync_always_lose_no_acknowledged_write() {
    let mut s = Server::start(&["--appendfsync", "always", "--segment-size", "1mb"]);
    let mut all: HashMap<String, (String, Instant)> = HashMap::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for r in 0..6 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = 500 + rng % 3000;
        all.extend(round(&mut s, r, kill_after));
        if r % 2 == 1 {
            garbage_after_last_record(&s.dir, rng);
        }
        s.restart();
        let mut c = s.client();
        let keys: Vec<&String> = all.keys().collect();
        for chunk in keys.chunks(500) {
            let got: Vec<Option<String>> = cmd("MGET").arg(chunk).query(&mut c).unwrap();
            for (k, v) in chunk.iter().zip(got) {
                assert_eq!(
                    v.as_deref(),
                    Some(all[*k].0.as_str()),
                    "round {r}: acknowledged {k} lost or wrong"
                );
            }
        }
    }
    assert!(all.len() >= 6 * 300);
}

#[test]
fn sigkill_under_everysec_loses_at_most_the_last_moments() {
    let mut s = Server::start(&["--appendfsync", "everysec"]);
    let port = s.port;
    let stop = Arc::new(AtomicBool::new(false));
    // Write for a while so that some writes are seconds older than the kill.
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .unwrap()
                .get_connection()
                .unwrap();
            let mut acked = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("e:{i}");
                if cmd("SET")
                    .arg(&key)
                    .arg(value_of(&key))
                    .query::<()>(&mut c)
                    .is_err()
                {
                    break;
                }
                acked.push((key, Instant::now()));
            }
            acked
        })
    };
    std::thread::sleep(Duration::from_millis(4500));
    let killed_at = Instant::now();
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    s.restart();
    let mut c = s.client();
    // The policy syncs once a second; allow generous slack for a loaded machine.
    let old: Vec<&String> = acked
        .iter()
        .filter(|(_, t)| killed_at.duration_since(*t) > Duration::from_secs(3))
        .map(|(k, _)| k)
        .collect();
    assert!(
        !old.is_empty(),
        "the writer acknowledged nothing in its first second"
    );
    for chunk in old.chunks(500) {
        let got: Vec<Option<String>> = cmd("MGET").arg(chunk).query(&mut c).unwrap();
        for (k, v) in chunk.iter().zip(got) {
            assert_eq!(
                v,
                Some(value_of(k)),
                "{k}, acknowledged over 3 s before the kill, was lost"
            );
        }
    }
}
