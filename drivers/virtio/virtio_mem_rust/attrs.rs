// SPDX-License-Identifier: GPL-2.0

//! The device's state for operators: read-only sysfs attributes in
//! `/sys/bus/virtio/devices/virtioN/virtio_mem/`, and in debugfs a file with every block's state
//! and the fault-injection knobs for tests (`lose_answers`, `garble_answers`, `inject`,
//! `retry_now`).
//!
//! Sizes are in bytes, in decimal. `activity` can be polled: the driver wakes pollers
//! (`POLLPRI`) whenever the activity or the reason changes, and also sends a `KOBJ_CHANGE`
//! uevent with `VIRTIO_MEM_EVENT=reached|stalled|stopped` (see [`crate::publish`]).
//!
//! Both read the runtime without its state lock: the published [`crate::status::Status`], the
//! mode's records under their own lock, and the device's config.

use crate::{
    publish::ATTR_GROUP,
    run::Runtime,
    status::Activity, //
};
use core::fmt::Write;
use kernel::{
    debugfs::{
        self,
        Reader, //
    },
    devres::Devres,
    fmt,
    prelude::*,
    str::{
        CString,
        RawFormatter, //
    },
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc, //
    },
    sysfs::{
        AttributeSource,
        DeviceAttributes, //
    },
    uaccess::UserSliceReader,
    virtio, //
};

/// The attributes, in the order [`Runtime::show`] numbers them.
const NAMES: &[&CStr] = &[
    c"requested_size",
    c"plugged_size",
    c"online_size",
    c"added_size",
    c"activity",
    c"reason",
    c"retry_at",
    c"mode",
    c"block_size",
    c"device_block_size",
    c"memory_block_size",
    c"memmap_on_memory",
    c"node",
    c"region_start",
    c"region_size",
    c"usable_region_size",
    c"stats",
    c"device_plugged_size",
];

/// Creates the attributes of the device driven by `rt`, for as long as it is bound.
pub(crate) fn create(
    dev: &virtio::Device<kernel::device::Bound>,
    rt: &Arc<Runtime>,
) -> Result<Devres<DeviceAttributes<Runtime>>> {
    DeviceAttributes::new(dev.as_ref(), ATTR_GROUP, NAMES, rt.clone())
}

impl AttributeSource for Runtime {
    fn show(&self, index: usize, f: &mut RawFormatter) -> fmt::Result {
        let s = *self.status.lock();
        let probed = &self.device.probed;
        // The device's config, read only for the attributes that show it.
        let live = || self.device.read_sizes().ok();
        match index {
            // The device's request as it is now (the run loop may not have seen it yet).
            0 => writeln!(f, "{}", live().map_or(s.requested, |l| l.0)),
            1 => writeln!(f, "{}", s.plugged),
            2 => writeln!(f, "{}", s.online),
            3 => writeln!(f, "{}", s.added),
            4 => {
                // A request the run loop has not picked up yet.
                let pending = !matches!(s.activity, Activity::Stopped | Activity::Unbinding)
                    && live().is_some_and(|(requested, _)| requested != s.requested);
                writeln!(
                    f,
                    "{}",
                    if pending {
                        "pending"
                    } else {
                        s.activity.name()
                    }
                )
            }
            // Why the run loop stopped short; else the last sleep the driver refused.
            5 => match (s.reason, s.refused) {
                (Some(r), _) => f.write_fmt(fmt!("{r}\n")),
                (None, Some(r)) => f.write_fmt(fmt!("{r}\n")),
                (None, None) => writeln!(f, "none"),
            },
            6 => match s.retry_at_ms {
                Some(ms) => writeln!(f, "{}.{:03}", ms / 1000, ms % 1000),
                None => writeln!(f, "none"),
            },
            7 => writeln!(f, "{}", probed.mode.name()),
            8 => writeln!(f, "{}", probed.mode.block_size()),
            9 => writeln!(f, "{}", probed.config.block_size),
            10 => writeln!(f, "{}", probed.memory_block_size),
            11 => writeln!(f, "{}", u8::from(probed.memmap_on_memory)),
            12 => writeln!(f, "{}", probed.nid),
            13 => writeln!(f, "{:#x}", probed.config.addr),
            14 => writeln!(f, "{}", probed.config.region_size),
            15 => writeln!(f, "{}", live().map_or(0, |l| l.1)),
            16 => self.device.counters.write(f),
            // What the device says it has plugged, read live from its config: it differs from
            // `plugged_size` while a request is in flight, or when the two disagree (the driver
            // then resynchronizes).
            17 => match self.device.read_plugged() {
                Ok(size) => writeln!(f, "{size}"),
                Err(_) => writeln!(f, "unknown"),
            },
            _ => Err(fmt::Error),
        }
    }
}

/// The debugfs file `blocks`: one line per memory block (big block in big-block mode).
pub(crate) struct BlockDump(pub(crate) Arc<Runtime>);

impl fmt::Debug for BlockDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.mode.dump(&self.0.state, f)
    }
}

/// Shows how many more answers of the device `lose_answers` drops.
fn show_lose_answers(w: &Arc<Runtime>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", w.device.lose_answers.load(Relaxed))
}

/// Sets how many answers of the device to drop from now on (a decimal number).
fn store_lose_answers(w: &Arc<Runtime>, r: &mut UserSliceReader) -> Result {
    w.device.lose_answers.read_from_slice(r)
}

/// Shows how many more answers of the device `garble_answers` replaces.
fn show_garble_answers(w: &Arc<Runtime>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", w.device.garble_answers.load(Relaxed))
}

/// Sets how many answers of the device to replace by nonsense from now on (decimal).
fn store_garble_answers(w: &Arc<Runtime>, r: &mut UserSliceReader) -> Result {
    w.device.garble_answers.read_from_slice(r)
}

