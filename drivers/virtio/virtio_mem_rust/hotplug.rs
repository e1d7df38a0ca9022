// SPDX-License-Identifier: GPL-2.0

//! The memory the driver adds: the device's region and memory group, adding and removing
//! memory in units, the accounting of added memory that is still offline, and the room for
//! more memmap.
//!
//! When user space onlines memory (no auto-onlining), added memory stays offline until it does.
//! So that a burst of plugs cannot fill the guest with offline memory (whose memmap still costs
//! memory), at most a limit (two units, at least 1G) are added and not yet online at a time; the
//! memory notifier (see [`crate::events`]) counts onlined and offlined memory of the region
//! and resumes plugging when half of that is online again.

use crate::{
    device::DeviceClient,
    status::Event, //
};
use core::num::NonZeroU64;
use kernel::{
    memory_hotplug::{
        self,
        MemoryGroup,
        SystemRamRegion, //
    },
    prelude::*,
    sync::atomic::{
        Atomic,
        Full,
        Relaxed, //
    }, //
};

/// Offline memory the driver allows at least (more if two units are bigger), as the C driver.
const OFFLINE_LIMIT_MIN: u64 = 1 << 30;

/// Free kernel memory that adding memory (whose memmap comes from it) leaves at least.
const MEMMAP_RESERVE_MIN: u64 = 32 << 20;

/// The device's region and memory group while bound (the run loop's, under its state lock).
pub(crate) struct Hotplug {
    pub(crate) region: SystemRamRegion,
    pub(crate) group: MemoryGroup,
}

impl Hotplug {
    /// Parks the region for the next binding of `dev` if memory stays added (else releases it),
    /// with the memory group.
    pub(crate) fn park(self, dev: &kernel::device::Device) {
        self.region.park(dev, self.group);
    }

    /// Adds `[addr, addr + size)` (of which the first `accessible` bytes are plugged) to the
    /// system, counting it offline until onlined.
    pub(crate) fn add(
        &mut self,
        device: &DeviceClient,
        offline: &OfflineMemory,
        addr: u64,
        size: u64,
        accessible: u64,
    ) -> Result {
        // Counted as offline before it is added: auto-onlining reports it online during the add.
        offline.added(size);
        let memmap_on_memory = device.probed.memmap_on_memory;
        match self
            .region
            .add_memory(&self.group, addr, size, memmap_on_memory, accessible)
        {
            Ok(()) => {
                device.count(Event::BlockAdded);
                Ok(())
            }
            Err(e) => {
                device.count(Event::AddFailed);
                offline.removed(size);
                Err(e)
            }
        }
    }

    /// Bytes added to the system.
    pub(crate) fn added(&self) -> u64 {
        self.region.added()
    }
}

/// Bytes of the region that are added but offline, and whether plugging waits for some of
/// them to be onlined. Updated from the memory notifier without the run loop's lock (which is
/// held while memory is added, and so while it is auto-onlined).
pub(crate) struct OfflineMemory {
    /// A signed count: an event may be seen before the add that caused it is counted.
    bytes: Atomic<i64>,
    /// Plugging waits for memory to be onlined.
    waiting: Atomic<bool>,
    /// The most memory that may be added and still offline.
    limit: u64,
}

impl OfflineMemory {
    /// Accounting for a region added in units of `unit` bytes.
    pub(crate) fn new(unit: u64) -> Self {
        Self {
            bytes: Atomic::new(0),
            waiting: Atomic::new(false),
            limit: unit.saturating_mul(2).max(OFFLINE_LIMIT_MIN),
        }
    }

    /// Bytes added and offline now.
    pub(crate) fn bytes(&self) -> u64 {
        u64::try_from(self.bytes.load(Relaxed)).unwrap_or(0)
    }

    /// `size` bytes were added (offline until onlined) or, also, taken over offline.
    pub(crate) fn added(&self, size: u64) {
        self.bytes.fetch_add(size as i64, Full);
    }

    /// `size` bytes of offline memory were removed.
    pub(crate) fn removed(&self, size: u64) {
        self.bytes.fetch_sub(size as i64, Full);
    }

    /// `size` bytes were offlined.
    pub(crate) fn offlined(&self, size: u64) {
        self.bytes.fetch_add(size as i64, Full);
    }

    /// `size` bytes were onlined; says whether a plug waiting for onlining should go on now
    /// (half of the limit is online again), and if so stops waiting.
    pub(crate) fn onlined(&self, size: u64) -> bool {
        let offline = self.bytes.fetch_sub(size as i64, Full) - size as i64;
        offline <= (self.limit / 2) as i64 && self.waiting.xchg(false, Full)
    }

    /// Room for more added-but-offline memory, in bytes (a multiple of `unit`). Announces the
    /// wait for onlining before looking (a full barrier, as the notifier's count and its look
    /// at the flag), so that memory onlined in between still wakes the run loop; the caller
    /// calls [`Self::go_on`] if it does not wait.
    pub(crate) fn room(&self, unit: NonZeroU64) -> u64 {
        self.waiting.xchg(true, Full);
        let room = self.limit.saturating_sub(self.bytes());
        room - room % unit
    }

    /// The run loop goes on without waiting for onlining.
    pub(crate) fn go_on(&self) {
        self.waiting.store(false, Relaxed);
    }
}

/// How many more units of `unit` bytes may be added (and onlined) now, at most `want`: as
/// many as leave the page allocator's reserves of free kernel memory after what they take from
/// it (their memmap, unless memmap-on-memory; their KASAN shadow on a KASAN kernel, 1/8 of
/// them, which would otherwise veto onlining halfway: `memory_hotplug::kernel_memory_cost`);
/// all of them when that is nothing. 0 means stall (the caller says why).
pub(crate) fn memmap_room(memmap_on_memory: bool, unit: u64, want: u64) -> u64 {
    let per_unit = memory_hotplug::kernel_memory_cost(unit, memmap_on_memory);
    if per_unit == 0 {
        return want;
    }
    let reserve = memory_hotplug::reserved_memory().max(MEMMAP_RESERVE_MIN);
    let free = memory_hotplug::free_kernel_memory().saturating_sub(reserve);
    want.min(free / per_unit)
}

/// Bytes of online plugged memory that the page allocator has: `online` bytes in `blocks`
/// memory blocks of `memory_block_size`, less their memmap if it lives in them.
pub(crate) fn allocator_bytes(
    memmap_on_memory: bool,
    memory_block_size: u64,
    online: u64,
    blocks: u64,
) -> u64 {
    if !memmap_on_memory {
        return online;
    }
    online.saturating_sub(blocks * memory_hotplug::memmap_size(memory_block_size))
}

/// The free memory unplug leaves at least, in bytes: the `unplug_margin_mb` module parameter,
/// or by default four times the page allocator's reserves (its high watermarks), and at least
/// 128M.
pub(crate) fn unplug_margin() -> u64 {
    match crate::module_parameters::unplug_margin_mb.value() {
        0 => (4 * memory_hotplug::reserved_memory()).max(128 << 20),
        mb => mb << 20,
    }
}

/// Whether unplugging `size` bytes of online memory leaves at least the margin available.
pub(crate) fn above_margin(size: u64) -> bool {
    memory_hotplug::available_memory() >= size + unplug_margin()
}
