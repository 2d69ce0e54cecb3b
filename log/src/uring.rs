//! The io_uring segment writer: one ring owned by the flusher thread. A flush is a WRITE
//! linked to an FSYNC(DATASYNC), submitted together and reaped together. All unsafe io_uring
//! calls live in this module.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{IoUring, opcode, squeue, types};

use crate::writer::SegmentWriter;

pub struct UringWriter {
    ring: IoUring,
}

const WRITE_TAG: u64 = 1;
const SYNC_TAG: u64 = 2;

impl UringWriter {
    /// Creates a ring and proves it works with a NOP (seccomp or `io_uring_disabled` make
    /// creation or the first submit fail).
    pub fn new() -> io::Result<UringWriter> {
        let mut ring = IoUring::new(8)?;
        let nop = opcode::Nop::new().build().user_data(0);
        // SAFETY: a NOP references no memory.
        unsafe {
            ring.submission()
                .push(&nop)
                .map_err(|_| io::Error::other("submission queue full"))?
        };
        ring.submit_and_wait(1)?;
        let cqe = ring
            .completion()
            .next()
            .ok_or_else(|| io::Error::other("no completion for NOP"))?;
        if cqe.result() < 0 {
            return Err(io::Error::from_raw_os_error(-cqe.result()));
        }
        Ok(UringWriter { ring })
    }

    /// Submits the queued entries and reaps exactly `n` completions, returning the first error.
    /// Returns how many bytes the WRITE completion reported (0 if none was queued).
    fn run(&mut self, n: usize) -> io::Result<usize> {
        let mut written = 0usize;
        let mut err: Option<io::Error> = None;
        let mut seen = 0;
        while seen < n {
            match self.ring.submit_and_wait(n - seen) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for cqe in self.ring.completion() {
                seen += 1;
                let r = cqe.result();
                if r < 0 {
                    // A write that failed cancels its linked fsync (-ECANCELED): report the write's error.
                    if err.is_none() && r != -libc::ECANCELED {
                        err = Some(io::Error::from_raw_os_error(-r));
                    }
                } else if cqe.user_data() == WRITE_TAG {
                    written = r as usize;
                }
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }
}

impl SegmentWriter for UringWriter {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn write(
        &mut self,
        file: &File,
        mut offset: u64,
        mut data: &[u8],
        sync: bool,
    ) -> io::Result<()> {
        if data.is_empty() {
            return if sync { self.sync(file) } else { Ok(()) };
        }
        let fd = types::Fd(file.as_raw_fd());
        while !data.is_empty() {
            let chunk = &data[..data.len().min(1 << 30)];
            let last = chunk.len() == data.len();
            let write = opcode::Write::new(fd, chunk.as_ptr(), chunk.len() as u32)
                .offset(offset)
                .build()
                .user_data(WRITE_TAG);
            let with_sync = sync && last;
            {
                let mut sq = self.ring.submission();
                let write = if with_sync {
                    write.flags(squeue::Flags::IO_LINK)
                } else {
                    write
                };
                // SAFETY: `chunk` and `file` outlive the operation: `run` below waits for its
                // completion before this function returns, and the ring is only used here.
                unsafe {
                    sq.push(&write)
                        .map_err(|_| io::Error::other("submission queue full"))?
                };
                if with_sync {
                    let fsync = opcode::Fsync::new(fd)
                        .flags(types::FsyncFlags::DATASYNC)
                        .build()
                        .user_data(SYNC_TAG);
                    // SAFETY: the fsync references only the descriptor, which outlives the call.
                    unsafe {
                        sq.push(&fsync)
                            .map_err(|_| io::Error::other("submission queue full"))?
                    };
                }
            }
            let n = self.run(if with_sync { 2 } else { 1 })?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "io_uring write wrote 0 bytes",
                ));
            }
            if n < chunk.len() && with_sync {
                // Short write: the linked fsync ran on a partial write. Finish, then sync again.
                offset += n as u64;
                data = &data[n..];
                self.write(file, offset, data, false)?;
                return self.sync(file);
            }
            offset += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn sync(&mut self, file: &File) -> io::Result<()> {
        let fd = types::Fd(file.as_raw_fd());
        let fsync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(SYNC_TAG);
        // SAFETY: the fsync references only the descriptor, which outlives the call (we wait).
        unsafe {
            self.ring
                .submission()
                .push(&fsync)
                .map_err(|_| io::Error::other("submission queue full"))?
        };
        self.run(1).map(|_| ())
    }
}
