//! Segments: one file each in the data directory, named by the log address of its first byte.
//!
//! ```text
//! segment header (64 bytes, LE)
//! 0   8  magic "SEGKVLOG"
//! 8   4  format version (1)
//! 12  4  header length (64)
//! 16  8  base: log address of byte 0 of this file
//! 24  8  capacity in bytes (header included)
//! 32  8  creation time, unix ms
//! 40  20 reserved, zero
//! 60  4  CRC32 of bytes [0, 60)
//! ```
//! Records follow from offset 64. Log addresses are `base + offset`; bases are multiples of
//! `UNIT`, so the segment holding an address is found by `address >> UNIT_SHIFT`.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::LogError;
use crate::epoch::{EpochCell, EpochGuard};
use crate::mem::SegMem;
use crate::record::Kind;

pub const MAGIC: &[u8; 8] = b"SEGKVLOG";
pub const VERSION: u32 = 1;
pub const SEGMENT_HEADER_LEN: u64 = 64;
/// Log address space is cut in units of 64 MiB; a segment starts on a unit boundary and spans
/// one unit, or several for a segment made for one large record.
pub const UNIT_SHIFT: u32 = 26;
pub const UNIT: u64 = 1 << UNIT_SHIFT;
/// `data_end` of a segment that still takes reservations.
pub(crate) const OPEN: u64 = u64::MAX;

/// Decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub base: u64,
    pub capacity: u64,
    pub created_ms: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        h[16..24].copy_from_slice(&self.base.to_le_bytes());
        h[24..32].copy_from_slice(&self.capacity.to_le_bytes());
        h[32..40].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32fast::hash(&h[0..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub fn decode(h: &[u8]) -> Result<SegmentHeader, String> {
        if h.len() < SEGMENT_HEADER_LEN as usize {
            return Err("file shorter than a segment header".into());
        }
        if &h[0..8] != MAGIC {
            return Err("bad magic (not a segkv segment)".into());
        }
        let crc = u32::from_le_bytes(h[60..64].try_into().unwrap());
        if crc32fast::hash(&h[0..60]) != crc {
            return Err("segment header checksum mismatch".into());
        }
        let version = u32::from_le_bytes(h[8..12].try_into().unwrap());
        if version != VERSION {
            return Err(format!("unsupported segment format version {version}"));
        }
        let hl = u32::from_le_bytes(h[12..16].try_into().unwrap());
        if hl as u64 != SEGMENT_HEADER_LEN {
            return Err(format!("unsupported segment header length {hl}"));
        }
        let u = |r: std::ops::Range<usize>| u64::from_le_bytes(h[r].try_into().unwrap());
        Ok(SegmentHeader {
            base: u(16..24),
            capacity: u(24..32),
            created_ms: u(32..40),
        })
    }
}

/// File name of the segment starting at `base`.
pub fn segment_file_name(base: u64) -> String {
    format!("{base:016x}.seg")
}

/// Parses a segment file name back to its base address.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What kinds of record a segment holds (`SegStats::flags`).
pub mod holds {
    /// A Put without an expiry.
    pub const PERSISTENT: u32 = 1;
    /// A Delete (tombstone).
    pub const DELETE: u32 = 2;
    /// A FlushKeyspace.
    pub const FLUSH: u32 = 4;
    /// A SwapDb or DbMap.
    pub const DB_MAP: u32 = 8;
}

/// Counters the cleaner reads to choose its work. Approximate while writers run (they are
/// updated after the fact), exact enough to rank segments.
pub(crate) struct SegStats {
    /// Bytes of records that are no longer the newest of their key (or whose key is gone).
    pub dead: AtomicU64,
    /// Smallest and largest expiry of any Put with an expiry (`u64::MAX` / 0 when none).
    pub min_expiry: AtomicU64,
    pub max_expiry: AtomicU64,
    /// `holds::*` bits.
    pub flags: AtomicU32,
}

impl SegStats {
    pub(crate) fn new() -> SegStats {
        SegStats {
            dead: AtomicU64::new(0),
            min_expiry: AtomicU64::new(u64::MAX),
            max_expiry: AtomicU64::new(0),
            flags: AtomicU32::new(0),
        }
    }

    /// Counters for a segment whose records were not read (below an index checkpoint): it may
    /// hold anything, and any expiry may be due.
    pub(crate) fn unknown() -> SegStats {
        let s = SegStats::new();
        s.flags.store(
            holds::PERSISTENT | holds::DELETE | holds::FLUSH | holds::DB_MAP,
            Ordering::Relaxed,
        );
        s.min_expiry.store(0, Ordering::Relaxed);
        s.max_expiry.store(u64::MAX, Ordering::Relaxed);
        s
    }

    /// Accounts a record written into the segment.
    #[inline]
    pub fn note(&self, kind: Kind, expire_at: Option<u64>) {
        let f = match (kind, expire_at) {
            (Kind::Put, None) => holds::PERSISTENT,
            (Kind::Put, Some(_)) => 0,
            (Kind::Delete, _) => holds::DELETE,
            (Kind::FlushKeyspace, _) => holds::FLUSH,
            (Kind::SwapDb | Kind::DbMap, _) => holds::DB_MAP,
            (Kind::Retire, _) => 0,
        };
        if f != 0 && self.flags.load(Ordering::Relaxed) & f == 0 {
            self.flags.fetch_or(f, Ordering::Relaxed);
        }
        if let Some(t) = expire_at {
            if t > self.max_expiry.load(Ordering::Relaxed) {
                self.max_expiry.fetch_max(t, Ordering::Relaxed);
            }
            if t < self.min_expiry.load(Ordering::Relaxed) {
                self.min_expiry.fetch_min(t, Ordering::Relaxed);
            }
        }
    }
}

pub(crate) struct Segment {
    pub base: u64,
    pub capacity: u64,
    pub path: PathBuf,
    pub file: File,
    /// Next offset to hand out (active segment only; may run past `capacity`).
    pub reserved: AtomicU64,
    /// Where the data ends once sealed; `OPEN` before.
    pub data_end: AtomicU64,
    pub mem: EpochCell<SegMem>,
    pub stats: SegStats,
}

impl Segment {
    /// Creates a new segment file with its header and an in-memory write buffer.
    /// `first` bytes after the header are pre-reserved for the creator.
    pub(crate) fn create(
        dir: &Path,
        base: u64,
        capacity: u64,
        first: u64,
    ) -> Result<Segment, LogError> {
        let header = SegmentHeader {
            base,
            capacity,
            created_ms: now_ms(),
        };
        Self::create_with(dir, header, first)
    }

    /// As `create`, with every header field given (a replica copies its primary's segments).
    pub(crate) fn create_with(
        dir: &Path,
        header: SegmentHeader,
        first: u64,
    ) -> Result<Segment, LogError> {
        Self::create_in(dir, header, first, false)
    }

    /// As `create_with`; `direct`: the segment's memory is its file, mapped (appends write
    /// the file: a replica's copy, `Log::mirror_segment`), not a write buffer.
    pub(crate) fn create_in(
        dir: &Path,
        header: SegmentHeader,
        first: u64,
        direct: bool,
    ) -> Result<Segment, LogError> {
        let SegmentHeader { base, capacity, .. } = header;
        let path = dir.join(segment_file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| LogError::io("create segment", &path, e))?;
        let header = header.encode();
        // Reserve the blocks up front so a full disk shows up here, not in the middle of a
        // flush, and the file's size does not change with every flush. (The first write to
        // each preallocated block still needs a journal commit on ext4.)
        allocate(&file, capacity).map_err(|e| LogError::io("allocate segment", &path, e))?;
        std::os::unix::fs::FileExt::write_all_at(&file, &header, 0)
            .map_err(|e| LogError::io("write segment header", &path, e))?;
        let mem = if direct {
            SegMem::map_file(&file).map_err(|e| LogError::io("map segment", &path, e))?
        } else {
            let m = SegMem::anon(capacity as usize)
                .map_err(|e| LogError::io("allocate segment buffer", &path, e))?;
            m.write(0, &header);
            m
        };
        Ok(Segment {
            base,
            capacity,
            path,
            file,
            reserved: AtomicU64::new(SEGMENT_HEADER_LEN + first),
            data_end: AtomicU64::new(OPEN),
            mem: EpochCell::new(mem),
            stats: SegStats::new(),
        })
    }

    /// A sealed segment found at recovery, mapped read-only; its data ends at `data_end`.
    pub(crate) fn sealed(
        path: PathBuf,
        file: File,
        header: SegmentHeader,
        data_end: u64,
        mem: SegMem,
        stats: SegStats,
    ) -> Segment {
        Segment {
            base: header.base,
            capacity: header.capacity,
            path,
            file,
            reserved: AtomicU64::new(u64::MAX),
            data_end: AtomicU64::new(data_end),
            mem: EpochCell::new(mem),
            stats,
        }
    }

    /// The last segment found at recovery, made active again: its data is copied into a
    /// write buffer and appends continue after it (a replica resumes the segment its primary
    /// is still writing).
    pub(crate) fn reopen(old: &Segment, guard: &EpochGuard) -> Result<Segment, LogError> {
        Self::reopen_at(old, old.data_end_now(), guard)
    }

    /// As `reopen`, keeping only the bytes before `end` (a record boundary): the file is cut
    /// there too, and zero-filled to its capacity again.
    pub(crate) fn reopen_at(
        old: &Segment,
        end: u64,
        guard: &EpochGuard,
    ) -> Result<Segment, LogError> {
        let cut = end < old.data_end_now();
        let mem = SegMem::anon(old.capacity as usize)
            .map_err(|e| LogError::io("allocate segment buffer", &old.path, e))?;
        mem.write(0, old.mem(guard).bytes(0, end as usize));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&old.path)
            .map_err(|e| LogError::io("open segment", &old.path, e))?;
        if cut {
            file.set_len(end)
                .map_err(|e| LogError::io("truncate segment", &old.path, e))?;
        }
        allocate(&file, old.capacity)
            .map_err(|e| LogError::io("allocate segment", &old.path, e))?;
        if cut {
            file.sync_data()
                .map_err(|e| LogError::io("fsync segment", &old.path, e))?;
        }
        let stats = SegStats::new();
        stats
            .dead
            .store(old.stats.dead.load(Ordering::Relaxed), Ordering::Relaxed);
        if cut {
            // What the kept records hold (the cut ones no longer count).
            let data = mem.bytes(0, end as usize);
            let mut p = SEGMENT_HEADER_LEN as usize;
            while p < data.len() {
                match crate::record::scan(&data[p..]) {
                    Ok(crate::record::Scanned::Record(r, len)) => {
                        stats.note(r.kind, r.expire_at);
                        p += len;
                    }
                    Ok(crate::record::Scanned::Invalid(len)) => p += len,
                    _ => break,
                }
            }
        } else {
            stats.min_expiry.store(
                old.stats.min_expiry.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            stats.max_expiry.store(
                old.stats.max_expiry.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            stats
                .flags
                .store(old.stats.flags.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        Ok(Segment {
            base: old.base,
            capacity: old.capacity,
            path: old.path.clone(),
            file,
            reserved: AtomicU64::new(end),
            data_end: AtomicU64::new(OPEN),
            mem: EpochCell::new(mem),
            stats,
        })
    }

    /// The segment's header fields.
    pub(crate) fn header(&self, guard: &EpochGuard) -> SegmentHeader {
        let h = self.mem(guard).bytes(0, SEGMENT_HEADER_LEN as usize);
        SegmentHeader::decode(h).unwrap_or(SegmentHeader {
            base: self.base,
            capacity: self.capacity,
            created_ms: 0,
        })
    }

    /// How many address units this segment covers.
    pub(crate) fn units(&self) -> u64 {
        self.capacity.div_ceil(UNIT)
    }

    /// Base address of the segment that follows this one.
    pub(crate) fn next_base(&self) -> u64 {
        self.base + self.units() * UNIT
    }

    /// Where the data ends now: at the seal, or (active) after the last reservation.
    pub(crate) fn data_end_now(&self) -> u64 {
        match self.data_end.load(Ordering::Acquire) {
            OPEN => self.reserved.load(Ordering::Acquire).min(self.capacity),
            end => end,
        }
    }

    /// Bytes of records in it (header excluded).
    pub(crate) fn data_bytes(&self) -> u64 {
        self.data_end_now().saturating_sub(SEGMENT_HEADER_LEN)
    }

    pub(crate) fn is_sealed(&self) -> bool {
        self.data_end.load(Ordering::Acquire) != OPEN
    }

    pub(crate) fn mem<'g>(&'g self, guard: &'g EpochGuard) -> &'g SegMem {
        self.mem.load(guard)
    }
}

fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    match crate::sys::fallocate(file, len) {
        Ok(()) => Ok(()),
        // Filesystems without fallocate: just set the length.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
            ) =>
        {
            file.set_len(len)
        }
        Err(e) => Err(e),
    }
}
