// SPDX-License-Identifier: GPL-2.0

//! Rust driver for virtio-mem paravirtualized memory hotplug devices.
//!
//! Each virtio-mem device owns one region of guest physical memory and plugs or unplugs device
//! blocks of it on the host's request. The driver is split by concern:
//!
//! - [`config`]: the device's configuration space, read and validated at probe.
//! - [`protocol`]: the requests on the virtqueue and the device's answers.
//! - [`device`]: the request client: what probe found out, config reads, requests with their
//!   counters and fault injection, `STATE` queries that resynchronize.
//! - [`fault`]: the faults tests arm per request kind (debugfs `inject`): definite refusals,
//!   and answers that are undefined, short, lost or late.
//! - [`mode`]: sub-block or big-block mode, picked at probe; [`manager`]: the trait both
//!   implement, and the narrow context ([`manager::Ctx`]) through which they see the run loop.
//! - [`sbm`]: sub-block mode: block states and bitmaps, plugging and unplugging sub-blocks.
//! - [`bbm`]: big-block mode: big block states, plugging and unplugging big blocks.
//! - [`plug`]: the region's geometry and how much one request and one add carry.
//! - [`hotplug`]: the region and memory group, adding memory, offline accounting, memmap room.
//! - [`run`]: the device runtime: work items and one step that only sequences; [`state`]: the
//!   run loop's state, which the modes get with every call.
//! - [`error`]: what ends a step short of the request; [`backoff`]: when to try again.
//! - [`events`]: the memory notifier.
//! - [`handover`]: reserving or taking over the region at probe; giving back and parking at
//!   unbind.
//! - [`power`]: suspend, resume and hibernation: what the driver allows, and the resync after
//!   resume.
//! - [`kdump`]: kdump mode, in a crash dump capture kernel: no hotplug, and `/proc/vmcore`
//!   reads only plugged memory.
//! - [`status`], [`publish`] and [`attrs`]: what operators see (activity, reasons and
//!   counters; the published state, poll wake-ups and uevents; sysfs and debugfs files).
//!
//! The upstream C driver, `drivers/virtio/virtio_mem.c`, is the reference this driver matches.

use kernel::{
    bindings,
    crash_dump,
    device::Core,
    memory_hotplug,
    page::PAGE_SIZE,
    power::PmNotifier,
    prelude::*,
    sync::Arc,
    virtio, //
};

mod attrs;
mod backoff;
mod bbm;
mod config;
mod device;
mod error;
mod events;
mod fault;
mod handover;
mod hotplug;
#[cfg(CONFIG_PROC_VMCORE)]
mod kdump;
mod manager;
mod mode;
mod plug;
mod power;
mod protocol;
mod publish;
mod run;
mod sbm;
mod state;
mod status;

use bbm::BigBlockMode;
use config::DeviceConfig;
use core::num::NonZeroU64;
use device::{
    DeviceClient,
    Probed, //
};
use manager::Manager;
use mode::{
    Mode,
    ModeInputs, //
};
use plug::Geometry;
use run::Runtime;
use sbm::SubBlockMode;

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
        fail_probe_after_claim: bool {
            default: false,
            description: "For tests: fail probe after claiming the region (it is parked again)",
        },
        unplug_margin_mb: u64 {
            default: 0,
            description: "Free memory (MiB) unplugging leaves at least. Default is 0 (four times the page allocator's reserves, at least 128).",
        },
    },
}

/// A bound virtio-mem device: the driver follows its requested size, or, in a crash dump
/// capture kernel, only keeps `/proc/vmcore` away from unplugged memory.
enum VirtioMem {
    Hotplug(Hotplugged),
    /// Stopped at unbind, which unregisters the vmcore callback.
    #[cfg(CONFIG_PROC_VMCORE)]
    Kdump {
        dump: kdump::KdumpDevice,
    },
}

impl VirtioMem {
    /// The device's hotplug state; `None` in a capture kernel, which does not follow the
    /// request. (A `match`, not `if let`: without `CONFIG_PROC_VMCORE` there is one variant.)
    fn hotplugged(&self) -> Option<&Hotplugged> {
        match self {
            VirtioMem::Hotplug(this) => Some(this),
            #[cfg(CONFIG_PROC_VMCORE)]
            VirtioMem::Kdump { .. } => None,
        }
    }
}

