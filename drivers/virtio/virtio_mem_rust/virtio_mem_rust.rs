// SPDX-License-Identifier: GPL-2.0

//! Rust driver for virtio-mem paravirtualized memory hotplug devices.
//!
//! Each virtio-mem device owns one region of guest physical memory and plugs or unplugs device
//! blocks of it on the host's request. The driver is split by concern:
//!
//! - [`config`]: the device's configuration space, read and validated at probe.
//! - [`protocol`]: the requests on the virtqueue and the device's answers.
//! - [`plug`]: which part of the region to plug next.
//! - [`worker`]: the run loop that follows the requested size, with retries.
//!
//! The upstream C driver, `drivers/virtio/virtio_mem.c`, is the reference this driver matches.

use kernel::{
    bindings, c_str,
    device::Core,
    memory_hotplug::{self, MemoryGroup, SystemRamRegion},
    page::PAGE_SIZE,
    prelude::*,
    str::CString,
    sync::Arc,
    virtio,
};

mod config;
mod plug;
mod protocol;
mod worker;

use config::DeviceConfig;
use plug::Geometry;
use protocol::{REQ_SIZE, RESP_SIZE};
use worker::Worker;

kernel::virtio_device_table!(ID_TABLE, [virtio::DeviceId::new(bindings::VIRTIO_ID_MEM)]);

kernel::module_virtio_driver! {
    type: VirtioMemDriver,
    name: "virtio_mem_rust",
    authors: ["virtio-mem-rust developers"],
    description: "Virtio-mem paravirtualized memory hotplug driver (Rust)",
    license: "GPL",
}

/// How the device's memory is managed, decided at probe (see the C driver's SBM and BBM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Sub-block mode: Linux memory blocks are added whole and plugged in sub-blocks.
    SubBlock {
        /// Size of a sub-block: the device block size, but at least a pageblock.
        sb_size: u64,
    },
    /// Big-block mode: device blocks span one or more Linux memory blocks.
    BigBlock {
        /// Size of a big block.
        bb_size: u64,
    },
}

impl Mode {
    /// Picks the mode as the C driver does: sub-blocks when at least two fit in a memory block.
    fn choose(device_block_size: u64, pageblock_size: u64, memory_block_size: u64) -> Self {
        let sb_size = device_block_size.max(pageblock_size);
        if sb_size < memory_block_size {
            Mode::SubBlock { sb_size }
        } else {
            Mode::BigBlock {
                bb_size: device_block_size.max(memory_block_size),
            }
        }
    }
}

/// A bound virtio-mem device.
struct VirtioMem {
    /// The run loop, which owns the virtqueue, the region and the memory group.
    worker: Arc<Worker>,
    /// The configuration read at probe.
    config: DeviceConfig,
    /// The NUMA node memory of this device is added to.
    nid: i32,
    /// Sub-block or big-block mode.
    mode: Mode,
}

impl Mode {
    /// The unit in which the device's memory is onlined and offlined: a memory block in
    /// sub-block mode, a big block otherwise.
    fn unit(&self, memory_block_size: u64) -> u64 {
        match *self {
            Mode::SubBlock { .. } => memory_block_size,
            Mode::BigBlock { bb_size } => bb_size,
        }
    }
}

struct VirtioMemDriver;

