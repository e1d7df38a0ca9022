// SPDX-License-Identifier: GPL-2.0

//! [`SystemRamRegion`]: a driver's exclusive physical range, the memory it adds there, and the
//! pages of that memory the kernel must not touch.

mod device_memory;
mod geometry;
mod inner;
mod parked;
mod record;

pub use self::device_memory::DeviceMemory;
pub(super) use self::inner::RegionInner;
pub use self::record::BlockState;

use self::{
    geometry::Geometry,
    parked::{
        parked,
        Parked, //
    },
    record::Record, //
};
use super::{
    memmap_size,
    online_page,
    pages,
    MemoryGroup,
    MemoryNotifier, //
};
use crate::{
    bindings,
    device,
    new_mutex,
    prelude::*,
    str::CString,
    sync::Arc, //
};
use core::{
    mem::ManuallyDrop,
    ptr::NonNull, //
};

/// Why [`SystemRamRegion::take_pages`] or [`SystemRamRegion::give_pages`] failed.
#[derive(Debug, PartialEq, Eq)]
pub enum PagesError<E> {
    /// The region refused, changing nothing:
    ///
    /// - `EINVAL`: the range is not granule-aligned, leaves the region, covers memmap pages of a
    ///   block added with `memmap_on_memory`, or part of it is in the state asked for already;
    /// - `ENOENT`: part of it is not added;
    /// - `EAGAIN`: a memory block of it is being onlined or offlined;
    /// - `EPERM`: the region needs the kernel's online-page callback, which another driver holds;
    /// - `EBUSY`: a page in use cannot be migrated away (taking only);
    /// - `ENOMEM`: there is no free memory to migrate to (taking only).
    Region(Error),
    /// The caller's step failed.
    Step(E),
}

/// What becomes of the pages [`SystemRamRegion::take_pages`] took when the caller's step fails.
#[derive(Debug, PartialEq, Eq)]
pub enum Undo<E> {
    /// The step did not happen (e.g. the device refused to stop backing the pages): the pages
    /// go back to the kernel as they were.
    GiveBack(E),
    /// The step may have happened (e.g. the device did not answer): the pages stay
    /// inaccessible.
    Keep(E),
}

/// The exclusive reservation of a physical address range whose memory a driver hotplugs as
/// System RAM, and the owner of that memory's inaccessible pages.
///
/// Only one reservation can cover a range, and the request fails while any of the range is in
/// use, e.g. System RAM that an earlier driver added and left behind: holding a
/// [`SystemRamRegion`] means that no memory of the range is in use by anybody else. User space
/// cannot map the range through `/dev/mem`.
///
/// Memory is added and removed through the region in whole memory blocks, which it records:
/// removing a block that is not added fails. Within added blocks it records, per granule (a
/// power of two between the pageblock and the memory block size, fixed at
/// [`Self::request`]), whether the pages are accessible, i.e. backed by the device. Pages it
/// records as inaccessible are never handed to the page allocator:
///
/// - when a block is onlined, the region (through the kernel's online-page callback, which it
///   holds while any added block has inaccessible pages) gives only accessible granules to the
///   page allocator; the chunks of pages the kernel passes to the callback never leave the
///   call, and no driver code sees them;
/// - it vetoes onlining a block with nothing accessible, or with inaccessible pages while
///   another driver holds the online-page callback, and, while [blocked](Self::block_hotplug),
///   onlining and offlining by others;
/// - when a block is offlined, it drops its references of the inaccessible pages
///   (`MEM_GOING_OFFLINE`), so that offlining skips them, and takes them back if offlining is
///   cancelled;
/// - [`Self::give_pages`] hands pages to the kernel and [`Self::take_pages`] takes them (by
///   migration), each atomically with the caller's step (the device request) and with respect
///   to onlining and offlining, which wait for the region's lock.
///
/// # Locking
///
/// The region's methods that change memory or pages may wait for memory being onlined or
/// offlined anywhere in the system (adding and removing memory take the memory hotplug lock;
/// holding or letting go of the online-page callback waits for onlining in progress). Their
/// caller must not hold a lock that a memory notifier or an online-page callback takes, or it
/// deadlocks with an onlining that waits for that lock. The closures given to
/// [`Self::give_pages`] and [`Self::take_pages`] run with the region's own lock held, which
/// onlining and offlining of the region's memory wait for: they should only talk to the device.
///
/// On drop the reservation is released if nothing is added any more; otherwise the added
/// memory stays in use by the kernel, so the reservation, the resource names and the tracking
/// of its inaccessible pages stay for good (they live in kernel memory, not in the module that
/// may be unloaded), and a later request of the range fails. [`Self::park`] hands such a region
/// to the next driver of the same device instead.
///
/// # Invariants
///
/// `res` points to a resource returned by `__request_region` that was not released yet, named
/// `name`. `covered` says whether `inner` is registered with the online-page registry, and it
/// is whenever the record has inaccessible granules in added blocks.
pub struct SystemRamRegion {
    inner: Arc<RegionInner>,
    /// Reports onlining and offlining of the region's memory to `inner`.
    notifier: ManuallyDrop<Pin<KBox<MemoryNotifier<RegionInner>>>>,
    res: NonNull<bindings::resource>,
    /// The reservation's name; the resource points to it until released.
    name: ManuallyDrop<CString>,
    /// The name of the "System RAM" resources of added memory.
    ram_name: ManuallyDrop<CString>,
    covered: bool,
}