/// A device whose memory the driver plugs and unplugs.
///
/// Drop order (the fields' order): the PM notifier goes first (no refusal in the name of a
/// device that is gone); the sysfs attributes next, so that no `show` runs on a runtime that
/// stopped; then the debugfs files; then the driver's reference to the runtime. The runtime
/// itself lives on while a work item or the memory notifier holds it: unbind (or `Drop`, after
/// a probe that failed late) stops it first, which cancels the work items and drops the
/// notifier.
struct Hotplugged {
    /// Refuses hibernation while the device is bound.
    _pm: Option<Pin<KBox<PmNotifier<Runtime>>>>,
    /// The sysfs attributes (the unbind's progress shows in them until the data is dropped).
    _attrs: Option<kernel::devres::Devres<kernel::sysfs::DeviceAttributes<Runtime>>>,
    /// The debugfs directory.
    _debugfs: Option<attrs::Debugfs>,
    /// The device runtime, which owns the virtqueue, the region and the memory group.
    runtime: Arc<Runtime>,
}

impl Drop for Hotplugged {
    fn drop(&mut self) {
        // Normally done at unbind already; this covers a probe that failed after creating the
        // runtime, whose memory notifier holds a reference to it.
        self.runtime.stop();
    }
}

struct VirtioMemDriver;

// The features the driver asks about are ones it offers (asking about others fails).
const _: () = {
    let offered = <VirtioMemDriver as virtio::Driver>::FEATURES;
    #[cfg(CONFIG_ACPI_NUMA)]
    assert!(virtio::offers(offered, bindings::VIRTIO_MEM_F_ACPI_PXM));
    assert!(virtio::offers(
        offered,
        bindings::VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE
    ));
    assert!(virtio::offers(
        offered,
        bindings::VIRTIO_MEM_F_PERSISTENT_SUSPEND
    ));
};

