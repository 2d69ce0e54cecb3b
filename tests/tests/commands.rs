//! Every command family through a real client library (the `redis` crate) and redis-cli.

use std::process::Command;
use std::time::Duration;

use redis::{Value, cmd};
use segkv_e2e::{Server, installed};

fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut c = cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn err(con: &mut redis::Connection, args: &[&str]) -> String {
    let mut c = cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    match c.query::<Value>(con) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("{args:?} should fail, got {v:?}"),
    }
}

#[test]
fn strings_and_counters() {
    let s = Server::start(&[]);
    let mut c = s.client();
    assert_eq!(q::<String>(&mut c, &["SET", "k", "v"]), "OK");
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "v");
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "k", "w", "GET"]),
        Some("v".into())
    );
    assert_eq!(q::<Option<String>>(&mut c, &["SET", "k", "x", "NX"]), None);
    assert_eq!(q::<i64>(&mut c, &["SETNX", "n", "1"]), 1);
    assert_eq!(q::<i64>(&mut c, &["INCRBY", "n", "41"]), 42);
    assert_eq!(q::<i64>(&mut c, &["DECR", "n"]), 41);
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "n", "0.5"]), "41.5");
    assert_eq!(q::<i64>(&mut c, &["APPEND", "k", "yz"]), 3);
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "k", "1", "-1"]), "yz");
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "k", "5", "!"]), 6);
    assert_eq!(q::<Vec<u8>>(&mut c, &["GET", "k"]), b"wyz\0\0!");
    assert_eq!(q::<String>(&mut c, &["MSET", "a", "1", "b", "2"]), "OK");
    assert_eq!(
        q::<Vec<Option<String>>>(&mut c, &["MGET", "a", "nope", "b"]),
        vec![Some("1".into()), None, Some("2".into())]
    );
    assert_eq!(q::<i64>(&mut c, &["MSETNX", "a", "9", "c", "3"]), 0);
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "c"]), None);
    assert_eq!(q::<String>(&mut c, &["GETDEL", "a"]), "1");
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "a"]), 0);
    assert_eq!(q::<String>(&mut c, &["GETSET", "b", "3"]), "2");
    assert_eq!(q::<i64>(&mut c, &["STRLEN", "b"]), 1);
    assert_eq!(q::<String>(&mut c, &["SUBSTR", "b", "0", "0"]), "3");
    assert!(err(&mut c, &["INCR", "k"]).contains("value is not an integer or out of range"));
    assert!(err(&mut c, &["GET"]).contains("wrong number of arguments for 'get' command"));
    // Binary-safe values.
    let bin: Vec<u8> = (0..=255).collect();
    let _: () = cmd("SET").arg("bin").arg(&bin).query(&mut c).unwrap();
    assert_eq!(cmd("GET").arg("bin").query::<Vec<u8>>(&mut c).unwrap(), bin);
}

#[test]
fn ttl_commands() {
    let s = Server::start(&[]);
    let mut c = s.client();
    q::<()>(&mut c, &["SET", "k", "v", "EX", "100"]);
    let ttl: i64 = q(&mut c, &["TTL", "k"]);
    assert!((90..=100).contains(&ttl), "{ttl}");
    let pttl: i64 = q(&mut c, &["PTTL", "k"]);
    assert!(pttl > 90_000 && pttl <= 100_000, "{pttl}");
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "50", "GT"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "50", "LT"]), 1);
    assert_eq!(q::<i64>(&mut c, &["PERSIST", "k"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "nokey"]), -2);
    assert_eq!(q::<i64>(&mut c, &["EXPIREAT", "k", "4102444800"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), 4102444800);
    assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "k"]), 4102444800000);
    // GETEX changes the TTL and returns the value.
    assert_eq!(q::<String>(&mut c, &["GETEX", "k", "PERSIST"]), "v");
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    // SET clears the TTL, KEEPTTL keeps it.
    q::<()>(&mut c, &["SET", "t", "1", "EX", "100"]);
    q::<()>(&mut c, &["SET", "t", "2", "KEEPTTL"]);
    assert!(q::<i64>(&mut c, &["TTL", "t"]) > 0);
    q::<()>(&mut c, &["SET", "t", "3"]);
    assert_eq!(q::<i64>(&mut c, &["TTL", "t"]), -1);
    // INCR keeps the TTL.
    q::<()>(&mut c, &["SET", "cnt", "1", "EX", "100"]);
    q::<i64>(&mut c, &["INCR", "cnt"]);
    assert!(q::<i64>(&mut c, &["TTL", "cnt"]) > 0);
    // An expiry in the past deletes at once; a short one expires.
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "cnt", "-1"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "cnt"]), 0);
    q::<()>(&mut c, &["SET", "short", "v", "PX", "30"]);
    while q::<i64>(&mut c, &["EXISTS", "short"]) == 1 {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "short"]), None);
}

