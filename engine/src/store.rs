//! The store: the index over the log, with the operations the server calls.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use segkv_log::epoch::{EpochCell, EpochGuard, pin};
use segkv_log::{Kind, Log, LogConfig, RecordSpec, RecordView};

use crate::api::*;
use crate::gate::Gate;
use crate::index::{Found, Index, Table, hash, is_tomb, make_slot, slot_addr, tombed};

#[path = "access.rs"]
mod access;
#[path = "checkpoint.rs"]
mod checkpoint;
pub use checkpoint::CheckpointInfo;
#[path = "clean.rs"]
mod clean;
#[path = "mirror.rs"]
mod mirror;
pub use access::EvictPolicy;
pub use clean::CleanerStats;
pub use mirror::{BulkLoad, Settle};

/// Keyspaces are fixed ids stored in records; databases map onto them (SWAPDB swaps the map).
pub const MAX_DATABASES: usize = 16;

struct Keyspace {
    index: EpochCell<Index>,
}

pub struct Engine {
    cfg: Config,
    log: Log,
    keyspaces: Box<[Keyspace]>,
    db_map: [AtomicU8; MAX_DATABASES],
    gate: Gate,
    expired_keys: AtomicU64,
    recovery: RecoveryInfo,
    cleaner: clean::Cleaner,
    access: access::Access,
    evicted_keys: AtomicU64,
    checkpoint_lock: std::sync::Mutex<()>,
}

/// What the last open found in the log.
#[derive(Debug, Clone, Default)]
pub struct RecoveryInfo {
    pub report: segkv_log::RecoveryReport,
    pub keys_loaded: u64,
    pub expired_skipped: u64,
    pub seconds: f64,
    /// The index checkpoint loaded: the log address it covered (only the log after it was
    /// replayed).
    pub checkpoint: Option<u64>,
    /// Why an index checkpoint present was not used (the whole log was replayed instead).
    pub checkpoint_unused: Option<String>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.cfg.dir)
            .finish()
    }
}

/// What the write loop will do (borrowing the value where the caller has it).
enum Plan<'v> {
    Keep,
    Delete,
    Put(Cow<'v, [u8]>, Option<u64>),
    /// A record a replica copied from its primary, already in the log at `addr`.
    Mirrored {
        addr: u64,
        tomb: bool,
        expire_at: Option<u64>,
        padded: u64,
    },
}

enum State<'a> {
    Live(Current<'a>),
    Expired,
    Dead,
}

/// Recovery-time state: newest-wins replay of the log into fresh indexes.
struct Replay {
    tables: Vec<Vec<ReplayRec>>,
    db_map: [u8; MAX_DATABASES],
    /// A FlushKeyspace was replayed: the keyspace starts empty, not from the checkpoint.
    flushed: [bool; MAX_DATABASES],
    /// Segments named by Retire records (history addresses).
    retired: Vec<u64>,
}

impl Replay {
    fn new(db_map: [u8; MAX_DATABASES]) -> Replay {
        Replay {
            tables: (0..MAX_DATABASES).map(|_| Vec::new()).collect(),
            db_map,
            flushed: [false; MAX_DATABASES],
            retired: Vec::new(),
        }
    }

    /// Leaves out of the index the records of segments that Retire records name but that
    /// are still in the log (deleted only once the record is durable, or kept as backlog);
    /// returns their address ranges. `delta` turns the records' history bases local.
    fn leave_out_retired(&mut self, log: &Log, delta: u64) -> Vec<(u64, u64)> {
        let named: Vec<u64> = std::mem::take(&mut self.retired)
            .into_iter()
            .map(|b| b.saturating_add(delta))
            .collect();
        let doomed: Vec<(u64, u64)> = log
            .segments()
            .iter()
            .filter(|s| !s.active && named.contains(&s.base))
            .map(|s| (s.base, s.next_base))
            .collect();
        if !doomed.is_empty() {
            for recs in self.tables.iter_mut() {
                recs.retain(|r| !doomed.iter().any(|&(lo, hi)| (lo..hi).contains(&r.addr())));
            }
        }
        doomed
    }

