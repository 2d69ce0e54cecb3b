//! maxmemory, eviction, active expiry, the cleaner and index checkpoints, through the real
//! binary and a real client.

use std::time::{Duration, Instant};

use redis::{Value, cmd};
use segkv_e2e::Server;

fn info_field(con: &mut redis::Connection, section: &str, name: &str) -> u64 {
    let text: String = cmd("INFO").arg(section).query(con).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in INFO {section}:\n{text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

/// Writes `n` keys `prefix:i` with `size`-byte values, pipelined.
fn load(con: &mut redis::Connection, prefix: &str, n: usize, size: usize, ex: Option<u64>) {
    let value = vec![b'v'; size];
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for i in chunk {
            let c = p.cmd("SET").arg(format!("{prefix}:{i:08}")).arg(&value[..]);
            if let Some(s) = ex {
                c.arg("PX").arg(s);
            }
            c.ignore();
        }
        p.query::<()>(con).unwrap();
    }
}

fn dbsize(con: &mut redis::Connection) -> u64 {
    cmd("DBSIZE").query(con).unwrap()
}

#[test]
fn noeviction_refuses_writes_with_redis_error_and_reads_go_on() {
    let s = Server::start(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    let mut c = s.client();
    let mut refused = None;
    let value = vec![b'x'; 1000];
    for i in 0..10_000 {
        match cmd("SET")
            .arg(format!("k{i}"))
            .arg(&value[..])
            .query::<Value>(&mut c)
        {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e.to_string()));
                break;
            }
        }
    }
    let (n, e) = refused.expect("writes past maxmemory were all accepted");
    // The redis crate splits the code from the text ("OOM": command not allowed ...).
    assert!(
        e.contains("OOM") && e.contains("command not allowed when used memory > 'maxmemory'."),
        "{e}"
    );
    assert!(n > 100, "refused after only {n} keys");
    // Reads and deletes still work; a delete makes room again.
    let v: Vec<u8> = cmd("GET").arg("k0").query(&mut c).unwrap();
    assert_eq!(v, value);
    let used = info_field(&mut c, "memory", "used_memory");
    assert!(used > 2 << 20, "used_memory {used}");
    assert_eq!(info_field(&mut c, "stats", "evicted_keys"), 0);
}

#[test]
fn allkeys_lru_keeps_memory_under_maxmemory() {
    let s = Server::start(&[
        "--maxmemory",
        "4mb",
        "--maxmemory-policy",
        "allkeys-lru",
        "--appendfsync",
        "no",
    ]);
    let mut c = s.client();
    // About 20 MB of writes into 4 MB.
    load(&mut c, "k", 200_000, 100, None);
    let evicted = info_field(&mut c, "stats", "evicted_keys");
    assert!(evicted > 100_000, "evicted {evicted}");
    let keys = dbsize(&mut c);
    assert!(keys > 5_000 && keys < 100_000, "dbsize {keys}");
    // The cleaner catches up with the evictions: the data set falls back under the limit.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let used = info_field(&mut c, "memory", "used_memory");
        if used <= 4 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "used_memory stays at {used}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(info_field(&mut c, "stats", "segkv_cleaner_segments_cleaned") > 0);
    // The most recent keys are the ones kept.
    let last: Option<Vec<u8>> = cmd("GET").arg("k:00199999").query(&mut c).unwrap();
    assert!(last.is_some());
}