#[test]
fn keyspace_commands() {
    let s = Server::start(&[]);
    let mut c = s.client();
    for k in [
        "user:1", "user:2", "user:10", "item:1", "hello", "hallo", "hxllo",
    ] {
        q::<()>(&mut c, &["SET", k, "v"]);
    }
    let mut keys: Vec<String> = q(&mut c, &["KEYS", "user:*"]);
    keys.sort();
    assert_eq!(keys, vec!["user:1", "user:10", "user:2"]);
    let mut keys: Vec<String> = q(&mut c, &["KEYS", "h[ae]llo"]);
    keys.sort();
    assert_eq!(keys, vec!["hallo", "hello"]);
    let keys: Vec<String> = q(&mut c, &["KEYS", "h[^e]llo"]);
    assert_eq!(keys.len(), 2);
    // SCAN visits every key exactly as KEYS sees it.
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    loop {
        let (next, batch): (String, Vec<String>) =
            q(&mut c, &["SCAN", &cursor, "MATCH", "user:*", "COUNT", "2"]);
        seen.extend(batch);
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, vec!["user:1", "user:10", "user:2"]);
    let (_, none): (String, Vec<String>) =
        q(&mut c, &["SCAN", "0", "TYPE", "list", "COUNT", "100"]);
    assert!(none.is_empty());
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 7);
    assert_eq!(q::<String>(&mut c, &["TYPE", "hello"]), "string");
    assert_eq!(q::<String>(&mut c, &["TYPE", "nokey"]), "none");
    assert_eq!(q::<i64>(&mut c, &["DEL", "hello", "hallo", "nokey"]), 2);
    assert_eq!(q::<i64>(&mut c, &["UNLINK", "hxllo"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TOUCH", "item:1", "nokey"]), 1);
    q::<()>(&mut c, &["SET", "src", "val", "EX", "100"]);
    q::<()>(&mut c, &["RENAME", "src", "dst"]);
    assert!(
        q::<i64>(&mut c, &["TTL", "dst"]) > 0,
        "RENAME keeps the TTL"
    );
    assert_eq!(q::<i64>(&mut c, &["RENAMENX", "dst", "item:1"]), 0);
    assert_eq!(q::<i64>(&mut c, &["COPY", "dst", "copy"]), 1);
    assert_eq!(q::<i64>(&mut c, &["COPY", "dst", "copy"]), 0);
    assert_eq!(q::<i64>(&mut c, &["COPY", "dst", "copy", "REPLACE"]), 1);
    assert_eq!(q::<i64>(&mut c, &["COPY", "dst", "other", "DB", "3"]), 1);
    assert_eq!(q::<i64>(&mut c, &["MOVE", "copy", "3"]), 1);
    q::<()>(&mut c, &["SELECT", "3"]);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 2);
    q::<()>(&mut c, &["SWAPDB", "0", "3"]);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 5);
    q::<()>(&mut c, &["SELECT", "0"]);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 2);
    assert!(q::<Option<String>>(&mut c, &["RANDOMKEY"]).is_some());
    assert_eq!(
        q::<String>(&mut c, &["OBJECT", "ENCODING", "copy"]),
        "embstr"
    );
    q::<()>(&mut c, &["FLUSHDB"]);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    assert_eq!(q::<Option<String>>(&mut c, &["RANDOMKEY"]), None);
    q::<()>(&mut c, &["FLUSHALL", "ASYNC"]);
    q::<()>(&mut c, &["SELECT", "3"]);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
}