    /// Pass 1: one record, in address order.
    fn visit(&mut self, addr: u64, rec: &RecordView<'_>, now: u64) {
        let ks = rec.keyspace as usize;
        match rec.kind {
            Kind::Put | Kind::Delete if ks < MAX_DATABASES => {
                let dead = rec.kind == Kind::Delete || rec.expired(now);
                self.tables[ks].push(ReplayRec::new(
                    hash(rec.key),
                    addr,
                    dead,
                    rec.expire_at.is_some(),
                ));
            }
            Kind::FlushKeyspace if ks < MAX_DATABASES => {
                self.tables[ks].clear();
                self.flushed[ks] = true;
            }
            Kind::SwapDb if rec.value.len() == 2 => {
                let (a, b) = (rec.value[0] as usize, rec.value[1] as usize);
                if a < MAX_DATABASES && b < MAX_DATABASES {
                    self.db_map.swap(a, b);
                }
            }
            Kind::DbMap
                if rec.value.len() == MAX_DATABASES
                    && rec.value.iter().all(|&k| (k as usize) < MAX_DATABASES) =>
            {
                self.db_map.copy_from_slice(rec.value);
            }
            Kind::Retire => {
                if let Ok(b) = <[u8; 8]>::try_from(rec.value) {
                    self.retired.push(u64::from_le_bytes(b));
                }
            }
            _ => {}
        }
    }
}

impl Engine {
    /// Opens the data directory: loads the index checkpoint if there is a usable one and
    /// replays the log after the address it covers, else replays the whole log.
    pub fn open(cfg: Config) -> Result<Engine, EngineError> {
        if cfg.databases == 0 || cfg.databases > MAX_DATABASES {
            return Err(EngineError::BadDb(cfg.databases));
        }
        let t0 = std::time::Instant::now();
        if cfg.reopen_tail {
            // A replica continues its last segment: it replays its log (checkpoints are a
            // primary's).
            checkpoint::discard(&cfg.dir);
            return Self::open_full(cfg, t0, None);
        }
        let ckpt = match checkpoint::read(&cfg.dir) {
            Ok(c) => c,
            Err(why) => return Self::open_full(cfg, t0, Some(why)),
        };
        let Some(ckpt) = ckpt else {
            return Self::open_full(cfg, t0, None);
        };
        match Self::open_from(cfg.clone(), Some(ckpt), t0)? {
            Ok(e) => Ok(e),
            Err(why) => Self::open_full(cfg, t0, Some(why)),
        }
    }

    /// Replays the whole log; `why` says why a checkpoint present was not used.
    fn open_full(
        cfg: Config,
        t0: std::time::Instant,
        why: Option<String>,
    ) -> Result<Engine, EngineError> {
        if why.is_some() {
            // A checkpoint that cannot be used now never will be.
            checkpoint::discard(&cfg.dir);
        }
        let mut e = match Self::open_from(cfg, None, t0)? {
            Ok(e) => e,
            Err(why) => unreachable!("a full replay has no checkpoint to refuse: {why}"),
        };
        e.recovery.checkpoint_unused = why;
        Ok(e)
    }