#[test]
fn expired_keys_leave_dbsize_without_being_read() {
    let s = Server::start(&["--appendfsync", "no"]);
    let mut c = s.client();
    load(&mut c, "persistent", 1_000, 32, None);
    load(&mut c, "wave", 50_000, 32, Some(300));
    assert!(dbsize(&mut c) > 1_000);
    let deadline = Instant::now() + Duration::from_secs(20);
    while dbsize(&mut c) != 1_000 {
        assert!(
            Instant::now() < deadline,
            "dbsize stays at {}",
            dbsize(&mut c)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(info_field(&mut c, "stats", "expired_keys") >= 50_000);
    let keyspace: String = cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    assert!(keyspace.contains("db0:keys=1000,expires=0"), "{keyspace}");
    // CONFIG RESETSTAT starts expired_keys and the cleaner's counters again, as Redis does.
    // (Only counters nothing moves any more: no key is left to expire. The cleaner may still
    // retire a segment meanwhile.)
    assert!(info_field(&mut c, "stats", "segkv_cleaner_keys_expired_by_sweep") > 0);
    cmd("CONFIG").arg("RESETSTAT").query::<()>(&mut c).unwrap();
    for field in ["expired_keys", "segkv_cleaner_keys_expired_by_sweep"] {
        assert_eq!(info_field(&mut c, "stats", field), 0, "{field}");
    }
}

#[test]
fn overwrites_are_compacted_and_survive_a_restart() {
    let mut s = Server::start(&["--segment-size", "1mb", "--appendfsync", "everysec"]);
    let mut c = s.client();
    for _round in 0..8 {
        load(&mut c, "r0", 20_000, 100, None);
    }
    cmd("DEL").arg("r0:00000007").query::<()>(&mut c).unwrap();
    // 8 rounds over the same 20k keys wrote ~20 MB for ~2.5 MB of live data: the cleaner brings
    // the log back to within about twice the live data.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let data = info_field(&mut c, "stats", "segkv_log_data_bytes");
        if data < 6 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the log stays at {data} bytes");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(info_field(&mut c, "stats", "segkv_cleaner_segments_cleaned") > 0);
    // Restart: every key reads as before, the deleted one stays deleted.
    cmd("SAVE").query::<()>(&mut c).unwrap();
    s.restart();
    let mut c = s.client();
    assert_eq!(dbsize(&mut c), 19_999);
    let v: Option<Vec<u8>> = cmd("GET").arg("r0:00000007").query(&mut c).unwrap();
    assert_eq!(v, None);
    let v: Vec<u8> = cmd("GET").arg("r0:00019999").query(&mut c).unwrap();
    assert_eq!(v, vec![b'v'; 100]);
}

#[test]
fn object_freq_and_idletime_track_access() {
    let s = Server::start(&["--maxmemory-policy", "allkeys-lfu"]);
    let mut c = s.client();
    cmd("SET").arg("hot").arg("v").query::<()>(&mut c).unwrap();
    cmd("SET").arg("cold").arg("v").query::<()>(&mut c).unwrap();
    for _ in 0..200 {
        cmd("GET").arg("hot").query::<Value>(&mut c).unwrap();
    }
    let hot: i64 = cmd("OBJECT").arg("FREQ").arg("hot").query(&mut c).unwrap();
    let cold: i64 = cmd("OBJECT").arg("FREQ").arg("cold").query(&mut c).unwrap();
    assert!(hot > cold && cold >= 5, "hot {hot} cold {cold}");
    cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query::<()>(&mut c)
        .unwrap();
    cmd("GET").arg("hot").query::<Value>(&mut c).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let idle: i64 = cmd("OBJECT")
        .arg("IDLETIME")
        .arg("hot")
        .query(&mut c)
        .unwrap();
    assert!((1..=5).contains(&idle), "idle {idle}");
    cmd("GET").arg("hot").query::<Value>(&mut c).unwrap();
    let idle: i64 = cmd("OBJECT")
        .arg("IDLETIME")
        .arg("hot")
        .query(&mut c)
        .unwrap();
    assert!(idle <= 1, "idle {idle} right after a read");
    // Back to LFU at run time: the LRU clocks are not read as counters (Redis's decay to 0).
    cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lfu")
        .query::<()>(&mut c)
        .unwrap();
    let freq: i64 = cmd("OBJECT").arg("FREQ").arg("cold").query(&mut c).unwrap();
    assert_eq!(freq, 0, "a counter made of an LRU clock");
    cmd("SET").arg("new").arg("v").query::<()>(&mut c).unwrap();
    let freq: i64 = cmd("OBJECT").arg("FREQ").arg("new").query(&mut c).unwrap();
    assert_eq!(freq, 5, "a new key starts at LFU_INIT_VAL");
}

#[test]
fn restart_after_shutdown_loads_the_index_checkpoint() {
    let mut s = Server::start(&["--appendfsync", "no"]);
    let mut c = s.client();
    load(&mut c, "k", 50_000, 32, None);
    cmd("DEL").arg("k:00000003").query::<()>(&mut c).unwrap();
    let _ = cmd("SHUTDOWN").query::<Value>(&mut c);
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.alive() {
        assert!(
            Instant::now() < deadline,
            "SHUTDOWN did not stop the server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.restart();
    let mut c = s.client();
    let covered = info_field(&mut c, "persistence", "segkv_checkpoint_loaded_covered");
    assert!(
        covered > 0,
        "the checkpoint written at shutdown was not loaded"
    );
    assert_eq!(dbsize(&mut c), 49_999);
    let v: Option<Vec<u8>> = cmd("GET").arg("k:00000003").query(&mut c).unwrap();
    assert_eq!(v, None);
    let v: Vec<u8> = cmd("GET").arg("k:00049999").query(&mut c).unwrap();
    assert_eq!(v, vec![b'v'; 32]);
    // Writes after the checkpoint, then a crash: the restart loads the same checkpoint and
    // replays what came after it.
    load(&mut c, "n", 1_000, 32, None);
    cmd("DEL").arg("k:00000004").query::<()>(&mut c).unwrap();
    cmd("SAVE").query::<()>(&mut c).unwrap();
    s.kill9();
    s.restart();
    let mut c = s.client();
    assert_eq!(
        info_field(&mut c, "persistence", "segkv_checkpoint_loaded_covered"),
        covered
    );
    assert_eq!(dbsize(&mut c), 50_998);
    let v: Option<Vec<u8>> = cmd("GET").arg("k:00000004").query(&mut c).unwrap();
    assert_eq!(v, None);
    let v: Vec<u8> = cmd("GET").arg("n:00000999").query(&mut c).unwrap();
    assert_eq!(v, vec![b'v'; 32]);
}
