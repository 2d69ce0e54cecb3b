//! Thin wrappers over libc calls that std lacks.

use std::fs::File;
use std::os::fd::AsRawFd;

/// posix_fallocate(file, 0, len).
pub(crate) fn fallocate(file: &File, len: u64) -> std::io::Result<()> {
    // SAFETY: posix_fallocate takes a descriptor owned by `file` and plain integers; no memory.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(r))
    }
}