    /// Opens the log, replaying it from `ckpt`'s address (or from the start) on top of the
    /// checkpoint's index. Ok(Err(why)) when the checkpoint turns out unusable.
    fn open_from(
        cfg: Config,
        mut ckpt: Option<checkpoint::Loaded>,
        t0: std::time::Instant,
    ) -> Result<Result<Engine, String>, EngineError> {
        let covered = ckpt.as_ref().map_or(0, |c| c.covered);
        let lcfg = LogConfig {
            dir: cfg.dir.clone(),
            segment_size: cfg.segment_size,
            fsync: cfg.appendfsync,
            writer: cfg.writer,
            recover_corrupt: cfg.recover_corrupt,
            replay_from: covered,
            reopen_tail: cfg.reopen_tail,
        };
        let now = cfg.clock.now_ms();
        // Pass 1 (during the log scan): collect (hash, address) per keyspace in address order.
        let mut replay = Replay::new(
            ckpt.as_ref()
                .map_or(std::array::from_fn(|i| i as u8), |c| c.db_map),
        );
        let (log, report) = Log::open(lcfg, |addr, rec| {
            if let Some(hook) = &cfg.on_replay {
                (hook.0)(addr);
            }
            replay.visit(addr, &rec, now);
        })?;
        log.set_history_delta(cfg.history_delta);
        // A segment a Retire record names was being deleted when the process stopped (its
        // live records were copied before the record was written): it is left out of the
        // index as if it were gone, and then it goes.
        let doomed = replay.leave_out_retired(&log, cfg.history_delta);
        if ckpt.is_some() {
            // Everything the checkpoint covers must still be in the log (only a damaged log
            // is cut below a durable address).
            let segs = log.segments();
            let last = segs.iter().filter(|s| !s.active).max_by_key(|s| s.base);
            let end = last.map_or(0, |s| {
                s.base + segkv_log::segment::SEGMENT_HEADER_LEN + s.data_bytes
            });
            // A checkpoint taken when the active segment held nothing covers up to that
            // segment's header, and the segment is gone (removed empty at recovery): fine, as
            // long as that segment is the one right after the last there is.
            let next_start = last
                .is_some_and(|s| covered == s.next_base + segkv_log::segment::SEGMENT_HEADER_LEN);
            if covered > end && !next_start {
                return Ok(Err(format!(
                    "the index checkpoint covers the log up to address {covered:#x}, but the log ends at {end:#x}"
                )));
            }
        }
        let mut engine = Engine {
            keyspaces: (0..MAX_DATABASES)
                .map(|_| Keyspace {
                    index: EpochCell::new(Index::new(Table::for_keys(0))),
                })
                .collect(),
            db_map: std::array::from_fn(|i| AtomicU8::new(replay.db_map[i])),
            gate: Gate::new(),
            expired_keys: AtomicU64::new(0),
            recovery: RecoveryInfo::default(),
            cleaner: clean::Cleaner::new(),
            access: access::Access::default(),
            evicted_keys: AtomicU64::new(0),
            checkpoint_lock: std::sync::Mutex::new(()),
            log,
            cfg,
        };
        // Pass 2: build each keyspace's index. Records are bucketed by the top bits of their
        // hash (stable, so each key's records stay in address order and the newest wins), which
        // makes the inserts walk the table in order instead of missing the cache on each one.
        let mut loaded = 0u64;
        let mut expired = 0u64;
        let g = pin();
        for (ks, recs) in replay.tables.into_iter().enumerate() {
            let base = match ckpt.as_mut() {
                Some(c) if !replay.flushed[ks] => {
                    let (slots, live, expires, ttl) = std::mem::take(&mut c.spaces[ks]);
                    let index = checkpoint::index_from(&engine, slots, live, expires, &ttl);
                    index.reserve(recs.len(), &engine.log, &g);
                    Some(index)
                }
                _ => None,
            };
            if recs.is_empty() && base.is_none() {
                continue;
            }
            let (index, gone) = engine.build_index(recs, base, &g);
            expired += gone;
            loaded += index.len();
            engine.keyspaces[ks].index.replace(index, &g);
        }
        drop(g);
        for (base, _) in doomed {
            engine.log.retire_quiet(base)?;
        }
        engine.recovery = RecoveryInfo {
            report,
            keys_loaded: loaded,
            expired_skipped: expired,
            seconds: t0.elapsed().as_secs_f64(),
            checkpoint: ckpt.map(|c| c.covered),
            checkpoint_unused: None,
        };
        Ok(Ok(engine))
    }

