//! segkv-tool end to end: the real binary on directories written by the engine.

use segkv_engine::{Config, Engine, FsyncPolicy, SetExpiry, SetOptions};
use std::path::Path;
use std::process::Command;

fn tool(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_segkv-tool"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn engine(dir: &Path) -> Engine {
    let mut c = Config::new(dir);
    c.appendfsync = FsyncPolicy::No;
    c.segment_size = 16 << 10;
    Engine::open(c).unwrap()
}

/// db0: k0..k299 (k5x deleted, k1xx overwritten), a TTL key; db1 flushed; db2 and db3 swapped.
fn fill(e: &Engine) {
    let far = e.now_ms() + 3_600_000;
    for round in 0..2 {
        for i in 0..300u32 {
            if round == 1 && !(100..200).contains(&i) {
                continue;
            }
            e.set(
                0,
                format!("k{i}").as_bytes(),
                format!("v{i}-{round}").as_bytes(),
                SetOptions::default(),
            )
            .unwrap();
        }
    }
    for i in (50..60).chain(250..260) {
        e.delete(0, format!("k{i}").as_bytes()).unwrap();
    }
    e.set(
        0,
        b"ttl",
        b"\x00\xffbinary",
        SetOptions {
            expiry: SetExpiry::At(far),
            ..Default::default()
        },
    )
    .unwrap();
    e.set(1, b"gone", b"x", SetOptions::default()).unwrap();
    e.flush_db(1).unwrap();
    e.set(2, b"was-in-2", b"a", SetOptions::default()).unwrap();
    e.set(3, b"was-in-3", b"b", SetOptions::default()).unwrap();
    e.swap_db(2, 3).unwrap();
}

#[test]
fn dump_json_lists_exactly_the_live_keys_of_each_database() {
    let d = tempfile::tempdir().unwrap();
    let e = engine(d.path());
    fill(&e);
    e.sync().unwrap();
    // The engine is still open: the tool reads beside a live writer.
    let (code, out) = tool(&["dump", d.path().to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len() as u64,
        e.len(0) + e.len(1) + e.len(2) + e.len(3)
    );
    assert!(lines.contains(&r#"{"db":0,"key":"k150","value":"v150-1","expire_at_ms":null}"#));
    assert!(lines.contains(&r#"{"db":0,"key":"k10","value":"v10-0","expire_at_ms":null}"#));
    assert!(
        !out.contains(r#""key":"k55""#),
        "deleted keys are not dumped"
    );
    assert!(
        !out.contains(r#""key":"gone""#),
        "flushed keys are not dumped"
    );
    assert!(
        lines.contains(&r#"{"db":3,"key":"was-in-2","value":"a","expire_at_ms":null}"#),
        "{out}"
    );
    assert!(lines.contains(&r#"{"db":2,"key":"was-in-3","value":"b","expire_at_ms":null}"#));
    assert!(out.contains(r#""key":"ttl","value":"\u0000\u00ffbinary","expire_at_ms":"#));
    let (_, only) = tool(&[
        "dump",
        d.path().to_str().unwrap(),
        "--format",
        "json",
        "--db",
        "0",
        "--match",
        "k1?",
    ]);
    assert_eq!(only.lines().count(), 10, "{only}");
}

#[test]
fn dump_resp_is_a_command_stream() {
    let d = tempfile::tempdir().unwrap();
    let e = engine(d.path());
    e.set(4, b"a", b"1", SetOptions::default()).unwrap();
    e.sync().unwrap();
    let (code, out) = tool(&["dump", d.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "*2\r\n$6\r\nSELECT\r\n$1\r\n4\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n"
    );
}

#[test]
fn compact_keeps_the_live_content_in_less_space() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let src = d.path().join("src");
    {
        let e = engine(&src);
        fill(&e);
    }
    let (code, report) = tool(&[
        "compact",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("saved"));
    let a = engine(&src);
    let b = engine(&out);
    for db in 0..4 {
        assert_eq!(a.len(db), b.len(db), "db {db}");
        let mut cursor = 0;
        loop {
            cursor = a.scan(db, cursor, 100, |k| {
                assert_eq!(
                    a.read(db, k, |c| (c.value.to_vec(), c.expire_at)),
                    b.read(db, k, |c| (c.value.to_vec(), c.expire_at))
                );
            });
            if cursor == 0 {
                break;
            }
        }
    }
    let used = |p: &Path| -> u64 {
        segkv_log::inspect::segment_files(p)
            .unwrap()
            .iter()
            .map(|f| f.file_len)
            .sum()
    };
    assert!(used(&out) < used(&src), "{} < {}", used(&out), used(&src));
}

#[test]
fn verify_reports_corruption_with_file_and_offset_and_passes_a_clean_or_torn_log() {
    let d = tempfile::tempdir().unwrap();
    {
        let e = engine(d.path());
        fill(&e);
    }
    let dir = d.path().to_str().unwrap();
    let (code, out) = tool(&["verify", dir]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok:"));
    let (_, json) = tool(&["inspect", dir, "--json"]);
    assert!(
        json.starts_with("{\"segments\":[") && json.contains("\"keys_per_db\":{\"0\":"),
        "{json}"
    );

    let files = segkv_log::inspect::segment_files(d.path()).unwrap();
    // A torn tail: garbage after the last record of the newest segment.
    let last = files.last().unwrap();
    let mut bytes = std::fs::read(&last.path).unwrap();
    bytes.extend_from_slice(&[0x80, 0, 0, 0x80, 1, 2, 3, 4]);
    std::fs::write(&last.path, &bytes).unwrap();
    let (code, out) = tool(&["verify", dir]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("torn tail"), "{out}");

    // Corruption in the middle of the first segment.
    let first = &files[0];
    let mut bytes = std::fs::read(&first.path).unwrap();
    bytes[64 + 12] ^= 0xff; // the first record's key
    std::fs::write(&first.path, &bytes).unwrap();
    let (code, out) = tool(&["verify", dir]);
    assert_eq!(code, 1, "{out}");
    let name = first.path.file_name().unwrap().to_str().unwrap();
    assert!(
        out.contains(name) && out.contains("offset 64: checksum mismatch"),
        "{out}"
    );
}
