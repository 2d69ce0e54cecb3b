//! A replica's side of the engine: records its primary wrote arrive as log bytes, are appended
//! at the same addresses (`Log::mirror_append`) and then applied to the index here, in log
//! order, by the one replication thread (clients cannot write to a replica).

use std::sync::atomic::Ordering;

use segkv_log::epoch::pin;
use segkv_log::record::{self, Scanned};
use segkv_log::segment::SEGMENT_HEADER_LEN;
use segkv_log::{Kind, RecordView, Stream};

use super::{Engine, MAX_DATABASES, Plan, Replay, checkpoint};
use crate::api::EngineError;
use crate::index::{Index, Table};
use segkv_log::segment::holds;

impl Engine {
    /// Makes (or stops making) the log a copy of a primary's. Turning it on waits for the
    /// writes and the cleaning step in progress: after it returns, nothing but `mirror_*`
    /// appends (writes get `EngineError::ReadOnly`).
    pub fn set_mirroring(&self, on: bool) {
        self.log.set_mirroring(on);
        if on {
            drop(self.gate.close());
            // A segment the cleaner was half way through starts again once this log is its
            // own again: a cut back to a fork may remove the copies it made of the records
            // before its offset (`mirror_truncate`), which then are live in it again.
            self.cleaner.cursor.lock().unwrap().segment = None;
        }
    }

