//! The segment cleaner: compaction, active expiry and the reclaiming half of eviction, in one
//! background pass over the log.
//!
//! It reclaims the **oldest** segment, always. Cleaning oldest first is what keeps the log's
//! meaning intact with no per-key bookkeeping: when the oldest segment goes, no record older
//! than its records survives anywhere, so a tombstone, an expired record or a FlushKeyspace in
//! it has nothing left to shadow and can simply go too. Only the records the index still
//! points at as live are copied to the tail (a CAS from the old address to the new one; a lost
//! CAS means a writer replaced the key meanwhile, and the copy is aborted). SwapDb records are
//! replaced by one DbMap record of the current map. Once the copies are durable the segment's
//! file is deleted and its memory unmapped when no reader can hold an address in it.
//!
//! A leading run of segments whose every record has expired (no Put without an expiry, the
//! largest expiry past) is dropped without reading them: one pass over the index turns the
//! entries that point into them into `DELETED` slots, then the files go.
//!
//! Active expiry is a sweep over the index, a bounded number of slots per step, that reads a
//! record only when its segment holds expiries that are due; expired entries become tombs (and
//! their bytes dead), which is what makes the cleaner reclaim their segments.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use segkv_log::segment::{SEGMENT_HEADER_LEN, holds};
use segkv_log::{Kind, RecordSpec, RecordView, SegmentInfo};

use super::{Engine, MAX_DATABASES, State};
use crate::api::EngineError;
use crate::index::{DELETED, hash, is_tomb, make_slot, slot_addr};
use segkv_log::epoch::{EpochGuard, pin};

/// The cleaner's work so far (INFO).
#[derive(Debug, Clone, Copy, Default)]
pub struct CleanerStats {
    /// Segments reclaimed by reading them and copying their live records.
    pub segments_cleaned: u64,
    /// Segments whose records had all expired, deleted without reading them.
    pub segments_dropped: u64,
    pub records_copied: u64,
    pub bytes_copied: u64,
    /// Bytes of segment files deleted.
    pub bytes_reclaimed: u64,
    /// Keys removed by the active-expiry sweep (also counted in `expired_keys`).
    pub keys_swept: u64,
    /// Bytes appended to the log since the counters were last reset (`reset_stats`): what
    /// clients wrote is this less `bytes_copied`.
    pub log_bytes: u64,
}

/// Where the cleaner is: the segment it is reading, and the offset to resume at.
#[derive(Default)]
pub(crate) struct Cursor {
    pub(super) segment: Option<u64>,
    offset: u64,
}

/// Where the active-expiry sweep is: keyspace and slot position.
#[derive(Default)]
struct Sweep {
    ks: usize,
    pos: usize,
}

#[derive(Default)]
pub(crate) struct Cleaner {
    /// Held for every step that rewrites slots (and by a checkpoint's copy of them).
    pub(crate) cursor: Mutex<Cursor>,
    sweep: Mutex<Sweep>,
    segments_cleaned: AtomicU64,
    segments_dropped: AtomicU64,
    records_copied: AtomicU64,
    bytes_copied: AtomicU64,
    bytes_reclaimed: AtomicU64,
    keys_swept: AtomicU64,
    /// Memory is over its limit: clean whatever garbage there is, not only past the ratio.
    pressure: AtomicBool,
    /// Garbage (dead bytes) the log may hold before the cleaner starts, in percent of the
    /// live bytes (`cleaner-garbage-percent`).
    garbage_percent: AtomicU64,
    /// The log's appended bytes when the counters were last reset.
    log_bytes_base: AtomicU64,
}

/// The default `cleaner-garbage-percent`. Under 60 s of random overwrites (benches/cleaning.py
/// --scenario overwrite) max RSS stayed at 1.46-1.51x the live data, at a write amplification
/// near 1.3; 25 gave 1.51-1.55x at 1.0, 50 gave 1.82-1.88x at 0.4.
const DEFAULT_GARBAGE_PERCENT: u64 = 20;

impl Cleaner {
    pub(crate) fn new() -> Cleaner {
        Cleaner {
            garbage_percent: AtomicU64::new(DEFAULT_GARBAGE_PERCENT),
            ..Default::default()
        }
    }
}

impl Engine {
    /// The cleaner's counters.
    pub fn cleaner_stats(&self) -> CleanerStats {
        let c = &self.cleaner;
        CleanerStats {
            segments_cleaned: c.segments_cleaned.load(Ordering::Relaxed),
            segments_dropped: c.segments_dropped.load(Ordering::Relaxed),
            records_copied: c.records_copied.load(Ordering::Relaxed),
            bytes_copied: c.bytes_copied.load(Ordering::Relaxed),
            bytes_reclaimed: c.bytes_reclaimed.load(Ordering::Relaxed),
            keys_swept: c.keys_swept.load(Ordering::Relaxed),
            log_bytes: self
                .log
                .appended_bytes()
                .saturating_sub(c.log_bytes_base.load(Ordering::Relaxed)),
        }
    }

