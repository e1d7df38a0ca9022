//! Reading the driver's attributes: `<sysfs>/bus/virtio/devices/virtioN/virtio_mem/*`.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The name of the attribute directory under each virtio device driven by `virtio_mem_rust`.
pub const GROUP: &str = "virtio_mem";

/// The attributes the driver shows, in its order.
pub const ATTRS: &[&str] = &[
    "requested_size",
    "plugged_size",
    "online_size",
    "added_size",
    "activity",
    "reason",
    "retry_at",
    "mode",
    "block_size",
    "device_block_size",
    "memory_block_size",
    "memmap_on_memory",
    "node",
    "region_start",
    "region_size",
    "usable_region_size",
    "stats",
];

/// Why reading sysfs failed.
#[derive(Debug)]
pub enum Error {
    /// Reading `path` failed.
    Io { path: PathBuf, source: io::Error },
    /// `path` holds something other than what was expected.
    Invalid {
        path: PathBuf,
        value: String,
        expected: &'static str,
    },
    /// There is no device `name` in `dir`.
    NoDevice { name: String, dir: PathBuf },
    /// Device `name` has no attribute directory: another driver (or none) drives it.
    NotVirtioMem { name: String, dir: PathBuf },
    /// No device in `dir` has an attribute directory.
    NoDevices { dir: PathBuf },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "reading {}: {source}", path.display()),
            Error::Invalid {
                path,
                value,
                expected,
            } => write!(
                f,
                "{}: expected {expected}, found {value:?}",
                path.display()
            ),
            Error::NoDevice { name, dir } => {
                write!(f, "no device {name} in {}", dir.display())
            }
            Error::NotVirtioMem { name, dir } => write!(
                f,
                "{name} is not a virtio-mem device bound to virtio_mem_rust (no {})",
                dir.join(name).join(GROUP).display()
            ),
            Error::NoDevices { dir } => write!(
                f,
                "no virtio-mem device bound to virtio_mem_rust in {}",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(path: &Path, source: io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// A sysfs tree: `/sys`, or a fake one for tests.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where virtio devices are listed.
    pub fn devices_dir(&self) -> PathBuf {
        self.root.join("bus/virtio/devices")
    }

    /// Every device with an attribute directory, in natural order (`virtio2` before
    /// `virtio10`). An error if there is none.
    pub fn devices(&self) -> Result<Vec<Device>, Error> {
        let dir = self.devices_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // No virtio bus at all: no devices either.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NoDevices { dir });
            }
            Err(e) => return Err(io_error(&dir, e)),
        };
        let mut devices = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&dir, e))?;
            let group = entry.path().join(GROUP);
            if group.is_dir() {
                devices.push(Device {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    dir: group,
                });
            }
        }
        if devices.is_empty() {
            return Err(Error::NoDevices { dir });
        }
        devices.sort_by(|a, b| natural_key(&a.name).cmp(&natural_key(&b.name)));
        Ok(devices)
    }

    /// The device named `name` (e.g. `virtio0`).
    pub fn device(&self, name: &str) -> Result<Device, Error> {
        let dir = self.devices_dir();
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::NoDevice {
                name: name.to_owned(),
                dir,
            });
        }
        let dev = dir.join(name);
        if !dev.exists() {
            return Err(Error::NoDevice {
                name: name.to_owned(),
                dir,
            });
        }
        let group = dev.join(GROUP);
        if !group.is_dir() {
            return Err(Error::NotVirtioMem {
                name: name.to_owned(),
                dir,
            });
        }
        Ok(Device {
            name: name.to_owned(),
            dir: group,
        })
    }

    /// Milliseconds since boot (`CLOCK_BOOTTIME`) from `<root>/../proc/uptime`, i.e.
    /// `/proc/uptime` for `/sys`; `None` if it cannot be read.
    pub fn uptime_ms(&self) -> Option<u64> {
        let text = fs::read_to_string(self.root.join("../proc/uptime")).ok()?;
        parse_seconds_ms(text.split_whitespace().next()?)
    }
}

/// Sort key that orders `virtio10` after `virtio2`.
fn natural_key(name: &str) -> (&str, u64, &str) {
    let prefix = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let number = name[prefix.len()..].parse().unwrap_or(u64::MAX);
    (prefix, number, name)
}