    /// Applies a record that is already in this log at `addr` (copied from the primary).
    /// Retire records are applied by [`Engine::mirror_retire`] (they wait for durability).
    pub fn apply_mirrored(&self, addr: u64, rec: &RecordView<'_>) -> Result<(), EngineError> {
        let ks = rec.keyspace as usize;
        match rec.kind {
            Kind::Put | Kind::Delete if ks < MAX_DATABASES => {
                let tomb = rec.kind == Kind::Delete;
                let (expire_at, padded) = (rec.expire_at, rec.padded_len() as u64);
                self.write_loop(None, ks, rec.key, |_| {
                    (
                        Plan::Mirrored {
                            addr,
                            tomb,
                            expire_at,
                            padded,
                        },
                        (),
                    )
                })
            }
            Kind::FlushKeyspace if ks < MAX_DATABASES => {
                let _closed = self.gate.close();
                self.fresh_index(ks, &pin());
                self.note_flushed();
                Ok(())
            }
            Kind::SwapDb if rec.value.len() == 2 => {
                let (a, b) = (rec.value[0] as usize, rec.value[1] as usize);
                if a < MAX_DATABASES && b < MAX_DATABASES {
                    let _closed = self.gate.close();
                    let ka = self.db_map[a].load(Ordering::Acquire);
                    let kb = self.db_map[b].load(Ordering::Acquire);
                    self.db_map[a].store(kb, Ordering::Release);
                    self.db_map[b].store(ka, Ordering::Release);
                }
                Ok(())
            }
            Kind::DbMap
                if rec.value.len() == MAX_DATABASES
                    && rec.value.iter().all(|&k| (k as usize) < MAX_DATABASES) =>
            {
                let _closed = self.gate.close();
                for (d, &k) in rec.value.iter().enumerate() {
                    self.db_map[d].store(k, Ordering::Release);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The primary retired its segment at (local) `base`: once everything up to `upto` (the
    /// Retire record's end, after the copies that made the segment unnecessary) is durable
    /// here, delete this log's copy too.
    pub fn mirror_retire(&self, base: u64, upto: u64) -> Result<(), EngineError> {
        self.log.wait_durable(upto)?;
        let segs = self.log.segments();
        let Some(seg) = segs.iter().find(|s| s.base == base) else {
            return Ok(());
        };
        // A segment holding only Puts with an expiry may have been dropped blind by the
        // primary (wholly expired by its clock): entries pointing into it go too.
        if seg.holds & (holds::PERSISTENT | holds::DB_MAP) == 0 {
            // Dropped blind by the primary's cleaner: drop the index entries that still point
            // into it (expired keys no read has noticed yet), as it did.
            self.drop_expired_segments(&[base])
        } else {
            self.log.retire(base)?;
            Ok(())
        }
    }

    /// Starts a full resynchronization. The data set served until it is complete is the one
    /// this node had (Redis's replica-serve-stale-data): the primary's segments are copied in
    /// after this log's (at higher addresses), their records gathered as a replay gathers
    /// them, and [`Engine::mirror_finish`] swaps the indexes and deletes the old segments.
    pub fn mirror_reset(&self) -> Result<BulkLoad, EngineError> {
        self.set_mirroring(true);
        self.cleaner.cursor.lock().unwrap().segment = None;
        checkpoint::discard(&self.cfg.dir);
        self.log.roll()?;
        let old = self
            .log
            .segments()
            .iter()
            .filter(|s| !s.active)
            .map(|s| s.base)
            .collect();
        Ok(BulkLoad {
            replay: Replay::new(std::array::from_fn(|i| i as u8)),
            old,
            retires: Vec::new(),
        })
    }

    /// A full resynchronization cut short: the segments copied so far are deleted (the old
    /// data set stays, with its index), so a restart does not mix them with it.
    pub fn mirror_abandon(&self, bulk: BulkLoad) -> Result<(), EngineError> {
        self.log.roll()?;
        self.log.sync()?;
        for s in self.log.segments() {
            if !s.active && !bulk.old.contains(&s.base) {
                self.log.retire_quiet(s.base)?;
            }
        }
        Ok(())
    }

    /// The full resynchronization's copy is complete: the index built from the copied records
    /// replaces the old one at once (reads see the new data set from here on). What is left
    /// (making the copy durable, deleting the old segments) is [`Engine::mirror_settle`]'s.
    pub fn mirror_finish(&self, bulk: BulkLoad) -> Result<Settle, EngineError> {
        let BulkLoad {
            replay,
            old,
            retires,
        } = bulk;
        self.install_replay(replay);
        Ok(Settle { old, retires })
    }

    /// Builds each keyspace's index from `replay` aside (the current ones serve reads
    /// meanwhile) and swaps them in at once, with its database map.
    fn install_replay(&self, replay: Replay) {
        let g = pin();
        let mut built = Vec::with_capacity(MAX_DATABASES);
        for recs in replay.tables {
            built.push(if recs.is_empty() {
                Index::new(Table::for_keys(0))
            } else {
                self.build_index(recs, None, &g).0
            });
        }
        {
            let _closed = self.gate.close();
            for (ks, index) in built.into_iter().enumerate() {
                self.keyspaces[ks].index.replace(index, &g);
            }
            for (d, &k) in replay.db_map.iter().enumerate() {
                self.db_map[d].store(k, Ordering::Release);
            }
        }
        drop(g);
        segkv_log::epoch::flush();
    }

    /// Cuts this replica's log back to `cut` (local address), where its new primary's history
    /// forks from the one it copied: the index is rebuilt from the records before `cut`, then
    /// the records from `cut` on are deleted. Returns false, changing nothing, when it cannot
    /// be done: `cut` is not a record boundary of this log, or a Retire record past it was
    /// applied (the segment it named is gone here, and its records' copies are past `cut`).
    /// Call it on the replication thread, with no record being applied.
    pub fn mirror_truncate(&self, cut: u64) -> Result<bool, EngineError> {
        let log = &self.log;
        let tail = log.tail_addr();
        if cut >= tail {
            return Ok(cut == tail);
        }
        let now = self.now_ms();
        let mut replay = Replay::new(std::array::from_fn(|i| i as u8));
        let mut cursor = log.first_base();
        let mut buf = Vec::new();
        let mut boundary = false;
        loop {
            buf.clear();
            let (found, next) = log.read_stream(cursor, 4 << 20, &mut buf);
            match found {
                Stream::Segment(h) => boundary |= h.base + SEGMENT_HEADER_LEN == cut,
                Stream::Data(at) => {
                    let mut p = 0;
                    while p < buf.len() {
                        let addr = at + p as u64;
                        boundary |= addr == cut;
                        match record::scan(&buf[p..]) {
                            Ok(Scanned::Record(r, len)) => {
                                if addr + len as u64 <= cut {
                                    replay.visit(addr, &r, now);
                                } else if addr < cut {
                                    return Ok(false); // `cut` is inside this record
                                } else if r.kind == Kind::Retire {
                                    return Ok(false);
                                }
                                p += len;
                            }
                            Ok(Scanned::Invalid(len)) => p += len,
                            _ => break,
                        }
                    }
                    boundary |= next == cut;
                }
                Stream::Wait => break,
                Stream::Gone => return Ok(false),
            }
            cursor = next;
        }
        if !boundary || !log.can_cut(cut) {
            return Ok(false);
        }
        // Segments a Retire record before the cut names, still here (kept as backlog): out.
        replay.leave_out_retired(log, log.history_delta());
        // The index checkpoint (of this node's days as a primary) describes records past the
        // cut: a restart must not load it.
        {
            let _one = self.checkpoint_lock.lock().unwrap();
            checkpoint::discard(&self.cfg.dir);
        }
        self.install_replay(replay);
        // No reader may still hold an address past `cut` (one that loaded the old index).
        segkv_log::epoch::synchronize();
        log.mirror_truncate(cut)?;
        Ok(true)
    }

    /// After [`Engine::mirror_finish`]: waits until the copy is durable, then deletes the old
    /// segments (nothing points into them any more) and applies the Retire records copied
    /// meanwhile. A crash before it returns leaves the replica to start a full resync again
    /// (its state says the copy is not complete until then).
    pub fn mirror_settle(&self, settle: Settle) -> Result<(), EngineError> {
        let Settle { old, retires } = settle;
        self.log.sync()?;
        // This node's own replicas (dropped when it became a replica) may still hold some
        // for a moment.
        let mut left = old;
        for _ in 0..200 {
            let mut still = Vec::new();
            for b in left {
                if self.log.retire_quiet(b)? == 0 && self.log.segments().iter().any(|s| s.base == b)
                {
                    still.push(b);
                }
            }
            left = still;
            if left.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        for (base, upto) in retires {
            self.mirror_retire(base, upto)?;
        }
        Ok(())
    }
}

/// A full resynchronization whose data set is in place, before its copy is durable.
#[derive(Debug)]
pub struct Settle {
    old: Vec<u64>,
    retires: Vec<(u64, u64)>,
}

/// A full resynchronization under way: the copied records, gathered as a replay does.
pub struct BulkLoad {
    replay: Replay,
    /// This log's segments from before it.
    old: Vec<u64>,
    /// Retire records copied meanwhile (local base, end of the record), applied at the end.
    retires: Vec<(u64, u64)>,
}

impl std::fmt::Debug for BulkLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkLoad").field("old", &self.old).finish()
    }
}

impl BulkLoad {
    /// One copied record at (local) `addr`; `delta` turns a Retire record's base local.
    pub fn visit(&mut self, addr: u64, rec: &RecordView<'_>, delta: u64, now: u64) {
        if rec.kind == Kind::Retire {
            if let Ok(b) = <[u8; 8]>::try_from(rec.value) {
                let base = u64::from_le_bytes(b).saturating_add(delta);
                self.retires.push((base, addr + rec.padded_len() as u64));
            }
        } else {
            self.replay.visit(addr, rec, now);
        }
    }
}