    /// CONFIG RESETSTAT: the cleaner's counters, `expired_keys` and `evicted_keys` start
    /// again from 0 (as Redis's stat_expiredkeys and stat_evictedkeys).
    pub fn reset_stats(&self) {
        let c = &self.cleaner;
        for a in [
            &c.segments_cleaned,
            &c.segments_dropped,
            &c.records_copied,
            &c.bytes_copied,
            &c.bytes_reclaimed,
            &c.keys_swept,
            &self.expired_keys,
            &self.evicted_keys,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        c.log_bytes_base
            .store(self.log.appended_bytes(), Ordering::Relaxed);
    }

    /// Whether garbage is piling up faster than the cleaner's paced work reclaims it (more
    /// than half again its starting point): the caller should clean without pausing.
    pub fn cleaner_behind(&self) -> bool {
        let (data, dead) = self.log.space();
        let live = data - dead;
        dead as f64 > (live as f64 * self.garbage_ratio() * 1.5).max(self.log.segment_size() as f64)
    }

    /// Sets `cleaner-garbage-percent`: how much garbage, in percent of the live data, the log
    /// may hold before the cleaner starts.
    pub fn set_garbage_percent(&self, percent: u64) {
        self.cleaner
            .garbage_percent
            .store(percent, Ordering::Relaxed);
    }

    fn garbage_ratio(&self) -> f64 {
        self.cleaner.garbage_percent.load(Ordering::Relaxed) as f64 / 100.0
    }

    /// Tells the cleaner that memory is over its limit (eviction freed keys whose bytes only
    /// cleaning returns): it then reclaims any garbage, not just past `cleaner-garbage-percent`.
    pub fn set_memory_pressure(&self, on: bool) {
        self.cleaner.pressure.store(on, Ordering::Relaxed);
    }

    /// One bounded step of cleaning: reads at most `max_records` records (or drops a run of
    /// wholly expired segments). Returns whether it did anything (call again soon if so).
    pub fn clean_step(&self, max_records: usize) -> Result<bool, EngineError> {
        let mut cur = self.cleaner.cursor.lock().unwrap();
        if self.log.mirroring() {
            // A replica's log is a copy of its primary's: the primary's cleaning reaches it.
            // (Checked under the cursor: `set_mirroring` waits for a step in progress.)
            return Ok(false);
        }
        let base = match cur.segment {
            Some(b) => b,
            None => {
                let segs = self.log.segments();
                let now = self.now_ms();
                let expired: Vec<u64> = segs
                    .iter()
                    .take_while(|s| self.log.may_retire(s) && wholly_expired(s, now))
                    .map(|s| s.base)
                    .collect();
                if !expired.is_empty() {
                    // (The cursor stays locked: a checkpoint must not copy slots meanwhile.)
                    self.drop_expired_segments(&expired)?;
                    return Ok(true);
                }
                let Some(oldest) = segs.first() else {
                    return Ok(false);
                };
                if !self.worth_cleaning(&segs) {
                    return Ok(false);
                }
                if oldest.settled && !self.log.may_retire(oldest) {
                    // A replica still reads it.
                    return Ok(false);
                }
                if !oldest.settled {
                    // Everything is in the active segment: seal it so it can be cleaned, when
                    // it is mostly garbage (not worth a new file otherwise).
                    if oldest.active && oldest.dead_bytes * 2 > oldest.data_bytes {
                        self.log.roll()?;
                        return Ok(true);
                    }
                    return Ok(false);
                }
                cur.segment = Some(oldest.base);
                cur.offset = SEGMENT_HEADER_LEN;
                oldest.base
            }
        };
        match self.clean_records(base, cur.offset, max_records)? {
            Some(next) => cur.offset = next,
            None => {
                // Every live record is copied: once the copies are durable the segment goes.
                self.log.wait_durable(self.log.tail_addr())?;
                let freed = self.log.retire(base)?;
                cur.segment = None;
                self.cleaner
                    .segments_cleaned
                    .fetch_add(1, Ordering::Relaxed);
                self.cleaner
                    .bytes_reclaimed
                    .fetch_add(freed, Ordering::Relaxed);
            }
        }
        Ok(true)
    }

    /// Whether the garbage in the log is worth a cleaning pass.
    fn worth_cleaning(&self, segs: &[SegmentInfo]) -> bool {
        let data: u64 = segs.iter().map(|s| s.data_bytes).sum();
        let dead: u64 = segs.iter().map(|s| s.dead_bytes.min(s.data_bytes)).sum();
        let live = data - dead;
        if dead == 0 {
            return false;
        }
        if self.cleaner.pressure.load(Ordering::Relaxed) {
            return true;
        }
        // Small logs: not before the garbage is worth a sixteenth of a segment.
        dead as f64
            > (live as f64 * self.garbage_ratio()).max(self.log.segment_size() as f64 / 16.0)
    }

    /// Copies the live records of the segment at `base` from `offset` on, at most `max`
    /// records. Returns where to resume, or None when the segment is done.
    fn clean_records(
        &self,
        base: u64,
        offset: u64,
        max: usize,
    ) -> Result<Option<u64>, EngineError> {
        let g = pin();
        let mut err = None;
        let mut control = false;
        // The writer gate is entered for the whole chunk: no resize starts meanwhile, and one
        // under way is finished first, so the index has one table while slots are rewritten.
        let _w = self.gate.enter();
        for ks in self.keyspaces.iter() {
            ks.index.load(&g).finish_resize(&self.log, &g);
        }
        let next = self.log.records_from(base, offset, max, &g, |addr, rec| {
            if err.is_some() {
                return;
            }
            match rec.kind {
                Kind::Put | Kind::Delete => {
                    if let Err(e) = self.clean_record(addr, &rec, &g) {
                        err = Some(e);
                    }
                }
                Kind::SwapDb | Kind::DbMap => control = true,
                // Nothing older than it survives the segment: it has nothing to empty.
                Kind::FlushKeyspace => {}
                // Says a segment older than this one is gone: nothing to keep.
                Kind::Retire => {}
            }
        });
        // No settled segment there any more: nothing left to do in it.
        let next = next.unwrap_or(None);
        drop(_w);
        if let Some(e) = err {
            return Err(e);
        }
        if control {
            // The map as of now replaces every swap before it (and swaps after it apply on top).
            let _closed = self.gate.close();
            let map: Vec<u8> = (0..MAX_DATABASES)
                .map(|d| self.keyspace_of(d) as u8)
                .collect();
            self.append_control(Kind::DbMap, 0, &map)?;
        }
        Ok(next)
    }

    /// One Put or Delete of the segment being cleaned.
    fn clean_record(
        &self,
        addr: u64,
        rec: &RecordView<'_>,
        g: &EpochGuard,
    ) -> Result<(), EngineError> {
        let ks = rec.keyspace as usize;
        if ks >= MAX_DATABASES {
            return Ok(());
        }
        let index = self.keyspaces[ks].index.load(g);
        let h = hash(rec.key);
        loop {
            let Some((slot, v)) = index.find_record(addr, h, g) else {
                // A newer record of the key exists, or the key is gone (whatever removed it
                // is newer).
                return Ok(());
            };
            let live = !is_tomb(v) && matches!(self.state(rec), State::Live(_));
            if !live {
                // A tombstone or an expired record, and nothing older survives this segment.
                if slot
                    .compare_exchange(v, DELETED, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue;
                }
                if !is_tomb(v) {
                    index.live.fetch_sub(1, Ordering::Relaxed);
                    if rec.expire_at.is_some() {
                        index.expires.fetch_sub(1, Ordering::Relaxed);
                    }
                    self.expired_keys.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            let spec = RecordSpec {
                kind: Kind::Put,
                keyspace: rec.keyspace,
                key: rec.key,
                value: rec.value,
                expire_at: rec.expire_at,
            };
            let pending = self.log.append(&spec, g)?;
            let new = make_slot(pending.addr(), h, false);
            if slot
                .compare_exchange(v, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                pending.commit();
                self.cleaner.records_copied.fetch_add(1, Ordering::Relaxed);
                self.cleaner
                    .bytes_copied
                    .fetch_add(spec.padded_len() as u64, Ordering::Relaxed);
                return Ok(());
            }
            // A writer replaced the key meanwhile: its record is newer, the copy is not needed.
            pending.abort();
        }
    }

    /// Deletes a leading run of segments whose records have all expired, without reading them.
    pub(super) fn drop_expired_segments(&self, bases: &[u64]) -> Result<(), EngineError> {
        let segs = self.log.segments();
        let ranges: Vec<(u64, u64)> = segs
            .iter()
            .zip(segs.iter().skip(1).map(Some).chain(std::iter::once(None)))
            .filter(|(s, _)| bases.contains(&s.base))
            .map(|(s, next)| (s.base, next.map_or(u64::MAX, |n| n.base)))
            .collect();
        {
            let g = pin();
            let _w = self.gate.enter();
            for ks in self.keyspaces.iter() {
                let index = ks.index.load(&g);
                index.finish_resize(&self.log, &g);
                let mut pos = 0;
                loop {
                    let next = index.walk_slots(pos, 1 << 16, &g, &mut |slot, v, _| {
                        let a = slot_addr(v);
                        if ranges.iter().any(|&(lo, hi)| a >= lo && a < hi)
                            && slot
                                .compare_exchange(v, DELETED, Ordering::AcqRel, Ordering::Acquire)
                                .is_ok()
                            && !is_tomb(v)
                        {
                            // Every Put in these segments had an expiry, now past.
                            index.live.fetch_sub(1, Ordering::Relaxed);
                            index.expires.fetch_sub(1, Ordering::Relaxed);
                            self.expired_keys.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                    match next {
                        Some(p) => pos = p,
                        None => break,
                    }
                }
            }
        }
        for &b in bases {
            let freed = self.log.retire(b)?;
            self.cleaner
                .segments_dropped
                .fetch_add(1, Ordering::Relaxed);
            self.cleaner
                .bytes_reclaimed
                .fetch_add(freed, Ordering::Relaxed);
        }
        Ok(())
    }

    /// One step of active expiry: looks at up to `max_slots` index slots, removes the entries
    /// whose record has expired, and returns how many it removed.
    pub fn expire_step(&self, max_slots: usize) -> u64 {
        self.expire_step_counted(max_slots).0
    }

    /// `expire_step`, also returning how many records it read to check (entries in segments
    /// holding an expiry that is due): the share of those that had expired says whether a
    /// mass expiry is under way (Redis's active expiry goes on while more than 10% of the keys
    /// with a TTL it samples had expired).
    pub fn expire_step_counted(&self, max_slots: usize) -> (u64, u64) {
        let mut cur = self.cleaner.sweep.lock().unwrap();
        let g = pin();
        let now = self.now_ms();
        let mut budget = max_slots;
        let mut removed = 0;
        let mut checked = 0;
        let mut visited = 0;
        while budget > 0 && visited <= MAX_DATABASES {
            let ks = cur.ks % MAX_DATABASES;
            let index = self.keyspaces[ks].index.load(&g);
            if index.expires.load(Ordering::Relaxed) <= 0 {
                cur.ks = ks + 1;
                cur.pos = 0;
                visited += 1;
                continue;
            }
            let n = budget.min(4096);
            let next = index.walk_slots(cur.pos, n, &g, &mut |slot, v, _| {
                if is_tomb(v) || !self.log.may_have_expired(slot_addr(v), now, &g) {
                    return;
                }
                checked += 1;
                if let Some(rec) = self.log.read(slot_addr(v), &g)
                    && rec.kind == Kind::Put
                    && rec.expired(now)
                    && self.expire_slot(index, slot, v, &rec, &g)
                {
                    removed += 1;
                }
            });
            budget -= n;
            match next {
                Some(p) => cur.pos = p,
                None => {
                    cur.ks = ks + 1;
                    cur.pos = 0;
                    visited += 1;
                }
            }
        }
        self.cleaner
            .keys_swept
            .fetch_add(removed, Ordering::Relaxed);
        (removed, checked)
    }
}

impl Engine {
    /// Index upkeep from the background: moves resizes along (a resize otherwise advances only
    /// with reads and writes, keeping two tables alive on an idle server) and shrinks tables
    /// left mostly empty by deletes, expiry or eviction, so their memory goes back. Migrates
    /// at most `max_chunks` chunks of 4096 slots per keyspace (writers' own chunks are small:
    /// the bulk of a migration is done here, off the request path).
    pub fn maintain_index(&self, max_chunks: usize) {
        let g = pin();
        for (ks, k) in self.keyspaces.iter().enumerate() {
            let index = k.index.load(&g);
            if index.wants_shrink(&g) {
                let _closed = self.gate.close();
                // Reload under the closed gate: FLUSHDB may have replaced it.
                self.keyspaces[ks].index.load(&g).start_shrink(&g);
            }
            let index = k.index.load(&g);
            for _ in 0..max_chunks {
                if !index.help_migrate_bulk(&self.log, &g) {
                    break;
                }
            }
        }
    }
}

/// Every record of the segment is an expired Put, a Delete or a FlushKeyspace: nothing in it
/// is live, and (as the oldest segment) nothing in it shadows a surviving record.
pub(super) fn wholly_expired(s: &SegmentInfo, now: u64) -> bool {
    s.holds & (holds::PERSISTENT | holds::DB_MAP) == 0 && s.max_expiry.is_some_and(|m| m <= now)
}