    /// Pass 2 of a replay: inserts a keyspace's replayed records (newest wins) into `base`
    /// or a fresh index sized for them. Returns it and how many keys were found expired.
    fn build_index(
        &self,
        recs: Vec<ReplayRec>,
        base: Option<Index>,
        g: &EpochGuard,
    ) -> (Index, u64) {
        let mut expired = 0;
        let index = base.unwrap_or_else(|| Index::new(Table::for_keys(recs.len())));
        for r in bucket_by_hash(recs) {
            let (applied, freed) =
                index.replay_insert(&self.log, r.h, r.addr(), r.dead(), r.ttl(), g);
            if applied && r.dead() && r.ttl() {
                expired += 1;
            }
            // The cleaner's counters: the record replaced, and a dead record itself.
            if let Some((addr, len)) = freed {
                self.log.note_dead(addr, len, g);
            }
            if r.dead()
                && let Some(rec) = self.log.read(r.addr(), g)
            {
                self.log.note_dead(r.addr(), rec.padded_len() as u64, g);
            }
        }
        (index, expired)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn databases(&self) -> usize {
        self.cfg.databases
    }

    pub fn now_ms(&self) -> u64 {
        self.cfg.clock.now_ms()
    }

    /// What recovery found when this engine was opened.
    pub fn recovery(&self) -> &RecoveryInfo {
        &self.recovery
    }

    /// The log underneath (for tools and replication).
    pub fn log(&self) -> &Log {
        &self.log
    }

    fn keyspace_of(&self, db: usize) -> usize {
        self.db_map[db].load(Ordering::Acquire) as usize
    }

    fn index<'g>(&'g self, db: usize, g: &'g EpochGuard) -> (usize, &'g Index) {
        let ks = self.keyspace_of(db);
        (ks, self.keyspaces[ks].index.load(g))
    }

