//! Segment memory: the active segment's in-memory write buffer (anonymous mapping) and sealed
//! segments' read-only file mappings. All of the log's unsafe memory access lives here.
//!
//! Invariants the callers keep:
//! - A byte range is written by exactly one writer: the one that reserved it (tail reservation
//!   is an atomic add, so reservations are disjoint).
//! - Body bytes of a record (everything after its 4-byte commit word) are written before the
//!   commit word is stored with Release, and are read only after an Acquire that saw either
//!   that commit word or the index entry published after it; they never change afterwards.
//! - Commit words are only accessed through `commit_word()` (atomics) while the segment is live.

use std::fs::File;
use std::sync::atomic::AtomicU32;

use memmap2::{Mmap, MmapMut, MmapRaw};

pub(crate) enum SegMem {
    /// Active or not yet flushed: written by appenders, read by readers and the flusher.
    Buf(MmapRaw),
    /// Sealed and flushed: the file mapped read-only.
    File(Mmap),
}

impl SegMem {
    /// A zero-filled anonymous buffer of `len` bytes (pages are allocated on first touch).
    /// Buffers of several megabytes ask for transparent huge pages: a segment is filled from
    /// start to end, and 4 KiB faults (a kernel entry, a zeroed page and its accounting each)
    /// cost more than the copying that fills them.
    pub(crate) fn anon(len: usize) -> std::io::Result<SegMem> {
        let m = MmapMut::map_anon(len)?;
        if len >= 4 << 20 {
            // Only a hint: without THP the pages stay small.
            let _ = m.advise(memmap2::Advice::HugePage);
        }
        Ok(SegMem::Buf(MmapRaw::from(m)))
    }

    /// Maps a sealed segment file read-only.
    pub(crate) fn map_file(file: &File) -> std::io::Result<SegMem> {
        // SAFETY: the file lives in the locked data directory; sealed segment files are never
        // written again by this process (only truncated before mapping, or deleted after
        // unmapping), and another process cannot open the directory while we hold its lock.
        // Truncation by a third party would fault readers; that is outside our contract.
        let m = unsafe { Mmap::map(file)? };
        Ok(SegMem::File(m))
    }

    /// A sealed segment's file mapping (not a write buffer).
    pub(crate) fn is_file(&self) -> bool {
        matches!(self, SegMem::File(_))
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            SegMem::Buf(m) => m.len(),
            SegMem::File(m) => m.len(),
        }
    }

    fn ptr(&self) -> *const u8 {
        match self {
            SegMem::Buf(m) => m.as_ptr(),
            SegMem::File(m) => m.as_ptr(),
        }
    }

    /// The commit word at `off` as an atomic.
    ///
    /// Panics if `off` is not 4-aligned or `off + 4` is out of bounds.
    pub(crate) fn commit_word(&self, off: usize) -> &AtomicU32 {
        assert!(
            off.is_multiple_of(4) && off + 4 <= self.len(),
            "commit word at {off} out of bounds"
        );
        // SAFETY: in bounds and 4-aligned (mappings are page-aligned); the memory lives as long
        // as `self`. Commit words are only accessed atomically while others may touch them.
        // For a read-only file mapping only loads are ever made (stores happen in `Buf` only).
        unsafe { &*(self.ptr().add(off) as *const AtomicU32) }
    }

    /// Bytes `[off, off + len)`.
    ///
    /// The caller must only ask for bytes that no one writes any more (see the module invariants).
    /// Panics when out of bounds.
    pub(crate) fn bytes(&self, off: usize, len: usize) -> &[u8] {
        assert!(
            off.checked_add(len).is_some_and(|e| e <= self.len()),
            "bytes {off}+{len} out of bounds"
        );
        // SAFETY: in bounds; per the module invariants these bytes are not written concurrently.
        unsafe { std::slice::from_raw_parts(self.ptr().add(off), len) }
    }

    /// Copies `data` to `[off, off + data.len())` of a write buffer.
    ///
    /// The caller must own that range (it reserved it) and no one reads it before the caller
    /// publishes it with a Release store. Panics on a file mapping or out of bounds.
    pub(crate) fn write(&self, off: usize, data: &[u8]) {
        let SegMem::Buf(m) = self else {
            panic!("write into a sealed segment")
        };
        assert!(
            off.checked_add(data.len()).is_some_and(|e| e <= m.len()),
            "write {off}+{} out of bounds",
            data.len()
        );
        // SAFETY: in bounds of a writable anonymous mapping; the range is exclusively reserved
        // by the caller, so no other thread reads or writes it until published.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), m.as_mut_ptr().add(off), data.len()) }
    }

    /// A mutable view of `[off, off + len)` of a write buffer, for encoding a record in place.
    ///
    /// Same contract as `write`: the caller owns the range until it publishes it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn reserve_mut(&self, off: usize, len: usize) -> &mut [u8] {
        let SegMem::Buf(m) = self else {
            panic!("write into a sealed segment")
        };
        assert!(
            off.checked_add(len).is_some_and(|e| e <= m.len()),
            "write {off}+{len} out of bounds"
        );
        // SAFETY: in bounds of a writable mapping; the caller reserved the range exclusively,
        // so this is the only reference to these bytes until the caller publishes the record.
        unsafe { std::slice::from_raw_parts_mut(m.as_mut_ptr().add(off), len) }
    }
}
