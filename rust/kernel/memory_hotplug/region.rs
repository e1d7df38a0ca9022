// SPDX-License-Identifier: GPL-2.0

//! [`SystemRamRegion`]: a driver's exclusive physical range, the memory it adds there, and the
//! pages of that memory the kernel must not touch.

use super::{
    memmap_size,
    online_page,
    pages,
    MemoryEvent,
    MemoryGroup,
    MemoryNotification,
    MemoryNotifier,
    MemoryNotifierHandler, //
};
use crate::{
    bindings,
    bitmap::BitmapVec,
    device,
    new_mutex,
    page::{
        PAGE_SHIFT,
        PAGE_SIZE, //
    },
    prelude::*,
    str::CString,
    sync::{
        aref::ARef,
        Arc,
        Mutex,
        SetOnce, //
    }, //
};
use core::{
    mem::ManuallyDrop,
    ops::Range,
    ptr::NonNull, //
};

/// The state of an added memory block, as the memory notifier reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockState {
    /// Offline.
    Offline,
    /// Being onlined.
    GoingOnline,
    /// Online, in `ZONE_MOVABLE` or a kernel zone.
    Online {
        /// In `ZONE_MOVABLE`.
        movable: bool,
    },
    /// Being offlined.
    GoingOffline {
        /// In `ZONE_MOVABLE`.
        movable: bool,
    },
}

impl BlockState {
    /// Whether the block is being onlined or offlined.
    pub fn in_transition(self) -> bool {
        matches!(self, Self::GoingOnline | Self::GoingOffline { .. })
    }
}

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

/// The fixed geometry of a region: where its memory blocks and granules are.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    /// Start of the region.
    start: u64,
    /// End of the region (exclusive).
    end: u64,
    /// Address of block 0: `start` rounded down to a memory block.
    base: u64,
    /// Size of a memory block.
    mb_size: u64,
    /// Size of a granule (a power of two that divides `mb_size`).
    granule: u64,
    /// `log2(mb_size)` and `log2(granule)`: indices are computed with shifts (no division can
    /// panic).
    mb_shift: u32,
    g_shift: u32,
    /// Granules per memory block.
    per_block: usize,
}

/// A run of granules inside one memory block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    block: usize,
    first: usize,
    count: usize,
}

impl Geometry {
    fn new(start: u64, size: u64, mb_size: u64, granule: u64) -> Result<Self> {
        let end = start.checked_add(size).ok_or(EINVAL)?;
        if size == 0
            || !mb_size.is_power_of_two()
            || !granule.is_power_of_two()
            || granule < PAGE_SIZE as u64
            || granule > mb_size
        {
            return Err(EINVAL);
        }
        Ok(Self {
            start,
            end,
            base: start & !(mb_size - 1),
            mb_size,
            granule,
            mb_shift: mb_size.trailing_zeros(),
            g_shift: granule.trailing_zeros(),
            per_block: 1 << (mb_size.trailing_zeros() - granule.trailing_zeros()),
        })
    }

    fn block_addr(&self, block: usize) -> u64 {
        self.base + block as u64 * self.mb_size
    }

    /// The block holding `addr`, if it is in the region.
    fn block_of(&self, addr: u64) -> Option<usize> {
        (self.start..self.end)
            .contains(&addr)
            .then(|| ((addr - self.base) >> self.mb_shift) as usize)
    }

    /// The blocks of `[start, start + size)`: whole memory blocks inside the region.
    fn blocks(&self, start: u64, size: u64) -> Result<Range<usize>> {
        let end = start.checked_add(size).ok_or(EINVAL)?;
        let mask = self.mb_size - 1;
        if size == 0 || start < self.start || end > self.end || (start | size) & mask != 0 {
            return Err(EINVAL);
        }
        let first = ((start - self.base) >> self.mb_shift) as usize;
        Ok(first..first + (size >> self.mb_shift) as usize)
    }

    /// The granules of `[start, start + size)`, granule-aligned and inside the region, as one
    /// segment per memory block.
    fn segments(&self, start: u64, size: u64) -> Result<Segments> {
        let end = start.checked_add(size).ok_or(EINVAL)?;
        let mask = self.granule - 1;
        if size == 0 || start < self.start || end > self.end || (start | size) & mask != 0 {
            return Err(EINVAL);
        }
        Ok(Segments {
            geo: *self,
            at: start,
            end,
        })
    }

