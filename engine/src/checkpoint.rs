//! Index checkpoints: the index written to a file with the log address it covers, so a restart
//! loads it and replays only the log after that address.
//!
//! ```text
//! index.ckpt (LE)
//! 0   8  magic "SEGKVCKP"
//! 8   4  version (1)
//! 12  4  number of keyspaces (16)
//! 16  8  covered: every record below this address is reflected in the slots
//! 24  16 database -> keyspace map
//! 40  per keyspace: nslots u64, live u64, expires u64, nslots slot values (u64 each),
//!        then a bitmap of nslots bits (padded to 8 bytes): the live entry has an expiry
//! ..  4  CRC32 of everything before
//! ```
//! Written to `index.ckpt.tmp`, synced, renamed over `index.ckpt`, directory synced.
//!
//! Why the slots need not be a consistent snapshot: `covered` is the durable address when the
//! copy starts, and the flusher only passes records whose writer has committed, which happens
//! after its index CAS; so every record below `covered` is in the slots (or was replaced by a
//! newer one). Slots copied may point past `covered`: the file is made durable only after
//! everything up to the tail read after the copy is. Records at or after it are replayed in address order on top, newest last, which
//! gives every key its newest record whatever the copy caught. The writer gate is held entered
//! while the slots are copied to memory, so no resize or FLUSHDB/SWAPDB happens meanwhile; the
//! file is written after.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use segkv_log::epoch::pin;

use super::{Engine, MAX_DATABASES};
use crate::api::EngineError;
use crate::index::{DELETED, Index, Table, is_entry, is_tomb, slot_addr};

const MAGIC: &[u8; 8] = b"SEGKVCKP";
const VERSION: u32 = 1;
pub(crate) const FILE: &str = "index.ckpt";

/// What a checkpoint write did.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckpointInfo {
    pub covered: u64,
    pub bytes: u64,
    pub keys: u64,
    pub seconds: f64,
}

/// A checkpoint read back.
pub(crate) struct Loaded {
    pub covered: u64,
    pub db_map: [u8; MAX_DATABASES],
    /// Per keyspace: slots, live, expires, TTL bitmap.
    pub spaces: Vec<(Vec<u64>, u64, u64, Vec<u64>)>,
}

