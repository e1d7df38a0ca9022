// SPDX-License-Identifier: GPL-2.0

//! Memory hotplug.
//!
//! C headers: [`include/linux/memory_hotplug.h`](srctree/include/linux/memory_hotplug.h),
//! [`include/linux/memory.h`](srctree/include/linux/memory.h).
//!
//! Queries about where and in which units memory can be hot(un)plugged and the NUMA node of
//! hotplugged memory; [`MemoryGroup`], the memory group a driver's memory blocks belong to;
//! [`MemoryNotifier`], which tells a handler when memory goes online or offline; and
//! [`SystemRamRegion`], the exclusive reservation of a physical range that a driver hotplugs as
//! System RAM.
//!
//! A [`SystemRamRegion`] owns everything that makes hotplugging memory of which only parts are
//! backed (a virtio-mem device's partly plugged memory blocks) sound: it records which memory
//! blocks are added and, at a granule the driver picks, which of their pages are inaccessible
//! (not backed by the device). Nothing the region records as inaccessible reaches the page
//! allocator: the region keeps it offline when a block is onlined (through the kernel's
//! online-page callback, which it holds while it needs it), lets offlining skip it (the
//! `MEM_GOING_OFFLINE` contract), hands it to the kernel only when the driver says the device
//! backs it, and takes it from the kernel (migrating what is in use) before the driver tells the
//! device to stop backing it. Its own lock serializes all of this with onlining and offlining.
//!
//! The pages the kernel hands to the online-page callback are the region's business alone: no
//! type for them is exposed, so no driver can keep them past the callback or online them later:
//!
//! ```ignore,compile_fail,E0432
//! use kernel::memory_hotplug::OnliningPages;
//! ```

mod online_page;
mod pages;
mod region;

pub use region::{
    BlockState,
    DeviceMemory,
    PagesError,
    SystemRamRegion,
    Undo, //
};

use crate::{
    bindings,
    container_of,
    error::to_result,
    prelude::*,
    sync::Arc,
    types::Opaque, //
};
use core::ops::RangeInclusive;

/// The size of a Linux memory block, the unit in which memory is added, onlined, offlined and
/// removed (128 MiB on x86-64, and on arm64 with 4K pages).
pub fn memory_block_size() -> u64 {
    // SAFETY: `memory_block_size_bytes` has no preconditions and its value is fixed at boot.
    unsafe { bindings::memory_block_size_bytes() as u64 }
}

/// The physical address range (inclusive) in which memory can be hotplugged. With
/// `need_mapping`, the range is also limited to what the kernel can map directly, as memory
/// that is to be onlined requires.
pub fn pluggable_range(need_mapping: bool) -> RangeInclusive<u64> {
    // SAFETY: `mhp_get_pluggable_range` has no preconditions.
    let range = unsafe { bindings::mhp_get_pluggable_range(need_mapping) };
    range.start..=range.end
}

/// The NUMA node that memory hotplugged at physical address `addr` would belong to by default.
#[cfg(CONFIG_NUMA)]
pub fn phys_to_node(addr: u64) -> i32 {
    // SAFETY: `memory_add_physaddr_to_nid` only looks up `addr` in the NUMA memory map.
    unsafe { bindings::memory_add_physaddr_to_nid(addr) }
}

/// The NUMA node that memory hotplugged at physical address `addr` would belong to by default:
/// without `CONFIG_NUMA` there is only node 0 (`memory_add_physaddr_to_nid` is then an inline
/// function of `<linux/numa.h>` returning 0, which bindgen does not see).
#[cfg(not(CONFIG_NUMA))]
pub fn phys_to_node(_addr: u64) -> i32 {
    0
}

/// The NUMA node of ACPI proximity domain `pxm`, or `None` if the firmware did not describe it.
#[cfg(CONFIG_ACPI_NUMA)]
pub fn pxm_to_node(pxm: i32) -> Option<i32> {
    // SAFETY: `pxm_to_node` only looks up `pxm` in the firmware's table (and rejects bad values).
    let nid = unsafe { bindings::pxm_to_node(pxm) };
    (nid >= 0).then_some(nid)
}

