// SPDX-License-Identifier: GPL-2.0

//! Rust driver for virtio-mem paravirtualized memory hotplug devices.
//!
//! Each virtio-mem device owns one region of guest physical memory and plugs or unplugs device
//! blocks of it on the host's request. The driver is split by concern:
//!
//! - [`config`]: the device's configuration space, read and validated at probe.
//! - [`protocol`]: the requests on the virtqueue and the device's answers.
//! - [`plug`]: which part of the region to plug next.
//! - [`sbm`]: sub-block mode, the state of every memory block and its sub-blocks.
//! - [`bbm`]: big-block mode, the state of every big block.
//! - [`worker`]: the run loop that follows the requested size, with retries, resynchronization
//!   and the take-over of memory an earlier binding left added.
//! - [`status`] and [`attrs`]: what operators see (sysfs attributes, uevents, debugfs).
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

mod attrs;
mod bbm;
mod config;
mod plug;
mod protocol;
mod sbm;
mod status;
mod worker;

use config::DeviceConfig;
use plug::Geometry;
use protocol::{REQ_SIZE, RESP_SIZE};
use worker::{Info, Start, Worker};

kernel::virtio_device_table!(ID_TABLE, [virtio::DeviceId::new(bindings::VIRTIO_ID_MEM)]);

kernel::module_virtio_driver! {
    type: VirtioMemDriver,
    name: "virtio_mem_rust",
    authors: ["virtio-mem-rust developers"],
    description: "Virtio-mem paravirtualized memory hotplug driver (Rust)",
    license: "GPL",
    params: {
        force_bbm: bool {
            default: false,
            description: "Force Big Block Mode. Default is 0 (auto-selection)",
        },
        bbm_block_size: u64 {
            default: 0,
            description: "Big Block size in bytes. Default is 0 (auto-detection).",
        },
        unplug_online: bool {
            default: true,
            description: "Try to unplug online memory",
        },
        unplug_margin_mb: u64 {
            default: 0,
            description: "Free memory (MiB) unplugging leaves at least. Default is 0 (four times the page allocator's reserves, at least 128).",
        },
    },
}

/// How the device's memory is managed, decided at probe (see the C driver's SBM and BBM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
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

/// The mode's inputs: the device, the kernel's block sizes and the module parameters.
#[derive(Clone, Copy, Debug)]
struct ModeInputs {
    device_block_size: u64,
    pageblock_size: u64,
    memory_block_size: u64,
    force_bbm: bool,
    bbm_block_size: u64,
}

impl Mode {
    /// Picks the mode as the C driver does: sub-blocks when at least two fit in a memory block
    /// (unless `force_bbm`); big blocks of at least a memory block and a device block otherwise,
    /// or of `bbm_block_size` if that is a bigger power of two. Returns why `bbm_block_size`
    /// was ignored, if it was.
    fn choose(i: ModeInputs) -> (Self, Option<&'static str>) {
        let sb_size = i.device_block_size.max(i.pageblock_size);
        if sb_size < i.memory_block_size && !i.force_bbm {
            return (Mode::SubBlock { sb_size }, None);
        }
        let bb_size = i.device_block_size.max(i.memory_block_size);
        match i.bbm_block_size {
            0 => (Mode::BigBlock { bb_size }, None),
            b if !b.is_power_of_two() => (
                Mode::BigBlock { bb_size },
                Some("bbm_block_size is not a power of 2"),
            ),
            b if b < bb_size => (
                Mode::BigBlock { bb_size },
                Some("bbm_block_size is too small"),
            ),
            b => (Mode::BigBlock { bb_size: b }, None),
        }
    }
}