// SAFETY: The resource is only touched through the resource tree's own locking; the record is
// behind its mutex.
unsafe impl Send for SystemRamRegion {}
// SAFETY: `&SystemRamRegion` only reads immutable fields and the record under its lock.
unsafe impl Sync for SystemRamRegion {}

impl SystemRamRegion {
    /// Reserves the memory a device provides, `range`, naming the reservation `name`; memory
    /// added through it will be named `ram_name`, which must read `System RAM (<driver>)`.
    /// `granule`, a power of two at least a pageblock ([`super::pageblock_size`]) and at most a
    /// memory block, is the unit in which the region tracks accessible pages. Fails with `EBUSY`
    /// if any of the range is reserved or in use already, and `EINVAL` for a bad range or
    /// granule.
    pub fn request(
        range: DeviceMemory,
        granule: u64,
        name: CString,
        ram_name: &CStr,
    ) -> Result<Self> {
        let (start, size) = (range.start(), range.size());
        if granule < super::pageblock_size() {
            return Err(EINVAL);
        }
        let geo = Geometry::new(start, size, super::memory_block_size(), granule)?;
        let ram_name = CString::try_from_fmt(fmt!("{ram_name}"))?;
        let inner = Arc::pin_init(
            try_pin_init!(RegionInner {
                geo,
                record <- new_mutex!(Record::new()),
            }),
            GFP_KERNEL,
        )?;
        let notifier = KBox::pin_init(MemoryNotifier::new(inner.clone()), GFP_KERNEL)?;
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
        // INVARIANT: `res` was just requested with `name`; nothing is added or registered.
        Ok(Self {
            inner,
            notifier: ManuallyDrop::new(notifier),
            res,
            name: ManuallyDrop::new(name),
            ram_name: ManuallyDrop::new(ram_name),
            covered: false,
        })
    }

    /// The first byte of the region.
    pub fn start(&self) -> u64 {
        self.inner.geo.start
    }

    /// The size of the region in bytes.
    pub fn size(&self) -> u64 {
        self.inner.geo.end - self.inner.geo.start
    }

    /// The unit in which the region tracks accessible pages.
    pub fn granule(&self) -> u64 {
        self.inner.geo.granule
    }

    /// Bytes currently added to the system through this region.
    pub fn added(&self) -> u64 {
        self.inner.record.lock().nr_added as u64 * self.inner.geo.mb_size
    }