/// The NUMA node of ACPI proximity domain `pxm`: always `None` without ACPI NUMA support.
#[cfg(not(CONFIG_ACPI_NUMA))]
pub fn pxm_to_node(_pxm: i32) -> Option<i32> {
    None
}

/// Memory available for new allocations without swapping, in bytes: free memory plus what
/// reclaim can free easily, minus the kernel's reserves (`MemAvailable` in `/proc/meminfo`).
pub fn available_memory() -> u64 {
    // SAFETY: `si_mem_available` only reads counters.
    let pages = unsafe { bindings::si_mem_available() };
    u64::try_from(pages).unwrap_or(0) * crate::page::PAGE_SIZE as u64
}

/// Memory the page allocator keeps in reserve, in bytes: the zones' high watermarks plus their
/// lowmem reserves (`totalreserve_pages`). Below about this much free memory the kernel
/// reclaims hard and, failing that, kills.
// Not inlined: `totalreserve_pages` is not exported to modules.
#[inline(never)]
pub fn reserved_memory() -> u64 {
    // SAFETY: A plain read of a counter that the page allocator updates when watermarks change.
    let pages = unsafe { core::ptr::addr_of!(bindings::totalreserve_pages).read_volatile() };
    pages as u64 * crate::page::PAGE_SIZE as u64
}

/// The size of a pageblock, the unit the page allocator groups pages by mobility in; the
/// smallest unit that can be reliably isolated for unplug.
pub fn pageblock_size() -> u64 {
    // SAFETY: `pageblock_nr_pages` has no preconditions and is fixed at boot.
    let pages = unsafe { bindings::pageblock_nr_pages() };
    pages as u64 * crate::page::PAGE_SIZE as u64
}

/// Whether memory added with `memmap_on_memory` can hold its own memmap
/// (`MHP_MEMMAP_ON_MEMORY`): the kernel supports it and `memory_hotplug.memmap_on_memory` is on.
/// Then the first [`memmap_size`] bytes of each memory block added that way hold the block's
/// `struct page`s: they are never handed to the page allocator and must stay accessible until
/// the block is removed.
pub fn memmap_on_memory() -> bool {
    // SAFETY: `mhp_supports_memmap_on_memory` only reads settings fixed at boot.
    unsafe { bindings::mhp_supports_memmap_on_memory() }
}

/// Bytes of memmap (`struct page`s) that `size` bytes of memory need.
pub fn memmap_size(size: u64) -> u64 {
    size / crate::page::PAGE_SIZE as u64 * core::mem::size_of::<bindings::page>() as u64
}

/// Bytes of KASAN shadow that `size` bytes of memory need while online: with generic or
/// software tag-based KASAN, `mm/kasan/shadow.c`'s memory notifier vmallocs one shadow byte per
/// `1 << KASAN_SHADOW_SCALE_SHIFT` bytes (an eighth or a sixteenth) at `MEM_GOING_ONLINE`, from
/// the kernel's zones, and frees it at `MEM_OFFLINE`; a failed allocation vetoes onlining.
/// 0 without such KASAN (hardware tag-based KASAN keeps its tags in memory the hardware
/// provides).
pub fn kasan_shadow_size(size: u64) -> u64 {
    #[cfg(any(CONFIG_KASAN_GENERIC, CONFIG_KASAN_SW_TAGS))]
    return size >> bindings::KASAN_SHADOW_SCALE_SHIFT;
    #[cfg(not(any(CONFIG_KASAN_GENERIC, CONFIG_KASAN_SW_TAGS)))]
    {
        let _ = size;
        0
    }
}

/// Kernel memory (from the zones [`free_kernel_memory`] counts) that adding and onlining
/// `size` bytes of memory takes: its memmap, unless it lives in the memory itself
/// (`memmap_on_memory`, see [`memmap_on_memory`]), and its KASAN shadow
/// ([`kasan_shadow_size`]), which never does.
pub fn kernel_memory_cost(size: u64, memmap_on_memory: bool) -> u64 {
    let memmap = if memmap_on_memory {
        0
    } else {
        memmap_size(size)
    };
    memmap + kasan_shadow_size(size)
}