/// A bound virtio-mem device.
struct VirtioMem {
    /// The sysfs attributes (removed before the worker stops).
    _attrs: Option<kernel::sysfs::DeviceAttributes<Worker>>,
    /// The debugfs directory.
    _debugfs: Option<attrs::Debugfs>,
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

impl Drop for VirtioMem {
    fn drop(&mut self) {
        // Normally done at unbind already; this covers a probe that failed after creating the
        // worker, whose memory notifier holds a reference to it.
        self.worker.stop();
    }
}

struct VirtioMemDriver;

// The features the driver asks about are ones it offers (asking about others fails).
const _: () = {
    let offered = <VirtioMemDriver as virtio::Driver>::FEATURES;
    assert!(virtio::offers(offered, bindings::VIRTIO_MEM_F_ACPI_PXM));
    assert!(virtio::offers(offered, bindings::VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE));
};

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
        let (mode, ignored) = Mode::choose(ModeInputs {
            device_block_size: config.block_size,
            pageblock_size: memory_hotplug::pageblock_size(),
            memory_block_size: mbs,
            force_bbm: module_parameters::force_bbm.value(),
            bbm_block_size: module_parameters::bbm_block_size.value(),
        });
        if let Some(why) = ignored {
            dev_warn!(dev, "{}\n", why);
        }

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
            if matches!(dev.has_feature(bindings::VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE), Ok(true)) {
                "yes"
            } else {
                "no"
            }
        );

        // Reserve the whole region: this fails while any of it is in use, e.g. memory that an
        // earlier driver added and could not take back when it was unbound. If that driver was
        // this one (even from before a module reload), it parked the region: take it over.
        let name = CString::try_from_fmt(fmt!("{}", dev.as_ref().name()))?;
        let ram_name = c_str!("System RAM (virtio_mem)");
        let unit = mode.unit(mbs);
        // The region tracks which pages the device backs in sub-blocks, or in pageblocks in
        // big-block mode (where only a block's memmap stays backed while it is removed).
        let granule = match mode {
            Mode::SubBlock { sb_size } => sb_size,
            Mode::BigBlock { .. } => memory_hotplug::pageblock_size(),
        };
        let (region, group, start) = match SystemRamRegion::request(
            config.addr,
            config.region_size,
            granule,
            name,
            ram_name,
        ) {
            Ok(region) => {
                let unit_pages = usize::try_from(unit / PAGE_SIZE as u64)?;
                let group = MemoryGroup::register_dynamic(nid, unit_pages)?;
                let start = Start::Fresh {
                    plugged_size: config.plugged_size,
                };
                (region, group, start)
            }
            Err(e) => {
                let Some((region, group)) =
                    SystemRamRegion::take_over(dev.as_ref(), config.addr, config.region_size)
                else {
                    dev_err!(
                        dev,
                        "refusing device: its region [{:#x}-{:#x}] is in use already \
                         (memory left added by another driver?)\n",
                        config.addr,
                        config.addr + config.region_size - 1
                    );
                    return Err(e);
                };
                if region.granule() != granule {
                    dev_err!(
                        dev,
                        "refusing device: the memory an earlier binding left added is tracked \
                         in units of {:#x}, not {:#x} (bound in another mode?); load the driver \
                         with the parameters it had\n",
                        region.granule(),
                        granule
                    );
                    region.park(dev.as_ref(), group);
                    return Err(EBUSY);
                }
                dev_info!(
                    dev,
                    "taking over memory that an earlier binding left added ({:#x} bytes)\n",
                    region.added()
                );
                (region, group, Start::TakeOver)
            }
        };
        let memmap_on_memory = memory_hotplug::memmap_on_memory();
        dev_info!(
            dev,
            "memmap on memory: {}\n",
            if memmap_on_memory { "yes" } else { "no" }
        );
        let geometry = Geometry::new(
            config.addr,
            config.region_size,
            unit,
            config.block_size,
            *pluggable.start(),
        )
        .ok_or(EINVAL)?;

        let vq = dev.find_vq(c_str!("guest-request"), REQ_SIZE, RESP_SIZE)?;
        if config.plugged_size > 0 && start != Start::TakeOver {
            dev_info!(dev, "unplugging all memory is required\n");
        }
        let info = Info {
            mode,
            nid,
            region_size: config.region_size,
            device_block_size: config.block_size,
            memory_block_size: mbs,
            memmap_on_memory,
        };
        let worker = Worker::new(dev, vq, geometry, info, start, group, region)?;
        worker.watch_memory()?;
        let attrs = attrs::create(dev, &worker)
            .inspect_err(|e| dev_warn!(dev, "no sysfs attributes: {:?}\n", e))
            .ok();
        let debugfs = attrs::Debugfs::create(dev, &worker).ok();
        // Requests need the device ready; then plug what is requested already.
        dev.ready();
        worker.kick();
        Ok(VirtioMem {
            _attrs: attrs,
            _debugfs: debugfs,
            worker,
            config,
            nid,
            mode,
        })
    }

    fn unbind<'bound>(dev: &'bound virtio::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        // The attributes stay until the data is dropped: they show the unbind's progress.
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
    if matches!(dev.has_feature(bindings::VIRTIO_MEM_F_ACPI_PXM), Ok(true)) {
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

#[kunit_tests(virtio_mem_rust_mode)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn inputs(device_block_size: u64) -> ModeInputs {
        ModeInputs {
            device_block_size,
            pageblock_size: 4 * MIB,
            memory_block_size: 128 * MIB,
            force_bbm: false,
            bbm_block_size: 0,
        }
    }

    #[test]
    fn sub_blocks_when_two_fit_in_a_memory_block() {
        assert_eq!(
            Mode::choose(inputs(2 * MIB)).0,
            Mode::SubBlock { sb_size: 4 * MIB }
        );
        assert_eq!(
            Mode::choose(inputs(64 * MIB)).0,
            Mode::SubBlock { sb_size: 64 * MIB }
        );
        assert_eq!(
            Mode::choose(inputs(128 * MIB)).0,
            Mode::BigBlock { bb_size: 128 * MIB }
        );
        assert_eq!(Mode::choose(inputs(GIB)).0, Mode::BigBlock { bb_size: GIB });
    }

    #[test]
    fn module_parameters() {
        let forced = ModeInputs {
            force_bbm: true,
            ..inputs(2 * MIB)
        };
        assert_eq!(
            Mode::choose(forced),
            (Mode::BigBlock { bb_size: 128 * MIB }, None)
        );
        let big = ModeInputs {
            bbm_block_size: GIB,
            ..forced
        };
        assert_eq!(Mode::choose(big), (Mode::BigBlock { bb_size: GIB }, None));
        let odd = ModeInputs {
            bbm_block_size: 3 * GIB,
            ..forced
        };
        assert_eq!(
            Mode::choose(odd),
            (
                Mode::BigBlock { bb_size: 128 * MIB },
                Some("bbm_block_size is not a power of 2")
            )
        );
        let small = ModeInputs {
            bbm_block_size: 64 * MIB,
            ..forced
        };
        assert_eq!(
            Mode::choose(small),
            (
                Mode::BigBlock { bb_size: 128 * MIB },
                Some("bbm_block_size is too small")
            )
        );
    }
}
