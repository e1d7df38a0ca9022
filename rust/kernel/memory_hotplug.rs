// SPDX-License-Identifier: GPL-2.0

//! Memory hotplug.
//!
//! C headers: [`include/linux/memory_hotplug.h`](srctree/include/linux/memory_hotplug.h),
//! [`include/linux/memory.h`](srctree/include/linux/memory.h).
//!
//! Queries about where and in which units memory can be hot(un)plugged and the NUMA node of
//! hotplugged memory; [`SystemRamRegion`], the exclusive reservation of a physical range that a
//! driver manages as System RAM; [`MemoryGroup`], the memory group its memory blocks belong to;
//! [`MemoryNotifier`], which tells a handler when memory goes online or offline;
//! [`OnlinePageCallback`], which lets a handler keep pages of memory being onlined offline.

mod online_page;

pub use online_page::{
    is_fake_offline, OnlinePageCallback, OnlinePageHandler, OnliningPages, SplitPages,
};

use crate::{
    bindings, container_of, error::to_result, prelude::*, str::CString, sync::Arc, types::Opaque,
};
use core::{mem::ManuallyDrop, ops::RangeInclusive, ptr::NonNull};

/// The size of a Linux memory block, the unit in which memory is added, onlined, offlined and
/// removed (128 MiB on most x86-64 machines).
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
pub fn phys_to_node(addr: u64) -> i32 {
    // SAFETY: `memory_add_physaddr_to_nid` only looks up `addr` in the NUMA memory map.
    unsafe { bindings::memory_add_physaddr_to_nid(addr) }
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

/// Checks that `[start, start + size)` is non-empty, page-aligned and inside `[lo, hi)`, and
/// returns its first pfn and number of pages.
fn page_range(start: u64, size: u64, lo: u64, hi: u64) -> Result<(usize, usize)> {
    let end = start.checked_add(size).ok_or(EINVAL)?;
    let mask = crate::page::PAGE_SIZE as u64 - 1;
    if size == 0 || start < lo || end > hi || (start | size) & mask != 0 {
        return Err(EINVAL);
    }
    let shift = crate::page::PAGE_SHIFT;
    Ok(((start >> shift) as usize, (size >> shift) as usize))
}

/// Calls `f` with the pfn and `struct page` of each of the `nr` pages from `pfn` on, in order,
/// until it returns `false`; returns whether it never did. One `pfn_to_page` per memory section
/// (the memmap of a section is contiguous), not per page: these loops run over whole memory
/// blocks.
///
/// # Safety
///
/// The memmap of the pages must be initialized: they are online, or being onlined or offlined.
unsafe fn walk_pages(
    pfn: usize,
    nr: usize,
    mut f: impl FnMut(usize, *mut bindings::page) -> bool,
) -> bool {
    let per_section = bindings::PAGES_PER_SECTION as usize;
    let end = pfn + nr;
    let mut at = pfn;
    while at < end {
        let section_end = ((at / per_section + 1) * per_section).min(end);
        // SAFETY: The memmap is initialized (safety requirement).
        let first = unsafe { bindings::pfn_to_page(at as c_ulong) };
        for i in 0..section_end - at {
            // SAFETY: The `struct page`s of one section are contiguous.
            if !f(at + i, unsafe { first.add(i) }) {
                return false;
            }
        }
        at = section_end;
    }
    true
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

/// Free memory in the zones the kernel allocates its own data from (all but `ZONE_MOVABLE`),
/// in bytes: where the memmap of memory added without `memmap_on_memory` comes from.
pub fn free_kernel_memory() -> u64 {
    // SAFETY: Only reads per-zone counters of online nodes.
    let pages = unsafe { bindings::nr_free_kernel_pages() };
    pages as u64 * crate::page::PAGE_SIZE as u64
}

/// Whether the memory block at `addr` is online (its memmap is initialized and its pages belong
/// to a zone): `Some(true)` in `ZONE_MOVABLE`, `Some(false)` in a kernel zone, `None` if it is
/// offline or not present.
pub fn online_zone(addr: u64) -> Option<bool> {
    let pfn = (addr >> crate::page::PAGE_SHIFT) as c_ulong;
    // SAFETY: `pfn_to_online_page` only looks up the section; a non-NULL result is a valid,
    // initialized page of online memory.
    let page = unsafe { bindings::pfn_to_online_page(pfn) };
    if page.is_null() {
        return None;
    }
    // SAFETY: `page` is a valid page of online memory (see above).
    Some(unsafe { bindings::is_zone_movable_page(page) })
}

/// The exclusive reservation of a physical address range whose memory a driver hotplugs as
/// System RAM (a parent resource in `/proc/iomem`, named after the owner).
///
/// Only one reservation can cover a range, and the request fails while any of the range is in
/// use, e.g. System RAM that an earlier driver added and left behind: holding a
/// [`SystemRamRegion`] means that no memory of the range is in use by anybody else. User space
/// cannot map the range through `/dev/mem`.
///
/// Memory is added to and removed from the system through the region, which keeps count. On
/// drop the reservation is released if nothing is added any more; otherwise the added memory
/// stays in use by the kernel, so the reservation and the resource names stay too (they live in
/// kernel memory, not in the module that may be unloaded), and a later request of the range
/// fails.
///
/// # Invariants
///
/// `res` points to a resource returned by `__request_region` that was not released yet.
pub struct SystemRamRegion {
    res: NonNull<bindings::resource>,
    start: u64,
    size: u64,
    /// Bytes currently added to the system through this region.
    added: u64,
    /// The reservation's name; the resource points to it until released.
    name: ManuallyDrop<CString>,
    /// The name of the "System RAM" resources of added memory.
    ram_name: ManuallyDrop<CString>,
}

// SAFETY: The resource is only touched through the resource tree's own locking.
unsafe impl Send for SystemRamRegion {}
// SAFETY: `&SystemRamRegion` only reads immutable fields.
unsafe impl Sync for SystemRamRegion {}

impl SystemRamRegion {
    /// Reserves `[start, start + size)`, naming the reservation `name`; memory added through it
    /// will be named `ram_name`, which must read `System RAM (<driver>)`. Fails with `EBUSY` if
    /// any of the range is reserved or in use already.
    pub fn request(start: u64, size: u64, name: CString, ram_name: &CStr) -> Result<Self> {
        if size == 0 || start.checked_add(size - 1).is_none() {
            return Err(EINVAL);
        }
        let ram_name = CString::try_from_fmt(fmt!("{ram_name}"))?;
        let flags = (bindings::IORESOURCE_SYSTEM_RAM | bindings::IORESOURCE_EXCLUSIVE) as c_int;
        // SAFETY: `iomem_resource` is the root of the physical address space; `name` stays
        // valid as long as the resource (it is stored next to it and dropped after release).
        let res = unsafe {
            bindings::__request_region(
                core::ptr::addr_of_mut!(bindings::iomem_resource),
                start,
                size,
                name.as_char_ptr(),
                flags,
            )
        };
        let res = NonNull::new(res).ok_or(EBUSY)?;
        // The memory is not actually busy: memory hotplug adds its "System RAM" resources as
        // children of this one.
        // SAFETY: `res` is the valid resource we just requested; nobody else modifies it.
        unsafe { (*res.as_ptr()).flags &= !(bindings::IORESOURCE_BUSY as c_ulong) };
        Ok(Self {
            res,
            start,
            size,
            added: 0,
            name: ManuallyDrop::new(name),
            ram_name: ManuallyDrop::new(ram_name),
        })
    }

    /// The first byte of the region.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The size of the region in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes currently added to the system through this region.
    pub fn added(&self) -> u64 {
        self.added
    }

    /// Checks that `[start, start + size)` is non-empty, inside the region and aligned to the
    /// memory block size, as adding and removing memory requires.
    fn check_range(&self, start: u64, size: u64) -> Result {
        // The memory block size is a power of two.
        let mask = memory_block_size().wrapping_sub(1);
        let end = start.checked_add(size).ok_or(EINVAL)?;
        if size == 0
            || start < self.start
            || end > self.start + self.size
            || (start | size) & mask != 0
        {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// Adds `[start, start + size)`, a memory-block aligned part of the region, to the system as
    /// driver-managed System RAM of `group`. Depending on the onlining policy
    /// (`memhp_default_state`), the kernel onlines the new memory blocks at once; otherwise user
    /// space does.
    ///
    /// The memory must be accessible (plugged, for a device that plugs memory) before it is
    /// added: from then on the kernel may use it.
    ///
    /// With `memmap_on_memory` (and if [`memmap_on_memory()`] says the kernel can), the memmap
    /// of each memory block is placed at the block's start instead of being allocated from
    /// kernel memory.
    pub fn add_memory(
        &mut self,
        group: &MemoryGroup,
        start: u64,
        size: u64,
        memmap_on_memory: bool,
    ) -> Result {
        self.check_range(start, size)?;
        let mut flags = bindings::MHP_MERGE_RESOURCE | bindings::MHP_NID_IS_MGID;
        if memmap_on_memory {
            flags |= bindings::MHP_MEMMAP_ON_MEMORY;
        }
        // SAFETY: The range is inside our exclusive reservation and aligned; `ram_name` lives
        // as long as memory added through the region (see `Drop`); with `MHP_NID_IS_MGID` the
        // group id stands for the node.
        crate::error::to_result(unsafe {
            bindings::add_memory_driver_managed(
                group.id(),
                start,
                size,
                self.ram_name.as_char_ptr(),
                flags,
            )
        })?;
        self.added += size;
        Ok(())
    }

    /// Removes `[start, start + size)`, added by [`Self::add_memory`], from the system. All of
    /// its memory blocks must be offline; fails with `EBUSY` otherwise.
    pub fn remove_memory(&mut self, start: u64, size: u64) -> Result {
        self.check_range(start, size)?;
        if size > self.added {
            return Err(EINVAL);
        }
        // SAFETY: The range is inside our reservation; `remove_memory` checks that it is
        // offline and refuses otherwise.
        crate::error::to_result(unsafe { bindings::remove_memory(start, size) })?;
        self.added -= size;
        Ok(())
    }

    /// Offlines `[start, start + size)`, added by [`Self::add_memory`], and removes it from the
    /// system, as one operation that user space cannot get in between. Offlining migrates the
    /// pages in use away (only the memory notifier may let `PageOffline()` pages stay), so it
    /// fails, changing nothing, with `EBUSY` if they cannot be moved, e.g. in a kernel zone.
    pub fn offline_and_remove_memory(&mut self, start: u64, size: u64) -> Result {
        self.check_range(start, size)?;
        if size > self.added {
            return Err(EINVAL);
        }
        // SAFETY: The range is inside our reservation and was added through it; offlining
        // moves or refuses whatever is in use.
        crate::error::to_result(unsafe { bindings::offline_and_remove_memory(start, size) })?;
        self.added -= size;
        Ok(())
    }
}

impl SystemRamRegion {
    /// Whether all of `[start, start + size)` is added to the system (System RAM in use).
    pub fn is_added(&self, start: u64, size: u64) -> bool {
        if self.check_range(start, size).is_err() {
            return false;
        }
        // Our reservation is System RAM but not busy; added memory is busy System RAM.
        let flags = (bindings::IORESOURCE_SYSTEM_RAM | bindings::IORESOURCE_BUSY) as c_ulong;
        // SAFETY: `region_intersects` only reads the resource tree, under its lock.
        let ret = unsafe {
            bindings::region_intersects(start, size as usize, flags, bindings::IORES_DESC_NONE as c_ulong)
        };
        ret == bindings::REGION_INTERSECTS as c_int
    }

    /// Hands the region, with the memory still added through it, and the memory group of that
    /// memory over to the next driver of the same device, which gets both back from
    /// [`Self::take_over`] (even after the module that parked them was unloaded: they live in
    /// the kernel). A region with nothing added is simply released.
    pub fn park(self, group: MemoryGroup) {
        if self.added == 0 {
            return;
        }
        init_parked();
        let mut parked = PARKED.lock();
        if parked.push(Parked { region: self, group }, GFP_KERNEL).is_err() {
            // Dropping them keeps the reservation and the group for good (see `Drop`).
            pr_warn!("cannot park a memory region for the next driver; it stays reserved\n");
        }
    }

    /// Takes over the region `[start, start + size)` and its memory group, parked by an earlier
    /// driver with memory still added. `None` if there is none.
    pub fn take_over(start: u64, size: u64) -> Option<(Self, MemoryGroup)> {
        init_parked();
        let mut parked = PARKED.lock();
        let i = parked
            .iter()
            .position(|p| p.region.start == start && p.region.size == size)?;
        let p = parked.remove(i).ok()?;
        Some((p.region, p.group))
    }
}

/// A region left with memory added, and its memory group, waiting for the next driver.
struct Parked {
    region: SystemRamRegion,
    group: MemoryGroup,
}

crate::global_lock! {
    // SAFETY: `init_parked` initializes it before any use.
    unsafe(uninit) static PARKED: Mutex<KVec<Parked>> = KVec::new();
}

/// 0: `PARKED` is not initialized, 1: being initialized, 2: ready.
static PARKED_READY: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

fn init_parked() {
    // SAFETY: `init_once` runs this once, before anybody uses `PARKED`.
    init_once(&PARKED_READY, || unsafe { PARKED.init() });
}

/// Runs `init` once, for the first caller; later callers wait until it finished. `state` is
/// a flag for this `init` only, starting at 0.
pub(crate) fn init_once(state: &core::sync::atomic::AtomicU8, init: impl FnOnce()) {
    use core::sync::atomic::Ordering;
    match state.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            init();
            state.store(2, Ordering::Release);
        }
        Err(_) => {
            while state.load(Ordering::Acquire) != 2 {
                core::hint::spin_loop();
            }
        }
    }
}

impl Drop for SystemRamRegion {
    fn drop(&mut self) {
        if self.added > 0 {
            pr_warn!(
                "{:#x} bytes of [{:#x}-{:#x}] stay added to the system; keeping the region \
                 reserved\n",
                self.added,
                self.start,
                self.start + self.size - 1
            );
            // The resources (ours and those of the added memory) point to the names: keep
            // both, and the reservation, for good.
            return;
        }
        // SAFETY: By the type invariant `res` was requested and not released; `__request_region`
        // allocated it with `kmalloc`, and it is no longer in the resource tree after
        // `release_resource`. No memory was left added, so nothing points to the names any
        // more, and they are dropped only here.
        unsafe {
            bindings::release_resource(self.res.as_ptr());
            bindings::kfree(self.res.as_ptr().cast());
            ManuallyDrop::drop(&mut self.name);
            ManuallyDrop::drop(&mut self.ram_name);
        }
    }
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

    /// The first pfn and number of pages of `[start, start + size)`, a part of the event's
    /// range.
    fn pfns(&self, start: u64, size: u64) -> Result<(usize, usize)> {
        page_range(start, size, self.range.start, self.range.start + self.range.size)
    }

    /// While memory goes offline ([`MemoryEvent::GoingOffline`]): drops the reference of the
    /// pages of `[start, start + size)`, which the handler's driver keeps offline
    /// (`PageOffline()` with one reference), so that offlining skips them as unused. Undo it
    /// with [`Self::reacquire_offline_pages`] if offlining is cancelled. Fails with `EINVAL`,
    /// changing nothing, for another event, a range outside the event's, or any page that is not
    /// `PageOffline()` with exactly one reference.
    pub fn release_offline_pages(&self, start: u64, size: u64) -> Result {
        if self.event != MemoryEvent::GoingOffline {
            return Err(EINVAL);
        }
        let (pfn, nr) = self.pfns(start, size)?;
        // One pass: drop each reference after checking the page; undo on the first misfit.
        let mut done = 0;
        // SAFETY: The memmap of the range is initialized (type invariant). A `PageOffline()`
        // page with one reference is the caller's (it keeps it offline); offlining treats such
        // pages without references as never used. `page_ref_dec_and_test` is true when the
        // count drops to zero; otherwise the page had more references and is not the caller's.
        let ok = unsafe {
            walk_pages(pfn, nr, |_, page| {
                if !bindings::PageOffline(page) {
                    return false;
                }
                if !bindings::page_ref_dec_and_test(page) {
                    bindings::page_ref_inc(page);
                    return false;
                }
                done += 1;
                true
            })
        };
        if !ok {
            // SAFETY: We dropped the reference of these `done` pages just before.
            unsafe {
                walk_pages(pfn, done, |_, page| {
                    bindings::page_ref_inc(page);
                    true
                })
            };
            return Err(EINVAL);
        }
        Ok(())
    }

    /// While offlining is cancelled ([`MemoryEvent::CancelOffline`]): takes back the reference
    /// that [`Self::release_offline_pages`] dropped. Fails with `EINVAL`, changing nothing, for
    /// another event, a range outside the event's, or any page that is not `PageOffline()`
    /// without references.
    pub fn reacquire_offline_pages(&self, start: u64, size: u64) -> Result {
        if self.event != MemoryEvent::CancelOffline {
            return Err(EINVAL);
        }
        let (pfn, nr) = self.pfns(start, size)?;
        // SAFETY: The memmap of the range is initialized (type invariant).
        let ok = unsafe {
            walk_pages(pfn, nr, |_, page| {
                bindings::PageOffline(page) && bindings::page_ref_count(page) == 0
            })
        };
        if !ok {
            return Err(EINVAL);
        }
        // SAFETY: The pages are offline without references: the caller released them when
        // offlining began, and takes their references back.
        unsafe {
            walk_pages(pfn, nr, |_, page| {
                bindings::page_ref_inc(page);
                true
            })
        };
        Ok(())
    }
}

/// Receives memory events; see [`MemoryNotifier`].
pub trait MemoryNotifierHandler: Send + Sync {
    /// Called for every memory event in the system, with the memory hotplug lock held: it must
    /// not add or remove memory, nor wait for anything that does. An error returned for
    /// `GoingOnline` or `GoingOffline` vetoes the operation; for other events it is ignored.
    fn notify(this: &Arc<Self>, notification: &MemoryNotification) -> Result;
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
        match H::notify(&this.handler, &notification) {
            Ok(()) => bindings::NOTIFY_OK as c_int,
            // `notifier_from_errno()`.
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