    /// Whether all of `[start, start + size)` (whole memory blocks) is added.
    pub fn is_added(&self, start: u64, size: u64) -> bool {
        let Ok(blocks) = self.inner.geo.blocks(start, size) else {
            return false;
        };
        let rec = self.inner.record.lock();
        blocks.into_iter().all(|i| rec.state(i).is_some())
    }

    /// The state of the added memory block at `addr`, or `None` if it is not added.
    pub fn block_state(&self, addr: u64) -> Option<BlockState> {
        let i = self.inner.geo.block_of(addr)?;
        self.inner.record.lock().state(i)
    }

    /// Whether every page of `[start, start + size)` (granule-aligned) is added and accessible.
    pub fn is_accessible(&self, start: u64, size: u64) -> bool {
        match self.inner.geo.segments(start, size) {
            Ok(segs) => self.inner.record.lock().accessible(segs),
            Err(_) => false,
        }
    }

    /// Registers with the online-page callback unless registered: needed before anything of
    /// an added block becomes inaccessible. `EPERM` if another driver holds the callback.
    fn cover(&mut self) -> Result {
        if self.covered {
            return Ok(());
        }
        online_page::register(&self.inner)?;
        // INVARIANT: Registered; the record's flag lets onlining of partly accessible blocks
        // through from now on.
        self.covered = true;
        self.inner.record.lock().covered = true;
        Ok(())
    }

    /// Holds the kernel's online-page callback for the region now, as adding a partly
    /// accessible block and taking pages do when they need it: a driver calls it before it
    /// asks the device for memory that only such an add can use. It is let go again once
    /// nothing is inaccessible. Fails with `EPERM` if another driver holds the callback.
    pub fn hold_online_page_callback(&mut self) -> Result {
        self.cover()
    }

    /// Unregisters from the online-page callback once no added block has inaccessible pages.
    fn uncover_if_unneeded(&mut self) {
        if !self.covered {
            return;
        }
        {
            let mut rec = self.inner.record.lock();
            if rec.nr_off > 0 {
                return;
            }
            rec.covered = false;
        }
        // INVARIANT: Nothing is inaccessible, and only the owner (`&mut self`) makes anything
        // inaccessible, after `cover` again.
        online_page::unregister(&self.inner);
        self.covered = false;
    }

    /// Adds `[start, start + size)`, whole memory blocks of the region that are not added, to
    /// the system as driver-managed System RAM of `group`, of which the first `accessible`
    /// bytes (a multiple of the granule) are backed and the rest is not. Depending on the
    /// onlining policy (`memhp_default_state`), the kernel onlines the new blocks at once;
    /// otherwise user space does. Either way only accessible pages reach the page allocator.
    ///
    /// With `memmap_on_memory` (and if [`super::memmap_on_memory()`] says the kernel can), the
    /// memmap of each block is placed at the block's start instead of being allocated from
    /// kernel memory; it must be accessible and stays so until the block is removed.
    ///
    /// Fails, changing nothing, with `EINVAL` (bad range or `accessible`), `EEXIST` (a block is
    /// added already), `EPERM` (something is inaccessible and another driver holds the kernel's
    /// online-page callback) or what adding memory returns.
    pub fn add_memory(
        &mut self,
        group: &MemoryGroup,
        start: u64,
        size: u64,
        memmap_on_memory: bool,
        accessible: u64,
    ) -> Result {
        let geo = self.inner.geo;
        let blocks = geo.blocks(start, size)?;
        if accessible > size || accessible & (geo.granule - 1) != 0 {
            return Err(EINVAL);
        }
        let memmap_on_memory = memmap_on_memory && super::memmap_on_memory();
        let memmap = if memmap_on_memory {
            ((memmap_size(geo.mb_size) + geo.granule - 1) >> geo.g_shift) as usize
        } else {
            0
        };
        if accessible < size {
            self.cover()?;
        }
        // Recorded before the kernel adds it: auto-onlining happens during the add.
        let added = self.inner.record.lock().add(
            &geo,
            blocks.clone(),
            (accessible >> geo.g_shift) as usize,
            memmap,
        );
        if let Err(e) = added {
            self.uncover_if_unneeded();
            return Err(e);
        }
        let mut flags = bindings::MHP_MERGE_RESOURCE | bindings::MHP_NID_IS_MGID;
        if memmap_on_memory {
            flags |= bindings::MHP_MEMMAP_ON_MEMORY;
        }
        // SAFETY: The range is inside our exclusive reservation and aligned, and recorded, so
        // the online-page callback keeps its inaccessible part offline; `ram_name` lives as long
        // as memory added through the region (see `Drop`); with `MHP_NID_IS_MGID` the group id
        // stands for the node.
        let ret = crate::error::to_result(unsafe {
            bindings::add_memory_driver_managed(
                group.id(),
                start,
                size,
                self.ram_name.as_char_ptr(),
                flags,
            )
        });
        if let Err(e) = ret {
            self.inner.record.lock().remove(&geo, blocks);
            self.uncover_if_unneeded();
            return Err(e);
        }
        Ok(())
    }

