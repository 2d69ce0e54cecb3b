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

/// Makes the calling thread yield the CPU to the others of the process: `nice` is added to
/// its niceness (a thread may lower its own priority, not raise it back). Background work
/// (a replica's full resync) uses it so that clients' requests keep their latency.
pub fn lower_thread_priority(nice: i32) -> std::io::Result<()> {
    // SAFETY: gettid and getpriority/setpriority take plain integers and touch no memory of
    // ours; PRIO_PROCESS with a thread id addresses that one thread on Linux.
    let r = unsafe {
        let tid = libc::gettid() as libc::id_t;
        *libc::__errno_location() = 0;
        let cur = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (cur + nice).min(19))
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
