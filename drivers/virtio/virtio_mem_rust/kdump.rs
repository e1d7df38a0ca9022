// SPDX-License-Identifier: GPL-2.0

//! kdump mode: the driver bound in a crash dump capture kernel.
//!
//! The device's memory belongs to the crashed kernel, whose dump is being taken: the driver
//! plugs nothing, unplugs nothing and never sends `UNPLUG_ALL` (which would throw the dump
//! away). It only tells `/proc/vmcore` which pages of the region are plugged, asking the device
//! with `STATE` requests, so that reading the dump never touches unplugged memory (which the
//! host may not back, or would have to back again). As the C driver does, with one `STATE` per
//! device block at most: answers are kept for the whole region, not only the last block, so a
//! dump tool that reads the memory more than once (`makedumpfile` reads page structures before
//! page contents) asks once.
//!
//! On x86_64 the crashed kernel wrote the list of memory ranges to dump (kept current on memory
//! hotplug by `CRASH_HOTPLUG`), so the driver reports no ranges of its own
//! (`PROC_VMCORE_DEVICE_RAM` is for architectures whose capture kernel builds that list).

use crate::{
    device::{
        DeviceClient,
        Probed, //
    },
    error::StepError,
    protocol::{
        BlockState,
        ANSWER_TIMEOUT, //
    },
    publish::ATTR_GROUP,
    status::Reason,
};
use core::fmt::Write;
use kernel::{
    crash_dump::{
        VmcoreCallback,
        VmcoreHandler, //
    },
    debugfs,
    device::Core,
    devres::Devres,
    fmt,
    new_mutex,
    page::PAGE_SHIFT,
    prelude::*,
    str::{
        CString,
        RawFormatter, //
    },
    sync::{
        Arc,
        Mutex, //
    },
    sysfs::{
        AttributeSource,
        DeviceAttributes, //
    },
    time::{
        delay::fsleep,
        Delta,
        Instant,
        Monotonic, //
    },
    uaccess::UserSliceReader,
    virtio, //
};

/// What the driver knows of a device block's state.
const UNKNOWN: u8 = 0;
const PLUGGED: u8 = 1;
const UNPLUGGED: u8 = 2;

/// The device in a capture kernel: answers `/proc/vmcore`'s questions.
#[pin_data]
pub(crate) struct Dump {
    device: DeviceClient,
    /// What the device had plugged at probe: nothing plugged means nothing to ask.
    plugged_at_probe: u64,
    /// The state of each device block of the region, as far as the device was asked; empty if
    /// the region has too many blocks to keep (then every question is a request).
    #[pin]
    states: Mutex<KVVec<u8>>,
}

impl Dump {
    /// Whether the page at `addr` (in the region) is plugged.
    fn plugged(&self, addr: u64) -> bool {
        if self.plugged_at_probe == 0 {
            return false;
        }
        let cfg = &self.device.probed.config;
        // The geometry's block size is not zero: no division can panic.
        let block_size = self.device.geometry.block_size;
        let index = (addr - cfg.addr) / block_size;
        let block = cfg.addr + index * block_size.get();
        let index = usize::try_from(index).unwrap_or(usize::MAX);
        // Requests are serialized by the virtqueue; the lock keeps one question per block.
        let mut states = self.states.lock();
        if let Some(&known) = states.get(index) {
            if known != UNKNOWN {
                return known == PLUGGED;
            }
        }
        // Without a definite answer the page is not read (unplugged memory must not be
        // touched, as the C driver: "On any kind of error, we're going to signal !ram"), and
        // nothing is kept: the next page of the block asks again.
        let known = match self.ask(block, block_size.get()) {
            Some(BlockState::Plugged) => PLUGGED,
            Some(BlockState::Unplugged) => UNPLUGGED,
            Some(BlockState::Mixed) | None => return false,
        };
        if let Some(k) = states.get_mut(index) {
            *k = known;
        }
        known == PLUGGED
    }

    /// The device's answer to a `STATE` of `[block, block + size)`, asked again while there was
    /// no answer in time or the virtqueue still waits for a late answer to an earlier request,
    /// for as long as one answer may take; `None` without a definite answer.
    fn ask(&self, block: u64, size: u64) -> Option<BlockState> {
        let start = Instant::<Monotonic>::now();
        loop {
            match self.device.query(block, size) {
                Ok(state) => return Some(state),
                Err(StepError::Device(f))
                    if matches!(f.reason, Reason::Timeout | Reason::ExchangeFailed)
                        && start.elapsed().as_millis() < ANSWER_TIMEOUT.as_millis() =>
                {
                    fsleep(Delta::from_millis(10));
                }
                Err(_) => return None,
            }
        }
    }
}

impl VmcoreHandler for Dump {
    fn pfn_is_ram(&self, pfn: usize) -> bool {
        let addr = (pfn as u64) << PAGE_SHIFT;
        let cfg = &self.device.probed.config;
        if addr < cfg.addr || addr - cfg.addr >= cfg.region_size {
            // Not ours to say.
            return true;
        }
        self.plugged(addr)
    }
}