/// Free memory in the zones the kernel allocates its own data from (all but `ZONE_MOVABLE`),
/// in bytes: where the memmap of memory added without `memmap_on_memory` comes from.
pub fn free_kernel_memory() -> u64 {
    // SAFETY: Only reads per-zone counters of online nodes.
    let pages = unsafe { bindings::nr_free_kernel_pages() };
    pages as u64 * crate::page::PAGE_SIZE as u64
}

/// A dynamic memory group: the memory blocks a driver adds for one device, on one NUMA node,
/// onlined and offlined in units of `unit_pages` pages. Unregistered on drop.
///
/// # Invariants
///
/// `id` is a memory group id returned by `memory_group_register_dynamic` and not unregistered.
pub struct MemoryGroup {
    id: c_int,
}

impl MemoryGroup {
    /// Registers a dynamic memory group for node `nid` whose memory is managed in units of
    /// `unit_pages` pages.
    pub fn register_dynamic(nid: i32, unit_pages: usize) -> Result<Self> {
        // SAFETY: `memory_group_register_dynamic` checks its arguments.
        let id = unsafe { bindings::memory_group_register_dynamic(nid, unit_pages as c_ulong) };
        if id < 0 {
            return Err(Error::from_errno(id));
        }
        Ok(Self { id })
    }

    /// The group's id.
    pub fn id(&self) -> i32 {
        self.id
    }
}

impl Drop for MemoryGroup {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `id` is registered. It fails (and the group stays) only
        // while memory blocks are still in the group; that memory keeps using the group.
        let ret = unsafe { bindings::memory_group_unregister(self.id) };
        if ret != 0 {
            pr_warn!(
                "memory group {} still has memory blocks, left registered\n",
                self.id
            );
        }
    }
}

/// What happens to a range of memory, as the memory notifier reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryEvent {
    /// The memory is about to be onlined; a handler can veto.
    GoingOnline,
    /// The memory was onlined.
    Online,
    /// Onlining was cancelled after `GoingOnline`.
    CancelOnline,
    /// The memory is about to be offlined; a handler can veto.
    GoingOffline,
    /// The memory was offlined.
    Offline,
    /// Offlining was cancelled after `GoingOffline`.
    CancelOffline,
}

impl MemoryEvent {
    /// Whether a notifier can veto the event (only the announcements of a change can).
    pub fn can_veto(self) -> bool {
        matches!(self, Self::GoingOnline | Self::GoingOffline)
    }

    fn from_action(action: c_ulong) -> Option<Self> {
        let action = bindings::memory_block_state::try_from(action).ok()?;
        Some(match action {
            bindings::memory_block_state_MEM_GOING_ONLINE => Self::GoingOnline,
            bindings::memory_block_state_MEM_ONLINE => Self::Online,
            bindings::memory_block_state_MEM_CANCEL_ONLINE => Self::CancelOnline,
            bindings::memory_block_state_MEM_GOING_OFFLINE => Self::GoingOffline,
            bindings::memory_block_state_MEM_OFFLINE => Self::Offline,
            bindings::memory_block_state_MEM_CANCEL_OFFLINE => Self::CancelOffline,
            _ => return None,
        })
    }
}

/// A physical memory range that a memory event is about (whole memory blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRange {
    /// First byte.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

/// One memory event, as a [`MemoryNotifierHandler`] receives it.
///
/// # Invariants
///
/// The memory notifier chain is running for `event` on the memory blocks of `range`, so their
/// memmap is initialized.
pub struct MemoryNotification {
    event: MemoryEvent,
    range: MemoryRange,
}

impl MemoryNotification {
    /// What happens to the memory.
    pub fn event(&self) -> MemoryEvent {
        self.event
    }

    /// The memory it happens to.
    pub fn range(&self) -> MemoryRange {
        self.range
    }

    /// Whether the memory belongs (or, going online, will belong) to `ZONE_MOVABLE`.
    pub fn is_movable(&self) -> bool {
        let pfn = (self.range.start >> crate::page::PAGE_SHIFT) as c_ulong;
        // SAFETY: By the type invariant the memmap of the range is initialized; the zone is
        // set before memory goes online and kept until it went offline.
        unsafe { bindings::is_zone_movable_page(bindings::pfn_to_page(pfn)) }
    }
}

