//! virtio-mem-pci operations on top of QOM commands (`qom-list`, `qom-get`,
//! `qom-set`).
//!
//! Devices created with `-device virtio-mem-pci,id=ID` live at
//! `/machine/peripheral/ID`. The PCI proxy forwards the virtio-mem
//! properties (`size`, `requested-size`, `block-size`, `node`, `memaddr`,
//! `memdev`), so everything is read and written on the proxy. Changes of
//! `size` are followed in QEMU's `MEMORY_DEVICE_SIZE_CHANGE` events.

use std::fmt;
use std::time::{Duration, Instant};

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::qmp::{self, Client, Event};
use crate::transport::Transport;

/// Where QEMU puts devices that were given an id.
pub const PERIPHERAL: &str = "/machine/peripheral";

/// The QOM type of a virtio-mem-pci device, as `qom-list` reports children.
pub const CHILD_TYPE: &str = "child<virtio-mem-pci>";

/// The event QEMU sends when the size of a memory device changes.
pub const SIZE_CHANGE_EVENT: &str = "MEMORY_DEVICE_SIZE_CHANGE";

/// Arguments of `qom-list`.
#[derive(Serialize)]
struct QomList<'a> {
    path: &'a str,
}

/// One entry of what `qom-list` returns (QAPI's `ObjectPropertyInfo`).
#[derive(Debug, Deserialize)]
pub struct ObjectPropertyInfo {
    /// The property's name: for a child, the child's id.
    pub name: String,
    /// `child<TYPE>`, `link<TYPE>`, or a scalar type such as `uint64`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Arguments of `qom-get`.
#[derive(Serialize)]
struct QomGet<'a> {
    path: &'a str,
    property: &'a str,
}

/// Arguments of `qom-set`.
#[derive(Serialize)]
struct QomSet<'a, V> {
    path: &'a str,
    property: &'a str,
    value: V,
}

/// The data of a [`SIZE_CHANGE_EVENT`].
///
/// QEMU rate-limits the event per `qom-path` to one a second: a change within
/// the second is held back and sent at its end, a later one in the same
/// second replacing it, so the last size always arrives, at most a second
/// late.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SizeChange {
    /// The device's id; absent for a device created without one.
    pub id: Option<String>,
    /// The size the device provides now: what the guest has plugged.
    pub size: u64,
    /// The device's canonical QOM path, `/machine/peripheral/ID` for a
    /// virtio-mem-pci device with an id (QEMU 6.2 and later).
    #[serde(rename = "qom-path")]
    pub qom_path: Option<String>,
}

impl SizeChange {
    /// The size change `event` reports, if it is one.
    pub fn from_event(event: &Event) -> Option<SizeChange> {
        if event.event != SIZE_CHANGE_EVENT {
            return None;
        }
        SizeChange::deserialize(&event.data).ok()
    }

    /// Whether it is about device `id` (an id, or a QOM path as
    /// [`device_path`] takes it).
    pub fn is_for(&self, id: &str) -> bool {
        self.qom_path.as_deref() == Some(device_path(id).as_str())
            || (!id.starts_with('/') && self.id.as_deref() == Some(id))
    }
}

/// The QOM path of a device: `ID` becomes `/machine/peripheral/ID`; a
/// string starting with `/` is taken as a full QOM path already.
pub fn device_path(id: &str) -> String {
    if id.starts_with('/') {
        id.to_owned()
    } else {
        format!("{PERIPHERAL}/{id}")
    }
}

/// Ids of all virtio-mem-pci devices, in QEMU's order.
pub fn list_devices<S: Transport>(c: &mut Client<S>) -> Result<Vec<String>, qmp::Error> {
    let children: Vec<ObjectPropertyInfo> =
        c.execute_with("qom-list", &QomList { path: PERIPHERAL })?;
    Ok(children
        .into_iter()
        .filter(|child| child.kind == CHILD_TYPE)
        .map(|child| child.name)
        .collect())
}

/// `qom-get` of property `prop` at QOM path `path`, as a `T` (`Value` for
/// whatever it is).
pub fn qom_get<S: Transport, T: DeserializeOwned>(
    c: &mut Client<S>,
    path: &str,
    prop: &str,
) -> Result<T, qmp::Error> {
    let value: Value = c.execute_with(
        "qom-get",
        &QomGet {
            path,
            property: prop,
        },
    )?;
    T::deserialize(&value)
        .map_err(|e| qmp::Error::Protocol(format!("{path} property {prop} is {value}: {e}")))
}