    /// Removes `[start, start + size)`, added memory blocks that are all offline, from the
    /// system. Fails, changing nothing, with `EINVAL` (bad range), `ENOENT` (a block is not
    /// added), `EAGAIN` (being onlined or offlined) or `EBUSY` (a block is online).
    pub fn remove_memory(&mut self, start: u64, size: u64) -> Result {
        let geo = self.inner.geo;
        let blocks = geo.blocks(start, size)?;
        self.inner
            .record
            .lock()
            .check_remove(blocks.clone(), true)?;
        // SAFETY: The range is added memory of our reservation (checked above); `remove_memory`
        // checks again, under the hotplug lock, that it is offline and refuses otherwise.
        crate::error::to_result(unsafe { bindings::remove_memory(start, size) })?;
        self.inner.record.lock().remove(&geo, blocks);
        self.uncover_if_unneeded();
        Ok(())
    }

    /// Offlines `[start, start + size)`, added memory blocks, and removes it from the system,
    /// as one operation that user space cannot get in between (also while
    /// [blocked](Self::block_hotplug)). Offlining migrates the pages in use away (inaccessible
    /// pages are skipped), so it fails, changing nothing, with `EBUSY` if they cannot be moved,
    /// e.g. in a kernel zone, or a notifier refuses; `ENOENT` if a block is not added; `EAGAIN`
    /// while one is being onlined or offlined. When it fails, the blocks it offlined already are
    /// online again (the kernel's rollback, which the region lets through), with what was
    /// inaccessible still inaccessible.
    ///
    /// Offlining retries migration until it succeeds or a signal arrives: take the pages with
    /// [`Self::take_pages`] first (which fails fast) when a failure must not wait.
    pub fn offline_and_remove_memory(&mut self, start: u64, size: u64) -> Result {
        let geo = self.inner.geo;
        let blocks = geo.blocks(start, size)?;
        {
            let mut rec = self.inner.record.lock();
            rec.check_remove(blocks.clone(), false)?;
            rec.owner_offlining = Some(blocks.clone());
        }
        // SAFETY: The range is added memory of our reservation (checked above); offlining moves
        // or refuses whatever is in use, and lets the notifier release inaccessible pages.
        let ret =
            crate::error::to_result(unsafe { bindings::offline_and_remove_memory(start, size) });
        {
            let mut rec = self.inner.record.lock();
            rec.owner_offlining = None;
            if ret.is_ok() {
                rec.remove(&geo, blocks);
            }
        }
        self.uncover_if_unneeded();
        ret
    }

