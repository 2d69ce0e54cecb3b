//! The log: tail reservation, appends, reads, durability tracking and the flusher thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::epoch::{EpochCell, EpochGuard, pin};
use crate::mem::SegMem;
use crate::record::{
    self, DONE, END_MARK, HEADER_LEN, INVALID, LEN_MASK, MAX_RECORD_LEN, RecordSpec, RecordView,
};
use crate::segment::{
    SEGMENT_HEADER_LEN, Segment, SegmentHeader, UNIT, UNIT_SHIFT, segment_file_name,
};
use crate::writer::{SegmentWriter, make_writer};
use crate::{FsyncPolicy, LogError, WriterKind};

/// How a log is opened.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    /// Capacity of a normal segment in bytes (rounded up to 4 KiB, at least 4 KiB).
    pub segment_size: u64,
    pub fsync: FsyncPolicy,
    pub writer: WriterKind,
    /// Keep going past a corrupt record in the middle of the log, keeping every good record.
    pub recover_corrupt: bool,
    /// Replay (and verify) only records at or after this address: an index checkpoint covers
    /// everything before it. Segments wholly below it are mapped without being read.
    pub replay_from: u64,
    /// Make the last segment found active again instead of starting a new one: a replica
    /// continues the segment its primary is still writing.
    pub reopen_tail: bool,
}

impl LogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            segment_size: 64 << 20,
            fsync: FsyncPolicy::EverySec,
            writer: WriterKind::Auto,
            recover_corrupt: false,
            replay_from: 0,
            reopen_tail: false,
        }
    }
}

/// What recovery found.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    pub invalid_records: u64,
    pub bytes: u64,
    /// A torn tail that was cut off: file and offset.
    pub truncated: Option<(PathBuf, u64)>,
    /// Corrupt records skipped because `recover_corrupt` was set: file, offset, reason.
    pub skipped: Vec<(PathBuf, u64, String)>,
    /// Empty trailing segment files that were removed.
    pub removed_files: Vec<PathBuf>,
    /// Why the io_uring writer is not used, when it was asked for automatically and failed.
    pub writer_note: Option<String>,
    /// The log was not closed cleanly: a file ended past its data (preallocated, or cut).
    /// Records a replica received may be missing from it.
    pub unclean: bool,
}

/// What `Log::read_stream` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// A segment starts: its header (the cursor moves past it).
    Segment(SegmentHeader),
    /// Records from this address were appended to the buffer.
    Data(u64),
    /// Nothing new yet.
    Wait,
    /// The cursor is in no segment any more (retired): the reader must start over.
    Gone,
}

/// A segment as the cleaner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base: u64,
    /// Bytes of records (live and dead), header excluded.
    pub data_bytes: u64,
    /// Bytes counted dead (approximate; see `Log::note_dead`).
    pub dead_bytes: u64,
    /// Smallest and largest expiry among its Puts with an expiry.
    pub min_expiry: Option<u64>,
    pub max_expiry: Option<u64>,
    /// `segment::holds` bits: which kinds of record it holds.
    pub holds: u32,
    /// It still takes appends.
    pub active: bool,
    /// Sealed, and everything in it is durable: it can be cleaned and retired.
    pub settled: bool,
    /// Base address of the segment that follows it.
    pub next_base: u64,
}

/// Segments by address unit.
struct SegTable {
    first_unit: u64,
    segs: Vec<Option<Arc<Segment>>>,
}

impl SegTable {
    fn get(&self, addr: u64) -> Option<&Arc<Segment>> {
        let u = (addr >> UNIT_SHIFT).checked_sub(self.first_unit)?;
        self.segs.get(u as usize)?.as_ref()
    }

    fn with(&self, seg: Arc<Segment>) -> SegTable {
        let mut segs = self.segs.clone();
        let mut first_unit = self.first_unit;
        let unit = seg.base >> UNIT_SHIFT;
        if segs.is_empty() {
            first_unit = unit;
        }
        let idx = (unit - first_unit) as usize;
        let end = idx + seg.units() as usize;
        if segs.len() < end {
            segs.resize(end, None);
        }
        // (In place when the segment replaces one: `mirror_truncate`.)
        for s in &mut segs[idx..end] {
            *s = Some(seg.clone());
        }
        SegTable { first_unit, segs }
    }

    fn without(&self, seg: &Arc<Segment>) -> SegTable {
        let segs = self
            .segs
            .iter()
            .map(|s| s.as_ref().filter(|s| !Arc::ptr_eq(s, seg)).cloned())
            .collect();
        SegTable {
            first_unit: self.first_unit,
            segs,
        }
    }

    /// The first segment whose base is above `base`.
    fn after(&self, base: u64) -> Option<&Arc<Segment>> {
        let from = ((base >> UNIT_SHIFT) + 1).checked_sub(self.first_unit)? as usize;
        self.segs
            .get(from..)?
            .iter()
            .flatten()
            .find(|s| s.base > base)
    }

    fn list(&self) -> Vec<Arc<Segment>> {
        let mut out: Vec<Arc<Segment>> = Vec::new();
        for s in self.segs.iter().flatten() {
            if out.last().is_none_or(|l| !Arc::ptr_eq(l, s)) {
                out.push(s.clone());
            }
        }
        out
    }
}

type DurableCallback = Box<dyn Fn(u64) + Send + Sync>;

struct Shared {
    cfg: LogConfig,
    table: EpochCell<SegTable>,
    table_lock: Mutex<()>,
    active: EpochCell<Arc<Segment>>,
    /// Everything below this address is on disk and synced.
    durable: AtomicU64,
    /// Everything below this address has been handed to the OS.
    written: AtomicU64,
    /// A caller wants everything below this address synced, whatever the policy.
    sync_target: AtomicU64,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    durable_lock: Mutex<()>,
    durable_cv: Condvar,
    callbacks: RwLock<Vec<DurableCallback>>,
    flusher: OnceLock<Thread>,
    flusher_idle: AtomicBool,
    /// The flusher found nothing to do for a while and sleeps long: any commit wakes it.
    flusher_deep: AtomicBool,
    shutdown: AtomicBool,
    writer_name: &'static str,
    appended_bytes: AtomicU64,
    fsyncs: AtomicU64,
    retired_bytes: AtomicU64,
    /// Capacity of the next segment (`segment_size`, changeable while open).
    segment_size: AtomicU64,
    /// The log copies a primary's (`mirror_*`): retiring a segment appends no Retire record.
    mirroring: AtomicBool,
    /// Segments reaching past this address are not retired (replicas still read them).
    retire_hold: AtomicU64,
    /// Empty segments a mirror sealed, deleted once settled (the primary has no such file).
    empties: Mutex<Vec<u64>>,
    /// The active segment is this log's own (not a copy of a primary's).
    own_active: AtomicBool,
    /// A segment (and offset in it) the flusher continues with instead of its own
    /// (`mirror_truncate`); it takes it and clears this.
    flusher_reset: Mutex<Option<(Arc<Segment>, u64)>>,
    /// Local address minus history address (replication; Retire records carry history).
    history_delta: AtomicU64,
    /// Bytes of records at the tail kept for replicas (`set_backlog`).
    backlog: AtomicU64,
    /// Replication senders blocked in `wait_stream`.
    readers_waiting: std::sync::atomic::AtomicUsize,
    readers_mx: Mutex<()>,
    readers_cv: Condvar,
    _lock: std::fs::File,
}

/// The append-only log. Cheap to share by reference; `close` (or drop) flushes and syncs.
pub struct Log {
    sh: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.sh.cfg.dir)
            .field("durable", &self.durable_addr())
            .finish()
    }
}

