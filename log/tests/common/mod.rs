#![allow(dead_code)]
use segkv_log::epoch::pin;
use segkv_log::{FsyncPolicy, Kind, Log, LogConfig, RecordSpec, RecoveryReport, WriterKind};
use std::path::Path;

/// Both flush writers: every log test runs against each.
pub const WRITERS: [WriterKind; 2] = [WriterKind::Pwrite, WriterKind::Uring];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub addr: u64,
    pub kind: Kind,
    pub ks: u8,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub expire_at: Option<u64>,
}

pub fn cfg(dir: &Path, writer: WriterKind, seg: u64, fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        dir: dir.to_path_buf(),
        segment_size: seg,
        fsync,
        writer,
        recover_corrupt: false,
        replay_from: 0,
        reopen_tail: false,
    }
}

pub fn open(c: LogConfig) -> Result<(Log, Vec<Rec>, RecoveryReport), segkv_log::LogError> {
    let mut recs = Vec::new();
    let (log, rep) = Log::open(c, |addr, v| {
        recs.push(Rec {
            addr,
            kind: v.kind,
            ks: v.keyspace,
            key: v.key.to_vec(),
            value: v.value.to_vec(),
            expire_at: v.expire_at,
        })
    })?;
    Ok((log, recs, rep))
}

/// Appends and commits one Put; returns its address.
pub fn put(log: &Log, key: &[u8], value: &[u8]) -> u64 {
    put_then(log, key, value, true)
}

/// Appends one Put and aborts it (its writer lost a race); returns its address.
pub fn put_aborted(log: &Log, key: &[u8], value: &[u8]) -> u64 {
    put_then(log, key, value, false)
}

fn put_then(log: &Log, key: &[u8], value: &[u8], commit: bool) -> u64 {
    let g = pin();
    let p = log
        .append(
            &RecordSpec {
                kind: Kind::Put,
                keyspace: 0,
                key,
                value,
                expire_at: None,
            },
            &g,
        )
        .unwrap();
    let a = p.addr();
    if commit {
        p.commit();
    } else {
        p.abort();
    }
    a
}

/// Copies every file of `from` into a fresh temp dir.
pub fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
        }
    }
    to
}