impl virtio::Driver for VirtioMemDriver {
    type Data<'bound> = VirtioMem;
    const ID_TABLE: virtio::IdTable = &ID_TABLE;
    const FEATURES: &'static [u32] = &[
        bindings::VIRTIO_MEM_F_ACPI_PXM,
        bindings::VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE,
    ];

    fn probe<'bound>(
        dev: &'bound virtio::Device<Core<'_>>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        let config = DeviceConfig::read(dev)?;
        let pluggable = memory_hotplug::pluggable_range(true);
        if let Err(e) = config.validate(PAGE_SIZE as u64, &pluggable) {
            dev_err!(dev, "refusing device with a bad config: {}\n", e);
            return Err(EINVAL);
        }

        let nid = node_of(dev, &config);
        let mbs = memory_hotplug::memory_block_size();
        let mode = Mode::choose(config.block_size, memory_hotplug::pageblock_size(), mbs);

        dev_info!(dev, "start address: {:#x}\n", config.addr);
        dev_info!(dev, "region size: {:#x}\n", config.region_size);
        dev_info!(
            dev,
            "usable region size: {:#x}\n",
            config.usable_region_size
        );
        dev_info!(dev, "device block size: {:#x}\n", config.block_size);
        dev_info!(dev, "nid: {}\n", nid);
        dev_info!(dev, "memory block size: {:#x}\n", mbs);
        match mode {
            Mode::SubBlock { sb_size } => dev_info!(dev, "subblock size: {:#x}\n", sb_size),
            Mode::BigBlock { bb_size } => dev_info!(dev, "big block size: {:#x}\n", bb_size),
        }
        dev_info!(dev, "plugged size: {:#x}\n", config.plugged_size);
        dev_info!(dev, "requested size: {:#x}\n", config.requested_size);
        dev_info!(
            dev,
            "unplugged memory is inaccessible: {}\n",
            if dev.has_feature(bindings::VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE) {
                "yes"
            } else {
                "no"
            }
        );

        // Reserve the whole region: this fails while any of it is in use, e.g. memory that an
        // earlier driver plugged and added and could not take back when it was unbound.
        let name = CString::try_from_fmt(fmt!("{}", dev.as_ref().name()))?;
        let ram_name = c_str!("System RAM (virtio_mem)");
        let region = SystemRamRegion::request(config.addr, config.region_size, name, ram_name)
            .inspect_err(|_| {
                dev_err!(
                    dev,
                    "refusing device: its region [{:#x}-{:#x}] is in use already (memory left \
                     added by a driver bound earlier?)\n",
                    config.addr,
                    config.addr + config.region_size - 1
                )
            })?;
        let unit = mode.unit(mbs);
        let group = MemoryGroup::register_dynamic(nid, usize::try_from(unit / PAGE_SIZE as u64)?)?;
        let geometry = Geometry::new(
            config.addr,
            config.region_size,
            unit,
            config.block_size,
            *pluggable.start(),
        )
        .ok_or(EINVAL)?;

        let vq = dev.find_vq(c_str!("guest-request"), REQ_SIZE, RESP_SIZE)?;
        let worker = Worker::new(dev, vq, geometry, group, region)?;
        // Requests need the device ready; then plug what is requested already.
        dev.ready();
        worker.kick();
        Ok(VirtioMem {
            worker,
            config,
            nid,
            mode,
        })
    }

    fn unbind<'bound>(dev: &'bound virtio::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        this.worker.stop();
        dev_info!(
            dev,
            "unbinding: region [{:#x}-{:#x}], device block size {:#x}, node {}, {:?}, plugged {:#x}\n",
            this.config.addr,
            this.config.addr + this.config.region_size - 1,
            this.config.block_size,
            this.nid,
            this.mode,
            this.worker.plugged()
        );
    }

    fn config_changed<'bound>(
        _dev: &'bound virtio::Device<kernel::device::Bound>,
        this: Pin<&Self::Data<'bound>>,
    ) {
        this.worker.kick();
    }
}

/// The NUMA node for the device's memory: the ACPI proximity domain it names if it has
/// `VIRTIO_MEM_F_ACPI_PXM`, otherwise (or if the firmware does not know that domain) the node of
/// its start address, as the C driver decides.
fn node_of(dev: &virtio::Device<kernel::device::Bound>, config: &DeviceConfig) -> i32 {
    if dev.has_feature(bindings::VIRTIO_MEM_F_ACPI_PXM) {
        if let Some(nid) = memory_hotplug::pxm_to_node(config.node_id.into()) {
            return nid;
        }
        dev_warn!(
            dev,
            "unknown ACPI proximity domain {}, using the node of the start address\n",
            config.node_id
        );
    }
    memory_hotplug::phys_to_node(config.addr)
}
