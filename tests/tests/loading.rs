//! While the log is replayed at startup the server already accepts connections and answers as
//! Redis does while loading: `-LOADING` to every command without Redis's `loading` flag, INFO
//! shows `loading:1` and the progress; once the data is in memory the same connections get it.
//!
//! Loading is slowed with `key-load-delay` (test only, as in Redis: microseconds per record),
//! and clients are served from the first KiB on (`loading-process-events-interval-bytes`).

use segkv_e2e::Server;
use std::time::{Duration, Instant};

const KEYS: usize = 2000;
const EXPIRING: usize = 10;
const LOADING: &[u8] = b"-LOADING Redis is loading the dataset in memory\r\n";

fn value(i: usize) -> String {
    format!("{i:0>1000}")
}

/// `name:value` fields of an INFO reply.
fn field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::to_string)
}

fn info_persistence(raw: &mut segkv_e2e::Raw) -> String {
    String::from_utf8(raw.call(&[b"INFO", b"persistence"])).unwrap()
}

#[test]
fn clients_get_loading_and_info_shows_progress_until_the_data_is_in_memory() {
    // Several 1 MiB segments of data, and a few keys that will have expired by the restart.
    let opts = ["--segment-size", "1mb"];
    let mut first = Server::start(&opts);
    {
        let mut con = first.client();
        let mut p = redis::pipe();
        for i in 0..KEYS {
            p.cmd("SET").arg(format!("key:{i}")).arg(value(i)).ignore();
        }
        for i in 0..EXPIRING {
            p.cmd("SET")
                .arg(format!("gone:{i}"))
                .arg("v")
                .arg("PX")
                .arg(1)
                .ignore();
        }
        let _: () = p.query(&mut con).unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    assert!(first.terminate().success());
    // A clean shutdown writes an index checkpoint, which would make the restart replay nothing:
    // this test is about replaying the log.
    std::fs::remove_file(first.dir.join("index.ckpt")).unwrap();

    // 1 ms per record: loading takes about KEYS ms unless sped up.
    let srv = Server::start_loading_in(
        &first.dir,
        &[
            "--segment-size",
            "1mb",
            "--key-load-delay",
            "1000",
            "--loading-process-events-interval-bytes",
            "1024",
        ],
    );
    let mut raw = srv.raw();
    let mut con = srv.client();

    // Commands without the loading flag are refused, exactly as Redis refuses them.
    assert_eq!(raw.call(&[b"GET", b"key:1"]), LOADING);
    assert_eq!(raw.call(&[b"PING"]), LOADING);
    assert_eq!(raw.call(&[b"SET", b"new", b"v"]), LOADING);
    assert_eq!(raw.call(&[b"DBSIZE"]), LOADING);
    let err = redis::cmd("GET")
        .arg("key:1")
        .query::<Option<String>>(&mut con)
        .unwrap_err();
    assert_eq!(err.code(), Some("LOADING"), "{err:?}");
    // Lookup and arity errors come first; commands with the loading flag run.
    assert!(
        raw.call(&[b"NOSUCH"])
            .starts_with(b"-ERR unknown command 'NOSUCH'")
    );
    assert!(
        raw.call(&[b"GET"])
            .starts_with(b"-ERR wrong number of arguments")
    );
    assert_eq!(raw.call(&[b"SELECT", b"1"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SELECT", b"0"]), b"+OK\r\n");
    let cfg = raw.call(&[b"CONFIG", b"GET", b"key-load-delay"]);
    assert!(String::from_utf8_lossy(&cfg).contains("1000"), "{cfg:?}");

    // INFO shows the progress, rising, while loading.
    let mut percents = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(800) {
        let info = info_persistence(&mut raw);
        if field(&info, "loading").as_deref() != Some("1") {
            break;
        }
        let perc: f64 = field(&info, "loading_loaded_perc")
            .unwrap()
            .parse()
            .unwrap();
        let total: u64 = field(&info, "loading_total_bytes")
            .unwrap()
            .parse()
            .unwrap();
        let loaded: u64 = field(&info, "loading_loaded_bytes")
            .unwrap()
            .parse()
            .unwrap();
        assert!(total > KEYS as u64 * 1000, "{info}");
        assert!(loaded <= total && (0.0..=100.0).contains(&perc), "{info}");
        assert!(field(&info, "loading_eta_seconds").is_some(), "{info}");
        assert!(field(&info, "loading_start_time").is_some(), "{info}");
        assert_eq!(field(&info, "async_loading").as_deref(), Some("0"));
        percents.push(perc);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        percents.len() >= 3,
        "loading ended too soon to watch: {percents:?}"
    );
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
    assert!(
        percents.last() > percents.first() && *percents.last().unwrap() < 100.0,
        "progress moves: {percents:?}"
    );

    // Speed it up (CONFIG SET works while loading), then the same connections get the data.
    assert_eq!(
        raw.call(&[b"CONFIG", b"SET", b"key-load-delay", b"0"]),
        b"+OK\r\n"
    );
    let t0 = Instant::now();
    while raw.call(&[b"PING"]) != b"+PONG\r\n" {
        assert!(t0.elapsed() < Duration::from_secs(60), "still loading");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in (0..KEYS).step_by(97) {
        let v: String = redis::cmd("GET")
            .arg(format!("key:{i}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(v, value(i));
    }
    let n: usize = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(n, KEYS, "expired keys are not loaded");
    let info = info_persistence(&mut raw);
    assert_eq!(field(&info, "loading").as_deref(), Some("0"), "{info}");
    assert!(field(&info, "loading_loaded_perc").is_none(), "{info}");
    assert_eq!(
        field(&info, "rdb_last_load_keys_loaded"),
        Some(KEYS.to_string())
    );
    // (The engine counts an expired record only when it replaced an older entry of its key,
    // so keys written once with a TTL are not in this figure: only its presence is checked.)
    let expired = field(&info, "rdb_last_load_keys_expired").unwrap();
    assert!(expired.parse::<u64>().is_ok(), "{info}");
    for i in 0..EXPIRING {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("gone:{i}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(v, None, "an expired key is not loaded");
    }
    let stats = String::from_utf8(raw.call(&[b"INFO", b"errorstats"])).unwrap();
    assert!(stats.contains("errorstat_LOADING:count="), "{stats}");
}
