//! Read-only access to a data directory for tools: takes no lock, changes nothing, and reads
//! files with plain reads (no mapping), so it is safe beside a running server whose active
//! segment is being written and truncated.
//!
//! ```no_run
//! for f in segkv_log::inspect::segment_files(std::path::Path::new("./data")).unwrap() {
//!     let seg = f.load().unwrap();
//!     println!("{} holds {} items", f.path.display(), seg.items(false).len());
//! }
//! ```

use std::path::{Path, PathBuf};

use crate::LogError;
use crate::record::{self, DecodeError, RecordView, Scanned};
use crate::recovery::{list_segments, valid_record_after};
use crate::segment::{SEGMENT_HEADER_LEN, SegmentHeader};

/// A segment file found in the directory.
#[derive(Debug, Clone)]
pub struct SegmentFile {
    pub path: PathBuf,
    /// Base address from the file name.
    pub base: u64,
    pub file_len: u64,
}

/// A segment file's bytes, read into memory.
#[derive(Debug)]
pub struct Loaded {
    pub file: SegmentFile,
    pub header: Result<SegmentHeader, String>,
    pub data: Vec<u8>,
}

/// What a walk over a segment meets.
#[derive(Debug)]
pub enum Item<'a> {
    /// A valid record at `offset`, taking `padded` bytes.
    Record {
        offset: u64,
        padded: usize,
        view: RecordView<'a>,
    },
    /// A record its writer marked invalid.
    Invalid { offset: u64, padded: usize },
    /// A record that fails its checks. `torn_tail`: nothing valid follows it anywhere, so
    /// recovery would cut the log here rather than refuse to start.
    Damaged {
        offset: u64,
        why: String,
        torn_tail: bool,
    },
}

/// Segment files of `dir`, in address order.
pub fn segment_files(dir: &Path) -> Result<Vec<SegmentFile>, LogError> {
    list_segments(dir)?
        .into_iter()
        .map(|(base, path)| {
            let file_len = std::fs::metadata(&path)
                .map_err(|e| LogError::io("stat segment", &path, e))?
                .len();
            Ok(SegmentFile {
                path,
                base,
                file_len,
            })
        })
        .collect()
}

impl SegmentFile {
    pub fn load(&self) -> Result<Loaded, LogError> {
        let data =
            std::fs::read(&self.path).map_err(|e| LogError::io("read segment", &self.path, e))?;
        let header = SegmentHeader::decode(&data).and_then(|h| {
            if h.base == self.base {
                Ok(h)
            } else {
                Err(format!(
                    "header says base {:#x}, file name says {:#x}",
                    h.base, self.base
                ))
            }
        });
        Ok(Loaded {
            file: self.clone(),
            header,
            data,
        })
    }

    /// Whether the file's first record is valid (it holds data).
    pub fn starts_with_valid_record(&self) -> bool {
        let Ok(seg) = self.load() else { return false };
        seg.data.len() > SEGMENT_HEADER_LEN as usize
            && matches!(
                record::scan(&seg.data[SEGMENT_HEADER_LEN as usize..]),
                Ok(Scanned::Record(..))
            )
    }
}

impl Loaded {
    /// Everything in the segment's data, in order. `later_has_data`: whether a later segment
    /// holds valid records (then a damaged record here is corruption, not a torn tail).
    /// Past a damaged record the walk resumes at the next valid record, if any.
    pub fn items(&self, later_has_data: bool) -> Vec<Item<'_>> {
        let mut out = Vec::new();
        if self.header.is_err() {
            return out;
        }
        let data = &self.data[..];
        let mut p = SEGMENT_HEADER_LEN as usize;
        while p < data.len() {
            match record::scan(&data[p..]) {
                Ok(Scanned::Record(view, n)) => {
                    out.push(Item::Record {
                        offset: p as u64,
                        padded: n,
                        view,
                    });
                    p += n;
                }
                Ok(Scanned::Invalid(n)) => {
                    out.push(Item::Invalid {
                        offset: p as u64,
                        padded: n,
                    });
                    p += n;
                }
                Ok(Scanned::End) | Err(DecodeError::Unwritten) => break,
                Err(e) => {
                    let next = valid_record_after(data, p + 4);
                    let torn_tail = next.is_none() && !later_has_data;
                    out.push(Item::Damaged {
                        offset: p as u64,
                        why: e.to_string(),
                        torn_tail,
                    });
                    match next {
                        Some(q) => p = q,
                        None => break,
                    }
                }
            }
        }
        out
    }
}