/// The attributes a device shows in kdump mode, in the order [`Dump::show`] numbers them.
const NAMES: &[&CStr] = &[
    c"requested_size",
    c"plugged_size",
    c"activity",
    c"reason",
    c"device_block_size",
    c"region_start",
    c"region_size",
    c"stats",
    c"device_plugged_size",
];

impl AttributeSource for Dump {
    fn show(&self, index: usize, f: &mut RawFormatter) -> fmt::Result {
        let cfg = &self.device.probed.config;
        match index {
            0 => writeln!(f, "{}", self.device.read_sizes().map_or(0, |s| s.0)),
            // This binding plugs nothing.
            1 => writeln!(f, "0"),
            2 => writeln!(f, "kdump"),
            3 => writeln!(f, "none"),
            4 => writeln!(f, "{}", cfg.block_size),
            5 => writeln!(f, "{:#x}", cfg.addr),
            6 => writeln!(f, "{}", cfg.region_size),
            7 => self.device.counters.write(f),
            8 => match self.device.read_plugged() {
                Ok(size) => writeln!(f, "{size}"),
                Err(_) => writeln!(f, "unknown"),
            },
            _ => Err(fmt::Error),
        }
    }
}

/// Shows the armed faults of `inject` (see [`crate::fault`]).
fn show_inject(d: &Arc<Dump>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    d.device.faults.write(f)
}

/// Arms a fault: `TARGET FAULT [COUNT]`, or `clear`.
fn store_inject(d: &Arc<Dump>, r: &mut UserSliceReader) -> Result {
    d.device.faults.store(r)
}

/// The kdump binding's debugfs directory, `virtio_mem_rust-<device>/`: `inject`, the faults
/// tests arm for the `STATE` requests the dump's reads cause. Files go before the directory.
struct KdumpDebugfs {
    _inject: Pin<KBox<debugfs::File<Arc<Dump>>>>,
    _dir: debugfs::Dir,
}

impl KdumpDebugfs {
    fn create(dev: &virtio::Device<Core<'_>>, dump: &Arc<Dump>) -> Result<Self> {
        let name = CString::try_from_fmt(fmt!("virtio_mem_rust-{}", dev.as_ref().name()))?;
        let dir = debugfs::Dir::new(&name);
        let inject = KBox::pin_init(
            dir.read_write_callback_file(c"inject", dump.clone(), &show_inject, &store_inject),
            GFP_KERNEL,
        )?;
        Ok(Self {
            _inject: inject,
            _dir: dir,
        })
    }
}

/// A device bound in kdump mode.
///
/// Drop order (the fields' order): the attributes and debugfs files, then the vmcore callback
/// (unregistering waits for calls in progress; [`KdumpDevice::stop`] did it already at unbind),
/// then the driver's reference to the device's state.
pub(crate) struct KdumpDevice {
    _attrs: Option<Devres<DeviceAttributes<Dump>>>,
    _debugfs: Option<KdumpDebugfs>,
    vmcore: Pin<KBox<VmcoreCallback<Dump>>>,
    _dump: Arc<Dump>,
}

impl KdumpDevice {
    /// Binds the device in kdump mode.
    pub(crate) fn new(dev: &virtio::Device<Core<'_>>, probed: Probed) -> Result<Self> {
        let plugged_at_probe = probed.config.plugged_size;
        let device = DeviceClient::connect(dev, probed)?;
        // The geometry's block size is not zero: no division can panic.
        let blocks = device.probed.config.region_size / device.geometry.block_size;
        let blocks = usize::try_from(blocks).unwrap_or(0);
        // One byte per device block of the region, however big (8 MiB for 16 TiB of 2 MiB
        // blocks): kvmalloc, as kmalloc of more than 4 MiB warns.
        let states = KVVec::from_elem(UNKNOWN, blocks, GFP_KERNEL).unwrap_or_else(|_| {
            dev_warn!(
                dev,
                "no room to keep the state of {} device blocks\n",
                blocks
            );
            KVVec::new()
        });
        let dump = Arc::pin_init(
            try_pin_init!(Dump {
                device,
                plugged_at_probe,
                states <- new_mutex!(states),
            }),
            GFP_KERNEL,
        )?;
        // `/proc/vmcore` may ask at once: requests need the device ready.
        dev.ready();
        dev_info!(
            dev,
            "memory hot(un)plug disabled in kdump kernel; {:#x} bytes plugged are dumped\n",
            plugged_at_probe
        );
        let vmcore = KBox::pin_init(VmcoreCallback::new(dump.clone()), GFP_KERNEL)?;
        let attrs = DeviceAttributes::new(dev.as_ref(), ATTR_GROUP, NAMES, dump.clone())
            .inspect_err(|e| dev_warn!(dev, "no sysfs attributes: {:?}\n", e))
            .ok();
        let debugfs = KdumpDebugfs::create(dev, &dump)
            .inspect_err(|e| dev_warn!(dev, "no debugfs files: {:?}\n", e))
            .ok();
        Ok(Self {
            _attrs: attrs,
            _debugfs: debugfs,
            vmcore,
            _dump: dump,
        })
    }

    /// At unbind, before the device is reset and its virtqueue deleted: `/proc/vmcore` stops
    /// asking (waiting for a question in progress), as the C driver unregisters first.
    pub(crate) fn stop(&self) {
        self.vmcore.as_ref().unregister();
    }
}