/// Parses seconds with up to 3 decimals (`123.456`, `12.3`, `5`) into milliseconds.
pub fn parse_seconds_ms(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 3 {
        return None;
    }
    let ms: u64 = format!("{frac:0<3}").parse().ok()?;
    whole
        .parse::<u64>()
        .ok()?
        .checked_mul(1000)?
        .checked_add(ms)
}

/// What the driver is doing, from the `activity` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    Idle,
    /// The device asked for a new size the driver has not picked up yet.
    Pending,
    Plugging,
    Unplugging,
    /// Stopped short for a transient reason; retried at `retry_at`.
    Waiting,
    /// Stopped short for a reason in the guest; retried at `retry_at`.
    Stalled,
    /// The device answered nonsense; no more requests until rebound.
    Stopped,
    Unbinding,
    /// A word this tool does not know (a newer driver).
    Other(String),
}

impl Activity {
    pub fn parse(word: &str) -> Self {
        match word {
            "idle" => Activity::Idle,
            "pending" => Activity::Pending,
            "plugging" => Activity::Plugging,
            "unplugging" => Activity::Unplugging,
            "waiting" => Activity::Waiting,
            "stalled" => Activity::Stalled,
            "stopped" => Activity::Stopped,
            "unbinding" => Activity::Unbinding,
            other => Activity::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Activity::Idle => "idle",
            Activity::Pending => "pending",
            Activity::Plugging => "plugging",
            Activity::Unplugging => "unplugging",
            Activity::Waiting => "waiting",
            Activity::Stalled => "stalled",
            Activity::Stopped => "stopped",
            Activity::Unbinding => "unbinding",
            Activity::Other(word) => word,
        }
    }
}

impl fmt::Display for Activity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `wait` looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub requested: u64,
    pub plugged: u64,
    /// The plugging granularity: the sub-block or big-block size.
    pub block_size: u64,
    pub activity: Activity,
    /// `None` when the driver shows `none`.
    pub reason: Option<String>,
}

/// Every attribute of a device as read, `(name, value)`, each value without its final
/// newline; `stats` keeps its inner newlines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub attrs: Vec<(String, String)>,
}

impl Snapshot {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A virtio device driven by `virtio_mem_rust`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    name: String,
    /// The attribute directory.
    dir: PathBuf,
}

