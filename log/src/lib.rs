//! segkv-log: the append-only segmented log that *is* segkv's data.
//!
//! Records are appended at a tail reserved with an atomic add, into the active segment's
//! in-memory buffer. A single flusher thread writes completed bytes to the segment file
//! (io_uring, or `pwrite` where io_uring is unavailable) and syncs them according to the
//! `appendfsync` policy. Sealed segments are memory-mapped read-only. Recovery maps every
//! segment back, verifies each record's CRC and truncates a torn tail.
//!
//! See `docs/format.md` for the byte layout of segments and records.

pub mod epoch;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod inspect;
mod log;
mod mem;
pub mod record;
mod recovery;
pub mod segment;
pub mod sys;
mod uring;
pub mod writer;

pub use error::LogError;
pub use log::{Log, LogConfig, Pending, RecoveryReport, SegmentInfo, Stream};
pub use record::{Kind, RecordSpec, RecordView};
pub use recovery::list_segments;

/// `appendfsync` policy, with Redis's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Sync before a write is acknowledged (group commit).
    Always,
    /// Sync at least once a second.
    #[default]
    EverySec,
    /// Let the OS decide.
    No,
}

impl FsyncPolicy {
    pub fn name(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::No => "no",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Some(FsyncPolicy::Always),
            "everysec" => Some(FsyncPolicy::EverySec),
            "no" => Some(FsyncPolicy::No),
            _ => None,
        }
    }
}

/// Which segment writer the flusher uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriterKind {
    /// io_uring if it works here, else pwrite (the reason is logged once).
    #[default]
    Auto,
    Uring,
    Pwrite,
}
