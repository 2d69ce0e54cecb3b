//! How the flusher gets bytes to disk: a small trait with an io_uring and a plain
//! `pwrite` + `fdatasync` implementation. Every log test runs against both.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::WriterKind;

/// Writes completed log bytes to a segment file and makes them durable.
pub trait SegmentWriter: Send {
    /// "io_uring" or "pwrite", for INFO and logs.
    fn name(&self) -> &'static str;
    /// Writes all of `data` at `offset` of `file`, then, when `sync` is set, makes the file's
    /// data durable (fdatasync) before returning.
    fn write(&mut self, file: &File, offset: u64, data: &[u8], sync: bool) -> io::Result<()>;
    /// fdatasync.
    fn sync(&mut self, file: &File) -> io::Result<()>;
}

/// Plain `pwrite` + `fdatasync`: works everywhere.
#[derive(Debug, Default)]
pub struct PwriteWriter;

impl SegmentWriter for PwriteWriter {
    fn name(&self) -> &'static str {
        "pwrite"
    }
    fn write(&mut self, file: &File, offset: u64, data: &[u8], sync: bool) -> io::Result<()> {
        file.write_all_at(data, offset)?;
        if sync {
            file.sync_data()?;
        }
        Ok(())
    }
    fn sync(&mut self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
}

/// Picks the writer for `kind`. With `Auto`, io_uring is tried first; when it cannot be used
/// the reason is returned alongside the pwrite fallback so the caller can log it once.
pub fn make_writer(kind: WriterKind) -> io::Result<(Box<dyn SegmentWriter>, Option<String>)> {
    match kind {
        WriterKind::Pwrite => Ok((Box::new(PwriteWriter), None)),
        WriterKind::Uring => Ok((Box::new(crate::uring::UringWriter::new()?), None)),
        WriterKind::Auto => match crate::uring::UringWriter::new() {
            Ok(w) => Ok((Box::new(w), None)),
            Err(e) => Ok((
                Box::new(PwriteWriter),
                Some(format!("io_uring unavailable ({e}); using pwrite")),
            )),
        },
    }
}
