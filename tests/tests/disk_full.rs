//! A full disk, end to end: the real server with its data directory on a small filesystem
//! (an 8 MiB tmpfs) under `appendfsync always`, written to until the filesystem is full. Then:
//!
//! - the write that found the disk full, and every write after it, is refused with `-MISCONF`
//!   (Redis's reply after an AOF write error): nothing more is acknowledged;
//! - reads go on;
//! - on a bigger disk (the directory copied), every write acknowledged before the failure is
//!   there, and no refused write is.
//!
//! Mounting needs root (CAP_SYS_ADMIN); without it the test prints why and passes.

use std::path::Path;
use std::process::Command;

use segkv_e2e::{Raw, Server};

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a server not yet reaped): detach it now, it goes when unused.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

const WRITERS: usize = 4;

fn key(t: usize, i: usize) -> Vec<u8> {
    format!("t{t}:{i}").into_bytes()
}

fn value(t: usize, i: usize) -> Vec<u8> {
    format!("{t}:{i:0>3998}").into_bytes()
}

/// The RESP bulk reply of `key(t, i)`'s value.
fn bulk(t: usize, i: usize) -> Vec<u8> {
    [b"$4000\r\n".as_slice(), &value(t, i), b"\r\n"].concat()
}

fn misconf(reply: &Option<Vec<u8>>) -> bool {
    reply.as_ref().is_some_and(|r| r.starts_with(b"-MISCONF "))
}

/// What one writer saw: how many of its writes were acknowledged (keys 0..acked), and what its
/// next write got: `-MISCONF` (refused: never to be found), or `None` when the server closed
/// the connection instead (a write in flight when the log failed: never acknowledged, so it
/// may or may not be found).
struct Writer {
    acked: usize,
    failure: Option<Vec<u8>>,
}

/// Writes 4 KB values until a write is not acknowledged.
fn fill(port: u16, t: usize) -> Writer {
    let mut con = Raw::connect(port);
    let mut acked = 0;
    loop {
        assert!(acked < 4000, "8 MiB cannot hold {acked} values of 4 KB");
        con.send_cmd(&[b"SET", &key(t, acked), &value(t, acked)]);
        match con.try_reply() {
            Some(r) if r == b"+OK\r\n" => acked += 1,
            failure => return Writer { acked, failure },
        }
    }
}

#[test]
fn a_full_disk_refuses_writes_with_misconf_and_loses_nothing_acknowledged() {
    let fs = match Tmpfs::mount("8m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("skipping: no small filesystem to fill: {why}");
            return;
        }
    };
    let dir = fs.dir.path().join("data");
    let opts = ["--appendfsync", "always", "--segment-size", "1mb"];
    let mut srv = Server::start_in(&dir, &opts);

    // WRITERS clients write 4 KB values at once until the 8 MiB are full; under `always` an
    // OK means durable.
    let port = srv.port;
    let writers: Vec<Writer> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..WRITERS)
            .map(|t| s.spawn(move || fill(port, t)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let acked: usize = writers.iter().map(|w| w.acked).sum();
    for (t, w) in writers.iter().enumerate() {
        let text = w
            .failure
            .as_ref()
            .map(|r| String::from_utf8_lossy(r).into_owned());
        eprintln!("writer {t}: {} acknowledged, then {text:?}", w.acked);
        assert!(
            w.failure.is_none() || misconf(&w.failure),
            "writer {t}: a refused write must get -MISCONF, got {text:?}"
        );
    }
    assert!(
        writers.iter().any(|w| misconf(&w.failure)),
        "the write that found the disk full gets -MISCONF, not a dropped connection"
    );
    assert!(acked > 1000, "only {acked} writes fit in 8 MiB");

    // Nothing more is acknowledged, whatever the write, on any connection.
    let writes: &[&[&[u8]]] = &[
        &[b"SET", b"new:0", b"v"],
        &[b"INCR", b"counter"],
        &[b"MSET", b"new:1", b"a", b"new:2", b"b"],
        &[b"SETEX", b"new:3", b"100", b"v"],
        &[b"APPEND", b"t0:0", b"more"],
        &[b"DEL", b"t0:1"],
        &[b"EXPIRE", b"t0:2", b"1"],
    ];
    let mut con = srv.raw();
    for w in writes {
        for c in [&mut con, &mut srv.raw()] {
            c.send_cmd(w);
            let r = c.try_reply();
            assert!(misconf(&r), "{w:?} got {r:?}");
        }
    }

    // Reads go on, and INFO says the log is failing.
    for (t, w) in writers.iter().enumerate() {
        for i in [0, 1, 2, w.acked / 2, w.acked - 1] {
            assert!(
                con.call(&[b"GET", &key(t, i)]) == bulk(t, i),
                "GET t{t}:{i}"
            );
        }
    }
    let info = String::from_utf8(con.call(&[b"INFO", b"persistence"])).unwrap();
    assert!(info.contains("aof_last_write_status:err\r\n"), "{info}");

    // On a bigger disk: every acknowledged write, unchanged, and no refused one.
    srv.kill9();
    let bigger = tempfile::tempdir().unwrap();
    copy_dir(&dir, &bigger.path().join("data"));
    drop(fs);
    let srv = Server::start_in(&bigger.path().join("data"), &opts);
    let mut con = srv.raw();
    for (t, w) in writers.iter().enumerate() {
        for i in 0..w.acked {
            assert!(
                con.call(&[b"GET", &key(t, i)]) == bulk(t, i),
                "t{t}:{i} lost"
            );
        }
        if misconf(&w.failure) {
            let refused = key(t, w.acked);
            assert_eq!(
                con.call(&[b"EXISTS", &refused]),
                b":0\r\n",
                "t{t}:{} was refused",
                w.acked
            );
        }
        assert_eq!(con.call(&[b"TTL", &key(t, 2)]), b":-1\r\n");
    }
    for absent in [
        b"new:0".as_slice(),
        b"new:1",
        b"new:2",
        b"new:3",
        b"counter",
    ] {
        assert_eq!(
            con.call(&[b"EXISTS", absent]),
            b":0\r\n",
            "{absent:?} was refused"
        );
    }
    let dbsize = String::from_utf8(con.call(&[b"DBSIZE"])).unwrap();
    let dbsize: usize = dbsize[1..].trim().parse().unwrap();
    let in_flight = writers.iter().filter(|w| w.failure.is_none()).count();
    assert!(
        (acked..=acked + in_flight).contains(&dbsize),
        "{dbsize} keys: {acked} acknowledged, {in_flight} in flight"
    );
    assert_eq!(con.call(&[b"SET", b"after", b"ok"]), b"+OK\r\n");
}