/// A CRC32 over everything written through it.
struct Crc<W: Write> {
    w: W,
    h: crc32fast::Hasher,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.w.write(b)?;
        self.h.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

fn io(what: &'static str, path: &Path, e: std::io::Error) -> EngineError {
    EngineError::Log(segkv_log::LogError::io(what, path, e))
}

impl Engine {
    /// Writes an index checkpoint. Readers and writers go on meanwhile; FLUSHDB, SWAPDB and
    /// index resizes wait for the copy.
    pub fn checkpoint(&self) -> Result<CheckpointInfo, EngineError> {
        let t0 = std::time::Instant::now();
        let _one = self.checkpoint_lock.lock().unwrap();
        let dir = self.cfg.dir.clone();
        let tmp = dir.join(format!("{FILE}.tmp"));
        let file = std::fs::File::create(&tmp).map_err(|e| io("create checkpoint", &tmp, e))?;
        let mut w = Crc {
            w: BufWriter::with_capacity(1 << 20, file),
            h: crc32fast::Hasher::new(),
        };
        // The copy, with the writer gate entered (no resize, FLUSHDB or SWAPDB meanwhile): a
        // memcpy of the slots, nothing more.
        // Make what was written so far durable, so the checkpoint covers it (under `no` and
        // `everysec` the durable address lags the tail).
        self.log.sync()?;
        // The cleaner does not rewrite slots (DELETED, copies) while they are copied: a slot
        // read before and its key's new slot read after would both be in the file.
        let _no_cleaning = self.cleaner.cursor.lock().unwrap();
        let (covered, map, snapshots) = {
            let g = pin();
            let _entered = self.gate.enter();
            for ks in self.keyspaces.iter() {
                ks.index.load(&g).finish_resize(&self.log, &g);
            }
            let covered = self.log.durable_addr();
            let map: Vec<u8> = (0..MAX_DATABASES)
                .map(|d| self.keyspace_of(d) as u8)
                .collect();
            let snapshots: Vec<Vec<u64>> = self
                .keyspaces
                .iter()
                .map(|ks| ks.index.load(&g).snapshot(&g))
                .collect();
            (covered, map, snapshots)
        };
        drop(_no_cleaning);
        // The copied slots may point past `covered` (writes during the copy): those records
        // must be durable before the checkpoint is, or a crash would leave slots pointing at
        // records that never reached the disk (found by review). Every address in the copy was
        // reserved before its CAS, so it lies below the tail read now.
        self.log.wait_durable(self.log.tail_addr())?;
        let mut head = Vec::with_capacity(40);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&(MAX_DATABASES as u32).to_le_bytes());
        head.extend_from_slice(&covered.to_le_bytes());
        head.extend_from_slice(&map);
        w.write_all(&head)
            .map_err(|e| io("write checkpoint", &tmp, e))?;
        let mut keys = 0;
        for slots in snapshots {
            let g = pin();
            // Counts of this copy (the live counters moved with writers meanwhile).
            let mut ttl = vec![0u64; slots.len().div_ceil(64)];
            let (mut live, mut expires) = (0u64, 0u64);
            for (i, &v) in slots.iter().enumerate() {
                if is_entry(v) && !is_tomb(v) {
                    live += 1;
                    if self
                        .log
                        .read(slot_addr(v), &g)
                        .is_some_and(|r| r.expire_at.is_some())
                    {
                        expires += 1;
                        ttl[i / 64] |= 1 << (i % 64);
                    }
                }
            }
            keys += live;
            let mut head = Vec::with_capacity(24);
            head.extend_from_slice(&(slots.len() as u64).to_le_bytes());
            head.extend_from_slice(&live.to_le_bytes());
            head.extend_from_slice(&expires.to_le_bytes());
            w.write_all(&head)
                .map_err(|e| io("write checkpoint", &tmp, e))?;
            let mut buf = Vec::with_capacity(64 << 10);
            for chunk in slots.chunks(8 << 10).chain(ttl.chunks(8 << 10)) {
                buf.clear();
                for v in chunk {
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                w.write_all(&buf)
                    .map_err(|e| io("write checkpoint", &tmp, e))?;
            }
        }
        let crc = w.h.clone().finalize();
        let mut bw = w.w;
        bw.write_all(&crc.to_le_bytes())
            .map_err(|e| io("write checkpoint", &tmp, e))?;
        let file = bw
            .into_inner()
            .map_err(|e| io("write checkpoint", &tmp, e.into_error()))?;
        file.sync_all()
            .map_err(|e| io("fsync checkpoint", &tmp, e))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let path = dir.join(FILE);
        std::fs::rename(&tmp, &path).map_err(|e| io("rename checkpoint", &path, e))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("fsync data directory", &dir, e))?;
        Ok(CheckpointInfo {
            covered,
            bytes,
            keys,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

/// Reads `dir/index.ckpt`: Ok(None) when there is none, Err(why) when it cannot be used.
pub(crate) fn read(dir: &Path) -> Result<Option<Loaded>, String> {
    let path: PathBuf = dir.join(FILE);
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let mut data = Vec::new();
    f.read_to_end(&mut data)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if data.len() < 44 || &data[0..8] != MAGIC {
        return Err(format!(
            "{} is not a segkv index checkpoint",
            path.display()
        ));
    }
    let (body, tail) = data.split_at(data.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(tail.try_into().unwrap()) {
        return Err(format!("{}: checksum mismatch", path.display()));
    }
    let u32_at = |p: usize| u32::from_le_bytes(body[p..p + 4].try_into().unwrap());
    let u64_at = |p: usize| -> Option<u64> {
        body.get(p..p + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if u32_at(8) != VERSION || u32_at(12) as usize != MAX_DATABASES {
        return Err(format!("{}: unsupported version", path.display()));
    }
    let covered = u64_at(16).unwrap();
    let mut db_map = [0u8; MAX_DATABASES];
    db_map.copy_from_slice(&body[24..40]);
    if db_map.iter().any(|&k| k as usize >= MAX_DATABASES) {
        return Err(format!("{}: bad database map", path.display()));
    }
    let bad = || format!("{}: truncated", path.display());
    let mut p = 40;
    let mut spaces = Vec::with_capacity(MAX_DATABASES);
    for _ in 0..MAX_DATABASES {
        let n = u64_at(p).ok_or_else(bad)? as usize;
        let live = u64_at(p + 8).ok_or_else(bad)?;
        let expires = u64_at(p + 16).ok_or_else(bad)?;
        p += 24;
        let words = n.checked_add(n.div_ceil(64)).ok_or_else(bad)?;
        if n == 0 || !n.is_multiple_of(8) || words > (body.len() - p) / 8 {
            return Err(bad());
        }
        let read_words = |p: usize, k: usize| -> Vec<u64> {
            body[p..p + k * 8]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let slots = read_words(p, n);
        let ttl = read_words(p + n * 8, n.div_ceil(64));
        p += words * 8;
        spaces.push((slots, live, expires, ttl));
    }
    if p != body.len() {
        return Err(format!("{}: trailing bytes", path.display()));
    }
    Ok(Some(Loaded {
        covered,
        db_map,
        spaces,
    }))
}

/// An index from a checkpoint's slots, with entries whose record is gone (its segment was
/// reclaimed after the checkpoint) turned into DELETED slots.
pub(crate) fn index_from(
    engine: &Engine,
    slots: Vec<u64>,
    live: u64,
    expires: u64,
    ttl: &[u64],
) -> Index {
    let g = pin();
    let (mut live, mut expires) = (live as i64, expires as i64);
    let mut slots = slots;
    for (i, v) in slots.iter_mut().enumerate() {
        if is_entry(*v) && !engine.log.contains(slot_addr(*v), &g) {
            if !is_tomb(*v) {
                live -= 1;
                if ttl[i / 64] & (1 << (i % 64)) != 0 {
                    expires -= 1;
                }
            }
            *v = DELETED;
        }
    }
    let index = Index::new(Table::from_slots(&slots));
    index.live.store(live.max(0), Ordering::Relaxed);
    index.expires.store(expires.max(0), Ordering::Relaxed);
    index
}

/// Removes a checkpoint that cannot be used (so the next start does not try it again).
pub(crate) fn discard(dir: &Path) {
    if std::fs::remove_file(dir.join(FILE)).is_ok() {
        // (Gone for good: a crash must not bring it back.)
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}