impl Device {
    /// The virtio device's name, e.g. `virtio0`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn attr_path(&self, attr: &str) -> PathBuf {
        self.dir.join(attr)
    }

    /// Attribute `attr`, without its final newline.
    pub fn read(&self, attr: &str) -> Result<String, Error> {
        let path = self.attr_path(attr);
        let mut text = fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        if text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    }

    /// Attribute `attr` as a decimal number.
    pub fn read_u64(&self, attr: &str) -> Result<u64, Error> {
        let text = self.read(attr)?;
        text.trim().parse().map_err(|_| Error::Invalid {
            path: self.attr_path(attr),
            value: text,
            expected: "a decimal number",
        })
    }

    /// Every attribute: the known ones in the driver's order (skipping missing ones), then
    /// any others in name order.
    pub fn snapshot(&self) -> Result<Snapshot, Error> {
        let mut attrs = Vec::new();
        for &attr in ATTRS {
            match self.read(attr) {
                Ok(value) => attrs.push((attr.to_owned(), value)),
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        let mut extra = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !ATTRS.contains(&name.as_str()) && entry.path().is_file() {
                extra.push(name);
            }
        }
        extra.sort();
        for name in extra {
            let value = self.read(&name)?;
            attrs.push((name, value));
        }
        Ok(Snapshot { attrs })
    }

    /// What `wait` needs.
    pub fn status(&self) -> Result<Status, Error> {
        let reason = self.read("reason")?;
        let reason = reason.trim();
        Ok(Status {
            activity: Activity::parse(self.read("activity")?.trim()),
            requested: self.read_u64("requested_size")?,
            plugged: self.read_u64("plugged_size")?,
            block_size: self.read_u64("block_size")?,
            reason: (reason != "none").then(|| reason.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakeTree;

    #[test]
    fn finds_only_virtio_mem_devices_in_natural_order() {
        let tree = FakeTree::new("discovery");
        tree.add_device("virtio10", &[]);
        tree.add_device("virtio2", &[]);
        tree.add_other_device("virtio1");
        let sysfs = Sysfs::new(tree.sysfs());
        let names: Vec<_> = sysfs
            .devices()
            .unwrap()
            .iter()
            .map(|d| d.name().to_owned())
            .collect();
        assert_eq!(names, ["virtio2", "virtio10"]);

        assert_eq!(sysfs.device("virtio2").unwrap().name(), "virtio2");
        assert!(matches!(
            sysfs.device("virtio1"),
            Err(Error::NotVirtioMem { .. })
        ));
        assert!(matches!(
            sysfs.device("virtio7"),
            Err(Error::NoDevice { .. })
        ));
        assert!(matches!(sysfs.device("../x"), Err(Error::NoDevice { .. })));
    }

    #[test]
    fn no_devices_is_an_error() {
        let tree = FakeTree::new("nodevices");
        tree.add_other_device("virtio0");
        let err = Sysfs::new(tree.sysfs()).devices().unwrap_err();
        assert!(matches!(err, Error::NoDevices { .. }), "{err}");

        let err = Sysfs::new(tree.root().join("nonexistent"))
            .devices()
            .unwrap_err();
        assert!(matches!(err, Error::NoDevices { .. }), "{err}");
    }

    #[test]
    fn reads_status() {
        let tree = FakeTree::new("status");
        tree.add_device("virtio0", &[]);
        let dev = Sysfs::new(tree.sysfs()).device("virtio0").unwrap();
        let status = dev.status().unwrap();
        assert_eq!(status.activity, Activity::Idle);
        assert_eq!(status.requested, 4 << 30);
        assert_eq!(status.plugged, 4 << 30);
        assert_eq!(status.block_size, 2 << 20);
        assert_eq!(status.reason, None);

        tree.set("virtio0", "activity", "stalled\n");
        tree.set("virtio0", "reason", "free memory below the safety margin\n");
        let status = dev.status().unwrap();
        assert_eq!(status.activity, Activity::Stalled);
        assert_eq!(
            status.reason.as_deref(),
            Some("free memory below the safety margin")
        );
    }

    #[test]
    fn bad_numbers_and_missing_files_are_errors() {
        let tree = FakeTree::new("badnumbers");
        tree.add_device("virtio0", &[("plugged_size", "lots\n")]);
        let dev = Sysfs::new(tree.sysfs()).device("virtio0").unwrap();
        let msg = dev.status().unwrap_err().to_string();
        assert!(
            msg.contains("plugged_size") && msg.contains("lots"),
            "{msg}"
        );

        tree.remove("virtio0", "block_size");
        tree.set("virtio0", "plugged_size", "0\n");
        let msg = dev.status().unwrap_err().to_string();
        assert!(msg.contains("block_size"), "{msg}");
    }

    #[test]
    fn snapshot_keeps_driver_order_and_extra_files() {
        let tree = FakeTree::new("snapshot");
        tree.add_device("virtio0", &[("zz_new", "1\n")]);
        tree.remove("virtio0", "online_size");
        let snap = Sysfs::new(tree.sysfs())
            .device("virtio0")
            .unwrap()
            .snapshot()
            .unwrap();
        let names: Vec<_> = snap.attrs.iter().map(|(n, _)| n.as_str()).collect();
        let mut expected: Vec<_> = ATTRS
            .iter()
            .copied()
            .filter(|&a| a != "online_size")
            .collect();
        expected.push("zz_new");
        assert_eq!(names, expected);
        assert_eq!(snap.get("region_start"), Some("0x140000000"));
        assert_eq!(snap.get("stats"), Some("plug_ack 12\nplug_nack 0"));
    }

    #[test]
    fn parses_seconds() {
        assert_eq!(parse_seconds_ms("123.456"), Some(123_456));
        assert_eq!(parse_seconds_ms("12.3"), Some(12_300));
        assert_eq!(parse_seconds_ms("5"), Some(5_000));
        for bad in ["", "none", ".5", "1.2345", "-1", "1e3", "1.x"] {
            assert_eq!(parse_seconds_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_uptime_next_to_sysfs() {
        let tree = FakeTree::new("uptime");
        let sysfs = Sysfs::new(tree.sysfs());
        assert_eq!(sysfs.uptime_ms(), None);
        tree.set_uptime("100.25 300.00\n");
        assert_eq!(sysfs.uptime_ms(), Some(100_250));
    }
}
