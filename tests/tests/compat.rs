//! Byte-for-byte comparison with a real Redis 7: the same command script runs against
//! segkv-server and redis-server (when installed), and every reply must be identical.

use segkv_e2e::{Raw, Redis, Server};
use segkv_server::resp::split_args;

/// Deterministic commands covering every family, errors included. One command per line, in
/// redis-cli quoting. Lines starting with `#` are comments.
const SCRIPT: &str = r#"
# strings
SET k v
GET k
GET missing
SET k v2 GET
SET k v3 NX
SET k v3 NX GET
SET newk v XX
SET k v EX 0
SET k v EX -5
SET k v PX abc
SET k v EX 10 PX 10
SET k v KEEPTTL EX 10
SET k v FOO
SET k v EX
SET k v EXAT 99999999999
SET k v NX XX
SETNX k x
SETNX k2 x
SETEX k 0 v
SETEX k abc v
SETEX k 100 v
PSETEX k 0 v
PSETEX k 100000 v
GETSET k new
GETSET nokey x
GETDEL k
GETDEL k
GETEX k2
GETEX k2 EX 0
GETEX k2 PERSIST EX 5
GETEX k2 NX
GETEX nokey EX 10
GETEX k2 PERSIST
MSET a 1 b 2 c 3
MSET a 1 b
MGET a b nokey c
MSETNX a 1 z 2
MSETNX y 1 z 2
APPEND a xyz
APPEND newappend abc
STRLEN a
STRLEN nokey
SET s "Hello World"
GETRANGE s 0 4
GETRANGE s -5 -1
GETRANGE s 5 1
GETRANGE s -1 -5
GETRANGE s 0 100
GETRANGE s x 1
GETRANGE nokey 0 -1
SUBSTR s 0 -1
SETRANGE s 6 Redis
GET s
SETRANGE s 20 x
GET s
SETRANGE s -1 x
SETRANGE nokey2 0 ""
EXISTS nokey2
SETRANGE s 1 ""
INCR cnt
INCR cnt
INCRBY cnt 10
INCRBY cnt abc
INCRBY cnt 1.5
DECR cnt
DECRBY cnt 3
DECRBY cnt -9223372036854775808
SET big 9223372036854775807
INCR big
SET neg -9223372036854775808
DECR neg
INCR s
SET f 10.5
INCRBYFLOAT f 0.1
INCRBYFLOAT f -5
INCRBYFLOAT f abc
INCRBYFLOAT f inf
INCRBYFLOAT s 1
SET f2 0.1
INCRBYFLOAT f2 0.2
INCRBYFLOAT newf 3
SET f3 12345.6
INCRBYFLOAT f3 0.1
INCRBYFLOAT f3 1e300
INCRBYFLOAT f3 -1e300
INCRBYFLOAT f3 1.5e-10
INCRBYFLOAT f3 -12345.7
INCRBYFLOAT f3 +7
INCRBYFLOAT f3 1e5000
INCRBYFLOAT f3 1.1e4932
INCRBYFLOAT f3 1.1e4932
INCRBYFLOAT f3 .5
INCRBYFLOAT f3 5.
SET sp " 1"
INCR sp
INCRBYFLOAT sp 1
SET lz 01
INCR lz
GET
SET k
MGET
MSET
# keyspace
FLUSHALL
MSET a 1 b 2 c 3
DEL a nokey b
UNLINK c
EXISTS a b c
SET a 1
EXISTS a a a
TYPE a
TYPE nokey
TOUCH a nokey
RENAME a b
GET b
RENAME nokey x
RENAME b b
RENAMENX b b
SET c 3
RENAMENX b c
RENAMENX b d
COPY d e
COPY d e
COPY d e REPLACE
COPY d d
COPY d e DB 100
COPY d e DB x
COPY d e FOO
COPY d e DB 1
SELECT 1
GET e
SELECT 0
MOVE d 0
MOVE d 100
MOVE d x
MOVE d 2
MOVE d 2
MOVE nokey 2
KEYS
DBSIZE
FLUSHDB
FLUSHDB ASYNC
FLUSHDB SYNC
FLUSHDB FOO
FLUSHALL FOO
FLUSHALL SYNC BAR
DBSIZE
RANDOMKEY
SWAPDB 0 1
SWAPDB a 1
SWAPDB 1 a
SWAPDB 0 100
SWAPDB 0 -1
SCAN abc
SCAN 0 COUNT 0
SCAN 0 COUNT x
SCAN 0 MATCH
SCAN 0 FOO bar
SET one 1
OBJECT ENCODING one
SET emb abcdefghijabcdefghijabcdefghijabcdefghij1234
OBJECT ENCODING emb
SET raw abcdefghijabcdefghijabcdefghijabcdefghij12345
OBJECT ENCODING raw
OBJECT ENCODING nokey
OBJECT REFCOUNT one
OBJECT REFCOUNT raw
OBJECT REFCOUNT nokey
OBJECT FREQ one
CONFIG SET maxmemory-policy allkeys-lfu
SET lfu1 a
OBJECT FREQ lfu1
GET lfu1
OBJECT FREQ lfu1
CONFIG SET maxmemory-policy noeviction
OBJECT IDLETIME nokey
OBJECT FOO one
OBJECT HELP
OBJECT
# expire
SET e v
EXPIRE e 100
PTTL nokey
TTL one
EXPIRE e 100 NX
EXPIRE e 100 XX
EXPIRE e 50 GT
EXPIRE e 500 GT
EXPIRE e 1000 LT
EXPIRE e 10 LT
EXPIRE e 10 NX XX
EXPIRE e 10 GT LT
EXPIRE e 10 FOO
EXPIRE e abc
EXPIRE e 9223372036854775807
EXPIRE nokey 10
EXPIRE one 100 GT
EXPIRE one 100 XX
EXPIRE one 100 LT XX
PEXPIRE e 100000
EXPIREAT e 99999999999
EXPIRETIME e
PEXPIRETIME e
PEXPIREAT e 99999999999000
PEXPIRETIME e
EXPIRETIME one
EXPIRETIME nokey
PERSIST e
PERSIST e
PERSIST nokey
TTL e
EXPIRE e -1
EXISTS e
SET e2 v
PEXPIREAT e2 1
GET e2
# connection
PING
PING hello
PING a b
ECHO hi
ECHO
SELECT 16
SELECT -1
SELECT x
SELECT 0
CLIENT SETNAME "a b"
CLIENT SETNAME myname
CLIENT GETNAME
CLIENT FOO
CLIENT
CLIENT NO-EVICT maybe
CLIENT NO-EVICT on
CLIENT PAUSE abc
CLIENT PAUSE -1
CLIENT PAUSE 10 FOO
CLIENT KILL 1.2.3.4:5
CLIENT KILL ID abc
CLIENT KILL ID 999999
CLIENT KILL FOO bar
CLIENT LIST TYPE foo
CLIENT LIST ID abc
CLIENT REPLY foo
CLIENT HELP
HELLO 4
HELLO abc
HELLO 2 AUTH foo bar
HELLO 2 SETNAME "a b"
HELLO 2 FOO
# server
COMMAND COUNT x
COMMAND INFO get set nosuchcommand
COMMAND INFO config|get
COMMAND DOCS get incrbyfloat nosuch
COMMAND GETKEYS get
COMMAND GETKEYS ping
COMMAND GETKEYS foo
COMMAND GETKEYS get k
COMMAND GETKEYS mset a 1 b 2
COMMAND GETKEYS rename a b
COMMAND GETKEYS set k
COMMAND LIST FILTERBY foo bar
COMMAND LIST FILTERBY aclcat
COMMAND HELP
CONFIG GET
CONFIG GET maxmemory
CONFIG GET maxmemory-policy
CONFIG SET databases 1
CONFIG SET foo 1
CONFIG SET maxclients abc
CONFIG SET maxmemory abc
CONFIG SET maxmemory-policy abc
CONFIG SET maxmemory-samples 0
CONFIG SET maxmemory-samples 2000
CONFIG GET maxmemory-samples
CONFIG SET maxmemory-samples 5
CONFIG SET appendonly maybe
CONFIG SET maxclients 10 maxclients 11
CONFIG SET timeout -1
CONFIG SET proto-max-bulk-len 1
CONFIG SET client-output-buffer-limit "normal 1 2"
CONFIG SET save abc
CONFIG SET maxmemory 1gb
CONFIG GET maxmemory
CONFIG SET maxmemory 0
CONFIG REWRITE
CONFIG HELP
CONFIG FOO
FUNCTION FLUSH
FUNCTION FLUSH ASYNC
FUNCTION FLUSH FOO
SHUTDOWN ABORT
SHUTDOWN FOO
LASTSAVE x
TIME x
DEBUG
# edge cases
FLUSHALL
SET k v PXAT 1
GET k
SET k v
GETEX k EXAT 1
GET k
SET k v
GETEX k PXAT 99999999999999
SET k v PX 9223372036854775807
SET k v EX 9223372036854775
SETEX k -1 v
PSETEX k 9223372036854775807 v
PEXPIRE k 9223372036854775807
EXPIRE k 9223372036854775
EXPIREAT k -1
SET k v
EXPIREAT k 9223372036854775807
PEXPIREAT k 9223372036854775807
SETRANGE k 536870912 x
SETRANGE k 536870911 ""
GETRANGE k 0 9223372036854775807
GETRANGE k -9223372036854775808 -1
GETRANGE k 1 0
SET i 12345678901234567890
OBJECT ENCODING i
INCR i
SET i " 1"
OBJECT ENCODING i
SET i -0
OBJECT ENCODING i
INCR i
SET i 1.5
OBJECT ENCODING i
INCRBY i 1
INCRBYFLOAT i 1
SET i 0x10
INCRBYFLOAT i 1
KEYS i
KEYS i*
KEYS *x*
KEYS [
KEYS \\
EXISTS i i nokey i
DEL i i
MSETNX m1 a m1 b
GET m1
MSETNX m1 x
SET "" empty
GET ""
KEYS ""
DEL ""
RENAME nokey nokey
RENAMENX nokey other
SET t v EXAT 99999999999
RENAME t t2
EXPIRETIME t2
COPY t2 t3
EXPIRETIME t3
MOVE t3 1
SELECT 1
EXPIRETIME t3
SELECT 0
ECHO ""
PING ""
SELECT 00
SELECT 1.0
CLIENT SETNAME ok
CLIENT GETNAME
HELLO 2 AUTH default
CLIENT REPLY ON
CLIENT NO-EVICT off
CLIENT UNPAUSE
CLIENT PAUSE 0
CLIENT PAUSE 0 WRITE x
CLIENT KILL ID 0
CLIENT KILL SKIPME maybe
CLIENT KILL MAXAGE x
CLIENT KILL USER nosuch
CLIENT KILL USER default SKIPME yes
CLIENT LIST TYPE pubsub
CLIENT LIST ID 999999
CLIENT LIST TYPE
CLIENT LIST TYPE normal ID 1
CLIENT LIST FOO
SET i 0x1.8p1
INCRBYFLOAT i 0x10
INCRBYFLOAT i -0X1P-2
INCRBYFLOAT i 0x
TYPE nokey
TOUCH nokey
UNLINK nokey
DBSIZE x
RANDOMKEY x
FLUSHALL
DBSIZE
SCAN 0 COUNT 9223372036854775807
SET only 1
SCAN 0 COUNT 9223372036854775807 MATCH on* TYPE STRING
KEYS only
# unknown commands
FOO
FOO bar baz
FOO aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb cccc
"#;

fn run(raw: &mut Raw, line: &str) -> Vec<u8> {
    let args = split_args(line.as_bytes()).expect("script line parses");
    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    raw.call(&refs)
}

fn script_lines(s: &str) -> impl Iterator<Item = &str> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn compare(script: &str, resp3: bool) {
    let Some(redis) = Redis::start() else {
        eprintln!("redis-server is not installed: skipping the byte-for-byte comparison");
        return;
    };
    let segkv = Server::start(&[]);
    let (mut a, mut b) = (segkv.raw(), redis.raw());
    if resp3 {
        let _ = run(&mut a, "HELLO 3");
        let _ = run(&mut b, "HELLO 3");
    }
    let mut diffs = Vec::new();
    for line in script_lines(script) {
        let (ours, theirs) = (run(&mut a, line), run(&mut b, line));
        if ours != theirs {
            // Show the replies from a little before their first difference.
            let at = ours
                .iter()
                .zip(&theirs)
                .position(|(x, y)| x != y)
                .unwrap_or(ours.len().min(theirs.len()));
            let from = at.saturating_sub(60);
            let show =
                |b: &[u8]| String::from_utf8_lossy(&b[from..b.len().min(at + 120)]).into_owned();
            diffs.push(format!(
                "{line}\n  at byte {at}\n  segkv: {:?}\n  redis: {:?}",
                show(&ours),
                show(&theirs)
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} replies differ from Redis:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn every_reply_matches_redis_byte_for_byte_resp2() {
    compare(SCRIPT, false);
}

#[test]
fn every_reply_matches_redis_byte_for_byte_resp3() {
    compare(SCRIPT, true);
}

/// Parses a flat RESP array of bulk strings into its items.
fn bulk_items(reply: &[u8]) -> Vec<Vec<u8>> {
    let mut items = Vec::new();
    let mut pos = reply.iter().position(|&b| b == b'\n').unwrap() + 1;
    while pos < reply.len() {
        let nl = pos + reply[pos..].iter().position(|&b| b == b'\n').unwrap();
        let len: usize = std::str::from_utf8(&reply[pos + 1..nl - 1])
            .unwrap()
            .parse()
            .unwrap();
        items.push(reply[nl + 1..nl + 1 + len].to_vec());
        pos = nl + 1 + len + 2;
    }
    items
}

#[test]
fn keys_glob_matching_agrees_with_redis() {
    let Some(redis) = Redis::start() else {
        eprintln!("redis-server is not installed: skipping");
        return;
    };
    let segkv = Server::start(&[]);
    let (mut a, mut b) = (segkv.raw(), redis.raw());
    let keys: &[&[u8]] = &[
        b"",
        b"a",
        b"b",
        b"ab",
        b"abc",
        b"aXc",
        b"a*c",
        b"a?c",
        b"a[c",
        b"a]c",
        b"a\\c",
        b"a-c",
        b"hello",
        b"hallo",
        b"hxllo",
        b"Hello",
        b"user:1",
        b"user:10",
        b"user:2:x",
        b"\x80",
        b"\xff",
        b"a\x00b",
        b"^",
        b"[",
        b"]",
        b"-",
    ];
    for k in keys {
        a.call(&[b"SET", k, b"1"]);
        b.call(&[b"SET", k, b"1"]);
    }
    let patterns: &[&[u8]] = &[
        b"*",
        b"?",
        b"??",
        b"a*",
        b"*c",
        b"a?c",
        b"a\\?c",
        b"a\\*c",
        b"a[bX]c",
        b"a[^bX]c",
        b"a[a-z]c",
        b"a[z-a]c",
        b"a[A-Z]c",
        b"h[ae]llo",
        b"h[^e]llo",
        b"h*llo",
        b"user:*",
        b"user:?",
        b"user:[0-9]*",
        b"[",
        b"[]",
        b"[]]",
        b"a[",
        b"a[\\]]c",
        b"a[-]c",
        b"a[b-]c",
        b"\\",
        b"a\\",
        b"*\\",
        b"[\x80-\xff]",
        b"[a-\x80]",
        b"a\x00b",
        b"**a**",
        b"*?*",
        b"[^a-z]",
        b"[^]",
        b"\\[",
        b"^",
        b"a[!b]c",
    ];
    let mut diffs = Vec::new();
    for p in patterns {
        let mut ours = bulk_items(&a.call(&[b"KEYS", p]));
        let mut theirs = bulk_items(&b.call(&[b"KEYS", p]));
        ours.sort();
        theirs.sort();
        if ours != theirs {
            diffs.push(format!(
                "KEYS {:?}: segkv {:?} redis {:?}",
                String::from_utf8_lossy(p),
                ours,
                theirs
            ));
        }
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn command_info_and_docs_match_redis_for_every_command() {
    let Some(redis) = Redis::start() else {
        eprintln!("redis-server is not installed: skipping");
        return;
    };
    let segkv = Server::start(&[]);
    let (mut a, mut b) = (segkv.raw(), redis.raw());
    let mut diffs = Vec::new();
    let mut compared = 0;
    for proto in [b"2", b"3"] {
        a.call(&[b"HELLO", proto]);
        b.call(&[b"HELLO", proto]);
        for name in bulk_items(&a.call(&[b"COMMAND", b"LIST"])) {
            // Containers list only the subcommands segkv implements, so only leaves compare whole.
            if name.contains(&b'|')
                || name == b"client"
                || name == b"object"
                || name == b"config"
                || name == b"command"
                || name == b"function"
            {
                continue;
            }
            compared += 1;
            for sub in [&b"INFO"[..], b"DOCS"] {
                let (ours, theirs) = (
                    a.call(&[b"COMMAND", sub, &name]),
                    b.call(&[b"COMMAND", sub, &name]),
                );
                if ours != theirs {
                    diffs.push(format!(
                        "RESP{} COMMAND {} {}",
                        proto[0] as char,
                        String::from_utf8_lossy(sub),
                        String::from_utf8_lossy(&name)
                    ));
                }
            }
        }
    }
    assert!(compared > 100, "only {compared} commands compared");
    assert!(diffs.is_empty(), "differ from Redis:\n{}", diffs.join("\n"));
}

/// Field names of an INFO reply (`name:value` lines), in order.
fn info_fields(reply: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(reply)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('$') && !l.starts_with('='))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.to_string()))
        .collect()
}

/// Redis fields that this reference server does not print: `aof_current_size` appears only with
/// AOF on; the two disconnection counters arrived in Redis 7.2.
const ELSEWHERE_IN_REDIS: &[&str] = &[
    "aof_current_size",
    "client_query_buffer_limit_disconnections",
    "client_output_buffer_limit_disconnections",
];

#[test]
fn info_uses_redis_field_and_section_names() {
    let Some(redis) = Redis::start() else {
        eprintln!("redis-server is not installed: skipping");
        return;
    };
    let segkv = Server::start(&[]);
    let (mut a, mut b) = (segkv.raw(), redis.raw());
    // Make the per-command and per-db lines appear on both sides.
    for r in [&mut a, &mut b] {
        r.call(&[b"SET", b"k", b"v"]);
        r.call(&[b"GET", b"k"]);
        r.call(&[b"INCR", b"k"]);
        r.call(&[b"INFO", b"server"]);
    }
    let ours = a.call(&[b"INFO", b"everything"]);
    let theirs = b.call(&[b"INFO", b"everything"]);
    let redis_fields = info_fields(&theirs);
    let unknown: Vec<String> = info_fields(&ours)
        .into_iter()
        .filter(|f| {
            !f.starts_with("segkv_")
                && !redis_fields.contains(f)
                && !ELSEWHERE_IN_REDIS.contains(&f.as_str())
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "INFO fields Redis does not have: {unknown:?}"
    );
    let sections = |r: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(r)
            .lines()
            .filter(|l| l.starts_with("# "))
            .map(str::to_string)
            .collect()
    };
    let redis_sections = sections(&theirs);
    for s in sections(&ours) {
        assert!(redis_sections.contains(&s), "section {s} is not Redis's");
    }
    for must in [
        "redis_version",
        "connected_clients",
        "used_memory",
        "total_commands_processed",
        "keyspace_hits",
        "role",
        "db0",
        "cmdstat_get",
        "errorstat_ERR",
    ] {
        assert!(
            info_fields(&ours).iter().any(|f| f == must),
            "INFO lacks {must}"
        );
    }
}
