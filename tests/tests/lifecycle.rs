//! Start, stop and crash: SIGTERM / SIGINT / SHUTDOWN flush and exit 0, a restart serves the
//! same data, kill -9 under `appendfsync always` loses no acknowledged write, and a data
//! directory held by another process is refused with a clear message.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redis::cmd;
use segkv_e2e::{Server, server_binary};

#[test]
fn sigterm_flushes_exits_zero_and_restart_keeps_data() {
    let mut s = Server::start(&[]);
    let mut c = s.client();
    for i in 0..100 {
        let _: () = cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("v{i}"))
            .query(&mut c)
            .unwrap();
    }
    let _: () = cmd("SET")
        .arg("ttl")
        .arg("x")
        .arg("EX")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    let _: i64 = cmd("INCRBY").arg("n").arg(42).query(&mut c).unwrap();
    drop(c);
    let status = s.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    s.restart();
    let mut c = s.client();
    for i in 0..100 {
        let v: Option<String> = cmd("GET").arg(format!("k{i}")).query(&mut c).unwrap();
        assert_eq!(v.as_deref(), Some(format!("v{i}").as_str()));
    }
    assert_eq!(cmd("GET").arg("n").query::<String>(&mut c).unwrap(), "42");
    assert!(cmd("TTL").arg("ttl").query::<i64>(&mut c).unwrap() > 900);
    assert_eq!(cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 102);
}

#[test]
fn shutdown_command_exits_zero_and_keeps_data() {
    let mut s = Server::start(&[]);
    let mut raw = s.raw();
    assert_eq!(raw.call(&[b"SET", b"a", b"1"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"DEL", b"a"]), b":1\r\n");
    assert_eq!(raw.call(&[b"SET", b"b", b"2"]), b"+OK\r\n");
    raw.send(b"SHUTDOWN NOSAVE\r\n");
    assert!(raw.closed());
    assert_eq!(s.child.wait().unwrap().code(), Some(0));
    s.restart();
    let mut raw = s.raw();
    assert_eq!(
        raw.call(&[b"GET", b"a"]),
        b"$-1\r\n",
        "a delete survives the restart"
    );
    assert_eq!(raw.call(&[b"GET", b"b"]), b"$1\r\n2\r\n");
}

#[test]
fn sigint_exits_zero() {
    let mut s = Server::start(&[]);
    let status = Command::new("kill")
        .args(["-INT", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(s.child.wait().unwrap().code(), Some(0));
}

#[test]
fn kill_9_with_appendfsync_always_loses_no_acknowledged_write() {
    let mut s = Server::start(&["--appendfsync", "always"]);
    let port = s.port;
    let stop = Arc::new(AtomicBool::new(false));
    let acked_total = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let stop = stop.clone();
        let acked_total = acked_total.clone();
        writers.push(std::thread::spawn(move || {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
            let mut c = client.get_connection().unwrap();
            // (key, value) pairs the server acknowledged, and the last acknowledged counter.
            let mut acked = Vec::new();
            let mut counter = 0i64;
            for i in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("w{w}:{i}");
                if cmd("SET").arg(&key).arg(i).query::<()>(&mut c).is_err() {
                    break;
                }
                acked.push(key);
                match cmd("INCR").arg(format!("counter{w}")).query::<i64>(&mut c) {
                    Ok(v) => counter = v,
                    Err(_) => break,
                }
                acked_total.fetch_add(1, Ordering::Relaxed);
            }
            (acked, counter)
        }));
    }
    // Crash once enough writes are acknowledged, while the writers are still writing.
    while acked_total.load(Ordering::Relaxed) < 2000 && writers.iter().any(|w| !w.is_finished()) {
        std::thread::yield_now();
    }
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    s.restart();
    let mut c = s.client();
    for (w, (acked, counter)) in results.iter().enumerate() {
        for key in acked {
            let v: Option<String> = cmd("GET").arg(key).query(&mut c).unwrap();
            assert!(v.is_some(), "acknowledged write {key} lost after kill -9");
        }
        let after: i64 = cmd("GET")
            .arg(format!("counter{w}"))
            .query::<Option<i64>>(&mut c)
            .unwrap()
            .unwrap_or(0);
        assert!(
            after >= *counter,
            "counter{w}: acknowledged {counter}, found {after} after kill -9"
        );
    }
}

#[test]
fn a_data_directory_held_by_another_server_is_refused() {
    let s = Server::start(&[]);
    let out = Command::new(server_binary())
        .args([
            "--port",
            &segkv_e2e::free_port().to_string(),
            "--dir",
            s.dir.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("locked"),
        "stderr should say the directory is locked: {err}"
    );
    // The first server is unharmed.
    assert_eq!(s.raw().call(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn bad_config_exits_one_with_redis_style_message() {
    let out = Command::new(server_binary())
        .args(["--port", "abc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FATAL CONFIG FILE ERROR")
            && err.contains("argument couldn't be parsed into an integer"),
        "{err}"
    );
    let out = Command::new(server_binary())
        .args(["--nosuchoption", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Bad directive or wrong number of arguments")
    );
}

#[test]
fn idle_clients_are_closed_after_timeout() {
    let s = Server::start(&["--timeout", "1"]);
    let mut idle = s.raw();
    assert_eq!(idle.call(&[b"PING"]), b"+PONG\r\n");
    // The server closes it once it has been idle for more than a second; the read blocks until then.
    assert!(
        idle.closed(),
        "an idle client is closed after `timeout` seconds"
    );
    assert_eq!(s.raw().call(&[b"PING"]), b"+PONG\r\n");
}

fn info_u64(raw: &mut segkv_e2e::Raw, field: &str) -> u64 {
    let info = String::from_utf8(raw.call(&[b"INFO", b"persistence"])).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO lacks {field}"))
}

#[test]
fn under_appendfsync_always_a_write_is_durable_before_its_reply() {
    let s = Server::start(&["--appendfsync", "always"]);
    let mut raw = s.raw();
    for i in 0..50 {
        // Pipelined writes: every reply may only leave once the log holds the write durably.
        raw.send(&segkv_e2e::encode(&[
            b"SET",
            format!("k{i}").as_bytes(),
            b"v",
        ]));
        raw.send(&segkv_e2e::encode(&[b"INCR", b"n"]));
        assert_eq!(raw.reply(), b"+OK\r\n");
        assert_eq!(raw.reply(), format!(":{}\r\n", i + 1).into_bytes());
        // Nothing else writes, so everything in the log is durable by the time the reply came.
        let tail = info_u64(&mut raw, "segkv_tail_addr");
        let durable = info_u64(&mut raw, "segkv_durable_addr");
        assert!(
            durable >= tail,
            "reply sent at durable {durable} < tail {tail}"
        );
    }
}