    /// Makes the inaccessible pages of `[start, start + size)` (granule-aligned, in added
    /// blocks) accessible, once `first` succeeded: `first` is the caller's step that makes the
    /// device back them (a `PLUG` request). The pages of online blocks go to the page
    /// allocator; those of offline blocks will when their block is onlined.
    ///
    /// No memory block of the range is onlined or offlined between the region's checks,
    /// `first` and the hand-over: onlining and offlining wait. If `first` fails, nothing
    /// changes.
    ///
    /// `first` runs with the region's lock held; it cannot reach the region, which is borrowed
    /// for the call (re-entering would deadlock):
    ///
    /// ```ignore,compile_fail,E0500
    /// # use kernel::memory_hotplug::SystemRamRegion;
    /// fn plug(region: &mut SystemRamRegion, addr: u64, size: u64) {
    ///     let _ = region.give_pages(addr, size, || region.remove_memory(addr, size));
    /// }
    /// ```
    pub fn give_pages<E>(
        &mut self,
        start: u64,
        size: u64,
        first: impl FnOnce() -> core::result::Result<(), E>,
    ) -> core::result::Result<(), PagesError<E>> {
        let geo = self.inner.geo;
        let segs = geo.segments(start, size).map_err(PagesError::Region)?;
        let mut rec = self.inner.record.lock();
        rec.check_pages(segs.clone(), true)
            .map_err(PagesError::Region)?;
        first().map_err(PagesError::Step)?;
        // SAFETY: We hold the lock; the checks say every granule is inaccessible in an added
        // block that is not in a transition.
        unsafe { self.inner.hand_over(&rec, segs.clone()) };
        rec.set_pages(segs, true);
        drop(rec);
        self.uncover_if_unneeded();
        Ok(())
    }

    /// Makes the accessible pages of `[start, start + size)` (granule-aligned, in added blocks,
    /// not their memmap) inaccessible, then runs `then`, the caller's step that makes the
    /// device stop backing them (an `UNPLUG` request). The pages of online blocks are taken from
    /// the kernel first: what is in use is migrated away, which fails fast (`EBUSY`) if a page
    /// cannot be moved, or `ENOMEM`. If `then` fails, its [`Undo`] says whether the pages go
    /// back to the kernel or stay inaccessible (when the device may have acted).
    ///
    /// No memory block of the range is onlined or offlined between the region's checks, the
    /// taking, `then` and an undo: onlining and offlining wait. As with [`Self::give_pages`],
    /// `then` cannot reach the region.
    pub fn take_pages<E>(
        &mut self,
        start: u64,
        size: u64,
        then: impl FnOnce() -> core::result::Result<(), Undo<E>>,
    ) -> core::result::Result<(), PagesError<E>> {
        let geo = self.inner.geo;
        let segs = geo.segments(start, size).map_err(PagesError::Region)?;
        self.cover().map_err(PagesError::Region)?;
        // Before the record's lock, which onlining and offlining take with the hotplug lock.
        let no_hotplug = pages::NoHotplug::new();
        let mut rec = self.inner.record.lock();
        if let Err(e) = rec.check_pages(segs.clone(), false) {
            drop(rec);
            drop(no_hotplug);
            self.uncover_if_unneeded();
            return Err(PagesError::Region(e));
        }
        // SAFETY: We hold the lock and keep hotplug off; the checks say every granule is
        // accessible in an added block that is not in a transition.
        if let Err(e) = unsafe { self.inner.take_from_kernel(&rec, segs.clone()) } {
            drop(rec);
            drop(no_hotplug);
            self.uncover_if_unneeded();
            return Err(PagesError::Region(e));
        }
        // INVARIANT: The pages of online blocks are taken (one reference each, not in the page
        // allocator); those of offline blocks are not in use, and onlining keeps them offline.
        rec.set_pages(segs.clone(), false);
        match then() {
            Ok(()) => Ok(()),
            Err(Undo::Keep(e)) => Err(PagesError::Step(e)),
            Err(Undo::GiveBack(e)) => {
                // SAFETY: We hold the lock; the granules were made inaccessible just above.
                unsafe { self.inner.hand_over(&rec, segs.clone()) };
                rec.set_pages(segs, true);
                drop(rec);
                drop(no_hotplug);
                self.uncover_if_unneeded();
                Err(PagesError::Step(e))
            }
        }
    }

