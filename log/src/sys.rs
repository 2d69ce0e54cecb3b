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

/// Returns the allocator's free memory to the OS (glibc's `malloc_trim(0)`): freed client
/// buffers and tables otherwise stay in the process's heaps, counted in its RSS.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes an integer and only walks the allocator's own structures.
    unsafe {
        libc::malloc_trim(0);
    }
}
