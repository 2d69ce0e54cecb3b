//! A replica's side of the engine: records its primary wrote arrive as log bytes, are appended
//! at the same addresses (`Log::mirror_append`) and then applied to the index here, in log
//! order, by the one replication thread (clients cannot write to a replica).

use std::sync::atomic::Ordering;

use segkv_log::epoch::pin;
use segkv_log::{Kind, RecordView};

use super::{Engine, MAX_DATABASES, Plan, checkpoint, clean};
use crate::api::EngineError;

impl Engine {
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
        if clean::wholly_expired(seg, self.now_ms()) {
            // Dropped blind by the primary's cleaner: drop the index entries that still point
            // into it (expired keys no read has noticed yet), as it did.
            self.drop_expired_segments(&[base])
        } else {
            self.log.retire(base)?;
            Ok(())
        }
    }

    /// Starts a full resynchronization: every key is forgotten and every segment deleted, so
    /// the primary's segments can be copied in from scratch. The log keeps its (empty) active
    /// segment until the first copied segment seals it.
    pub fn mirror_reset(&self) -> Result<(), EngineError> {
        self.log.set_mirroring(true);
        {
            let _closed = self.gate.close();
            let g = pin();
            for ks in 0..MAX_DATABASES {
                self.fresh_index(ks, &g);
            }
            for (d, m) in self.db_map.iter().enumerate() {
                m.store(d as u8, Ordering::Release);
            }
            self.cleaner.cursor.lock().unwrap().segment = None;
        }
        checkpoint::discard(&self.cfg.dir);
        self.log.roll()?;
        self.log.sync()?;
        for s in self.log.segments() {
            if !s.active {
                self.log.retire(s.base)?;
            }
        }
        Ok(())
    }
}