    /// Calls `f` with the live value of `key`, if any. Lock-free; an expired key is a miss and
    /// is removed from the index on the way.
    pub fn read<R>(&self, db: usize, key: &[u8], f: impl FnOnce(Current<'_>) -> R) -> Option<R> {
        let g = pin();
        let (_, index) = self.index(db, &g);
        if index.resizing(&g) {
            // Reads move a resize along too (as Redis rehashes on lookups), so a burst of
            // inserts followed by reads does not keep two tables alive.
            index.help_migrate(&self.log, &g);
        }
        let h = hash(key);
        let (v, slot) = index.get(&self.log, key, h, &g)?;
        let rec = self.log.read(slot_addr(v), &g)?;
        match self.state(&rec) {
            State::Live(c) => {
                access::touch_slot(self, index, slot, false, &g);
                Some(f(c))
            }
            State::Expired => {
                self.expire_slot(index, slot, v, &rec, &g);
                None
            }
            State::Dead => None,
        }
    }

    /// Whether a record found in the index is a live value; reads the clock only for keys
    /// with an expiry.
    #[inline]
    fn state<'a>(&self, rec: &RecordView<'a>) -> State<'a> {
        if rec.kind != Kind::Put {
            return State::Dead;
        }
        match rec.expire_at {
            Some(t) if t <= self.now_ms() => State::Expired,
            expire_at => State::Live(Current {
                value: rec.value,
                expire_at,
            }),
        }
    }

    /// Marks an expired key's slot as a tomb (no log write: recovery treats the expired record
    /// as a delete too).
    fn expire_slot(
        &self,
        index: &Index,
        slot: &AtomicU64,
        v: u64,
        rec: &RecordView<'_>,
        g: &EpochGuard,
    ) -> bool {
        let had_ttl = rec.expire_at.is_some();
        let won = slot
            .compare_exchange(v, tombed(v), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            self.log.note_dead(slot_addr(v), rec.padded_len() as u64, g);
            index.live.fetch_sub(1, Ordering::Relaxed);
            if had_ttl {
                index.expires.fetch_sub(1, Ordering::Relaxed);
            }
            self.expired_keys.fetch_add(1, Ordering::Relaxed);
        }
        won
    }

    pub fn get(&self, db: usize, key: &[u8]) -> Option<Vec<u8>> {
        self.read(db, key, |c| c.value.to_vec())
    }

    pub fn exists(&self, db: usize, key: &[u8]) -> bool {
        self.read(db, key, |_| ()).is_some()
    }

    /// Atomic read-modify-write: `f` sees the current value (or none) and decides. `f` may be
    /// called more than once when writers race; only the last call's action is applied.
    pub fn update<R>(
        &self,
        db: usize,
        key: &[u8],
        mut f: impl FnMut(Option<Current<'_>>) -> (Action, R),
    ) -> Result<R, EngineError> {
        self.update_plan(db, key, |cur| {
            let (action, r) = f(cur);
            let plan = match action {
                Action::Keep => Plan::Keep,
                Action::Delete => Plan::Delete,
                Action::Put { value, expire_at } => Plan::Put(Cow::Owned(value), expire_at),
            };
            (plan, r)
        })
    }

    /// The write loop behind every write: find the key, let `decide` choose, append the
    /// record, CAS it in; on a lost CAS abort the record and start again from the read.
    fn update_plan<'v, R>(
        &self,
        db: usize,
        key: &[u8],
        decide: impl FnMut(Option<Current<'_>>) -> (Plan<'v>, R),
    ) -> Result<R, EngineError> {
        if db >= self.cfg.databases {
            return Err(EngineError::BadDb(db));
        }
        self.write_loop(Some(db), 0, key, decide)
    }

    /// `update_plan` in database `db`, or (None) in keyspace `ks`.
    fn write_loop<'v, R>(
        &self,
        db: Option<usize>,
        ks: usize,
        key: &[u8],
        mut decide: impl FnMut(Option<Current<'_>>) -> (Plan<'v>, R),
    ) -> Result<R, EngineError> {
        let h = hash(key);
        loop {
            let result;
            let grow;
            {
                let _w = self.gate.enter();
                let g = pin();
                let (ks, index) = match db {
                    Some(db) => self.index(db, &g),
                    None => (ks, self.keyspaces[ks].index.load(&g)),
                };
                if index.resizing(&g) {
                    index.help_migrate(&self.log, &g);
                }
                result = loop {
                    let found = index.find(&self.log, key, h, &g);
                    if index.must_help_first(&found, &g) {
                        if !index.help_migrate(&self.log, &g) {
                            std::thread::yield_now();
                        }
                        continue;
                    }
                    if index.must_grow_first(&found, &g) {
                        break None;
                    }
                    if index.must_migrate_first(&found, &self.log, &g) {
                        continue;
                    }
                    // The current value, whether the slot holds a live entry, and the size of
                    // the record a write replaces (it becomes dead: the cleaner's counters).
                    let (cur, live_v, old_len) = match &found {
                        Found::Hit { v, slot, .. } if !is_tomb(*v) => {
                            match self.log.read(slot_addr(*v), &g) {
                                Some(rec) => match self.state(&rec) {
                                    State::Live(c) => (Some(c), true, rec.padded_len()),
                                    State::Expired => {
                                        self.expire_slot(index, slot, *v, &rec, &g);
                                        continue;
                                    }
                                    State::Dead => (None, true, rec.padded_len()),
                                },
                                None => (None, true, 0),
                            }
                        }
                        _ => (None, false, 0),
                    };
                    let old_ttl = cur.is_some_and(|c| c.expire_at.is_some());
                    let (plan, r) = decide(cur);
                    let (spec_kind, value, expire_at): (Kind, &[u8], Option<u64>) = match &plan {
                        Plan::Keep => break Some(r),
                        Plan::Delete if !live_v => break Some(r),
                        Plan::Delete => (Kind::Delete, &[], None),
                        Plan::Put(value, expire_at) => (Kind::Put, value, *expire_at),
                        Plan::Mirrored {
                            addr,
                            tomb: true,
                            padded,
                            ..
                        } if !live_v => {
                            self.log.note_dead(*addr, *padded, &g);
                            break Some(r);
                        }
                        Plan::Mirrored {
                            tomb, expire_at, ..
                        } => (
                            if *tomb { Kind::Delete } else { Kind::Put },
                            &[],
                            *expire_at,
                        ),
                    };
                    let spec = RecordSpec {
                        kind: spec_kind,
                        keyspace: ks as u8,
                        key,
                        value,
                        expire_at,
                    };
                    let (pending, addr, padded) = match plan {
                        Plan::Mirrored { addr, padded, .. } => (None, addr, padded),
                        // A replica's log takes only its primary's records (checked inside
                        // the gate: `set_mirroring` closes it after setting the flag).
                        _ if self.log.mirroring() => return Err(EngineError::ReadOnly),
                        _ => {
                            let p = self.log.append(&spec, &g)?;
                            let a = p.addr();
                            (Some(p), a, spec.padded_len() as u64)
                        }
                    };
                    let tomb = spec_kind == Kind::Delete;
                    if index.install(&found, make_slot(addr, h, tomb)) {
                        if let Found::Hit { v, .. } = found
                            && old_len > 0
                        {
                            self.log.note_dead(slot_addr(v), old_len as u64, &g);
                        }
                        if tomb {
                            // A tombstone is garbage from the start: it only shadows older records.
                            self.log.note_dead(addr, padded, &g);
                        } else {
                            let (slot, new) = match found {
                                Found::Hit { slot, .. } => (slot, !live_v),
                                Found::Miss { slot, .. } => (slot, true),
                            };
                            access::touch_slot(self, index, slot, new, &g);
                        }
                        if let Some(p) = pending {
                            p.commit();
                        }
                        let now_live = !tomb;
                        index
                            .live
                            .fetch_add(i64::from(now_live) - i64::from(live_v), Ordering::Relaxed);
                        index.expires.fetch_add(
                            i64::from(now_live && expire_at.is_some())
                                - i64::from(live_v && old_ttl),
                            Ordering::Relaxed,
                        );
                        break Some(r);
                    }
                    if let Some(p) = pending {
                        p.abort();
                    }
                };
                grow = index.needs_resize(&g);
            }
            match result {
                Some(r) => {
                    if grow {
                        self.start_resize_in(db, ks);
                    }
                    return Ok(r);
                }
                // The table is full up to its limit: leave the gate, attach a bigger one, retry.
                None => self.start_resize_in(db, ks),
            }
        }
    }

    fn start_resize_in(&self, db: Option<usize>, ks: usize) {
        let _closed = self.gate.close();
        let g = pin();
        match db {
            Some(db) => self.index(db, &g).1.start_resize(&g),
            None => self.keyspaces[ks].index.load(&g).start_resize(&g),
        }
    }

    pub fn set(
        &self,
        db: usize,
        key: &[u8],
        value: &[u8],
        opts: SetOptions,
    ) -> Result<SetResult, EngineError> {
        self.update_plan(db, key, |cur| {
            let old = if opts.get_old {
                cur.map(|c| c.value.to_vec())
            } else {
                None
            };
            let ok = match opts.cond {
                Cond::Always => true,
                Cond::IfAbsent => cur.is_none(),
                Cond::IfPresent => cur.is_some(),
            };
            if !ok {
                return (
                    Plan::Keep,
                    SetResult {
                        applied: false,
                        old,
                    },
                );
            }
            let expire_at = match opts.expiry {
                SetExpiry::Persist => None,
                SetExpiry::Keep => cur.and_then(|c| c.expire_at),
                SetExpiry::At(t) => Some(t),
            };
            (
                Plan::Put(Cow::Borrowed(value), expire_at),
                SetResult { applied: true, old },
            )
        })
    }

    pub fn delete(&self, db: usize, key: &[u8]) -> Result<bool, EngineError> {
        self.update(db, key, |cur| (Action::Delete, cur.is_some()))
    }

    /// Sets (or with `None` removes) the expiry of an existing key under `cond`.
    /// Returns whether the key existed and the condition held. An expiry in the past deletes.
    pub fn expire(
        &self,
        db: usize,
        key: &[u8],
        at: Option<u64>,
        cond: ExpireCond,
    ) -> Result<bool, EngineError> {
        let now = self.now_ms();
        self.update(db, key, |cur| {
            let Some(c) = cur else {
                return (Action::Keep, false);
            };
            let ok = match (cond, c.expire_at, at) {
                (ExpireCond::Always, _, _) => true,
                (ExpireCond::Nx, old, _) => old.is_none(),
                (ExpireCond::Xx, old, _) => old.is_some(),
                (ExpireCond::Gt, None, _) => false,
                (ExpireCond::Gt, Some(old), new) => new.is_none_or(|n| n > old),
                (ExpireCond::Lt, None, new) => new.is_some(),
                (ExpireCond::Lt, Some(old), new) => new.is_some_and(|n| n < old),
            };
            if !ok {
                return (Action::Keep, false);
            }
            match at {
                Some(t) if t <= now => (Action::Delete, true),
                _ => (
                    Action::Put {
                        value: c.value.to_vec(),
                        expire_at: at,
                    },
                    true,
                ),
            }
        })
    }

    /// Keys in `db` (including expired keys not yet reclaimed, as Redis's DBSIZE).
    pub fn len(&self, db: usize) -> u64 {
        let g = pin();
        self.index(db, &g).1.len()
    }

    /// Keys in `db` that have an expiry.
    pub fn expires_len(&self, db: usize) -> u64 {
        let g = pin();
        self.index(db, &g).1.expires.load(Ordering::Relaxed).max(0) as u64
    }

    /// Appends a control record and commits it (caller holds the gate closed).
    fn append_control(&self, kind: Kind, keyspace: u8, value: &[u8]) -> Result<(), EngineError> {
        if self.log.mirroring() {
            return Err(EngineError::ReadOnly);
        }
        let g = pin();
        let p = self.log.append(
            &RecordSpec {
                kind,
                keyspace,
                key: &[],
                value,
                expire_at: None,
            },
            &g,
        )?;
        p.commit();
        Ok(())
    }

    fn fresh_index(&self, ks: usize, g: &EpochGuard) {
        self.keyspaces[ks]
            .index
            .replace(Index::new(Table::for_keys(0)), g);
        segkv_log::epoch::flush();
    }

    pub fn flush_db(&self, db: usize) -> Result<(), EngineError> {
        let _closed = self.gate.close();
        let ks = self.keyspace_of(db);
        self.append_control(Kind::FlushKeyspace, ks as u8, &[])?;
        self.fresh_index(ks, &pin());
        self.note_flushed();
        Ok(())
    }

    /// After a flush (gate closed): if no keyspace has a live key left, every record in the
    /// log is garbage; tell the cleaner's counters, or a FLUSHALL would never give back its
    /// disk and memory. (A FLUSHDB that leaves other databases' keys is not counted: which
    /// records were its keyspace's is not known without reading them.)
    fn note_flushed(&self) {
        let g = pin();
        if self.keyspaces.iter().all(|k| k.index.load(&g).len() == 0) {
            self.log.mark_dead_before(self.log.tail_addr());
        }
    }

    pub fn flush_all(&self) -> Result<(), EngineError> {
        let _closed = self.gate.close();
        let g = pin();
        for ks in 0..MAX_DATABASES {
            if self.keyspaces[ks].index.load(&g).len() > 0
                || self.keyspaces[ks].index.load(&g).resizing(&g)
            {
                self.append_control(Kind::FlushKeyspace, ks as u8, &[])?;
                self.fresh_index(ks, &g);
            }
        }
        self.note_flushed();
        Ok(())
    }

    pub fn swap_db(&self, a: usize, b: usize) -> Result<(), EngineError> {
        if a >= self.cfg.databases {
            return Err(EngineError::BadDb(a));
        }
        if b >= self.cfg.databases {
            return Err(EngineError::BadDb(b));
        }
        if a == b {
            return Ok(());
        }
        let _closed = self.gate.close();
        self.append_control(Kind::SwapDb, 0, &[a as u8, b as u8])?;
        let ka = self.db_map[a].load(Ordering::Acquire);
        let kb = self.db_map[b].load(Ordering::Acquire);
        self.db_map[a].store(kb, Ordering::Release);
        self.db_map[b].store(ka, Ordering::Release);
        Ok(())
    }

    /// One SCAN step: calls `f` for the live keys whose hash lies in the step's range and
    /// returns the next cursor (0 when done). The cursor is a position in hash space, which
    /// does not move when the index grows, so every key present for the whole scan is returned
    /// at least once.
    pub fn scan(&self, db: usize, cursor: u64, count: usize, mut f: impl FnMut(&[u8])) -> u64 {
        let g = pin();
        let (_, index) = self.index(db, &g);
        let slots = (index.nslots(&g) as u64).max(1);
        let live = index.len().max(1);
        let count = count.max(1) as u64;
        // Hash space holding about `count` live keys (a small database in one step, as Redis
        // answers it), but never more than 16 * `count` slots' worth of work per step.
        let per_key = (u64::MAX / live).max(u64::MAX / slots);
        let step = per_key
            .saturating_mul(count)
            .min((u64::MAX / slots).saturating_mul(16 * count));
        // A step reaching the end of hash space covers it to the end: the scan is over.
        let hi = cursor
            .checked_add(step)
            .filter(|&h| h != 0 && h != u64::MAX);
        index.for_range(&self.log, cursor, hi, &g, &mut |v| {
            if !is_tomb(v)
                && let Some(rec) = self.log.read(slot_addr(v), &g)
                && matches!(self.state(&rec), State::Live(_))
            {
                f(rec.key);
            }
        });
        hi.unwrap_or(0)
    }

    pub fn random_key(&self, db: usize) -> Option<Vec<u8>> {
        let g = pin();
        let (_, index) = self.index(db, &g);
        let r = random_u64();
        let v = index.random_entry(r, &g, |v| {
            self.log
                .read(slot_addr(v), &g)
                .is_some_and(|rec| matches!(self.state(&rec), State::Live(_)))
        })?;
        self.log.read(slot_addr(v), &g).map(|r| r.key.to_vec())
    }

    /// Log address after every write issued so far; a write is durable once
    /// `durable_addr() >=` the value read after it completed.
    pub fn tail_addr(&self) -> u64 {
        self.log.tail_addr()
    }

    pub fn durable_addr(&self) -> u64 {
        self.log.durable_addr()
    }

    /// Registers a callback run (on the flusher thread) whenever the durable address advances,
    /// and once more if the log fails.
    pub fn on_durable(&self, cb: Box<dyn Fn(u64) + Send + Sync>) {
        self.log.on_durable(cb)
    }

    /// Why the log failed, if a write or sync failed: nothing more is acknowledged as durable
    /// and writes are refused from then on.
    pub fn failed(&self) -> Option<String> {
        self.log.failed()
    }

    /// Blocks until everything written so far is on disk (SAVE, SHUTDOWN).
    pub fn sync(&self) -> Result<(), EngineError> {
        Ok(self.log.sync()?)
    }

    pub fn stats(&self) -> EngineStats {
        let g = pin();
        let mut keys = Vec::new();
        let mut expires = Vec::new();
        let mut index_bytes = 0;
        for db in 0..self.cfg.databases {
            let (_, index) = self.index(db, &g);
            keys.push(index.len());
            expires.push(index.expires.load(Ordering::Relaxed).max(0) as u64);
        }
        for ks in self.keyspaces.iter() {
            index_bytes += ks.index.load(&g).bytes(&g) as u64;
        }
        EngineStats {
            keys,
            expires,
            expired_keys: self.expired_keys.load(Ordering::Relaxed),
            tail_addr: self.log.tail_addr(),
            durable_addr: self.log.durable_addr(),
            log_bytes_written: self.log.appended_bytes(),
            segments: self.log.segment_count() as u64,
            index_bytes,
            writer: self.log.writer_name(),
            last_fsync_ok: self.log.failed().is_none(),
            fsyncs: self.log.fsyncs(),
        }
    }
}