/// An appended record whose writer has not finished. `commit` makes it eligible for flushing;
/// `abort` (or dropping it) marks it invalid so recovery skips it. The flusher never passes a
/// record until one of them happened.
pub struct Pending<'g> {
    log: &'g Log,
    mem: &'g SegMem,
    off: usize,
    len: u32,
    addr: u64,
    done: bool,
}

impl Pending<'_> {
    /// The record's log address.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The record's view, readable at once (by this writer and anyone it publishes the address to).
    pub fn commit(mut self) {
        self.finish(DONE);
    }

    /// Marks the record invalid (its writer lost a race); recovery skips it.
    pub fn abort(mut self) {
        self.finish(DONE | INVALID);
        self.log
            .note_dead(self.addr, record::pad(self.len as usize) as u64, &pin());
    }

    fn finish(&mut self, bits: u32) {
        self.mem
            .commit_word(self.off)
            .store(self.len | bits, Ordering::Release);
        self.done = true;
        if self.log.sh.cfg.fsync == FsyncPolicy::Always
            || self.log.sh.flusher_deep.load(Ordering::Relaxed)
        {
            self.log.kick();
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.finish(DONE | INVALID);
        }
    }
}

impl Log {
    /// Opens (or creates) the log in `cfg.dir`, replaying every valid record in address order
    /// into `visit`, then starts a fresh active segment and the flusher.
    pub fn open(
        cfg: LogConfig,
        visit: impl FnMut(u64, RecordView<'_>),
    ) -> Result<(Log, RecoveryReport), LogError> {
        Self::open_inner(cfg, None, visit)
    }

    /// As `open`, flushing through `writer` instead of the one `cfg.writer` names
    /// (fault-injecting writers in tests).
    pub fn open_with_writer(
        cfg: LogConfig,
        writer: Box<dyn SegmentWriter>,
        visit: impl FnMut(u64, RecordView<'_>),
    ) -> Result<(Log, RecoveryReport), LogError> {
        Self::open_inner(cfg, Some(writer), visit)
    }

    fn open_inner(
        mut cfg: LogConfig,
        writer: Option<Box<dyn SegmentWriter>>,
        mut visit: impl FnMut(u64, RecordView<'_>),
    ) -> Result<(Log, RecoveryReport), LogError> {
        cfg.segment_size = cfg.segment_size.max(4096).div_ceil(4096) * 4096;
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| LogError::io("create data directory", &cfg.dir, e))?;
        let lock_path = cfg.dir.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LogError::io("open lock file", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LogError::Locked(cfg.dir.clone()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(LogError::io("lock", &lock_path, e));
            }
        }

        let (segments, mut report) = crate::recovery::recover(&cfg, &mut visit)?;
        let writer = match writer {
            Some(w) => w,
            None => {
                let (w, note) = make_writer(cfg.writer)
                    .map_err(|e| LogError::io("set up segment writer", &cfg.dir, e))?;
                report.writer_note = note;
                w
            }
        };

        let mut segments = segments;
        let reopened = if cfg.reopen_tail
            && let Some(last) = segments.pop()
        {
            Some(Arc::new(Segment::reopen(&last, &pin())?))
        } else {
            None
        };
        let reopened_tail = reopened.is_some();
        let active = match reopened {
            Some(s) => s,
            None => {
                let next_base = segments.last().map_or(0, |s| s.next_base());
                Arc::new(Segment::create(&cfg.dir, next_base, cfg.segment_size, 0)?)
            }
        };
        sync_dir(&cfg.dir).map_err(|e| LogError::io("fsync data directory", &cfg.dir, e))?;
        let mut table = SegTable {
            first_unit: 0,
            segs: Vec::new(),
        };
        for s in segments {
            table = table.with(s);
        }
        table = table.with(active.clone());
        let start_off = active.reserved.load(Ordering::Acquire);
        let start = active.base + start_off;
        let cfg_segment_size = cfg.segment_size;
        let sh = Arc::new(Shared {
            cfg,
            table: EpochCell::new(table),
            table_lock: Mutex::new(()),
            active: EpochCell::new(active.clone()),
            durable: AtomicU64::new(start),
            written: AtomicU64::new(start),
            sync_target: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            durable_lock: Mutex::new(()),
            durable_cv: Condvar::new(),
            callbacks: RwLock::new(Vec::new()),
            flusher: OnceLock::new(),
            flusher_idle: AtomicBool::new(false),
            flusher_deep: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            writer_name: writer.name(),
            appended_bytes: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            retired_bytes: AtomicU64::new(0),
            segment_size: AtomicU64::new(cfg_segment_size),
            mirroring: AtomicBool::new(false),
            retire_hold: AtomicU64::new(u64::MAX),
            empties: Mutex::new(Vec::new()),
            own_active: AtomicBool::new(!reopened_tail),
            flusher_reset: Mutex::new(None),
            history_delta: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            readers_waiting: std::sync::atomic::AtomicUsize::new(0),
            readers_mx: Mutex::new(()),
            readers_cv: Condvar::new(),
            _lock: lock,
        });
        let sh2 = sh.clone();
        let handle = std::thread::Builder::new()
            .name("segkv-flusher".into())
            .spawn(move || Flusher::new(sh2, writer, active, start_off).run())
            .map_err(|e| LogError::io("start flusher thread", &sh.cfg.dir, e))?;
        let _ = sh.flusher.set(handle.thread().clone());
        Ok((
            Log {
                sh,
                flusher: Mutex::new(Some(handle)),
            },
            report,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.sh.cfg.dir
    }

    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.sh.cfg.fsync
    }

    /// "io_uring" or "pwrite".
    pub fn writer_name(&self) -> &'static str {
        self.sh.writer_name
    }

    /// Appends a record: reserves space at the tail (an atomic add), writes it, and returns it
    /// pending. The caller publishes the address (e.g. by an index CAS) and then commits or aborts.
    pub fn append<'g>(
        &'g self,
        spec: &RecordSpec<'_>,
        guard: &'g EpochGuard,
    ) -> Result<Pending<'g>, LogError> {
        if self.sh.failed.load(Ordering::Relaxed) {
            return Err(self.failure());
        }
        let len = spec.encoded_len();
        if len > MAX_RECORD_LEN {
            return Err(LogError::TooLarge(len));
        }
        let padded = record::pad(len) as u64;
        let (seg, off) = self.reserve(padded, guard)?;
        seg.stats.note(spec.kind, spec.expire_at);
        let mem = seg.mem(guard);
        let off = off as usize;
        spec.encode_body(mem.reserve_mut(off + 4, len - 4));
        mem.commit_word(off).store(len as u32, Ordering::Release);
        self.sh.appended_bytes.fetch_add(padded, Ordering::Relaxed);
        Ok(Pending {
            log: self,
            mem,
            off,
            len: len as u32,
            addr: seg.base + off as u64,
            done: false,
        })
    }

