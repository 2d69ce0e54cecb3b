//! The wire protocol: inline commands, pipelining, requests split across writes, malformed
//! input (Redis's error, then the connection is closed, and the server lives on), RESP3.

use std::io::Write;
use std::time::Duration;

use segkv_e2e::{Raw, Redis, Server, encode};

/// Sends `input` and returns everything the server sends back until it closes the connection
/// or goes quiet, plus whether it closed.
fn exchange(port: u16, input: &[u8]) -> (Vec<u8>, bool) {
    let mut raw = Raw::connect(port);
    raw.sock
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    raw.send(input);
    let mut got = Vec::new();
    let mut closed = false;
    loop {
        let mut chunk = [0u8; 4096];
        match std::io::Read::read(&mut raw.sock, &mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Err(_) => break,
        }
    }
    (got, closed)
}

const MALFORMED: &[&[u8]] = &[
    b"*abc\r\n",
    b"*3000000000\r\n",
    b"*1\r\nfoo\r\n",
    b"*1\r\n$-1\r\n",
    b"*1\r\n$abc\r\n",
    b"*1\r\n$01\r\n",
    b"*1\r\n$600000000\r\n",
    b"SET \"a\r\n",
    b"SET 'a'b\r\n",
    b"PING\r\n*x\r\nPING\r\n",
    b"*2\r\n$4\r\nECHO\r\n$3\r\nabcXY*1\r\n$4\r\nPING\r\n",
    b"*-1\r\n*0\r\nPING\r\n",
    b"\r\n\r\nPING\r\n",
    b"  PING  \r\n",
    b"ECHO \"a\\x41\\n\"\r\n",
    b"ECHO 'it\\'s'\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\n\r\n",
];