#[test]
fn connection_and_client_commands() {
    let s = Server::start(&[]);
    let mut a = s.client();
    let mut b = s.raw();
    assert_eq!(q::<String>(&mut a, &["PING"]), "PONG");
    assert_eq!(q::<String>(&mut a, &["ECHO", "hi"]), "hi");
    q::<()>(&mut a, &["CLIENT", "SETNAME", "alice"]);
    assert_eq!(q::<String>(&mut a, &["CLIENT", "GETNAME"]), "alice");
    let id_b = String::from_utf8(b.call(&[b"CLIENT", b"ID"])).unwrap();
    let id_b: i64 = id_b.trim().trim_start_matches(':').parse().unwrap();
    let list: String = q(&mut a, &["CLIENT", "LIST"]);
    assert!(list.contains("name=alice"), "{list}");
    assert!(list.contains(&format!("id={id_b} ")), "{list}");
    let info = String::from_utf8(b.call(&[b"CLIENT", b"INFO"])).unwrap();
    assert!(
        info.contains(&format!("id={id_b} ")) && info.contains("cmd=client|info"),
        "{info}"
    );
    assert_eq!(
        q::<i64>(&mut a, &["CLIENT", "KILL", "ID", &id_b.to_string()]),
        1
    );
    assert!(b.closed(), "killed client is disconnected");
    // CLIENT PAUSE WRITE holds writes but not reads; UNPAUSE releases them.
    let mut w = s.client();
    q::<()>(&mut a, &["CLIENT", "PAUSE", "100000", "WRITE"]);
    assert_eq!(q::<Option<String>>(&mut a, &["GET", "x"]), None);
    let t = std::thread::spawn(move || q::<String>(&mut w, &["SET", "x", "1"]));
    let mut r = s.client();
    // The writer is held: its SET has not run, so x stays absent until UNPAUSE.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(q::<Option<String>>(&mut r, &["GET", "x"]), None);
    q::<()>(&mut r, &["CLIENT", "UNPAUSE"]);
    assert_eq!(t.join().unwrap(), "OK");
    assert_eq!(q::<String>(&mut r, &["GET", "x"]), "1");
    assert_eq!(q::<String>(&mut r, &["CLIENT", "NO-TOUCH", "on"]), "OK");
    assert_eq!(q::<String>(&mut r, &["CLIENT", "NO-EVICT", "off"]), "OK");
    // CLIENT REPLY OFF / SKIP.
    let mut raw = s.raw();
    raw.send(b"CLIENT REPLY SKIP\r\nSET y 1\r\nGET y\r\nCLIENT REPLY OFF\r\nGET y\r\nCLIENT REPLY ON\r\n");
    assert_eq!(raw.reply(), b"$1\r\n1\r\n");
    assert_eq!(raw.reply(), b"+OK\r\n");
    // SELECT, RESET, QUIT.
    assert_eq!(raw.call(&[b"SELECT", b"5"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"RESET"]), b"+RESET\r\n");
    assert_eq!(
        raw.call(&[b"GET", b"y"]),
        b"$1\r\n1\r\n",
        "RESET selects db 0"
    );
    assert_eq!(raw.call(&[b"QUIT"]), b"+OK\r\n");
    assert!(raw.closed());
}

#[test]
fn resp3_through_the_client_library() {
    let s = Server::start(&[]);
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{}/?protocol=resp3", s.port)).unwrap();
    let mut c = client.get_connection().unwrap();
    q::<()>(&mut c, &["SET", "k", "v"]);
    assert_eq!(q::<Value>(&mut c, &["GET", "nokey"]), Value::Nil);
    match q::<Value>(&mut c, &["CONFIG", "GET", "port"]) {
        Value::Map(m) => assert_eq!(m.len(), 1),
        v => panic!("CONFIG GET in RESP3 is a map, got {v:?}"),
    }
    match q::<Value>(&mut c, &["HELLO", "3"]) {
        Value::Map(m) => assert_eq!(m.len(), 7),
        v => panic!("HELLO 3 is a map, got {v:?}"),
    }
}

#[test]
fn server_commands() {
    let s = Server::start(&[]);
    let mut c = s.client();
    assert_eq!(
        q::<i64>(&mut c, &["COMMAND", "COUNT"]),
        q::<Vec<Value>>(&mut c, &["COMMAND"]).len() as i64
    );
    let keys: Vec<String> = q(&mut c, &["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"]);
    assert_eq!(keys, vec!["a", "b"]);
    let names: Vec<String> = q(&mut c, &["COMMAND", "LIST", "FILTERBY", "PATTERN", "get*"]);
    assert!(names.contains(&"getex".to_string()));
    let docs: Value = q(&mut c, &["COMMAND", "DOCS", "get"]);
    assert!(matches!(docs, Value::Array(ref v) if v.len() == 2));
    q::<()>(&mut c, &["SET", "k", "v"]);
    q::<Option<String>>(&mut c, &["GET", "k"]);
    q::<Option<String>>(&mut c, &["GET", "nokey"]);
    let info: String = q(&mut c, &["INFO"]);
    for field in [
        "redis_version:",
        "connected_clients:",
        "used_memory_rss:",
        "keyspace_hits:1",
        "keyspace_misses:1",
        "role:master",
        "db0:keys=1,expires=0",
    ] {
        assert!(info.contains(field), "INFO lacks {field}:\n{info}");
    }
    let stats: String = q(&mut c, &["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_get:calls=2,"), "{stats}");
    q::<()>(&mut c, &["CONFIG", "RESETSTAT"]);
    let stats: String = q(&mut c, &["INFO", "commandstats"]);
    assert!(!stats.contains("cmdstat_get:"), "{stats}");
    let (secs, _usec): (u64, u64) = q(&mut c, &["TIME"]);
    assert!(secs > 1_600_000_000);
    assert_eq!(q::<String>(&mut c, &["SAVE"]), "OK");
    assert_eq!(
        q::<String>(&mut c, &["BGSAVE"]),
        "Background saving started"
    );
    assert!(q::<i64>(&mut c, &["LASTSAVE"]) > 1_600_000_000);
    assert_eq!(q::<String>(&mut c, &["FUNCTION", "FLUSH"]), "OK");
    assert_eq!(q::<String>(&mut c, &["DEBUG", "SLEEP", "0"]), "OK");
    q::<()>(
        &mut c,
        &["CONFIG", "SET", "maxmemory", "64mb", "timeout", "0"],
    );
    let v: Vec<String> = q(&mut c, &["CONFIG", "GET", "maxmemory"]);
    assert_eq!(v, vec!["maxmemory", "67108864"]);
}