impl virtio::Driver for VirtioMemDriver {
    type Data<'bound> = VirtioMem;
    const ID_TABLE: virtio::IdTable = &ID_TABLE;
    const FEATURES: &'static [u32] = &[
        // Only a kernel that can translate an ACPI proximity domain into a node asks for one,
        // as the C driver: without it (arm64 booted from a device tree) the device's node id
        // means nothing here, and the node comes from the region's address.
        #[cfg(CONFIG_ACPI_NUMA)]
        bindings::VIRTIO_MEM_F_ACPI_PXM,
        bindings::VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE,
        bindings::VIRTIO_MEM_F_PERSISTENT_SUSPEND,
    ];

    fn probe<'bound>(
        dev: &'bound virtio::Device<Core<'_>>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        let probed = probe_device(dev)?;
        if crash_dump::is_kdump_kernel() {
            return probe_kdump(dev, probed);
        }
        let config = &probed.config;
        let unit = probed.mode.unit(probed.memory_block_size);
        // The region tracks which pages the device backs in sub-blocks, or in pageblocks in
        // big-block mode (where only a block's memmap stays backed while it is removed).
        let granule = match probed.mode {
            Mode::SubBlock { sb_size } => sb_size,
            Mode::BigBlock { .. } => memory_hotplug::pageblock_size(),
        };
        let plugged_size = config.plugged_size;
        // Everything that can fail comes before the region is claimed, or parks it again: a
        // region taken over from an earlier binding and then dropped would stay reserved with
        // its memory added, and no driver could bind the device any more.
        let device = DeviceClient::connect(dev, probed)?;
        let mode = new_mode(&device.probed, &device.geometry)?;
        let (hotplug, found) = handover::claim(dev, &device.probed, granule, unit)?;
        if plugged_size > 0 && found != run::Found::Parked {
            dev_info!(dev, "unplugging all memory is required\n");
        }
        let runtime = match Runtime::new(device, mode, found) {
            Ok(runtime) if !module_parameters::fail_probe_after_claim.value() => runtime,
            Ok(_) => {
                dev_warn!(
                    dev,
                    "failing probe after claiming the region (fail_probe_after_claim)\n"
                );
                hotplug.park(dev.as_ref());
                return Err(ENOMEM);
            }
            Err(e) => {
                hotplug.park(dev.as_ref());
                return Err(e);
            }
        };
        runtime.state.lock().hotplug = Some(hotplug);
        if let Err(e) = runtime.watch_memory() {
            runtime.abandon(dev);
            return Err(e);
        }
        let attrs = attrs::create(dev, &runtime)
            .inspect_err(|e| dev_warn!(dev, "no sysfs attributes: {:?}\n", e))
            .ok();
        let debugfs = attrs::Debugfs::create(dev, &runtime).ok();
        // Before anything is frozen, and before other notifiers prepare for a hibernation we
        // refuse.
        let pm = KBox::pin_init(PmNotifier::new(runtime.clone(), i32::MAX), GFP_KERNEL)
            .inspect_err(|e| dev_warn!(dev, "cannot refuse hibernation: {:?}\n", e))
            .ok();
        // Requests need the device ready; then plug what is requested already.
        dev.ready();
        runtime.kick();
        Ok(VirtioMem::Hotplug(Hotplugged {
            _pm: pm,
            _attrs: attrs,
            _debugfs: debugfs,
            runtime,
        }))
    }

    fn unbind<'bound>(dev: &'bound virtio::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        let Some(this) = this.hotplugged() else {
            // kdump mode: `/proc/vmcore` stops asking before the device is reset.
            #[cfg(CONFIG_PROC_VMCORE)]
            if let VirtioMem::Kdump { dump } = this.get_ref() {
                dump.stop();
            }
            return;
        };
        // The attributes stay until the data is dropped: they show the unbind's progress.
        this.runtime.stop();
        let probed = &this.runtime.device.probed;
        dev_info!(
            dev,
            "unbinding: region [{:#x}-{:#x}], device block size {:#x}, node {}, {:?}, plugged {:#x}\n",
            probed.config.addr,
            probed.config.addr + probed.config.region_size - 1,
            probed.config.block_size,
            probed.nid,
            probed.mode,
            this.runtime.plugged()
        );
    }

    fn config_changed<'bound>(
        _dev: &'bound virtio::Device<kernel::device::Bound>,
        this: Pin<&Self::Data<'bound>>,
    ) {
        // In kdump mode the request is not followed.
        if let Some(this) = this.hotplugged() {
            this.runtime.kick();
        }
    }

    fn freeze<'bound>(
        _dev: &'bound virtio::Device<Core<'_>>,
        this: Pin<&Self::Data<'bound>>,
    ) -> Result {
        match &*this {
            VirtioMem::Hotplug(this) => this.runtime.freeze(kernel::power::suspend_target()),
            // A capture kernel does not sleep; if it does, nothing of ours is at stake.
            #[cfg(CONFIG_PROC_VMCORE)]
            VirtioMem::Kdump { .. } => Ok(()),
        }
    }

    fn restore<'bound>(
        _dev: &'bound virtio::Device<Core<'_>>,
        this: Pin<&Self::Data<'bound>>,
    ) -> Result {
        if let Some(this) = this.hotplugged() {
            this.runtime.restore();
        }
        Ok(())
    }
}

/// Binds the device in a crash dump capture kernel (see [`kdump`]).
#[cfg(CONFIG_PROC_VMCORE)]
fn probe_kdump(dev: &virtio::Device<Core<'_>>, probed: Probed) -> Result<VirtioMem> {
    Ok(VirtioMem::Kdump {
        dump: kdump::KdumpDevice::new(dev, probed)?,
    })
}

/// Without `/proc/vmcore` there is nothing to do in a capture kernel, and plugging or
/// unplugging would lose the crashed kernel's memory: the device stays unbound (as with the C
/// driver).
#[cfg(not(CONFIG_PROC_VMCORE))]
fn probe_kdump(dev: &virtio::Device<Core<'_>>, _probed: Probed) -> Result<VirtioMem> {
    dev_warn!(dev, "disabled in kdump kernel without vmcore\n");
    Err(EBUSY)
}