    /// The first pfn and number of pages of a segment.
    fn pfns(&self, s: Segment) -> (usize, usize) {
        let addr = self.block_addr(s.block) + s.first as u64 * self.granule;
        (
            (addr >> PAGE_SHIFT) as usize,
            ((s.count as u64 * self.granule) >> PAGE_SHIFT) as usize,
        )
    }
}

/// The segments of a range; see [`Geometry::segments`].
#[derive(Clone)]
struct Segments {
    geo: Geometry,
    at: u64,
    end: u64,
}

impl Iterator for Segments {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        if self.at >= self.end {
            return None;
        }
        let g = &self.geo;
        let block = ((self.at - g.base) >> g.mb_shift) as usize;
        let block_end = g.block_addr(block) + g.mb_size;
        let stop = block_end.min(self.end);
        let first = ((self.at - g.block_addr(block)) >> g.g_shift) as usize;
        let count = ((stop - self.at) >> g.g_shift) as usize;
        self.at = stop;
        Some(Segment {
            block,
            first,
            count,
        })
    }
}

/// What the region knows of one of its memory blocks.
struct Block {
    /// `None` while the block is not added.
    state: Option<BlockState>,
    /// Going offline: the references of the inaccessible pages were dropped.
    frozen: bool,
    /// Granules at the start of the block that hold its memmap (`memmap_on_memory`): always
    /// accessible while the block is added.
    memmap: usize,
    /// Inaccessible granules.
    off: BitmapVec,
    /// Of those, the ones taken from the page allocator while the block was online (as opposed
    /// to kept offline when it was onlined).
    taken: BitmapVec,
    /// Number of inaccessible granules.
    nr_off: usize,
}

impl Block {
    fn new(per_block: usize) -> Result<Self> {
        Ok(Self {
            state: None,
            frozen: false,
            memmap: 0,
            off: BitmapVec::new(per_block, GFP_KERNEL)?,
            taken: BitmapVec::new(per_block, GFP_KERNEL)?,
            nr_off: 0,
        })
    }

    fn is_off(&self, granule: usize) -> bool {
        self.off.next_bit(granule) == Some(granule)
    }

    fn is_taken(&self, granule: usize) -> bool {
        self.taken.next_bit(granule) == Some(granule)
    }

    fn set(&mut self, granule: usize, off: bool, taken: bool) {
        if off != self.is_off(granule) {
            if off {
                self.off.set_bit(granule);
                self.nr_off += 1;
            } else {
                self.off.clear_bit(granule);
                self.nr_off -= 1;
            }
        }
        if off && taken {
            self.taken.set_bit(granule);
        } else {
            self.taken.clear_bit(granule);
        }
    }

    /// The runs of inaccessible granules, as `(first, count)`.
    fn off_runs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let n = self.off.len();
        let mut at = 0;
        core::iter::from_fn(move || {
            let first = self.off.next_bit(at)?;
            let end = self.off.next_zero_bit(first).unwrap_or(n);
            at = end;
            Some((first, end - first))
        })
    }
}

/// The region's record of its blocks and their inaccessible pages; see [`RegionInner`].
pub(super) struct Record {
    /// Up to the last added block of a region of any size: kvmalloc, as kmalloc of more than
    /// 4 MiB warns.
    blocks: KVVec<Block>,
    /// Number of added blocks.
    nr_added: usize,
    /// Number of inaccessible granules in added blocks.
    nr_off: usize,
    /// Onlining and offlining by others is refused (while the owner gives memory back).
    blocked: bool,
    /// The online-page callback dispatches pages of the region to it.
    covered: bool,
    /// The owner is offlining these blocks itself (allowed while `blocked`).
    owner_offlining: Option<Range<usize>>,
}

impl Record {
    fn new() -> Self {
        Self {
            blocks: KVVec::new(),
            nr_added: 0,
            nr_off: 0,
            blocked: false,
            covered: false,
            owner_offlining: None,
        }
    }

    fn state(&self, block: usize) -> Option<BlockState> {
        self.blocks.get(block).and_then(|b| b.state)
    }