#[test]
fn config_file_and_rewrite() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("segkv.conf");
    std::fs::write(
        &conf,
        "# my config\nmaxmemory 32mb\nmaxmemory-policy allkeys-lru\n",
    )
    .unwrap();
    let s = Server::start(&[conf.to_str().unwrap()]);
    let mut c = s.client();
    let v: Vec<String> = q(&mut c, &["CONFIG", "GET", "maxmemory-policy"]);
    assert_eq!(v[1], "allkeys-lru");
    q::<()>(&mut c, &["CONFIG", "SET", "maxmemory", "1gb"]);
    q::<()>(&mut c, &["CONFIG", "REWRITE"]);
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("# my config"), "{text}");
    assert!(text.contains("maxmemory 1073741824"), "{text}");
    assert!(text.contains("maxmemory-policy allkeys-lru"), "{text}");
}

#[test]
fn redis_cli_works_unchanged() {
    if !installed("redis-cli") {
        eprintln!("redis-cli not installed: skipped");
        return;
    }
    let s = Server::start(&[]);
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &s.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["SET", "greeting", "hello"]), "OK\n");
    assert_eq!(cli(&["GET", "greeting"]), "hello\n");
    assert_eq!(cli(&["INCR", "visits"]), "1\n");
    assert_eq!(cli(&["--no-raw", "GET", "nokey"]), "(nil)\n");
    assert_eq!(cli(&["-3", "--no-raw", "GET", "nokey"]), "(nil)\n");
    assert!(cli(&["INFO", "server"]).contains("redis_version:"));
    assert_eq!(cli(&["--scan", "--pattern", "greet*"]), "greeting\n");
}

#[test]
fn mget_never_sees_half_an_mset() {
    let s = Server::start(&[]);
    let port = s.port;
    let writer = std::thread::spawn(move || {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        for i in 0..3000 {
            let _: () = cmd("MSET")
                .arg("x")
                .arg(i)
                .arg("y")
                .arg(i)
                .arg("z")
                .arg(i)
                .query(&mut c)
                .unwrap();
        }
    });
    let mut c = s.client();
    let mut reads = 0;
    while !writer.is_finished() || reads < 100 {
        let v: Vec<Option<i64>> = cmd("MGET")
            .arg("x")
            .arg("y")
            .arg("z")
            .query(&mut c)
            .unwrap();
        assert!(
            v[0] == v[1] && v[1] == v[2],
            "MGET saw a partial MSET: {v:?}"
        );
        reads += 1;
    }
    writer.join().unwrap();
}

#[test]
fn concurrent_renames_neither_lose_nor_duplicate_a_key() {
    let s = Server::start(&[]);
    let mut c = s.client();
    q::<()>(&mut c, &["SET", "a", "payload"]);
    let port = s.port;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                for _ in 0..500 {
                    let (from, to) = if t % 2 == 0 { ("a", "b") } else { ("b", "a") };
                    // "no such key" is expected when the other side won the race.
                    let _ = cmd("RENAME").arg(from).arg(to).query::<()>(&mut c);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let a: Option<String> = q(&mut c, &["GET", "a"]);
    let b: Option<String> = q(&mut c, &["GET", "b"]);
    assert!(
        a.is_some() != b.is_some(),
        "exactly one name holds the value: a={a:?} b={b:?}"
    );
    assert_eq!(a.or(b).as_deref(), Some("payload"));
}