    fn reserve<'g>(
        &'g self,
        len: u64,
        guard: &'g EpochGuard,
    ) -> Result<(&'g Segment, u64), LogError> {
        loop {
            let seg: &Segment = self.sh.active.load(guard);
            let off = seg.reserved.fetch_add(len, Ordering::AcqRel);
            if off + len <= seg.capacity {
                return Ok((seg, off));
            }
            if off <= seg.capacity {
                // This reservation is the one that crosses the end: it seals the segment.
                return self.seal_and_roll(seg, off, len, guard);
            }
            let mut spins = 0u32;
            while std::ptr::eq(&**self.sh.active.load(guard), seg) {
                if self.sh.failed.load(Ordering::Relaxed) {
                    return Err(self.failure());
                }
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }

    fn seal_and_roll<'g>(
        &'g self,
        seg: &'g Segment,
        off: u64,
        len: u64,
        guard: &'g EpochGuard,
    ) -> Result<(&'g Segment, u64), LogError> {
        let capacity = self
            .sh
            .segment_size
            .load(Ordering::Relaxed)
            .max((SEGMENT_HEADER_LEN + len).div_ceil(4096) * 4096);
        let header = SegmentHeader {
            base: seg.next_base(),
            capacity,
            created_ms: crate::segment::now_ms(),
        };
        let r = self.seal_and_start(seg, off, header, len, false, guard);
        self.sh.own_active.store(true, Ordering::Release);
        r
    }

    /// Seals `seg` with its data ending at `off` and installs a new active segment (`direct`:
    /// one written straight to its file, see `mirror_segment`).
    fn seal_and_start<'g>(
        &'g self,
        seg: &'g Segment,
        off: u64,
        header: SegmentHeader,
        len: u64,
        direct: bool,
        guard: &'g EpochGuard,
    ) -> Result<(&'g Segment, u64), LogError> {
        let mem = seg.mem(guard);
        // (A segment written to its file directly ends in the zeros it was allocated with.)
        if off < seg.capacity && !mem.is_file() {
            mem.commit_word(off as usize)
                .store(END_MARK, Ordering::Release);
        }
        seg.data_end.store(off, Ordering::Release);
        let new = match Segment::create_in(&self.sh.cfg.dir, header, len, direct) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                // The writer that found the disk full gets the failure every later one gets.
                self.fail(format!("{e}"));
                return Err(self.failure());
            }
        };
        {
            let _l = self.sh.table_lock.lock().unwrap();
            let t = self.sh.table.load(guard);
            self.sh.table.replace(t.with(new.clone()), guard);
        }
        self.sh.active.replace(new.clone(), guard);
        std::sync::atomic::fence(Ordering::SeqCst);
        self.tell_readers();
        // The old table (which holds every segment) must not wait in this thread's bag of
        // deferred frees: a segment the cleaner retires is unmapped only when it goes.
        crate::epoch::flush();
        self.kick();
        let seg = self
            .sh
            .table
            .load(guard)
            .get(new.base)
            .expect("segment just installed");
        Ok((seg, SEGMENT_HEADER_LEN))
    }

    /// The record at `addr`, read in place. `None` if no segment holds it.
    /// The address must come from this log (the index), not from untrusted input.
    pub fn read<'g>(&'g self, addr: u64, guard: &'g EpochGuard) -> Option<RecordView<'g>> {
        let t = self.sh.table.load(guard);
        let seg = t.get(addr)?;
        let off = (addr - seg.base) as usize;
        let mem = seg.mem(guard);
        if !off.is_multiple_of(4) || off + 4 > mem.len() {
            return None;
        }
        let w = mem.commit_word(off).load(Ordering::Acquire);
        let len = (w & LEN_MASK) as usize;
        if len < HEADER_LEN || off + len > mem.len() {
            return None;
        }
        record::decode_body(mem.bytes(off + 4, len - 4))
    }

    /// Address just past every reservation made so far.
    pub fn tail_addr(&self) -> u64 {
        let g = pin();
        let seg = self.sh.active.load(&g);
        seg.base + seg.reserved.load(Ordering::Acquire).min(seg.capacity)
    }

    /// Everything below this address is durable (written and synced).
    pub fn durable_addr(&self) -> u64 {
        self.sh.durable.load(Ordering::Acquire)
    }

    /// Everything below this address has been written to the OS.
    pub fn written_addr(&self) -> u64 {
        self.sh.written.load(Ordering::Acquire)
    }

    /// Runs `cb(durable_addr)` on the flusher thread each time the durable address advances,
    /// and once more if the log fails (check `failed()` then).
    pub fn on_durable(&self, cb: Box<dyn Fn(u64) + Send + Sync>) {
        self.sh.callbacks.write().unwrap().push(cb);
    }

    /// Blocks until everything below `addr` is durable, forcing a sync whatever the policy.
    pub fn wait_durable(&self, addr: u64) -> Result<(), LogError> {
        if self.durable_addr() >= addr {
            return Ok(());
        }
        self.sh.sync_target.fetch_max(addr, Ordering::AcqRel);
        self.kick();
        let mut g = self.sh.durable_lock.lock().unwrap();
        loop {
            if self.durable_addr() >= addr {
                return Ok(());
            }
            if self.sh.failed.load(Ordering::Acquire) {
                return Err(self.failure());
            }
            if self.sh.shutdown.load(Ordering::Acquire) && self.flusher.lock().unwrap().is_none() {
                return Err(LogError::Closed);
            }
            g = self
                .sh
                .durable_cv
                .wait_timeout(g, Duration::from_millis(50))
                .unwrap()
                .0;
            self.kick();
        }
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<(), LogError> {
        self.wait_durable(self.tail_addr())
    }

    /// Whether a write or sync failed; no write is acknowledged as durable after that.
    pub fn failed(&self) -> Option<String> {
        self.sh.failure.lock().unwrap().clone()
    }

    fn failure(&self) -> LogError {
        LogError::Failed(self.failed().unwrap_or_else(|| "unknown failure".into()))
    }

    fn fail(&self, why: String) {
        fail(&self.sh, why);
    }

    /// Wakes the flusher if it sleeps.
    pub fn kick(&self) {
        // Pairs with the fence after the flusher announces idleness: either it sees our commit
        // word, or we see its flag (a store then a load on each side needs a full fence).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sh.flusher_idle.load(Ordering::Acquire)
            && let Some(t) = self.sh.flusher.get()
        {
            t.unpark();
        }
    }

    pub fn appended_bytes(&self) -> u64 {
        self.sh.appended_bytes.load(Ordering::Relaxed)
    }

    pub fn fsyncs(&self) -> u64 {
        self.sh.fsyncs.load(Ordering::Relaxed)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.sh.table.load(&pin()).list().len()
    }

    /// Counts `bytes` of the record at `addr` as dead: it is no longer its key's newest, or its
    /// key is gone. Only steers the cleaner; liveness itself is always decided by the index.
    #[inline]
    pub fn note_dead(&self, addr: u64, bytes: u64, guard: &EpochGuard) {
        if let Some(seg) = self.sh.table.load(guard).get(addr) {
            seg.stats.dead.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Counts every record below `addr` as dead (after a flush left no live key anywhere).
    pub fn mark_dead_before(&self, addr: u64) {
        let g = pin();
        for seg in self.sh.table.load(&g).list() {
            let upto = seg.data_end_now().min(addr.saturating_sub(seg.base));
            let data = upto.saturating_sub(SEGMENT_HEADER_LEN);
            seg.stats.dead.fetch_max(data, Ordering::Relaxed);
        }
    }

    /// Every segment, oldest first, with the counters the cleaner chooses by.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let g = pin();
        let durable = self.durable_addr();
        let active_base = self.sh.active.load(&g).base;
        self.sh
            .table
            .load(&g)
            .list()
            .iter()
            .map(|s| {
                let sealed = s.is_sealed();
                let min = s.stats.min_expiry.load(Ordering::Relaxed);
                let max = s.stats.max_expiry.load(Ordering::Relaxed);
                SegmentInfo {
                    base: s.base,
                    data_bytes: s.data_bytes(),
                    dead_bytes: s.stats.dead.load(Ordering::Relaxed),
                    min_expiry: (min != u64::MAX).then_some(min),
                    max_expiry: (max != 0).then_some(max),
                    holds: s.stats.flags.load(Ordering::Relaxed),
                    active: s.base == active_base,
                    // Sealed, written, synced and mapped from its file: the flusher moved on.
                    settled: sealed && s.base != active_base && durable >= s.next_base(),
                    next_base: s.next_base(),
                }
            })
            .collect()
    }

    /// Bytes of records in every segment (live and dead), and of those the dead, as counted
    /// by `note_dead`: a few loads per segment, no allocation (maxmemory checks it per write
    /// command; appends and overwrites update only their own segment's counters).
    pub fn space(&self) -> (u64, u64) {
        let g = pin();
        let (mut data, mut dead) = (0, 0);
        let mut prev: Option<&Arc<Segment>> = None;
        for s in self.sh.table.load(&g).segs.iter().flatten() {
            if prev.is_some_and(|p| Arc::ptr_eq(p, s)) {
                continue;
            }
            prev = Some(s);
            let d = s.data_bytes();
            data += d;
            dead += s.stats.dead.load(Ordering::Relaxed).min(d);
        }
        (data, dead)
    }

    /// Bytes of records in every segment (live and dead).
    pub fn data_bytes(&self) -> u64 {
        self.space().0
    }

    /// Sets the capacity of segments created from now on (rounded up to 4 KiB).
    pub fn set_segment_size(&self, bytes: u64) {
        self.sh
            .segment_size
            .store(bytes.max(4096).div_ceil(4096) * 4096, Ordering::Relaxed);
    }

    /// Capacity of the segments created from now on.
    pub fn segment_size(&self) -> u64 {
        self.sh.segment_size.load(Ordering::Relaxed)
    }

    /// Calls `f(address, record)` for the valid records of the settled segment at `base`,
    /// from `offset` on, at most `max` of them, in address order. Returns where to resume
    /// (`Some(None)` when the segment is done), or None if there is no settled segment there.
    pub fn records_from(
        &self,
        base: u64,
        offset: u64,
        max: usize,
        guard: &EpochGuard,
        mut f: impl FnMut(u64, RecordView<'_>),
    ) -> Option<Option<u64>> {
        let t = self.sh.table.load(guard);
        let seg = t.get(base).filter(|s| s.base == base)?;
        let end = seg.data_end.load(Ordering::Acquire);
        if end == crate::segment::OPEN || self.durable_addr() < seg.next_base() {
            return None;
        }
        // Every record's checksum is checked before its length is trusted (segments below an
        // index checkpoint were not read at startup). A damaged record that recovery skipped
        // (`recover-corrupt`) is stepped over to the next valid one, as recovery did.
        let data = seg.mem(guard).bytes(0, end as usize);
        let mut p = offset.max(SEGMENT_HEADER_LEN) as usize;
        let mut n = 0;
        while p < data.len() {
            if n == max {
                return Some(Some(p as u64));
            }
            match record::scan(&data[p..]) {
                Ok(record::Scanned::Record(r, len)) => {
                    f(seg.base + p as u64, r);
                    n += 1;
                    p += len;
                }
                Ok(record::Scanned::Invalid(len)) => p += len,
                Ok(record::Scanned::End) | Err(record::DecodeError::Unwritten) => break,
                Err(_) => match crate::recovery::valid_record_after(data, p + 4) {
                    Some(q) => p = q,
                    None => break,
                },
            }
        }
        Some(None)
    }

    /// Whether a segment holds `addr` (false once the cleaner retired it).
    #[inline]
    pub fn contains(&self, addr: u64, guard: &EpochGuard) -> bool {
        self.sh
            .table
            .load(guard)
            .get(addr)
            .is_some_and(|s| addr < s.base + s.capacity)
    }

    /// Whether the record at `addr` may have expired by `now`: its segment holds an expiry
    /// that is due (false when no segment holds it).
    #[inline]
    pub fn may_have_expired(&self, addr: u64, now: u64, guard: &EpochGuard) -> bool {
        self.sh
            .table
            .load(guard)
            .get(addr)
            .is_some_and(|s| s.stats.min_expiry.load(Ordering::Relaxed) <= now)
    }

    /// Seals the active segment now (if it holds any record), so the cleaner can reclaim it.
    pub fn roll(&self) -> Result<(), LogError> {
        let g = pin();
        let seg: &Segment = self.sh.active.load(&g);
        if seg.reserved.load(Ordering::Acquire) <= SEGMENT_HEADER_LEN {
            return Ok(());
        }
        let off = seg.reserved.fetch_add(seg.capacity + 1, Ordering::AcqRel);
        if off <= seg.capacity {
            self.seal_and_roll(seg, off, 0, &g)?;
        }
        Ok(())
    }

    /// Deletes the settled segment at `base`: it leaves the table at once, its file is unlinked
    /// (and the directory synced, so deletions reach the disk in the order they were made), and
    /// its memory is unmapped once no reader can still hold an address in it. The caller makes
    /// sure nothing in it is needed: its live records were copied and those copies are durable.
    pub fn retire(&self, base: u64) -> Result<u64, LogError> {
        let record = !self.sh.mirroring.load(Ordering::Acquire);
        self.retire_inner(base, record)
    }

    /// As `retire`, never appending a Retire record (at open: the segment a Retire record
    /// names, left behind by a crash, goes without a second record).
    pub fn retire_quiet(&self, base: u64) -> Result<u64, LogError> {
        self.retire_inner(base, false)
    }

    fn retire_inner(&self, base: u64, record: bool) -> Result<u64, LogError> {
        let g = pin();
        let seg = {
            let _l = self.sh.table_lock.lock().unwrap();
            let t = self.sh.table.load(&g);
            let Some(seg) = t.get(base).filter(|s| s.base == base).cloned() else {
                return Ok(0);
            };
            let settled = seg.is_sealed()
                && !std::ptr::eq(&**self.sh.active.load(&g), &*seg)
                && self.durable_addr() >= seg.next_base();
            if !settled
                || seg.next_base() > self.sh.retire_hold.load(Ordering::Acquire)
                || self.in_backlog(seg.base + seg.data_end_now())
            {
                return Ok(0);
            }
            self.sh.table.replace(t.without(&seg), &g);
            seg
        };
        if record {
            // Replicas tailing the log learn of it here, after the copies that made it
            // unnecessary. The record is durable before the file goes: a crash in between
            // leaves a file that the next open deletes because of it. Its base is a history
            // address (local minus the replication delta), as every address replicas see.
            let history = base.saturating_sub(self.sh.history_delta.load(Ordering::Acquire));
            let p = self.append(
                &RecordSpec {
                    kind: record::Kind::Retire,
                    keyspace: 0,
                    key: &[],
                    value: &history.to_le_bytes(),
                    expire_at: None,
                },
                &g,
            )?;
            // Not counted dead: garbage the cleaner reclaims makes it write one more, so
            // counting these would keep it cleaning forever (they are 20 bytes per segment
            // deleted, and go when their own segment is cleaned for its other garbage).
            let end = p.addr() + record::pad(p.len as usize) as u64;
            p.commit();
            self.wait_durable(end)?;
        }
        let path = self.sh.cfg.dir.join(segment_file_name(base));
        std::fs::remove_file(&path).map_err(|e| LogError::io("remove segment", &path, e))?;
        sync_dir(&self.sh.cfg.dir)
            .map_err(|e| LogError::io("fsync data directory", &self.sh.cfg.dir, e))?;
        drop(g);
        crate::epoch::flush();
        let file = seg.data_end.load(Ordering::Acquire);
        self.sh.retired_bytes.fetch_add(file, Ordering::Relaxed);
        Ok(file)
    }

    /// The replication delta (local address minus history address) Retire records subtract.
    pub fn set_history_delta(&self, delta: u64) {
        self.sh.history_delta.store(delta, Ordering::Release);
    }

    /// Local address minus history address (`set_history_delta`).
    pub fn history_delta(&self) -> u64 {
        self.sh.history_delta.load(Ordering::Acquire)
    }

    /// Bytes of records at or after `addr` (how far a replica reading from there is behind).
    pub fn data_after(&self, addr: u64) -> u64 {
        let g = pin();
        let mut total = 0;
        for s in self.sh.table.load(&g).list() {
            let end = s.base + s.data_end_now();
            if end > addr {
                total += end - addr.max(s.base + SEGMENT_HEADER_LEN).min(end);
            }
        }
        total
    }

    /// Whether the segment at `base` can be retired now (settled, and no replica still
    /// reads it).
    pub fn may_retire(&self, info: &SegmentInfo) -> bool {
        info.settled
            && info.next_base <= self.sh.retire_hold.load(Ordering::Acquire)
            && !self.in_backlog(info.base + SEGMENT_HEADER_LEN + info.data_bytes)
    }

    /// Keep the last `bytes` of records (the replication backlog: a replica whose link drops
    /// resumes from there). 0: none.
    pub fn set_backlog(&self, bytes: u64) {
        self.sh.backlog.store(bytes, Ordering::Release);
    }

    /// Whether a segment whose data ends at `end` is part of the backlog.
    fn in_backlog(&self, end: u64) -> bool {
        let backlog = self.sh.backlog.load(Ordering::Acquire);
        backlog > 0 && self.data_after(end) < backlog
    }

    /// Bytes of segment files deleted by `retire` so far.
    pub fn retired_bytes(&self) -> u64 {
        self.sh.retired_bytes.load(Ordering::Relaxed)
    }

    // ---- Replication: a primary streams its log, a replica appends the same bytes. ----

    /// Segments that reach past `addr` are not retired until the hold moves (`u64::MAX`: no
    /// hold). A primary holds the oldest address a connected replica still has to read.
    pub fn set_retire_hold(&self, addr: u64) {
        self.sh.retire_hold.store(addr, Ordering::Release);
    }

    /// The log copies a primary's: no Retire records of its own.
    pub fn set_mirroring(&self, on: bool) {
        let direct_tail = {
            let g = pin();
            self.sh.active.load(&g).mem(&g).is_file()
        };
        if !on && self.mirroring() && direct_tail {
            // The copied tail segment was written straight to its file: this node's own
            // writers need a write buffer. Its records are copied into one, in place.
            if let Err(e) = self.reopen_tail_at(self.tail_addr()) {
                self.fail(format!("reopening the last segment for writes: {e}"));
            }
        }
        self.sh.mirroring.store(on, Ordering::Release);
    }

    pub fn mirroring(&self) -> bool {
        self.sh.mirroring.load(Ordering::Acquire)
    }

    /// Base address of the oldest segment.
    pub fn first_base(&self) -> u64 {
        let g = pin();
        let t = self.sh.table.load(&g);
        t.segs.iter().flatten().next().map_or(0, |s| s.base)
    }

    /// Whether a reader of the log could start at `addr`: a segment's start, or a position
    /// inside one at or below its data's end. (Used to accept a partial resync: the caller
    /// knows `addr` is a record boundary of the same history.)
    pub fn holds_position(&self, addr: u64) -> bool {
        let g = pin();
        let t = self.sh.table.load(&g);
        match t.get(addr) {
            Some(seg) => {
                addr == seg.base
                    || (addr >= seg.base + SEGMENT_HEADER_LEN
                        && addr - seg.base <= seg.data_end_now())
            }
            None => false,
        }
    }

    /// Reads the log for a replica from `cursor` (a segment's base, or a record boundary):
    /// the next segment's header, or up to about `max` bytes of whole, committed records
    /// (appended to `out`; they need not be on disk yet). Returns what was read and where to
    /// go on.
    pub fn read_stream(&self, cursor: u64, max: usize, out: &mut Vec<u8>) -> (Stream, u64) {
        self.stream_at(cursor, max, Some(out))
    }

    fn stream_at(&self, cursor: u64, max: usize, out: Option<&mut Vec<u8>>) -> (Stream, u64) {
        let g = pin();
        let t = self.sh.table.load(&g);
        let Some(seg) = t.get(cursor) else {
            return (Stream::Gone, cursor);
        };
        if cursor == seg.base {
            return (
                Stream::Segment(seg.header(&g)),
                seg.base + SEGMENT_HEADER_LEN,
            );
        }
        let off = cursor - seg.base;
        let sealed_end = seg.data_end.load(Ordering::Acquire);
        let end = if sealed_end != crate::segment::OPEN {
            sealed_end
        } else if seg.mem(&g).is_file() {
            // Copied straight into its file: only what was written before `reserved` moved.
            seg.reserved.load(Ordering::Acquire).min(seg.capacity)
        } else {
            seg.capacity
        };
        if off > end || off < SEGMENT_HEADER_LEN {
            return (Stream::Gone, cursor);
        }
        let mem = seg.mem(&g);
        let mut out = out;
        if let Some(out) = out.as_deref_mut()
            && mem.is_file()
            && off < end
        {
            // A flushed segment: read the file instead of touching its mapping (a full
            // resync would otherwise fault every page of the log into this process).
            if let Some(n) = Self::read_records(&seg.file, off, end, max, out) {
                return (Stream::Data(cursor), seg.base + off + n);
            }
        }
        // Whole records whose writers are done (committed or aborted: they never change
        // again), as the flusher walks them.
        let mut p = off;
        while p < end && (p == off || p - off < max as u64) {
            let w = mem.commit_word(p as usize).load(Ordering::Acquire);
            let step = record::pad((w & LEN_MASK) as usize) as u64;
            if w & DONE == 0 || step == 0 || p + step > end {
                break;
            }
            p += step;
        }
        if p == off {
            if sealed_end != crate::segment::OPEN
                && off == sealed_end
                && let Some(next) = t.after(seg.base)
            {
                return (
                    Stream::Segment(next.header(&g)),
                    next.base + SEGMENT_HEADER_LEN,
                );
            }
            return (Stream::Wait, cursor);
        }
        if let Some(out) = out {
            out.extend_from_slice(mem.bytes(off as usize, (p - off) as usize));
        }
        (Stream::Data(cursor), seg.base + p)
    }

    /// Reads whole records of a flushed segment's `file` from `off` (before `end`), about
    /// `max` bytes (at least one record), onto `out`; returns how many bytes. None if the file
    /// cannot be read as expected (the caller reads the mapping instead).
    fn read_records(
        file: &std::fs::File,
        off: u64,
        end: u64,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let start = out.len();
        let want = (end - off).min(max.max(4) as u64) as usize;
        out.resize(start + want, 0);
        let walk = |b: &[u8]| {
            let mut q = 0;
            while q + 4 <= b.len() {
                let w = u32::from_le_bytes(b[q..q + 4].try_into().unwrap());
                let step = record::pad((w & LEN_MASK) as usize);
                if w & DONE == 0 || step == 0 || q + step > b.len() {
                    break;
                }
                q += step;
            }
            q
        };
        let mut n = match file.read_exact_at(&mut out[start..], off) {
            Ok(()) => walk(&out[start..]),
            Err(_) => 0,
        };
        if n == 0 && want >= 4 {
            // The first record is longer than `max`: read all of it.
            let w = u32::from_le_bytes(out[start..start + 4].try_into().unwrap());
            let step = record::pad((w & LEN_MASK) as usize);
            if w & DONE != 0 && step > 0 && off + step as u64 <= end {
                out.resize(start + step, 0);
                if file.read_exact_at(&mut out[start..], off).is_ok() {
                    n = walk(&out[start..]);
                }
            }
        }
        out.truncate(start + n);
        (n > 0).then_some(n as u64)
    }

    /// Blocks a reader of the stream until there may be something at `cursor` (a new
    /// segment, `notify_readers` after commits, `wake_readers`), or `timeout`.
    pub fn wait_stream(&self, cursor: u64, timeout: Duration) {
        self.sh.readers_waiting.fetch_add(1, Ordering::SeqCst);
        let g = self.sh.readers_mx.lock().unwrap();
        if self.stream_at(cursor, 0, None).0 == Stream::Wait {
            drop(self.sh.readers_cv.wait_timeout(g, timeout).unwrap());
        }
        self.sh.readers_waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// Wakes every reader blocked in `wait_stream`.
    pub fn wake_readers(&self) {
        let _g = self.sh.readers_mx.lock().unwrap();
        self.sh.readers_cv.notify_all();
    }

    /// After a commit or a new segment: wake stream readers if any waits (the caller fenced).
    fn tell_readers(&self) {
        if self.sh.readers_waiting.load(Ordering::Relaxed) > 0 {
            self.wake_readers();
        }
    }

    /// Tells readers blocked in `wait_stream` that records were committed. Call it once per
    /// batch of writes (the server does, per round of its event loop, as Redis writes to its
    /// replicas once per round): a fence and a load when no reader waits.
    pub fn notify_readers(&self) {
        // Orders the commits before the check; pairs with the count `wait_stream` raises
        // before it looks at the commit words.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.tell_readers();
    }

    /// Base address of the segment that would follow the active one.
    pub fn active_next_base(&self) -> u64 {
        self.sh.active.load(&pin()).next_base()
    }

    /// A replica's copy of its primary's next segment: seals the active segment where its
    /// data ends (the primary sealed its copy there too) and starts `header`'s segment.
    pub fn mirror_segment(&self, header: SegmentHeader) -> Result<(), LogError> {
        if self.sh.failed.load(Ordering::Relaxed) {
            return Err(self.failure());
        }
        if !self.mirroring() {
            return Err(LogError::Mirror("this log is not a mirror".into()));
        }
        let g = pin();
        let seg: &Segment = self.sh.active.load(&g);
        if !header.base.is_multiple_of(UNIT)
            || header.base < seg.next_base()
            || header.capacity <= SEGMENT_HEADER_LEN
            || header.capacity > 1 << 40
        {
            return Err(LogError::Mirror(format!(
                "segment at {:#x} (capacity {}) cannot follow the segment at {:#x}",
                header.base, header.capacity, seg.base
            )));
        }
        let off = seg
            .reserved
            .fetch_add(seg.capacity + 1, Ordering::AcqRel)
            .min(seg.capacity);
        // An empty segment of its own goes (a copied one stays: the primary has it too).
        let empty = off <= SEGMENT_HEADER_LEN && self.sh.own_active.load(Ordering::Acquire);
        let old_base = seg.base;
        let buffered = !seg.mem(&g).is_file();
        self.seal_and_start(seg, off, header, 0, true, &g)?;
        if buffered {
            // The sealed segment's tail may still be only in its write buffer, while what
            // comes next goes straight to its file: a crash would leave a hole. Durable first
            // (once per restart of copying: later segments are all written in place, in order).
            self.wait_durable(header.base + SEGMENT_HEADER_LEN)?;
        }
        self.sh.own_active.store(false, Ordering::Release);
        let mut empties = self.sh.empties.lock().unwrap();
        if empty {
            empties.push(old_base);
        }
        drop(g);
        self.retire_empties(&mut empties);
        Ok(())
    }

    /// Cuts a replica's log back to `cut`, a record boundary in it: every record at or past
    /// it goes, from memory and from disk, and copying continues there (the replica's
    /// primary was promoted from a replica that had received less: their histories fork at
    /// `cut`). The caller made sure that nothing refers to records past `cut` any more (the
    /// index was rebuilt without them, and readers that could hold an address past it are
    /// gone) and that no other thread appends.
    pub fn mirror_truncate(&self, cut: u64) -> Result<(), LogError> {
        self.reopen_tail_at(cut)
    }

    /// Makes the segment holding `cut` the active one again, with a write buffer holding its
    /// records before `cut`; the records from `cut` on (in it and in later segments) go.
    fn reopen_tail_at(&self, cut: u64) -> Result<(), LogError> {
        self.sync()?;
        let g = pin();
        let _l = self.sh.table_lock.lock().unwrap();
        let t = self.sh.table.load(&g);
        let Some(seg) = Self::segment_to_cut(t, cut) else {
            return Err(LogError::Mirror(format!(
                "{cut:#x} is not the end of a record in this log"
            )));
        };
        let off = cut - seg.base;
        let later: Vec<Arc<Segment>> = t.list().into_iter().filter(|s| s.base > seg.base).collect();
        // Newest first, each deletion durable before the next, then the cut: a crash on the
        // way leaves a log that still ends in whole records past the fork (the next
        // handshake cuts it again), never one with a hole before records it kept.
        for s in later.iter().rev() {
            match std::fs::remove_file(&s.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("delete segment", &s.path, e)),
            }
            sync_dir(&self.sh.cfg.dir)
                .map_err(|e| LogError::io("fsync data directory", &self.sh.cfg.dir, e))?;
        }
        let new = Arc::new(Segment::reopen_at(&seg, off, &g)?);
        let mut table = t.without(&seg);
        for s in &later {
            table = table.without(s);
        }
        self.sh.table.replace(table.with(new.clone()), &g);
        self.sh.active.replace(new.clone(), &g);
        self.sh.own_active.store(false, Ordering::Release);
        self.sh.empties.lock().unwrap().retain(|&b| b < seg.base);
        self.sh.written.store(cut, Ordering::Release);
        self.sh.durable.store(cut, Ordering::Release);
        // (A sync asked for up to the old tail is done: the flusher must not chase it.)
        self.sh.sync_target.fetch_min(cut, Ordering::AcqRel);
        *self.sh.flusher_reset.lock().unwrap() = Some((new, off));
        drop(_l);
        drop(g);
        crate::epoch::flush();
        // The flusher continues with the new segment before anything is appended to it.
        while self.sh.flusher_reset.lock().unwrap().is_some() {
            if self.sh.failed.load(Ordering::Relaxed) {
                return Err(self.failure());
            }
            if self.sh.shutdown.load(Ordering::Acquire) {
                return Err(LogError::Mirror("the log is closing".into()));
            }
            self.kick();
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// The segment whose data `cut` ends or falls in (a segment's end, when segments follow
    /// each other without a gap, is the next one's base: that one is not it).
    fn segment_to_cut(t: &SegTable, cut: u64) -> Option<Arc<Segment>> {
        t.list().into_iter().rev().find(|s| {
            s.base < cut
                && cut - s.base >= SEGMENT_HEADER_LEN
                && cut - s.base <= s.data_end_now().min(s.capacity)
        })
    }

    /// Whether `mirror_truncate(cut)` can cut this log at `cut` (a segment holds it within
    /// its data).
    pub fn can_cut(&self, cut: u64) -> bool {
        Self::segment_to_cut(self.sh.table.load(&pin()), cut).is_some()
    }

    fn retire_empties(&self, empties: &mut Vec<u64>) {
        if empties.is_empty() {
            return;
        }
        let settled: Vec<u64> = self
            .segments()
            .iter()
            .filter(|s| s.settled && s.data_bytes == 0 && empties.contains(&s.base))
            .map(|s| s.base)
            .collect();
        for b in settled {
            if self.retire(b).is_ok() {
                empties.retain(|&e| e != b);
            }
        }
    }

    /// A replica's copy of records its primary wrote at `addr`: `bytes` are whole records
    /// (each one's checksum is verified first) that go exactly at this log's tail. They are
    /// committed as they came (done, or done and invalid); `each(addr, record)` is called for
    /// every valid record once it is in the log, in order (the replica applies it there).
    pub fn mirror_append(
        &self,
        addr: u64,
        bytes: &[u8],
        mut each: impl FnMut(u64, RecordView<'_>) -> Result<(), String>,
    ) -> Result<(), LogError> {
        if self.sh.failed.load(Ordering::Relaxed) {
            return Err(self.failure());
        }
        let g = pin();
        let seg: &Segment = self.sh.active.load(&g);
        let off = seg.reserved.load(Ordering::Acquire);
        if addr != seg.base + off || off + bytes.len() as u64 > seg.capacity {
            return Err(LogError::Mirror(format!(
                "{} bytes at {addr:#x} do not fit at the tail {:#x} of the segment at {:#x}",
                bytes.len(),
                seg.base + off,
                seg.base
            )));
        }
        // Check it all before anything becomes visible.
        let mut p = 0;
        while p < bytes.len() {
            let ok = match record::scan(&bytes[p..]) {
                Ok(record::Scanned::Record(r, _)) => Some(r.padded_len()),
                Ok(record::Scanned::Invalid(_)) => {
                    let w = u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap());
                    Some(record::pad((w & LEN_MASK) as usize))
                }
                Ok(record::Scanned::End) | Err(_) => None,
            };
            match ok {
                Some(len) if p + len <= bytes.len() => p += len,
                _ => {
                    return Err(LogError::Mirror(format!(
                        "damaged or partial record at {:#x}",
                        addr + p as u64
                    )));
                }
            }
        }
        let mem = seg.mem(&g);
        let direct = mem.is_file();
        if direct {
            // A segment copied straight into its file (`mirror_segment`): the bytes go to
            // the page cache in one write, and the flusher only syncs them. `reserved` moves
            // after the write: the flusher syncs up to it.
            std::os::unix::fs::FileExt::write_all_at(&seg.file, bytes, off).map_err(|e| {
                let e = LogError::io("write segment", &seg.path, e);
                self.fail(e.to_string());
                e
            })?;
        }
        seg.reserved
            .store(off + bytes.len() as u64, Ordering::Release);
        self.sh
            .appended_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        // Everything is published before anything is applied: an error applying a record
        // must not leave a hole the flusher would stop at.
        let mut p = 0;
        while p < bytes.len() {
            let w = u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap());
            let rlen = (w & LEN_MASK) as usize;
            let len = record::pad(rlen);
            if !direct {
                let at = off as usize + p;
                mem.write(at + 4, &bytes[p + 4..p + len]);
                mem.commit_word(at).store(w, Ordering::Release);
            }
            match record::decode_verified(&bytes[p..p + rlen]).filter(|_| w & INVALID == 0) {
                Some(r) => seg.stats.note(r.kind, r.expire_at),
                None => {
                    seg.stats.dead.fetch_add(len as u64, Ordering::Relaxed);
                }
            }
            p += len;
        }
        // (No kick: the flusher finds the copy on its next round; a replica's durability
        // only gates acknowledgements, and GETACK asks for a sync.)
        let mut p = 0;
        while p < bytes.len() {
            let w = u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap());
            let rlen = (w & LEN_MASK) as usize;
            // Checked above: a valid record decodes.
            if w & INVALID == 0
                && let Some(r) = record::decode_verified(&bytes[p..p + rlen])
            {
                each(addr + p as u64, r).map_err(LogError::Mirror)?;
            }
            p += record::pad(rlen);
        }
        Ok(())
    }

    /// Flushes and syncs everything, then stops the flusher. Called by drop too. Nothing may
    /// append meanwhile (a replica stops its link first).
    pub fn close(&self) -> Result<(), LogError> {
        let r = if self.flusher.lock().unwrap().is_some() && !self.sh.failed.load(Ordering::Acquire)
        {
            self.sync()
        } else {
            Ok(())
        };
        self.sh.shutdown.store(true, Ordering::Release);
        let joined = match self.flusher.lock().unwrap().take() {
            Some(h) => {
                h.thread().unpark();
                h.join().is_ok()
            }
            None => false,
        };
        if joined && r.is_ok() {
            // A clean close leaves the active segment's file ending at its data, as a sealed
            // one does, instead of at its preallocated capacity.
            // (The caller stopped every appender: a segment copied straight into its file is
            // not written any more either.)
            let g = pin();
            let active = self.sh.active.load(&g);
            let durable = self.durable_addr();
            if durable >= active.base && durable - active.base <= active.capacity {
                let _ = active.file.set_len(durable - active.base);
            }
        }
        r
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// fsync of a directory, so the files created in it survive a crash.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn fail(sh: &Shared, why: String) {
    let mut f = sh.failure.lock().unwrap();
    if f.is_none() {
        *f = Some(why);
    }
    drop(f);
    // Wake whoever waits, through the callbacks (`failed()` already answers) and then the
    // condition: what they wait for will not come.
    let durable = sh.durable.load(Ordering::Acquire);
    for cb in sh.callbacks.read().unwrap().iter() {
        cb(durable);
    }
    sh.failed.store(true, Ordering::Release);
    let _g = sh.durable_lock.lock().unwrap();
    sh.durable_cv.notify_all();
}

/// The flusher: writes completed bytes of the oldest unflushed segment, syncs per policy,
/// finalizes sealed segments (truncate, map read-only, free the buffer).
struct Flusher {
    sh: Arc<Shared>,
    writer: Box<dyn SegmentWriter>,
    cur: Arc<Segment>,
    /// Offset in `cur` up to which bytes were handed to the writer.
    off: u64,
    /// Offset in `cur` up to which bytes are synced.
    synced: u64,
    last_sync: Instant,
    /// Records the last sync covered, and how long its write+fsync took (group commit).
    last_batch: u64,
    last_sync_took: Duration,
}

/// Under `always`, after a sync that covered several writers, how long to wait for more of
/// them to commit before the next write+fsync: until none has arrived for `GATHER_QUIET`,
/// and never longer than `GATHER_MAX`.
const GATHER_QUIET: Duration = Duration::from_micros(30);
const GATHER_MAX: Duration = Duration::from_micros(300);

impl Flusher {
    fn new(
        sh: Arc<Shared>,
        writer: Box<dyn SegmentWriter>,
        cur: Arc<Segment>,
        off: u64,
    ) -> Flusher {
        Flusher {
            sh,
            writer,
            cur,
            off,
            synced: off,
            last_sync: Instant::now(),
            last_batch: 0,
            last_sync_took: Duration::ZERO,
        }
    }

    fn run(mut self) {
        // Steps in a row that found nothing to do; past `DEEP_AFTER` the flusher sleeps long
        // (an idle server wakes ~10 times a second, not 500).
        let mut idle_steps = 0u32;
        const DEEP_AFTER: u32 = 50;
        loop {
            let progressed = if self.sh.failed.load(Ordering::Acquire) {
                false
            } else {
                self.step()
            };
            if self.sh.shutdown.load(Ordering::Acquire) && !progressed {
                return;
            }
            if progressed {
                idle_steps = 0;
            } else {
                idle_steps = idle_steps.saturating_add(1);
                // Nothing written waits for a sync (everysec would otherwise need a timely wake).
                let deep = idle_steps > DEEP_AFTER && self.synced == self.off;
                self.sh.flusher_idle.store(true, Ordering::Release);
                self.sh.flusher_deep.store(deep, Ordering::Release);
                // Pairs with the fence in `kick`: see there.
                std::sync::atomic::fence(Ordering::SeqCst);
                // Re-check after announcing idleness, so a commit or kick in between is not lost.
                let failed = self.sh.failed.load(Ordering::Acquire);
                if failed || !self.has_work() {
                    let nap = if deep {
                        Duration::from_millis(100)
                    } else if self.sh.cfg.fsync == FsyncPolicy::Always {
                        Duration::from_millis(5)
                    } else {
                        Duration::from_millis(2)
                    };
                    std::thread::park_timeout(nap);
                }
                self.sh.flusher_deep.store(false, Ordering::Release);
                self.sh.flusher_idle.store(false, Ordering::Release);
            }
        }
    }

    /// Whether the next commit word is done, or a sync was requested.
    fn has_work(&self) -> bool {
        let g = pin();
        let mem = self.cur.mem(&g);
        if self.off >= self.cur.capacity || self.cur.is_sealed() {
            return true;
        }
        if mem.is_file() {
            return self.cur.reserved.load(Ordering::Acquire) > self.off
                || self.sh.sync_target.load(Ordering::Acquire) > self.cur.base + self.synced;
        }
        let w = mem.commit_word(self.off as usize).load(Ordering::Acquire);
        w & DONE != 0 || self.sh.sync_target.load(Ordering::Acquire) > self.cur.base + self.synced
    }

    /// One round; returns whether anything happened.
    /// Walks committed records from `from`: returns where they end, whether the segment's
    /// data ends there, and how many records were passed.
    fn scan(cur: &Segment, mem: &SegMem, from: u64) -> (u64, bool, u64) {
        let mut p = from;
        let mut n = 0;
        loop {
            if p >= cur.capacity || p == cur.data_end.load(Ordering::Acquire) {
                return (p, true, n);
            }
            let w = mem.commit_word(p as usize).load(Ordering::Acquire);
            if w == END_MARK {
                return (p, true, n);
            }
            if w & DONE == 0 {
                return (p, false, n);
            }
            p += record::pad((w & LEN_MASK) as usize) as u64;
            n += 1;
        }
    }

    fn step(&mut self) -> bool {
        if let Some((seg, off)) = self.sh.flusher_reset.lock().unwrap().take() {
            self.cur = seg;
            self.off = off;
            self.synced = off;
            return true;
        }
        let g = pin();
        let cur = self.cur.clone();
        let mem = cur.mem(&g);
        if mem.is_file() {
            return self.step_direct(&cur, &g);
        }
        let (mut p, mut end, mut batch) = Self::scan(&cur, mem, self.off);
        // Group commit: the writers woken by the last sync commit again while the next one
        // would already be running, and writers settle into two groups that alternate
        // fsyncs. When the last sync covered several of them, gather the stragglers briefly.
        // The wait is a fraction of the last fsync's time (gathering must not cost more than
        // it saves when the disk is fast) and yields rather than sleeps (a sleep on a VM lasts
        // 100 us or more, however short it is asked to be).
        if self.sh.cfg.fsync == FsyncPolicy::Always && self.last_batch > 1 && batch > 0 && !end {
            let budget = GATHER_MAX.min(self.last_sync_took / 2);
            let t0 = Instant::now();
            let mut quiet_since = t0;
            while t0.elapsed() < budget {
                std::thread::yield_now();
                let (q, e, n) = Self::scan(&cur, mem, p);
                if n > 0 || e {
                    (p, end, batch) = (q, e, batch + n);
                    if e {
                        break;
                    }
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= GATHER_QUIET {
                    break;
                }
            }
        }
        let sync = self.sync_now(&cur, p, end);
        let mut progressed = false;
        if p > self.off || sync {
            let data = mem.bytes(self.off as usize, (p - self.off) as usize);
            let started = Instant::now();
            if let Err(e) = self.writer.write(&cur.file, self.off, data, sync) {
                let what = if sync { "write+fdatasync" } else { "write" };
                fail(
                    &self.sh,
                    format!(
                        "{what} of {} at offset {} failed: {e}",
                        cur.path.display(),
                        self.off
                    ),
                );
                return false;
            }
            self.off = p;
            self.sh.written.store(cur.base + p, Ordering::Release);
            if sync {
                self.last_batch = batch;
                self.last_sync_took = started.elapsed();
                self.synced_to(cur.base, p);
            }
            progressed = true;
        }
        if end && self.synced == p {
            progressed |= self.finish_segment(&cur, p, &g);
        }
        progressed
    }

    /// A sync of the current segment up to `p` is done.
    fn synced_to(&mut self, base: u64, p: u64) {
        self.synced = p;
        self.last_sync = Instant::now();
        self.sh.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.advance_durable(base + p);
    }

    /// Whether to sync `cur` up to `p` now (`end`: its data ends there): by the fsync
    /// policy, a sync asked for, the segment's end, or shutdown.
    fn sync_now(&self, cur: &Segment, p: u64, end: bool) -> bool {
        let requested = self.sh.sync_target.load(Ordering::Acquire) > cur.base + self.synced;
        let due = match self.sh.cfg.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::EverySec => self.last_sync.elapsed() >= Duration::from_secs(1),
            FsyncPolicy::No => false,
        };
        p > self.synced && (due || requested || end || self.sh.shutdown.load(Ordering::Acquire))
    }

    /// A round over a segment copied straight into its file (a replica's: `mirror_segment`):
    /// its bytes are in the page cache already, up to `reserved`; they only need syncing.
    fn step_direct(&mut self, cur: &Arc<Segment>, g: &EpochGuard) -> bool {
        let data_end = cur.data_end.load(Ordering::Acquire);
        let end = data_end != crate::segment::OPEN;
        let p = if end {
            data_end
        } else {
            let r = cur.reserved.load(Ordering::Acquire);
            if r > cur.capacity {
                return false; // being sealed: its end is known in a moment
            }
            r
        };
        let sync = self.sync_now(cur, p, end);
        let mut progressed = false;
        if p > self.off {
            self.off = p;
            self.sh.written.store(cur.base + p, Ordering::Release);
            progressed = true;
        }
        if sync {
            if let Err(e) = self.writer.sync(&cur.file) {
                fail(
                    &self.sh,
                    format!("fdatasync of {} failed: {e}", cur.path.display()),
                );
                return false;
            }
            self.synced_to(cur.base, p);
            progressed = true;
        }
        if end && self.synced == p {
            progressed |= self.finish_segment(cur, p, g);
        }
        progressed
    }

    /// The segment's data is all written and synced: truncate the preallocated file to its
    /// data, map it read-only in place of the write buffer, and move on to the next segment.
    fn finish_segment(&mut self, cur: &Arc<Segment>, data_end: u64, g: &EpochGuard) -> bool {
        // The next segment: right after this one, or further on (a replica copies a primary
        // whose log has holes).
        let Some(next) = self.sh.table.load(g).after(cur.base).cloned() else {
            return false; // the sealer has not installed the next segment yet
        };
        if let Err(e) = cur.file.set_len(data_end) {
            fail(
                &self.sh,
                format!("truncate {} to {data_end}: {e}", cur.path.display()),
            );
            return false;
        }
        match SegMem::map_file(&cur.file) {
            Ok(m) => {
                cur.mem.replace(m, g);
                // The write buffer goes back to the OS once no reader holds it.
                crate::epoch::flush();
            }
            Err(e) => {
                fail(&self.sh, format!("map {}: {e}", cur.path.display()));
                return false;
            }
        }
        // The next segment's file must survive a crash before anything in it is reported
        // durable: sync the directory entry that names it.
        if let Err(e) = sync_dir(&self.sh.cfg.dir) {
            fail(
                &self.sh,
                format!("fsync of directory {}: {e}", self.sh.cfg.dir.display()),
            );
            return false;
        }
        self.cur = next;
        self.off = SEGMENT_HEADER_LEN;
        self.synced = SEGMENT_HEADER_LEN;
        let start = self.cur.base + SEGMENT_HEADER_LEN;
        self.sh.written.store(start, Ordering::Release);
        self.advance_durable(start);
        true
    }

    fn advance_durable(&self, addr: u64) {
        self.sh.durable.store(addr, Ordering::Release);
        {
            let _g = self.sh.durable_lock.lock().unwrap();
            self.sh.durable_cv.notify_all();
        }
        for cb in self.sh.callbacks.read().unwrap().iter() {
            cb(addr);
        }
    }
}
