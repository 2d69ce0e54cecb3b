//! DEBUG DIGEST and DEBUG DIGEST-VALUE: a digest of the whole dataset, so replication tests can
//! compare a primary with its replicas. Equal data gives equal digests whatever the order it was
//! written in; any change of a value, an expiry or a key's database changes it.

use std::time::Duration;

use redis::cmd;
use segkv_e2e::Server;

const ZEROS: &str = "0000000000000000000000000000000000000000";
/// An absolute expiry far in the future, the same on both servers.
const AT: &str = "4102444800000";

fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut c = cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn digest(con: &mut redis::Connection) -> String {
    let d: String = q(con, &["DEBUG", "DIGEST"]);
    assert_eq!(d.len(), 40, "{d}");
    assert!(d.bytes().all(|b| b.is_ascii_hexdigit()), "{d}");
    d
}

/// The same dataset: `n` keys in db 0 (every 7th with an expiry), a few in db 3, written in
/// order (`rev` false) or in reverse with detours (overwrites, deletes, a key moved away and
/// back), so the two indexes have different sizes and histories.
fn fill(con: &mut redis::Connection, n: usize, rev: bool) {
    let order: Vec<usize> = if rev {
        (0..n).rev().collect()
    } else {
        (0..n).collect()
    };
    if rev {
        // Keys that come and go, and a value overwritten before its final one.
        for i in 0..n / 2 {
            q::<()>(con, &["SET", &format!("gone:{i}"), "x"]);
        }
        for i in 0..n / 2 {
            q::<()>(con, &["DEL", &format!("gone:{i}")]);
        }
        q::<()>(con, &["SET", "key:1", "stale"]);
    }
    for i in order {
        let k = format!("key:{i}");
        q::<()>(con, &["SET", &k, &format!("value-{i}")]);
        if i % 7 == 0 {
            q::<()>(con, &["PEXPIREAT", &k, AT]);
        }
    }
    q::<()>(con, &["SELECT", "3"]);
    let db3: &[&str] = if rev {
        &["c", "b", "a"]
    } else {
        &["a", "b", "c"]
    };
    for k in db3 {
        q::<()>(con, &["SET", k, &format!("in-db3-{k}")]);
    }
    q::<()>(con, &["SELECT", "0"]);
}

#[test]
fn dataset_digest() {
    let a = Server::start(&[]);
    let b = Server::start(&[]);
    let mut ca = a.client();
    let mut cb = b.client();

    // Empty: zeros, as in Redis.
    assert_eq!(digest(&mut ca), ZEROS);
    let help: Vec<String> = q(&mut ca, &["DEBUG", "HELP"]);
    assert!(
        help.iter().any(|l| l.starts_with("DIGEST-VALUE")),
        "{help:?}"
    );

    fill(&mut ca, 3000, false);
    fill(&mut cb, 3000, true);
    let d = digest(&mut ca);
    assert_ne!(d, ZEROS);
    assert_eq!(d, digest(&mut cb), "same data, different insertion order");
    assert_eq!(d, digest(&mut ca), "stable");

    // One value.
    q::<()>(&mut cb, &["SET", "key:5", "other"]);
    assert_ne!(digest(&mut cb), d);
    q::<()>(&mut cb, &["SET", "key:5", "value-5"]);
    assert_eq!(digest(&mut cb), d);

    // One expiry: another time, none, then back.
    q::<()>(&mut cb, &["PEXPIREAT", "key:14", "4102444800001"]);
    assert_ne!(digest(&mut cb), d);
    q::<()>(&mut cb, &["PERSIST", "key:14"]);
    assert_ne!(digest(&mut cb), d);
    q::<()>(&mut cb, &["PEXPIREAT", "key:14", AT]);
    assert_eq!(digest(&mut cb), d);
    q::<()>(&mut cb, &["PEXPIREAT", "key:15", AT]);
    assert_ne!(digest(&mut cb), d);
    q::<()>(&mut cb, &["PERSIST", "key:15"]);
    assert_eq!(digest(&mut cb), d);

    // One key moved to another database, and back.
    assert_eq!(q::<i64>(&mut cb, &["MOVE", "key:9", "1"]), 1);
    assert_ne!(digest(&mut cb), d);
    q::<()>(&mut cb, &["SELECT", "1"]);
    assert_eq!(q::<i64>(&mut cb, &["MOVE", "key:9", "0"]), 1);
    q::<()>(&mut cb, &["SELECT", "0"]);
    assert_eq!(digest(&mut cb), d);

    // Two databases swapped: the same keys and values, in other databases.
    q::<()>(&mut cb, &["SWAPDB", "0", "3"]);
    assert_ne!(digest(&mut cb), d);
    q::<()>(&mut cb, &["SWAPDB", "0", "3"]);
    assert_eq!(digest(&mut cb), d);

    // A key renamed keeps its value but is another key.
    q::<()>(&mut cb, &["RENAME", "key:2", "key:two"]);
    assert_ne!(digest(&mut cb), d);
    q::<()>(&mut cb, &["RENAME", "key:two", "key:2"]);
    assert_eq!(digest(&mut cb), d);

    // An expired key does not count.
    q::<()>(&mut cb, &["SET", "brief", "v", "PX", "30"]);
    assert_ne!(digest(&mut cb), d);
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(digest(&mut cb), d);

    // The digest survives a restart (the index is rebuilt from the log).
    let mut a = a;
    a.restart();
    let mut ca = a.client();
    assert_eq!(digest(&mut ca), d);

    // Flushed: zeros again.
    q::<()>(&mut cb, &["FLUSHALL"]);
    assert_eq!(digest(&mut cb), ZEROS);
}

#[test]
fn digest_value() {
    let s = Server::start(&[]);
    let mut c = s.client();
    q::<()>(&mut c, &["MSET", "a", "same", "b", "same", "c", "other"]);
    q::<()>(&mut c, &["PEXPIREAT", "b", AT]);
    let v: Vec<String> = q(&mut c, &["DEBUG", "DIGEST-VALUE", "a", "b", "c", "missing"]);
    assert_eq!(v.len(), 4);
    // The value alone: not the key, not the expiry (as in Redis).
    assert_eq!(v[0], v[1]);
    assert_ne!(v[0], v[2]);
    assert_ne!(v[0], ZEROS);
    assert_eq!(v[3], ZEROS);
    assert!(v.iter().all(|d| d.len() == 40));
    // Keys are looked up in the selected database.
    q::<()>(&mut c, &["SELECT", "2"]);
    let v: Vec<String> = q(&mut c, &["DEBUG", "DIGEST-VALUE", "a"]);
    assert_eq!(v, vec![ZEROS.to_string()]);
    let v: Vec<String> = q(&mut c, &["DEBUG", "DIGEST-VALUE"]);
    assert!(v.is_empty());
}