    /// Refuses (or, with `false`, allows again) onlining and offlining of the region's memory
    /// by anybody but the region's owner: while a driver gives its memory back at unbind, its
    /// view of the blocks must not change under it.
    pub fn block_hotplug(&mut self, blocked: bool) {
        self.inner.record.lock().blocked = blocked;
    }

    /// Hands the region, with the memory still added through it, and the memory group of that
    /// memory over to the next driver bound to `dev`, which gets both back from
    /// [`Self::take_over`] (even after the module that parked them was unloaded: they live in
    /// the kernel). Meanwhile the region keeps protecting its inaccessible pages. A region with
    /// nothing added is simply released.
    pub fn park(mut self, dev: &device::Device, group: MemoryGroup) {
        if self.added() == 0 {
            return;
        }
        self.block_hotplug(false);
        let entry = Parked {
            dev: dev.into(),
            region: self,
            group,
        };
        match parked() {
            Ok(list) => {
                if list.lock().push(entry, GFP_KERNEL).is_err() {
                    // The entry was dropped: that keeps the reservation, the group and the
                    // tracking for good.
                    pr_warn!(
                        "cannot park a memory region for the next driver; it stays reserved\n"
                    );
                }
            }
            Err(_) => {
                drop(entry);
                pr_warn!("cannot park a memory region for the next driver; it stays reserved\n");
            }
        }
    }

    /// Takes over the region `[start, start + size)` and its memory group, parked by an earlier
    /// driver of `dev` (the device being probed) with memory still added. `None` if there is
    /// none: only the device's own next driver can take its region.
    pub fn take_over(
        dev: &device::Device<device::Core<'_>>,
        start: u64,
        size: u64,
    ) -> Option<(Self, MemoryGroup)> {
        let dev: &device::Device = dev;
        let list = parked().ok()?;
        let mut list = list.lock();
        let i = list.iter().position(|p| {
            core::ptr::eq(p.dev.as_raw(), dev.as_raw())
                && p.region.start() == start
                && p.region.size() == size
        })?;
        let p = list.remove(i).ok()?;
        Some((p.region, p.group))
    }
}

impl Drop for SystemRamRegion {
    fn drop(&mut self) {
        let added = self.added();
        if added > 0 {
            pr_warn!(
                "{:#x} bytes of [{:#x}-{:#x}] stay added to the system; keeping the region \
                 reserved and its inaccessible pages tracked\n",
                added,
                self.start(),
                self.start() + self.size() - 1
            );
            // The notifier (which holds `inner`), the online-page registration, the resources
            // (ours and those of the added memory) and their names stay, for good.
            return;
        }
        if self.covered {
            online_page::unregister(&self.inner);
        }
        // SAFETY: Dropped only here; nothing is added, so the notifier has nothing to track.
        unsafe { ManuallyDrop::drop(&mut self.notifier) };
        // SAFETY: By the type invariant `res` was requested and not released.
        let children = unsafe { !(*self.res.as_ptr()).child.is_null() };
        if children {
            pr_warn!("the region still has resources below it; keeping it reserved\n");
            return;
        }
        // SAFETY: By the type invariant `res` was requested and not released; `__request_region`
        // allocated it with `kmalloc`, and it is no longer in the resource tree after
        // `release_resource`. It has no children and no memory is added, so nothing points to
        // the names any more, and they are dropped only here.
        unsafe {
            bindings::release_resource(self.res.as_ptr());
            bindings::kfree(self.res.as_ptr().cast());
            ManuallyDrop::drop(&mut self.name);
            ManuallyDrop::drop(&mut self.ram_name);
        }
    }
}
