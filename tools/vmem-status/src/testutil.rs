//! A fake sysfs tree in a temporary directory, for tests.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Attribute values of a device that has reached a 4 GiB request.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("requested_size", "4294967296\n"),
    ("plugged_size", "4294967296\n"),
    ("online_size", "4294967296\n"),
    ("added_size", "4294967296\n"),
    ("activity", "idle\n"),
    ("reason", "none\n"),
    ("retry_at", "none\n"),
    ("mode", "sub-block\n"),
    ("block_size", "2097152\n"),
    ("device_block_size", "2097152\n"),
    ("memory_block_size", "134217728\n"),
    ("memmap_on_memory", "0\n"),
    ("node", "0\n"),
    ("region_start", "0x140000000\n"),
    ("region_size", "17179869184\n"),
    ("usable_region_size", "17179869184\n"),
    ("stats", "plug_ack 12\nplug_nack 0\n"),
];

/// `<tmp>/vmem-status-test-<pid>-<name>-<n>/` holding `sys/` and `proc/`; removed on drop.
/// Devices live in `sys/devices/` and are linked from `sys/bus/virtio/devices/`, as in sysfs.
pub struct FakeTree {
    root: PathBuf,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl FakeTree {
    pub fn new(name: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!(
            "vmem-status-test-{}-{name}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("sys/bus/virtio/devices")).expect("create fake sysfs");
        fs::create_dir_all(root.join("sys/devices")).expect("create fake sysfs");
        fs::create_dir_all(root.join("tmp")).expect("create fake sysfs");
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What `--sysfs` gets.
    pub fn sysfs(&self) -> PathBuf {
        self.root.join("sys")
    }

    fn link_device(&self, name: &str) -> PathBuf {
        let dir = self.root.join("sys/devices").join(name);
        fs::create_dir_all(&dir).expect("create fake device");
        symlink(
            format!("../../../devices/{name}"),
            self.root.join("sys/bus/virtio/devices").join(name),
        )
        .expect("link fake device");
        dir
    }

    /// A device bound to the driver: [`DEFAULTS`] with `overrides` (values as the files hold
    /// them, newline included).
    pub fn add_device(&self, name: &str, overrides: &[(&str, &str)]) {
        let group = self.link_device(name).join("virtio_mem");
        fs::create_dir_all(&group).expect("create fake attribute directory");
        for (attr, value) in DEFAULTS.iter().chain(overrides) {
            self.set(name, attr, value);
        }
    }

    /// A virtio device of another kind (no attribute directory).
    pub fn add_other_device(&self, name: &str) {
        let dir = self.link_device(name);
        fs::write(dir.join("device"), "0x0001\n").expect("write fake attribute");
    }

    /// Replaces attribute `attr` of device `dev` at once (write and rename), so that a
    /// concurrent reader never sees it empty.
    pub fn set(&self, dev: &str, attr: &str, value: &str) {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join("tmp").join(format!("{attr}-{n}"));
        fs::write(&tmp, value).expect("write fake attribute");
        fs::rename(&tmp, self.attr_path(dev, attr)).expect("replace fake attribute");
    }

    pub fn remove(&self, dev: &str, attr: &str) {
        fs::remove_file(self.attr_path(dev, attr)).expect("remove fake attribute");
    }

    /// Where attribute `attr` of fake device `dev` lives.
    fn attr_path(&self, dev: &str, attr: &str) -> PathBuf {
        self.root
            .join("sys/devices")
            .join(dev)
            .join("virtio_mem")
            .join(attr)
    }

    /// Writes `proc/uptime` next to `sys/`.
    pub fn set_uptime(&self, text: &str) {
        fs::create_dir_all(self.root.join("proc")).expect("create fake procfs");
        fs::write(self.root.join("proc/uptime"), text).expect("write fake uptime");
    }
}

impl Drop for FakeTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}
