use std::path::PathBuf;

/// Errors of the log. Each names what failed and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {0} is locked by another process")]
    Locked(PathBuf),
    #[error(
        "corrupt record in {path} at offset {offset}: {why} (start with the recover-corrupt option to keep every good record)"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error("the log has failed and accepts no more durable writes: {0}")]
    Failed(String),
    #[error("record of {0} bytes exceeds the maximum record size")]
    TooLarge(usize),
    #[error("the log is closed")]
    Closed,
    /// Bytes offered by a primary do not fit this log where they claim to go.
    #[error("replication stream: {0}")]
    Mirror(String),
}

impl LogError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