    /// Records `blocks` as added, of which the first `accessible` granules (counted from the
    /// first block) are accessible and the first `memmap` granules of each block hold its
    /// memmap. Fails with `EEXIST` if one of them is added already, `EINVAL` if a block's memmap
    /// would be inaccessible, and `ENOMEM`; changing nothing.
    fn add(
        &mut self,
        geo: &Geometry,
        blocks: Range<usize>,
        accessible: usize,
        memmap: usize,
    ) -> Result {
        if memmap > geo.per_block || blocks.clone().any(|i| self.state(i).is_some()) {
            return Err(if memmap > geo.per_block {
                EINVAL
            } else {
                EEXIST
            });
        }
        if (blocks.start..blocks.end).any(|i| {
            let acc = accessible.saturating_sub((i - blocks.start) * geo.per_block);
            acc < memmap
        }) {
            return Err(EINVAL);
        }
        while self.blocks.len() < blocks.end {
            self.blocks.push(Block::new(geo.per_block)?, GFP_KERNEL)?;
        }
        for i in blocks.clone() {
            let acc = accessible.saturating_sub((i - blocks.start) * geo.per_block);
            let b = &mut self.blocks[i];
            b.state = Some(BlockState::Offline);
            b.frozen = false;
            b.memmap = memmap;
            for g in 0..geo.per_block {
                b.set(g, g >= acc, false);
            }
            self.nr_off += b.nr_off;
            self.nr_added += 1;
        }
        Ok(())
    }

    /// Forgets `blocks` (removed, or their add failed).
    fn remove(&mut self, geo: &Geometry, blocks: Range<usize>) {
        for i in blocks {
            let Some(b) = self.blocks.get_mut(i) else {
                continue;
            };
            if b.state.take().is_none() {
                continue;
            }
            self.nr_off -= b.nr_off;
            self.nr_added -= 1;
            for g in 0..geo.per_block {
                b.set(g, false, false);
            }
            b.frozen = false;
        }
    }