/// Receives memory events; see [`MemoryNotifier`].
///
/// Both methods are called with the memory hotplug lock held: they must not add, remove, online
/// or offline memory, nor wait for anything that does.
pub trait MemoryNotifierHandler: Send + Sync {
    /// Memory is about to go online or offline ([`MemoryEvent::GoingOnline`],
    /// [`MemoryEvent::GoingOffline`]). An error vetoes it: the kernel then reports the matching
    /// cancel event to every notifier, also to those that never saw this one.
    fn prepare(this: &Arc<Self>, notification: &MemoryNotification) -> Result {
        let _ = (this, notification);
        Ok(())
    }

    /// Memory went online or offline, or a change was cancelled ([`MemoryEvent::Online`],
    /// [`MemoryEvent::Offline`], [`MemoryEvent::CancelOnline`], [`MemoryEvent::CancelOffline`]).
    /// These cannot be vetoed: every notifier hears about them.
    fn complete(this: &Arc<Self>, notification: &MemoryNotification) {
        let _ = (this, notification);
    }
}

/// A registered memory notifier: `handler` hears about memory going online and offline until
/// the notifier is dropped (which waits for a running notification to finish).
#[pin_data(PinnedDrop)]
pub struct MemoryNotifier<H: MemoryNotifierHandler> {
    handler: Arc<H>,
    #[pin]
    nb: Opaque<bindings::notifier_block>,
}

// SAFETY: The notifier block is only touched by the notifier chain under its own lock; the
// handler is `Send + Sync`.
unsafe impl<H: MemoryNotifierHandler> Send for MemoryNotifier<H> {}
// SAFETY: See above.
unsafe impl<H: MemoryNotifierHandler> Sync for MemoryNotifier<H> {}

impl<H: MemoryNotifierHandler + 'static> MemoryNotifier<H> {
    /// Registers `handler` for memory events.
    pub fn new(handler: Arc<H>) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            handler,
            nb <- Opaque::try_ffi_init(|slot: *mut bindings::notifier_block| {
                // SAFETY: `slot` is valid for writes and pinned; the handler is initialized
                // already (fields are initialized in order), so a notification may come at once.
                unsafe {
                    slot.write(bindings::notifier_block {
                        notifier_call: Some(Self::callback),
                        ..Default::default()
                    });
                    to_result(bindings::register_memory_notifier(slot))
                }
            }),
        })
    }

    extern "C" fn callback(
        nb: *mut bindings::notifier_block,
        action: c_ulong,
        data: *mut c_void,
    ) -> c_int {
        let Some(event) = MemoryEvent::from_action(action) else {
            return bindings::NOTIFY_DONE as c_int;
        };
        // SAFETY: `nb` is the `nb` field of a registered, hence live, `MemoryNotifier<H>`
        // (`Opaque<T>` has the layout of `T`).
        let this =
            unsafe { &*container_of!(nb.cast::<Opaque<bindings::notifier_block>>(), Self, nb) };
        // SAFETY: The memory notifier chain passes a valid `struct memory_notify`.
        let mhp = unsafe { &*data.cast::<bindings::memory_notify>() };
        let shift = crate::page::PAGE_SHIFT;
        let range = MemoryRange {
            start: (mhp.start_pfn as u64) << shift,
            size: (mhp.nr_pages as u64) << shift,
        };
        // INVARIANT: The chain runs for `event` on `range`.
        let notification = MemoryNotification { event, range };
        if !event.can_veto() {
            H::complete(&this.handler, &notification);
            return bindings::NOTIFY_OK as c_int;
        }
        match H::prepare(&this.handler, &notification) {
            Ok(()) => bindings::NOTIFY_OK as c_int,
            // `notifier_from_errno()`: stops the chain; `memory_notify()`'s caller turns it back
            // into the error and cancels.
            Err(e) => {
                (bindings::NOTIFY_STOP_MASK as c_int)
                    | (bindings::NOTIFY_OK as c_int - e.to_errno())
            }
        }
    }
}

#[pinned_drop]
impl<H: MemoryNotifierHandler> PinnedDrop for MemoryNotifier<H> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `nb` was registered in `new`; unregistering waits for running notifications.
        unsafe { bindings::unregister_memory_notifier(self.nb.get()) };
    }
}
