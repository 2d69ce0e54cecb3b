//! Public types of the store API. The server, replicas and tools speak only these.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use segkv_log::{FsyncPolicy, WriterKind};

/// How the engine is opened.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data directory (created if missing, locked while open).
    pub dir: PathBuf,
    /// Number of logical databases (`databases`, Redis default 16, at most 16).
    pub databases: usize,
    /// Size of one log segment file in bytes (default 64 MiB).
    pub segment_size: u64,
    /// `appendfsync`: always / everysec / no.
    pub appendfsync: FsyncPolicy,
    /// Which flush writer to use: `Auto` tries io_uring and falls back to pwrite.
    pub writer: WriterKind,
    /// Start even when a record in the middle of the log is corrupt, keeping every good record.
    pub recover_corrupt: bool,
    /// Source of "now" in unix milliseconds.
    pub clock: Clock,
    /// Called with each record's address as `open` replays the log, in address order: how
    /// far loading got (the server's INFO loading fields). Runs on the opening thread.
    pub on_replay: Option<ReplayHook>,
    /// Continue the last segment instead of starting a new one (a replica resumes copying
    /// the segment its primary is writing).
    pub reopen_tail: bool,
    /// Local log address minus replication (history) address: Retire records name segments by
    /// history address.
    pub history_delta: u64,
}

/// A callback for [`Config::on_replay`].
#[derive(Clone)]
pub struct ReplayHook(pub Arc<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for ReplayHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplayHook")
    }
}

impl Config {
    /// Defaults as Redis users expect them, data in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Config {
            dir: dir.into(),
            databases: 16,
            segment_size: 64 << 20,
            appendfsync: FsyncPolicy::EverySec,
            writer: WriterKind::Auto,
            recover_corrupt: false,
            clock: Clock::System,
            on_replay: None,
            reopen_tail: false,
            history_delta: 0,
        }
    }
}

/// Where the engine reads the time from. Tests use `Manual` to move time by hand.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// Now, in unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }
}

/// The live value of a key, borrowed from the log for the duration of a callback.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    pub value: &'a [u8],
    /// Absolute expiry in unix ms, `None` for a persistent key.
    pub expire_at: Option<u64>,
}

/// What a read-modify-write callback decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Change nothing.
    Keep,
    /// Store this value with this absolute expiry (unix ms) or none.
    Put {
        value: Vec<u8>,
        expire_at: Option<u64>,
    },
    /// Delete the key.
    Delete,
}

/// Condition of a `set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cond {
    #[default]
    Always,
    /// NX
    IfAbsent,
    /// XX
    IfPresent,
}

/// Expiry of a `set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetExpiry {
    /// No TTL (a plain SET clears an existing TTL, as in Redis).
    #[default]
    Persist,
    /// KEEPTTL
    Keep,
    /// Absolute unix ms.
    At(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOptions {
    pub cond: Cond,
    pub expiry: SetExpiry,
    /// Return the old value (SET ... GET, GETSET).
    pub get_old: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetResult {
    /// Whether the value was written (false when NX/XX failed).
    pub applied: bool,
    /// The previous value, when `get_old` was asked and the key existed.
    pub old: Option<Vec<u8>>,
}

/// EXPIRE's NX / XX / GT / LT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpireCond {
    #[default]
    Always,
    /// Only if the key has no expiry.
    Nx,
    /// Only if the key has an expiry.
    Xx,
    /// Only if the new expiry is greater (a persistent key counts as infinite).
    Gt,
    /// Only if the new expiry is less (a persistent key counts as infinite).
    Lt,
}

/// Errors of the store. Texts are for operators; the server maps them to Redis replies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Log(#[from] segkv_log::LogError),
    #[error("database index {0} is out of range")]
    BadDb(usize),
    #[error("record of {0} bytes is larger than the log allows")]
    TooLarge(usize),
    /// The log is a replica's copy of its primary's: only the primary's records go in.
    #[error("You can't write against a read only replica.")]
    ReadOnly,
}

/// Counters for INFO.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub keys: Vec<u64>,
    pub expires: Vec<u64>,
    pub expired_keys: u64,
    pub tail_addr: u64,
    pub durable_addr: u64,
    pub log_bytes_written: u64,
    pub segments: u64,
    pub index_bytes: u64,
    pub writer: &'static str,
    pub last_fsync_ok: bool,
    pub fsyncs: u64,
}