/// `qom-set` of property `prop` at QOM path `path` to `value`.
pub fn qom_set<S: Transport, V: Serialize>(
    c: &mut Client<S>,
    path: &str,
    prop: &str,
    value: V,
) -> Result<(), qmp::Error> {
    c.execute_with::<_, IgnoredAny>(
        "qom-set",
        &QomSet {
            path,
            property: prop,
            value,
        },
    )
    .map(drop)
}

/// Everything `vmctl info` shows about one device. Sizes and addresses are
/// in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device id.
    pub id: String,
    /// Memory currently plugged by the guest.
    pub size: u64,
    /// What the host asked the guest to plug.
    pub requested_size: u64,
    /// Plug/unplug granularity.
    pub block_size: u64,
    /// NUMA node.
    pub node: u64,
    /// Guest physical start address of the device's memory region.
    pub memaddr: u64,
    /// QOM path of the memory backend, e.g. `/objects/vmem0`.
    pub memdev: String,
    /// Size of the memory backend: the most the device can ever provide.
    pub region_size: u64,
}

impl DeviceInfo {
    /// Queries all fields of device `id`.
    pub fn fetch<S: Transport>(c: &mut Client<S>, id: &str) -> Result<DeviceInfo, qmp::Error> {
        let path = device_path(id);
        let memdev: String = qom_get(c, &path, "memdev")?;
        Ok(DeviceInfo {
            id: id.to_owned(),
            size: qom_get(c, &path, "size")?,
            requested_size: qom_get(c, &path, "requested-size")?,
            block_size: qom_get(c, &path, "block-size")?,
            node: qom_get(c, &path, "node")?,
            memaddr: qom_get(c, &path, "memaddr")?,
            region_size: qom_get(c, &memdev, "size")?,
            memdev,
        })
    }

    /// `(key, value)` pairs in `vmctl info` order.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("size", self.size.to_string()),
            ("requested-size", self.requested_size.to_string()),
            ("block-size", self.block_size.to_string()),
            ("node", self.node.to_string()),
            ("memaddr", self.memaddr.to_string()),
            ("region-size", self.region_size.to_string()),
            ("memdev", self.memdev.clone()),
        ]
    }
}

/// One-line summary, as `vmctl list` prints it:
/// `ID size=N requested-size=N block-size=N node=N memaddr=N`.
impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} size={} requested-size={} block-size={} node={} memaddr={}",
            self.id, self.size, self.requested_size, self.block_size, self.node, self.memaddr
        )
    }
}

/// Asks the guest to resize device `id` to `bytes` (sets `requested-size`).
pub fn set_requested_size<S: Transport>(
    c: &mut Client<S>,
    id: &str,
    bytes: u64,
) -> Result<(), qmp::Error> {
    qom_set(c, &device_path(id), "requested-size", bytes)
}

/// Why [`wait_for_size`] failed.
#[derive(Debug)]
pub enum WaitError {
    /// Talking to QEMU failed.
    Qmp(qmp::Error),
    /// The size did not reach the target in time.
    Timeout {
        /// The device id.
        id: String,
        /// The size waited for.
        target: u64,
        /// The last size read.
        last: u64,
        /// How long it waited.
        waited: Duration,
    },
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Qmp(e) => e.fmt(f),
            WaitError::Timeout {
                id,
                target,
                last,
                waited,
            } => write!(
                f,
                "timed out after {:.1} s waiting for {id} size to reach {target}; \
                 last size seen: {last}",
                waited.as_secs_f64()
            ),
        }
    }
}

impl std::error::Error for WaitError {}

impl From<qmp::Error> for WaitError {
    fn from(e: qmp::Error) -> WaitError {
        WaitError::Qmp(e)
    }
}