/// Reads and checks the device's config, picks the mode and says what it found, as the C
/// driver does.
fn probe_device(dev: &virtio::Device<Core<'_>>) -> Result<Probed> {
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
    // A big block the region cannot hold (bbm_block_size up to 1 << 63 is a power of two)
    // would leave nothing to plug, and the sizes derived from it would overflow.
    if let Mode::BigBlock { bb_size } = mode {
        if bb_size > config.region_size {
            dev_err!(
                dev,
                "refusing device: big blocks of {:#x} bytes (bbm_block_size) do not fit in its \
                 region of {:#x} bytes\n",
                bb_size,
                config.region_size
            );
            return Err(EINVAL);
        }
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
    let inaccessible = dev.has_feature(bindings::VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE);
    dev_info!(
        dev,
        "unplugged memory is inaccessible: {}\n",
        if matches!(inaccessible, Ok(true)) {
            "yes"
        } else {
            "no"
        }
    );
    let persistent_suspend = matches!(
        dev.has_feature(bindings::VIRTIO_MEM_F_PERSISTENT_SUSPEND),
        Ok(true)
    );
    dev_info!(
        dev,
        "plugged memory survives suspend: {}\n",
        if persistent_suspend { "yes" } else { "no" }
    );
    let memmap_on_memory = memory_hotplug::memmap_on_memory();
    dev_info!(
        dev,
        "memmap on memory: {}\n",
        if memmap_on_memory { "yes" } else { "no" }
    );
    Ok(Probed {
        config,
        mode,
        nid,
        memory_block_size: mbs,
        memmap_on_memory,
        persistent_suspend,
    })
}

/// The records of the mode the device runs in.
fn new_mode(probed: &Probed, g: &Geometry) -> Result<Arc<dyn Manager>> {
    let mode: Arc<dyn Manager> = match probed.mode {
        Mode::SubBlock { sb_size } => {
            let sb_size = NonZeroU64::new(sb_size).ok_or(EINVAL)?;
            let init = SubBlockMode::new(g.first, g.end, g.unit, sb_size, probed.memmap_on_memory)?;
            Arc::pin_init(init, GFP_KERNEL)?
        }
        Mode::BigBlock { .. } => {
            let init = BigBlockMode::new(g.first, g.end, g.unit.get(), probed.memory_block_size)?;
            Arc::pin_init(init, GFP_KERNEL)?
        }
    };
    Ok(mode)
}

/// The NUMA node for the device's memory: the ACPI proximity domain it names if it has
/// `VIRTIO_MEM_F_ACPI_PXM`, otherwise (or if the firmware does not know that domain) the node of
/// its start address, as the C driver decides.
fn node_of(dev: &virtio::Device<kernel::device::Bound>, config: &DeviceConfig) -> i32 {
    node_of_pxm(dev, config).unwrap_or_else(|| memory_hotplug::phys_to_node(config.addr))
}

/// The node of the device's ACPI proximity domain, if it has one that the firmware knows.
#[cfg(CONFIG_ACPI_NUMA)]
fn node_of_pxm(dev: &virtio::Device<kernel::device::Bound>, config: &DeviceConfig) -> Option<i32> {
    if !matches!(dev.has_feature(bindings::VIRTIO_MEM_F_ACPI_PXM), Ok(true)) {
        return None;
    }
    let nid = memory_hotplug::pxm_to_node(config.node_id.into());
    if nid.is_none() {
        dev_warn!(
            dev,
            "unknown ACPI proximity domain {}, using the node of the start address\n",
            config.node_id
        );
    }
    nid
}

/// Without ACPI NUMA the driver does not negotiate `VIRTIO_MEM_F_ACPI_PXM` (see `FEATURES`): the
/// device's node id means nothing to this kernel.
#[cfg(not(CONFIG_ACPI_NUMA))]
fn node_of_pxm(
    _dev: &virtio::Device<kernel::device::Bound>,
    _config: &DeviceConfig,
) -> Option<i32> {
    None
}