    /// Checks that `blocks` may be removed: all added (`ENOENT`), none being onlined or
    /// offlined (`EAGAIN`) and, with `offline_only`, all offline (`EBUSY`).
    fn check_remove(&self, blocks: Range<usize>, offline_only: bool) -> Result {
        for i in blocks {
            match self.state(i) {
                None => return Err(ENOENT),
                Some(s) if s.in_transition() => return Err(EAGAIN),
                Some(BlockState::Online { .. }) if offline_only => return Err(EBUSY),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The part of segment `s` after its block's memmap (which never changes), if any.
    fn clip(&self, s: Segment) -> Option<Segment> {
        let memmap = self.blocks.get(s.block).map_or(0, |b| b.memmap);
        let first = s.first.max(memmap);
        let end = s.first + s.count;
        (first < end).then_some(Segment {
            block: s.block,
            first,
            count: end - first,
        })
    }

    /// The segments of `segs` without their blocks' memmap.
    fn parts(&self, segs: Segments) -> impl Iterator<Item = Segment> + '_ {
        segs.filter_map(move |s| self.clip(s))
    }

    /// Checks that every granule of `segs` but memmap ones may be made accessible (or, with
    /// `to_accessible` false, inaccessible): each is in an added block (`ENOENT`) that is not
    /// in a transition (`EAGAIN`) and not in that state already (`EINVAL`); and some granule
    /// is not memmap (`EINVAL`).
    fn check_pages(&self, segs: Segments, to_accessible: bool) -> Result {
        let mut any = false;
        for s in segs {
            let b = match self.blocks.get(s.block) {
                Some(b) if b.state.is_some() => b,
                _ => return Err(ENOENT),
            };
            if b.state.is_some_and(BlockState::in_transition) {
                return Err(EAGAIN);
            }
            let Some(s) = self.clip(s) else {
                continue;
            };
            if (s.first..s.first + s.count).any(|g| b.is_off(g) != to_accessible) {
                return Err(EINVAL);
            }
            any = true;
        }
        if any {
            Ok(())
        } else {
            Err(EINVAL)
        }
    }

    /// Marks the granules of `segs` but memmap ones accessible or not; inaccessible ones of
    /// online blocks are recorded as taken from the page allocator.
    fn set_pages(&mut self, segs: Segments, accessible: bool) {
        for s in segs {
            let Some(s) = self.clip(s) else {
                continue;
            };
            let b = &mut self.blocks[s.block];
            let taken = matches!(b.state, Some(BlockState::Online { .. }));
            let before = b.nr_off;
            for g in s.first..s.first + s.count {
                b.set(g, !accessible, taken);
            }
            self.nr_off = self.nr_off + b.nr_off - before;
        }
    }

    /// Whether every granule of `segs` is in an added block and accessible.
    fn accessible(&self, segs: Segments) -> bool {
        segs.into_iter().all(|s| {
            self.blocks.get(s.block).is_some_and(|b| {
                b.state.is_some() && (s.first..s.first + s.count).all(|g| !b.is_off(g))
            })
        })
    }

    /// Whether the owner offlines block `block` itself.
    fn owner_offlines(&self, block: usize) -> bool {
        self.owner_offlining
            .as_ref()
            .is_some_and(|r| r.contains(&block))
    }

    /// Checks that block `block` may go online: added, offline, not blocked, with something
    /// accessible besides its memmap, and covered by the online-page callback if anything of
    /// it is inaccessible. While the owner offlines it
    /// ([`SystemRamRegion::offline_and_remove_memory`]), only that the callback covers it: the
    /// kernel onlines it again when offlining a later block of the range failed, and a block
    /// whose pages the owner took has nothing accessible then (they stay offline, and the owner
    /// gives them back).
    fn may_online(&self, geo: &Geometry, block: usize) -> Result {
        let b = match self.blocks.get(block) {
            Some(b) if b.state == Some(BlockState::Offline) => b,
            _ => return Err(EBUSY),
        };
        if b.nr_off > 0 && !self.covered {
            return Err(EBUSY);
        }
        if self.owner_offlines(block) {
            return Ok(());
        }
        if self.blocked || b.nr_off + b.memmap >= geo.per_block {
            return Err(EBUSY);
        }
        Ok(())
    }

    /// Checks that block `block` may go offline: added, online, and not blocked (unless the
    /// owner offlines it).
    fn may_offline(&self, block: usize) -> Result {
        if self.blocked && !self.owner_offlines(block) {
            return Err(EBUSY);
        }
        match self.state(block) {
            Some(BlockState::Online { .. }) => Ok(()),
            _ => Err(EBUSY),
        }
    }
}

/// What a [`SystemRamRegion`] shares with the memory notifier and the online-page callback.
///
/// # Invariants
///
/// For every block the record has as added and not frozen, every page of a granule recorded as
/// inaccessible is not in the page allocator and holds exactly one reference, the region's: if
/// the block is online, it is `PageOffline()` and was either kept offline when the block was
/// onlined (never given to the page allocator) or taken from it (`taken`); if the block is
/// going offline and `frozen`, those references were dropped (count 0) so that offlining skips
/// the pages. Every change of these pages happens under `record`'s lock.
#[pin_data]
pub(super) struct RegionInner {
    geo: Geometry,
    #[pin]
    record: Mutex<Record>,
}

impl RegionInner {
    /// Whether `[start, start + size)` lies in the region.
    pub(super) fn contains(&self, start: u64, size: u64) -> bool {
        start >= self.geo.start && start.saturating_add(size) <= self.geo.end
    }

    /// Onlines the `1 << order` pages from `pfn` on, part of a block of the region being onlined,
    /// for the online-page callback: accessible granules go to the page allocator, inaccessible
    /// ones stay offline as memmap initialization left them (`PageOffline()`, one reference).
    pub(super) fn online_pages(&self, pfn: usize, order: u32) {
        let geo = &self.geo;
        let start = (pfn as u64) << PAGE_SHIFT;
        let end = start + ((PAGE_SIZE as u64) << order);
        let rec = self.record.lock();
        let mut at = start;
        while at < end {
            let piece_end = (((at >> geo.g_shift) + 1) << geo.g_shift).min(end);
            let accessible = geo.block_of(at).is_some_and(|i| {
                rec.blocks.get(i).is_some_and(|b| {
                    b.state == Some(BlockState::GoingOnline)
                        && !b.is_off(((at - geo.block_addr(i)) >> geo.g_shift) as usize)
                })
            });
            if accessible {
                let pages = ((piece_end - at) >> PAGE_SHIFT) as usize;
                // SAFETY: The pages are being onlined (the kernel called the online-page
                // callback with them) and the record says the device backs them; each piece is
                // naturally aligned (a granule or a part of the aligned chunk).
                unsafe {
                    bindings::generic_online_page(
                        bindings::pfn_to_page((at >> PAGE_SHIFT) as c_ulong),
                        pages.trailing_zeros(),
                    )
                };
            }
            // INVARIANT: Pages not onlined stay as memmap initialization left them.
            at = piece_end;
        }
    }

    /// The blocks of the region that a notification's range touches.
    fn blocks_of(&self, n: &MemoryNotification) -> Option<Range<usize>> {
        let r = n.range();
        let end = r.start + r.size;
        if end <= self.geo.start || r.start >= self.geo.end {
            return None;
        }
        let first = self.geo.block_of(r.start.max(self.geo.start))?;
        let last = self.geo.block_of((end - 1).min(self.geo.end - 1))?;
        Some(first..last + 1)
    }

    /// Freezes (or, with `undo`, unfreezes) the inaccessible pages of block `i`. Returns whether
    /// all were frozen; on failure none is.
    ///
    /// # Safety
    ///
    /// The caller holds the record's lock (`rec`), block `i` is added and being offlined, and
    /// its inaccessible pages are not frozen (frozen, with `undo`).
    unsafe fn freeze_block(&self, rec: &Record, i: usize, undo: bool) -> bool {
        let b = &rec.blocks[i];
        let segs = || {
            b.off_runs().map(move |(first, count)| Segment {
                block: i,
                first,
                count,
            })
        };
        for (k, s) in segs().enumerate() {
            let (pfn, nr) = self.geo.pfns(s);
            if undo {
                // SAFETY: Frozen pages of the region (safety requirement).
                unsafe { pages::unfreeze(pfn, nr) };
                continue;
            }
            // SAFETY: Inaccessible pages of the region with their one reference (type
            // invariant) in a block being offlined; we hold the lock.
            if !unsafe { pages::freeze(pfn, nr) } {
                for s in segs().take(k) {
                    let (pfn, nr) = self.geo.pfns(s);
                    // SAFETY: Frozen just above.
                    unsafe { pages::unfreeze(pfn, nr) };
                }
                return false;
            }
        }
        true
    }
}

impl MemoryNotifierHandler for RegionInner {
    fn prepare(this: &Arc<Self>, n: &MemoryNotification) -> Result {
        let Some(blocks) = this.blocks_of(n) else {
            return Ok(());
        };
        let mut rec = this.record.lock();
        match n.event() {
            MemoryEvent::GoingOnline => {
                for i in blocks.clone() {
                    rec.may_online(&this.geo, i)?;
                }
                for i in blocks {
                    rec.blocks[i].state = Some(BlockState::GoingOnline);
                }
            }
            MemoryEvent::GoingOffline => {
                for i in blocks.clone() {
                    rec.may_offline(i)?;
                }
                let movable = n.is_movable();
                for i in blocks.clone() {
                    // SAFETY: We hold the lock; block `i` is online (checked above), so its
                    // inaccessible pages hold their reference, and it is being offlined.
                    if !unsafe { this.freeze_block(&rec, i, false) } {
                        for j in blocks.start..i {
                            // SAFETY: Frozen in this loop.
                            unsafe { this.freeze_block(&rec, j, true) };
                            rec.blocks[j].frozen = false;
                            rec.blocks[j].state = Some(BlockState::Online { movable });
                        }
                        pr_warn!(
                            "memory block at {:#x}: an inaccessible page holds a reference; \
                             refusing to offline\n",
                            this.geo.block_addr(i)
                        );
                        return Err(EBUSY);
                    }
                    rec.blocks[i].frozen = true;
                    rec.blocks[i].state = Some(BlockState::GoingOffline { movable });
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn complete(this: &Arc<Self>, n: &MemoryNotification) {
        let Some(blocks) = this.blocks_of(n) else {
            return;
        };
        let mut rec = this.record.lock();
        for i in blocks {
            let Some(state) = rec.state(i) else {
                continue;
            };
            let new = match (n.event(), state) {
                (MemoryEvent::Online, BlockState::GoingOnline) => BlockState::Online {
                    movable: n.is_movable(),
                },
                (MemoryEvent::CancelOnline, BlockState::GoingOnline) => BlockState::Offline,
                (MemoryEvent::Offline, _) => {
                    let b = &mut rec.blocks[i];
                    b.frozen = false;
                    // Offline pages were never onlined: the next onlining keeps them offline.
                    for g in 0..this.geo.per_block {
                        b.taken.clear_bit(g);
                    }
                    BlockState::Offline
                }
                (MemoryEvent::CancelOffline, BlockState::GoingOffline { movable }) => {
                    if rec.blocks[i].frozen {
                        // SAFETY: We hold the lock and froze these pages at `GoingOffline`;
                        // the cancelled offlining left them online.
                        unsafe { this.freeze_block(&rec, i, true) };
                        rec.blocks[i].frozen = false;
                    }
                    BlockState::Online { movable }
                }
                _ => continue,
            };
            rec.blocks[i].state = Some(new);
        }
    }
}

/// A physical address range that a device provides as memory: every page of it that the device
/// reports plugged is RAM the device backs. The only range [`SystemRamRegion::request`] takes,
/// so that safe code cannot add memory that nothing backs (a hole in the physical address
/// space, or a device's registers) and let the page allocator hand it out. A bus abstraction
/// that knows what its devices provide makes it (as [`crate::virtio::Device::device_memory`]
/// for a virtio-mem device's region); otherwise [`DeviceMemory::new`], which is `unsafe`.
///
/// Nothing else makes one:
///
/// ```ignore,compile_fail,E0451
/// # use kernel::memory_hotplug::DeviceMemory;
/// fn any_range() -> DeviceMemory {
///     DeviceMemory { start: 1 << 40, size: 1 << 30 }
/// }
/// ```
///
/// ```ignore,compile_fail,E0133
/// # use kernel::memory_hotplug::DeviceMemory;
/// fn any_range() -> DeviceMemory {
///     DeviceMemory::new(1 << 40, 1 << 30)
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    start: u64,
    size: u64,
}

impl DeviceMemory {
    /// The range `[start, start + size)`.
    ///
    /// # Safety
    ///
    /// A device backs the range as memory: every page of it that the device reports plugged
    /// (through its own protocol) is RAM, backed for as long as the device reports it plugged,
    /// and nothing else of the machine (RAM of the kernel's, other devices) lies in the range.
    pub unsafe fn new(start: u64, size: u64) -> Self {
        Self { start, size }
    }

    /// The first byte of the range.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The size of the range in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
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
        let (start, size) = (range.start, range.size);
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

impl RegionInner {
    /// Takes the pages of `segs` in online blocks from the page allocator (see [`pages::take`]).
    /// All or nothing: on failure, what was taken is given back.
    ///
    /// # Safety
    ///
    /// The caller holds a [`pages::NoHotplug`] and the record's lock (`rec`), every granule of
    /// `segs` is accessible in an added block that is not in a transition, and on success the
    /// caller marks them inaccessible before unlocking.
    unsafe fn take_from_kernel(&self, rec: &Record, segs: Segments) -> Result {
        let online = |s: &Segment| matches!(rec.state(s.block), Some(BlockState::Online { .. }));
        for (k, s) in rec.parts(segs.clone()).filter(online).enumerate() {
            let (pfn, nr) = self.geo.pfns(s);
            // SAFETY: Online, accessible pages of the region (safety requirement); the lock and
            // the `NoHotplug` are held, so the block stays online and nobody isolates it.
            if let Err(e) = unsafe { pages::take(pfn, nr) } {
                for s in rec.parts(segs).filter(online).take(k) {
                    let (pfn, nr) = self.geo.pfns(s);
                    // SAFETY: Taken just above, still online (the lock is held).
                    unsafe { pages::give_taken(pfn, nr) };
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Hands the inaccessible pages of `segs` to the kernel: those of online blocks go to the
    /// page allocator (kept-offline pages as onlining would, taken ones freed).
    ///
    /// # Safety
    ///
    /// The caller holds the record's lock (`rec`), every granule of `segs` is inaccessible in an
    /// added block that is not in a transition, and the caller marks them accessible before
    /// unlocking.
    unsafe fn hand_over(&self, rec: &Record, segs: Segments) {
        for s in rec.parts(segs) {
            let b = &rec.blocks[s.block];
            if !matches!(b.state, Some(BlockState::Online { .. })) {
                continue;
            }
            for g in s.first..s.first + s.count {
                let (pfn, nr) = self.geo.pfns(Segment {
                    block: s.block,
                    first: g,
                    count: 1,
                });
                if b.is_taken(g) {
                    // SAFETY: Taken from the page allocator by `take_pages` (the record says
                    // so), online, ours (type invariant).
                    unsafe { pages::give_taken(pfn, nr) };
                } else {
                    // SAFETY: Kept offline when the block was onlined (the record says so),
                    // online, never in the page allocator (type invariant).
                    unsafe { pages::online_kept(pfn, nr) };
                }
            }
        }
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

/// A region left with memory added, and its memory group, waiting for the next driver of its
/// device.
struct Parked {
    dev: ARef<device::Device>,
    region: SystemRamRegion,
    group: MemoryGroup,
}

/// The parked regions, created on first use.
static PARKED: SetOnce<Pin<KBox<Mutex<KVec<Parked>>>>> = SetOnce::new();

/// The parked regions.
fn parked() -> Result<&'static Mutex<KVec<Parked>>> {
    loop {
        if let Some(list) = PARKED.as_ref() {
            return Ok(list);
        }
        // The first caller's list wins; a racing one drops its own.
        let list = KBox::pin_init(new_mutex!(KVec::new()), GFP_KERNEL)?;
        PARKED.populate(list);
    }
}

#[macros::kunit_tests(rust_kernel_memory_hotplug_region)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// A 1G region at 4G: 8 blocks of 128M, granules of 2M (64 per block).
    fn geometry() -> Geometry {
        Geometry::new(4 * GIB, GIB, 128 * MIB, 2 * MIB).unwrap()
    }

    #[test]
    fn blocks_are_added_and_removed_once() {
        let geo = geometry();
        let mut rec = Record::new();
        let b0 = geo.blocks(4 * GIB, 256 * MIB).unwrap();
        assert_eq!(b0, 0..2);
        rec.add(&geo, b0.clone(), 128, 0).unwrap();
        assert_eq!(rec.nr_added, 2);
        // Adding a block twice, or removing one never added, is refused.
        assert_eq!(rec.add(&geo, 1..2, 64, 0), Err(EEXIST));
        assert_eq!(rec.check_remove(2..3, true), Err(ENOENT));
        assert_eq!(rec.check_remove(1..3, false), Err(ENOENT));
        rec.check_remove(b0.clone(), true).unwrap();
        rec.remove(&geo, b0.clone());
        assert_eq!(rec.nr_added, 0);
        // Removed: a second remove is refused.
        assert_eq!(rec.check_remove(b0, true), Err(ENOENT));
        // Ranges must be whole blocks inside the region.
        assert_eq!(geo.blocks(4 * GIB + 2 * MIB, 128 * MIB), Err(EINVAL));
        assert_eq!(geo.blocks(5 * GIB - 128 * MIB, 256 * MIB), Err(EINVAL));
        assert_eq!(geo.blocks(4 * GIB, 0), Err(EINVAL));
    }

    #[test]
    fn partly_accessible_blocks_count_their_granules() {
        let geo = geometry();
        let mut rec = Record::new();
        // 1 block and 1 granule accessible of two blocks.
        rec.add(&geo, 0..2, 65, 0).unwrap();
        assert_eq!(rec.nr_off, 63);
        let first = geo.segments(4 * GIB, 130 * MIB).unwrap();
        assert!(rec.accessible(first.clone()));
        let next = geo.segments(4 * GIB + 130 * MIB, 2 * MIB).unwrap();
        assert!(!rec.accessible(next.clone()));
        // Giving what is accessible, or taking what is not, is refused.
        assert_eq!(rec.check_pages(first.clone(), true), Err(EINVAL));
        assert_eq!(rec.check_pages(next.clone(), false), Err(EINVAL));
        rec.check_pages(next.clone(), true).unwrap();
        rec.set_pages(next.clone(), true);
        assert_eq!(rec.nr_off, 62);
        assert!(rec.accessible(next));
        // A range across blocks is one segment per block.
        let mut segs = geo.segments(4 * GIB + 126 * MIB, 4 * MIB).unwrap();
        assert_eq!(
            segs.next(),
            Some(Segment {
                block: 0,
                first: 63,
                count: 1
            })
        );
        assert_eq!(
            segs.next(),
            Some(Segment {
                block: 1,
                first: 0,
                count: 1
            })
        );
        assert_eq!(segs.next(), None);
        // Not granule-aligned, or outside the region.
        assert!(geo.segments(4 * GIB + MIB, 2 * MIB).is_err());
        assert!(geo.segments(5 * GIB, 2 * MIB).is_err());
        // Removing forgets the block's inaccessible granules.
        rec.remove(&geo, 0..2);
        assert_eq!(rec.nr_off, 0);
        let gone = geo.segments(4 * GIB + 130 * MIB, 2 * MIB).unwrap();
        assert_eq!(rec.check_pages(gone, true), Err(ENOENT));
    }

    #[test]
    fn memmap_stays_accessible() {
        let geo = geometry();
        let mut rec = Record::new();
        // The memmap granule must be accessible when added.
        assert_eq!(rec.add(&geo, 0..1, 0, 1), Err(EINVAL));
        rec.add(&geo, 0..1, 1, 1).unwrap();
        // The memmap never changes: a range of memmap only is refused, a wider one skips it.
        let memmap = geo.segments(4 * GIB, 2 * MIB).unwrap();
        assert_eq!(rec.check_pages(memmap, true), Err(EINVAL));
        let block = geo.segments(4 * GIB, 128 * MIB).unwrap();
        assert_eq!(rec.check_pages(block.clone(), false), Err(EINVAL));
        rec.check_pages(block.clone(), true).unwrap();
        rec.set_pages(block.clone(), true);
        assert_eq!(rec.nr_off, 0);
        rec.check_pages(block.clone(), false).unwrap();
        rec.set_pages(block, false);
        assert_eq!(rec.nr_off, 63);
        // Nothing but the memmap is accessible: the block may not go online.
        assert_eq!(rec.may_online(&geo, 0), Err(EBUSY));
    }

    #[test]
    fn onlining_needs_the_callback_and_no_block() {
        let geo = geometry();
        let mut rec = Record::new();
        rec.add(&geo, 0..1, 32, 0).unwrap();
        rec.add(&geo, 1..2, 64, 0).unwrap();
        // Partly accessible and not covered by the online-page callback: vetoed.
        assert_eq!(rec.may_online(&geo, 0), Err(EBUSY));
        rec.may_online(&geo, 1).unwrap();
        rec.covered = true;
        rec.may_online(&geo, 0).unwrap();
        // Not added: vetoed.
        assert_eq!(rec.may_online(&geo, 2), Err(EBUSY));
        // A block in a transition refuses page changes and removal.
        rec.blocks[0].state = Some(BlockState::GoingOnline);
        let segs = geo.segments(4 * GIB, 2 * MIB).unwrap();
        assert_eq!(rec.check_pages(segs, true), Err(EAGAIN));
        assert_eq!(rec.check_remove(0..1, false), Err(EAGAIN));
        // Online blocks may not be removed without offlining.
        rec.blocks[1].state = Some(BlockState::Online { movable: true });
        assert_eq!(rec.check_remove(1..2, true), Err(EBUSY));
        rec.check_remove(1..2, false).unwrap();
        // Blocked: no onlining or offlining but the owner's.
        rec.blocked = true;
        assert_eq!(rec.may_offline(1), Err(EBUSY));
        rec.owner_offlining = Some(1..2);
        rec.may_offline(1).unwrap();
        rec.blocks[0].state = Some(BlockState::Offline);
        assert_eq!(rec.may_online(&geo, 0), Err(EBUSY));
    }

    #[test]
    fn the_owners_failed_offlining_onlines_again() {
        let geo = geometry();
        let mut rec = Record::new();
        // Nothing accessible (the owner took every page before offlining).
        rec.add(&geo, 0..1, 0, 0).unwrap();
        rec.covered = true;
        assert_eq!(rec.may_online(&geo, 0), Err(EBUSY));
        // The kernel's rollback of the owner's offline_and_remove_memory: let through.
        rec.owner_offlining = Some(0..1);
        rec.may_online(&geo, 0).unwrap();
        // But not without the online-page callback, which keeps the taken pages offline.
        rec.covered = false;
        assert_eq!(rec.may_online(&geo, 0), Err(EBUSY));
    }
}