/// Shows the armed faults of `inject`, one `TARGET FAULT COUNT` line each.
fn show_inject(w: &Arc<Runtime>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    w.device.faults.write(f)
}

/// Arms a fault: `TARGET FAULT [COUNT]`, or `clear` (see [`crate::fault`]).
fn store_inject(w: &Arc<Runtime>, r: &mut UserSliceReader) -> Result {
    w.device.faults.store(r)
}

/// Nothing to show: `retry_now` is written to.
fn show_retry_now(_: &Arc<Runtime>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "write 1 to run a step now")
}

/// Runs a step now instead of at the end of the back-off (what a config change does), so that
/// tests of failed requests need not wait for it.
fn store_retry_now(w: &Arc<Runtime>, r: &mut UserSliceReader) -> Result {
    let go = Atomic::<u32>::new(0);
    go.read_from_slice(r)?;
    if go.load(Relaxed) != 0 {
        w.kick_if_running();
    }
    Ok(())
}

/// Shows how long the driver waits before removing a memory block it emptied, in ms.
fn show_remove_delay(w: &Arc<Runtime>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", w.remove_delay_ms.load(Relaxed))
}

/// Sets how long the driver waits before removing a memory block it emptied (ms, decimal).
fn store_remove_delay(w: &Arc<Runtime>, r: &mut UserSliceReader) -> Result {
    w.remove_delay_ms.read_from_slice(r)
}

/// Shows whether suspend ignores the device's persistent suspend feature (1) or not (0).
fn show_hide_persistent_suspend(w: &Arc<Runtime>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", w.hide_persistent_suspend.load(Relaxed))
}

/// Sets whether suspend ignores the device's persistent suspend feature (decimal, 0 or not).
fn store_hide_persistent_suspend(w: &Arc<Runtime>, r: &mut UserSliceReader) -> Result {
    w.hide_persistent_suspend.read_from_slice(r)
}

/// The device's debugfs directory, `virtio_mem_rust-<device>/`: `blocks`; `lose_answers`
/// (write N: the next N answers of the device are dropped as if they had not come in time, so
/// that tests can exercise the recovery from a timeout after the device acted);
/// `garble_answers` (write N: the next N answers become a value the protocol does not define,
/// which stops the device); `inject` (write `TARGET FAULT [COUNT]`: arms a fault for a request
/// kind, see [`crate::fault`]); `retry_now` (write 1: the next step runs now, not at the end of
/// the back-off); and `remove_delay_ms` (a wait between unplugging the last
/// sub-block of a memory block and removing it, so that tests can try to online the block in
/// that window); and `hide_persistent_suspend` (write 1: suspend to RAM is decided as if the
/// device did not offer to keep plugged memory across suspend).
pub(crate) struct Debugfs {
    _blocks: Pin<KBox<debugfs::File<BlockDump>>>,
    _lose_answers: Pin<KBox<debugfs::File<Arc<Runtime>>>>,
    _garble_answers: Pin<KBox<debugfs::File<Arc<Runtime>>>>,
    _inject: Pin<KBox<debugfs::File<Arc<Runtime>>>>,
    _retry_now: Pin<KBox<debugfs::File<Arc<Runtime>>>>,
    _remove_delay: Pin<KBox<debugfs::File<Arc<Runtime>>>>,
    _hide_persistent_suspend: Pin<KBox<debugfs::File<Arc<Runtime>>>>,
    _dir: debugfs::Dir,
}

impl Debugfs {
    pub(crate) fn create(
        dev: &virtio::Device<kernel::device::Bound>,
        rt: &Arc<Runtime>,
    ) -> Result<Self> {
        let name = CString::try_from_fmt(fmt!("virtio_mem_rust-{}", dev.as_ref().name()))?;
        let dir = debugfs::Dir::new(&name);
        let blocks = KBox::pin_init(
            dir.read_only_file(c"blocks", BlockDump(rt.clone())),
            GFP_KERNEL,
        )?;
        let lose_answers = KBox::pin_init(
            dir.read_write_callback_file(
                c"lose_answers",
                rt.clone(),
                &show_lose_answers,
                &store_lose_answers,
            ),
            GFP_KERNEL,
        )?;
        let garble_answers = KBox::pin_init(
            dir.read_write_callback_file(
                c"garble_answers",
                rt.clone(),
                &show_garble_answers,
                &store_garble_answers,
            ),
            GFP_KERNEL,
        )?;
        let inject = KBox::pin_init(
            dir.read_write_callback_file(c"inject", rt.clone(), &show_inject, &store_inject),
            GFP_KERNEL,
        )?;
        let retry_now = KBox::pin_init(
            dir.read_write_callback_file(
                c"retry_now",
                rt.clone(),
                &show_retry_now,
                &store_retry_now,
            ),
            GFP_KERNEL,
        )?;
        let remove_delay = KBox::pin_init(
            dir.read_write_callback_file(
                c"remove_delay_ms",
                rt.clone(),
                &show_remove_delay,
                &store_remove_delay,
            ),
            GFP_KERNEL,
        )?;
        let hide_persistent_suspend = KBox::pin_init(
            dir.read_write_callback_file(
                c"hide_persistent_suspend",
                rt.clone(),
                &show_hide_persistent_suspend,
                &store_hide_persistent_suspend,
            ),
            GFP_KERNEL,
        )?;
        Ok(Self {
            _blocks: blocks,
            _lose_answers: lose_answers,
            _garble_answers: garble_answers,
            _inject: inject,
            _retry_now: retry_now,
            _remove_delay: remove_delay,
            _hide_persistent_suspend: hide_persistent_suspend,
            _dir: dir,
        })
    }
}
