//! Waiting for the driver's `sysfs_notify()` on an attribute, with poll(2).
//!
//! The sysfs protocol: open the attribute, read it to the end (which arms the notification),
//! then poll for `POLLPRI | POLLERR`; after a wakeup, seek to the start and read it again to
//! re-arm. A notification between the read and the poll makes the poll return at once, so
//! none is lost, but callers still bound each wait: a notification is a hint to re-read.

use std::ffi::{c_int, c_short, c_ulong};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Duration;

/// `struct pollfd`.
#[repr(C)]
struct PollFd {
    fd: c_int,
    events: c_short,
    revents: c_short,
}

const POLLPRI: c_short = 0x2;
const POLLERR: c_short = 0x8;

extern "C" {
    // `nfds_t` is `unsigned long` in glibc and musl.
    fn poll(fds: *mut PollFd, nfds: c_ulong, timeout: c_int) -> c_int;
}

/// An open attribute to wait on.
#[derive(Debug)]
pub struct Watch {
    file: File,
}

impl Watch {
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: File::open(path)?,
        })
    }

    /// Reads the attribute from the start to the end, which arms the next notification.
    pub fn arm(&mut self) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        let mut buf = Vec::new();
        self.file.read_to_end(&mut buf)?;
        Ok(())
    }

    /// Blocks until the attribute is notified (`true`) or `timeout` passes (`false`). A
    /// signal ends the wait early, as a timeout.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        // Round up so that a sub-millisecond rest does not spin.
        let ms = timeout.as_micros().div_ceil(1000);
        let ms = c_int::try_from(ms).unwrap_or(c_int::MAX);
        let mut fd = PollFd {
            fd: self.file.as_raw_fd(),
            events: POLLPRI | POLLERR,
            revents: 0,
        };
        // SAFETY: `fd` is one valid `struct pollfd` that outlives the call, and its file
        // descriptor is open for as long as `self` lives.
        let n = unsafe { poll(std::ptr::from_mut(&mut fd), 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(false),
                _ => Err(e),
            };
        }
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn regular_file_wait_ends_by_timeout() {
        // A regular file never reports POLLPRI, so only the timeout ends the wait.
        let path = std::env::temp_dir().join(format!("vmem-status-poll-{}", std::process::id()));
        std::fs::write(&path, "idle\n").unwrap();
        let mut watch = Watch::open(&path).unwrap();
        watch.arm().unwrap();
        let start = Instant::now();
        let notified = watch.wait(Duration::from_millis(50)).unwrap();
        let elapsed = start.elapsed();
        let _ = std::fs::remove_file(&path);
        assert!(!notified);
        assert!(elapsed >= Duration::from_millis(40), "{elapsed:?}");
    }
}
