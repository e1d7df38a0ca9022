//! Byte streams that carry QMP: a unix socket on the host, or a
//! virtio-serial port (a character device) inside a guest.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A bidirectional byte stream whose reads can be bounded in time.
///
/// A read that waited for the whole timeout without data must fail with
/// [`io::ErrorKind::TimedOut`] or [`io::ErrorKind::WouldBlock`]; a read
/// returning `Ok(0)` means the peer is gone.
pub trait Transport: Read + Write {
    /// Sets how long the next reads may block waiting for data.
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()>;
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        (**self).set_read_timeout(timeout)
    }
}

impl Transport for UnixStream {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        // A zero timeout is rejected by the OS interface; use the smallest
        // useful one instead.
        UnixStream::set_read_timeout(self, Some(timeout.max(Duration::from_millis(1))))
    }
}

/// Connects to a QMP unix socket.
pub fn connect_socket(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(path).map_err(|e| annotate(e, "cannot connect to QMP socket", path))
}

/// A character device (such as a virtio-serial port `/dev/vportNpM`) opened
/// for reading and writing, with reads bounded by `poll(2)`.
#[derive(Debug)]
pub struct PortStream {
    file: File,
    timeout: Duration,
}

impl PortStream {
    /// Opens the device at `path` read+write.
    pub fn open(path: &Path) -> io::Result<PortStream> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| annotate(e, "cannot open QMP port", path))?;
        Ok(PortStream {
            file,
            timeout: Duration::from_secs(10),
        })
    }
}

impl Transport for PortStream {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.timeout = timeout;
        Ok(())
    }
}

impl Read for PortStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let revents = poll_in(self.file.as_raw_fd(), self.timeout)?;
        if revents == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "timed out waiting for data on the QMP port",
            ));
        }
        if revents & POLLIN == 0 && revents & (POLLHUP | POLLERR | POLLNVAL) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "QMP port hung up (is the host side of the port connected?)",
            ));
        }
        self.file.read(buf)
    }
}

impl Write for PortStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Where virtio-serial ports show up in sysfs.
pub const VIRTIO_PORTS_SYSFS: &str = "/sys/class/virtio-ports";

/// Finds the device node of the virtio-serial port called `name` (the
/// `name=` given to QEMU's `virtserialport`), by scanning `sysfs_dir/*/name`
/// (normally [`VIRTIO_PORTS_SYSFS`]). Returns `/dev/<port dir name>`.
pub fn find_port_by_name(sysfs_dir: &Path, name: &str) -> io::Result<PathBuf> {
    let entries = fs::read_dir(sysfs_dir).map_err(|e| {
        annotate(
            e,
            "cannot list virtio-serial ports (is virtio_console loaded?)",
            sysfs_dir,
        )
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        // Ports without a name have an empty or unreadable `name` file.
        let Ok(port_name) = fs::read_to_string(entry.path().join("name")) else {
            continue;
        };
        if port_name.trim_end_matches('\n') == name {
            found.push(Path::new("/dev").join(entry.file_name()));
        }
    }
    found.sort();
    found.into_iter().next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no virtio-serial port named {name:?} in {} (use --socket, --port or --port-name)",
                sysfs_dir.display()
            ),
        )
    })
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

const POLLIN: i16 = 0x001;
const POLLERR: i16 = 0x008;
const POLLHUP: i16 = 0x010;
const POLLNVAL: i16 = 0x020;

/// `struct pollfd` from `<poll.h>`.
#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

extern "C" {
    /// `poll(2)` from the C library that std already links against.
    fn poll(fds: *mut PollFd, nfds: std::ffi::c_ulong, timeout: std::ffi::c_int)
        -> std::ffi::c_int;
}

/// Waits up to `timeout` for `fd` to become readable. Returns the `revents`
/// bits, 0 on timeout.
fn poll_in(fd: i32, timeout: Duration) -> io::Result<i16> {
    // Round up so that a sub-millisecond remainder still waits a little.
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    let millis = std::ffi::c_int::try_from(millis).unwrap_or(std::ffi::c_int::MAX);
    let mut pfd = PollFd {
        fd,
        events: POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is a valid, exclusively borrowed pollfd array of
        // length 1 for the duration of the call.
        let n = unsafe { poll(&mut pfd, 1, millis) };
        if n >= 0 {
            return Ok(if n == 0 { 0 } else { pfd.revents });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmctl-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn finds_port_by_name() {
        let dir = temp_dir("sysfs");
        for (port, name) in [("vport1p1", "other\n"), ("vport2p1", "org.qemu.qmp0\n")] {
            fs::create_dir(dir.join(port)).unwrap();
            fs::write(dir.join(port).join("name"), name).unwrap();
        }
        fs::create_dir(dir.join("vport3p1")).unwrap(); // no name file
        assert_eq!(
            find_port_by_name(&dir, "org.qemu.qmp0").unwrap(),
            PathBuf::from("/dev/vport2p1")
        );
        let err = find_port_by_name(&dir, "nope").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("\"nope\""), "{err}");
        fs::remove_dir_all(&dir).unwrap();
        assert!(find_port_by_name(&dir, "x").is_err());
    }

    #[test]
    fn port_read_times_out_and_reads_data() {
        // A FIFO opened read+write never hits EOF and reads back what was
        // written: enough to exercise the poll(2) path.
        let dir = temp_dir("fifo");
        let fifo = dir.join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("mkfifo unavailable, skipping");
            return;
        }
        let mut port = PortStream::open(&fifo).unwrap();
        port.set_read_timeout(Duration::from_millis(50)).unwrap();
        let start = Instant::now();
        let err = port.read(&mut [0; 8]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(45));
        port.write_all(b"hi").unwrap();
        let mut buf = [0; 8];
        assert_eq!(port.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"hi");
        fs::remove_dir_all(&dir).unwrap();
    }
}