/// One record seen by the recovery scan: its key's hash, and its address with two flags in the
/// address's low bits (addresses are 4-aligned).
#[derive(Clone, Copy)]
struct ReplayRec {
    h: u64,
    a: u64,
}

impl ReplayRec {
    fn new(h: u64, addr: u64, dead: bool, ttl: bool) -> Self {
        ReplayRec {
            h,
            a: addr | u64::from(dead) | (u64::from(ttl) << 1),
        }
    }
    fn addr(self) -> u64 {
        self.a & !3
    }
    fn dead(self) -> bool {
        self.a & 1 != 0
    }
    fn ttl(self) -> bool {
        self.a & 2 != 0
    }
}

/// Stable counting sort by the top 16 bits of the hash.
fn bucket_by_hash(recs: Vec<ReplayRec>) -> Vec<ReplayRec> {
    if recs.len() < 4096 {
        return recs;
    }
    let mut start = vec![0usize; 1 << 16];
    for r in &recs {
        start[(r.h >> 48) as usize] += 1;
    }
    let mut sum = 0;
    for c in start.iter_mut() {
        let n = *c;
        *c = sum;
        sum += n;
    }
    let mut out = vec![ReplayRec { h: 0, a: 0 }; recs.len()];
    for r in recs {
        let b = &mut start[(r.h >> 48) as usize];
        out[*b] = r;
        *b += 1;
    }
    out
}

fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}