#[test]
fn malformed_input_gets_redis_error_then_close() {
    let segkv = Server::start(&[]);
    let redis = Redis::start();
    for input in MALFORMED {
        let ours = exchange(segkv.port, input);
        if let Some(r) = &redis {
            let theirs = exchange(r.port, input);
            assert_eq!(
                (String::from_utf8_lossy(&ours.0), ours.1),
                (String::from_utf8_lossy(&theirs.0), theirs.1),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
    // Known answers, also checked without a Redis to compare with.
    let (got, closed) = exchange(segkv.port, b"*abc\r\n");
    assert_eq!(got, b"-ERR Protocol error: invalid multibulk length\r\n");
    assert!(closed);
    let (got, closed) = exchange(segkv.port, b"*1\r\nfoo\r\n");
    assert_eq!(got, b"-ERR Protocol error: expected '$', got 'f'\r\n");
    assert!(closed);
    // And the server still serves.
    assert_eq!(segkv.raw().call(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn too_big_inline_and_length_lines_are_rejected() {
    let segkv = Server::start(&[]);
    let big = vec![b'a'; 70 * 1024];
    let (got, closed) = exchange(segkv.port, &big);
    assert_eq!(got, b"-ERR Protocol error: too big inline request\r\n");
    assert!(closed);
    let mut big = b"*1\r\n$".to_vec();
    big.extend(std::iter::repeat_n(b'1', 70 * 1024));
    let (got, closed) = exchange(segkv.port, &big);
    assert_eq!(got, b"-ERR Protocol error: too big bulk count string\r\n");
    assert!(closed);
}

#[test]
fn proto_max_bulk_len_is_enforced_and_configurable() {
    let segkv = Server::start(&["--proto-max-bulk-len", "1mb"]);
    let (got, closed) = exchange(segkv.port, b"*2\r\n$3\r\nGET\r\n$1048577\r\n");
    assert_eq!(got, b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(closed);
    let mut raw = segkv.raw();
    assert_eq!(
        raw.call(&[b"CONFIG", b"SET", b"proto-max-bulk-len", b"2mb"]),
        b"+OK\r\n"
    );
    let value = vec![b'x'; 1_500_000];
    assert_eq!(raw.call(&[b"SET", b"big", &value]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"STRLEN", b"big"]), b":1500000\r\n");
}

#[test]
fn query_buffer_limit_closes_the_connection() {
    let segkv = Server::start(&["--client-query-buffer-limit", "1mb"]);
    let mut raw = segkv.raw();
    // A bulk argument announced at 4 MB grows the query buffer past the 1 MB limit.
    raw.send(b"*2\r\n$3\r\nSET\r\n$4000000\r\n");
    let chunk = vec![b'x'; 64 * 1024];
    let mut write_failed = false;
    for _ in 0..40 {
        if raw.sock.write_all(&chunk).is_err() {
            write_failed = true;
            break;
        }
    }
    assert!(write_failed || raw.closed(), "connection should be closed");
    assert_eq!(segkv.raw().call(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn inline_commands_and_pipelining() {
    let segkv = Server::start(&[]);
    let mut raw = segkv.raw();
    raw.send(b"SET a 1\r\nINCR a\nGET a\r\n");
    assert_eq!(raw.reply(), b"+OK\r\n");
    assert_eq!(raw.reply(), b":2\r\n");
    assert_eq!(raw.reply(), b"$1\r\n2\r\n");
    // 1000 pipelined commands in one write.
    let mut batch = Vec::new();
    for i in 0..1000 {
        batch.extend(encode(&[b"INCRBY", b"n", i.to_string().as_bytes()]));
    }
    raw.send(&batch);
    let mut sum = 0i64;
    for i in 0..1000 {
        sum += i;
        assert_eq!(raw.reply(), format!(":{sum}\r\n").into_bytes());
    }
}

#[test]
fn a_request_split_across_many_writes_parses_whole() {
    let segkv = Server::start(&[]);
    let mut raw = segkv.raw();
    raw.sock.set_nodelay(true).unwrap();
    let value = b"hello\r\nworld".repeat(100);
    let mut stream = encode(&[b"SET", b"split", &value]);
    stream.extend(b"GET split\r\n");
    for b in &stream {
        raw.send(std::slice::from_ref(b));
    }
    assert_eq!(raw.reply(), b"+OK\r\n");
    let mut want = format!("${}\r\n", value.len()).into_bytes();
    want.extend_from_slice(&value);
    want.extend_from_slice(b"\r\n");
    assert_eq!(raw.reply(), want);
}

#[test]
fn a_slow_reader_does_not_stop_the_server() {
    let segkv = Server::start(&[]);
    let mut raw = segkv.raw();
    let value = vec![b'v'; 100_000];
    assert_eq!(raw.call(&[b"SET", b"big", &value]), b"+OK\r\n");
    // Ask for ~200 MB of replies and read none of them.
    let mut flood = Vec::new();
    for _ in 0..2000 {
        flood.extend(encode(&[b"GET", b"big"]));
    }
    raw.sock
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = raw.sock.write_all(&flood);
    // Other clients are served meanwhile.
    let mut other = segkv.raw();
    assert_eq!(other.call(&[b"PING"]), b"+PONG\r\n");
    // The server held back instead of buffering everything: its memory stays well below 200 MB.
    let info = String::from_utf8(other.call(&[b"INFO", b"memory"])).unwrap();
    let rss: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory_rss:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory_rss");
    assert!(rss < 100 << 20, "rss {rss} grew with the unread replies");
    // And the slow reader still gets every reply, in order.
    for _ in 0..2000 {
        assert_eq!(raw.reply().len(), 100_011);
    }
}

#[test]
fn resp3_after_hello_3() {
    let segkv = Server::start(&[]);
    let mut raw = segkv.raw();
    let hello = raw.call(&[b"HELLO", b"3"]);
    assert!(
        hello.starts_with(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
        "{:?}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(raw.call(&[b"GET", b"nokey"]), b"_\r\n");
    assert_eq!(
        raw.call(&[b"CONFIG", b"GET", b"maxclients"]),
        b"%1\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n"
    );
    let info = raw.call(&[b"INFO", b"server"]);
    assert!(info.starts_with(b"="), "INFO is a verbatim string in RESP3");
    assert_eq!(raw.call(&[b"HELLO", b"2"]).first(), Some(&b'*'));
    assert_eq!(raw.call(&[b"GET", b"nokey"]), b"$-1\r\n");
}

#[test]
fn maxclients_rejects_with_redis_error() {
    let segkv = Server::start(&["--maxclients", "2"]);
    // Wait until the readiness probe's connection is gone, then hold two.
    let mut a = segkv.raw();
    while !String::from_utf8(a.call(&[b"INFO", b"clients"]))
        .unwrap()
        .contains("connected_clients:1\r\n")
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut b = segkv.raw();
    assert_eq!(b.call(&[b"PING"]), b"+PONG\r\n");
    let (got, closed) = exchange(segkv.port, b"PING\r\n");
    assert_eq!(got, b"-ERR max number of clients reached\r\n");
    assert!(closed);
}

fn rss(raw: &mut Raw) -> u64 {
    let info = String::from_utf8(raw.call(&[b"INFO", b"memory"])).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory_rss:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory_rss")
}

#[test]
fn idle_connections_cost_little_memory() {
    let segkv = Server::start(&["--maxclients", "100000"]);
    let mut probe = segkv.raw();
    // Warm up the paths a connection touches, then measure.
    let warm: Vec<Raw> = (0..50).map(|_| segkv.raw()).collect();
    drop(warm);
    let before = rss(&mut probe);
    let mut conns = Vec::new();
    for _ in 0..2000 {
        conns.push(Raw::connect(segkv.port));
    }
    // Every connection has been served once, so the server really holds it.
    for c in conns.iter_mut() {
        c.send(b"PING\r\n");
    }
    for c in conns.iter_mut() {
        assert_eq!(c.reply(), b"+PONG\r\n");
    }
    let after = rss(&mut probe);
    let per_conn = after.saturating_sub(before) / conns.len() as u64;
    assert!(
        per_conn < 8 * 1024,
        "{per_conn} bytes of RSS per idle connection"
    );
}

#[test]
fn output_buffer_hard_limit_closes_the_client() {
    let segkv = Server::start(&[]);
    let mut raw = segkv.raw();
    let value = vec![b'v'; 3 << 20];
    assert_eq!(raw.call(&[b"SET", b"big", &value]), b"+OK\r\n");
    assert_eq!(
        raw.call(&[
            b"CONFIG",
            b"SET",
            b"client-output-buffer-limit",
            b"normal 1mb 0 0"
        ]),
        b"+OK\r\n"
    );
    raw.send(&encode(&[b"GET", b"big"]));
    assert!(
        raw.closed(),
        "a 3 MB reply over a 1 MB hard limit closes the client"
    );
    let mut other = segkv.raw();
    let info = String::from_utf8(other.call(&[b"INFO", b"stats"])).unwrap();
    assert!(
        info.contains("client_output_buffer_limit_disconnections:1"),
        "{info}"
    );
}