/// Waits until the `size` of device `id` equals `target`, for at most
/// `timeout`. Returns the final size.
///
/// `c` must have negotiated capabilities, so that QEMU sends it events. The
/// size is read once, then followed in [`SIZE_CHANGE_EVENT`]s until it gets
/// there. Events that arrived before the answer to that read were dropped
/// with good reason: QEMU queues the answer after every event sent before
/// the command ran, so they are older than the answer (and on a shared
/// serial port possibly left over from an earlier run), while every change
/// after it brings an event after it.
pub fn wait_for_size<S: Transport>(
    c: &mut Client<S>,
    id: &str,
    target: u64,
    timeout: Duration,
) -> Result<u64, WaitError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut size: u64 = qom_get(c, &device_path(id), "size")?;
    while size != target {
        let Some(event) = c.next_event(deadline)? else {
            return Err(WaitError::Timeout {
                id: id.to_owned(),
                target,
                last: size,
                waited: start.elapsed(),
            });
        };
        if let Some(change) = SizeChange::from_event(&event).filter(|ch| ch.is_for(id)) {
            size = change.size;
        }
    }
    Ok(size)
}

/// Waits as [`wait_for_size`] does, but reads the size every `interval`
/// instead of following events: QEMU rate-limits [`SIZE_CHANGE_EVENT`] to one
/// a second per device and delays a later change to the end of that second,
/// which a benchmark timing a resize to the millisecond cannot have.
pub fn poll_for_size<S: Transport>(
    c: &mut Client<S>,
    id: &str,
    target: u64,
    timeout: Duration,
    interval: Duration,
) -> Result<u64, WaitError> {
    let start = Instant::now();
    loop {
        let size: u64 = qom_get(c, &device_path(id), "size")?;
        if size == target {
            return Ok(size);
        }
        if start.elapsed() >= timeout {
            return Err(WaitError::Timeout {
                id: id.to_owned(),
                target,
                last: size,
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(interval.min(timeout.saturating_sub(start.elapsed())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn device_paths() {
        assert_eq!(device_path("vm0"), "/machine/peripheral/vm0");
        assert_eq!(device_path("/objects/mem0"), "/objects/mem0");
    }

    #[test]
    fn size_change_events() {
        let event = |name: &str, data: Value| Event {
            event: name.to_owned(),
            data,
        };
        let change = SizeChange::from_event(&event(
            SIZE_CHANGE_EVENT,
            json!({"id": "vm0", "size": 18446744073709551615u64, "qom-path": "/machine/peripheral/vm0"}),
        ))
        .unwrap();
        assert_eq!(change.size, u64::MAX);
        assert!(change.is_for("vm0"));
        assert!(change.is_for("/machine/peripheral/vm0"));
        assert!(!change.is_for("vm1"));
        assert!(!change.is_for("/machine/peripheral/vm1"));

        // A device without an id is known by its QOM path only; before
        // QEMU 6.2 there was no path, only the id.
        let anonymous = SizeChange::from_event(&event(
            SIZE_CHANGE_EVENT,
            json!({"size": 0, "qom-path": "/machine/unattached/device[2]"}),
        ))
        .unwrap();
        assert!(anonymous.is_for("/machine/unattached/device[2]"));
        assert!(!anonymous.is_for("vm0"));
        let old =
            SizeChange::from_event(&event(SIZE_CHANGE_EVENT, json!({"id": "vm0", "size": 1})))
                .unwrap();
        assert!(old.is_for("vm0"));
        assert!(!old.is_for("/machine/peripheral/vm0"));

        // Other events, and malformed ones, are not size changes.
        assert_eq!(
            SizeChange::from_event(&event("BALLOON_CHANGE", json!({"actual": 1}))),
            None
        );
        assert_eq!(
            SizeChange::from_event(&event(SIZE_CHANGE_EVENT, json!({"id": "vm0"}))),
            None
        );
    }

    #[test]
    fn summary_line_and_fields() {
        let info = DeviceInfo {
            id: "vm0".into(),
            size: 1 << 30,
            requested_size: 2 << 30,
            block_size: 2 << 20,
            node: 1,
            memaddr: 1 << 32,
            memdev: "/objects/vmem0".into(),
            region_size: 4 << 30,
        };
        assert_eq!(
            info.to_string(),
            "vm0 size=1073741824 requested-size=2147483648 block-size=2097152 node=1 \
             memaddr=4294967296"
        );
        let keys: Vec<_> = info.fields().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "id",
                "size",
                "requested-size",
                "block-size",
                "node",
                "memaddr",
                "region-size",
                "memdev"
            ]
        );
    }
}
