//! A failed write or fsync puts the log in a failed state: nothing more is acknowledged as
//! durable, appends are refused with a clear error, reads go on.

mod common;
use common::*;
use segkv_log::epoch::pin;
use segkv_log::writer::{PwriteWriter, SegmentWriter};
use segkv_log::{FsyncPolicy, Kind, Log, LogError, RecordSpec};
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Passes everything through to pwrite until `broken` is set, then fails every sync with EIO.
struct FailingSync {
    inner: PwriteWriter,
    broken: Arc<AtomicBool>,
}

impl SegmentWriter for FailingSync {
    fn name(&self) -> &'static str {
        "failing"
    }
    fn write(&mut self, file: &File, offset: u64, data: &[u8], sync: bool) -> std::io::Result<()> {
        self.inner.write(file, offset, data, false)?;
        if sync { self.sync(file) } else { Ok(()) }
    }
    fn sync(&mut self, file: &File) -> std::io::Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(libc_eio()));
        }
        self.inner.sync(file)
    }
}

fn libc_eio() -> i32 {
    5
}

#[test]
fn a_failed_fsync_refuses_further_writes_and_acknowledges_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let broken = Arc::new(AtomicBool::new(false));
    let w = Box::new(FailingSync {
        inner: PwriteWriter,
        broken: broken.clone(),
    });
    let (log, _) = Log::open_with_writer(
        cfg(dir.path(), WRITERS[0], 1 << 20, FsyncPolicy::Always),
        w,
        |_, _| {},
    )
    .unwrap();
    let woken = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let w2 = woken.clone();
    log.on_durable(Box::new(move |_| {
        w2.fetch_add(1, Ordering::SeqCst);
    }));
    let a = put(&log, b"durable", b"1");
    log.wait_durable(log.tail_addr()).unwrap();
    broken.store(true, Ordering::SeqCst);
    let b = put(&log, b"not-durable", b"2");
    let durable_before = log.durable_addr();
    match log.wait_durable(log.tail_addr()) {
        Err(LogError::Failed(why)) => {
            assert!(why.contains("fdatasync") && why.contains(".seg"), "{why}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(
        log.durable_addr() <= b,
        "the record after the failure is never reported durable"
    );
    assert_eq!(log.durable_addr(), durable_before);
    let g = pin();
    assert!(matches!(
        log.append(
            &RecordSpec {
                kind: Kind::Put,
                keyspace: 0,
                key: b"k",
                value: b"v",
                expire_at: None
            },
            &g
        ),
        Err(LogError::Failed(_))
    ));
    assert_eq!(log.read(a, &g).unwrap().key, b"durable", "reads go on");
    assert!(log.failed().is_some());
    // Whoever waits on the durable address was woken by the failure too.
    let before = woken.load(Ordering::SeqCst);
    assert!(
        before >= 2,
        "callbacks ran for the good sync and for the failure ({before})"
    );
}
