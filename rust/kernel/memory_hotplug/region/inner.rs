// SPDX-License-Identifier: GPL-2.0

//! [`RegionInner`], the locking core of a region: its record behind the lock that onlining and
//! offlining of its memory wait for, the memory notifier and online-page callback that consult
//! it, and the page hand-overs done under it.

use super::{
    geometry::{
        Geometry,
        Segment,
        Segments, //
    },
    record::{
        BlockState,
        Record, //
    }, //
};
use crate::{
    bindings,
    memory_hotplug::{
        pages,
        MemoryEvent,
        MemoryNotification,
        MemoryNotifierHandler, //
    },
    page::{
        PAGE_SHIFT,
        PAGE_SIZE, //
    },
    prelude::*,
    sync::{
        Arc,
        Mutex, //
    }, //
};
use core::ops::Range;

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
///
/// [`SystemRamRegion`]: super::SystemRamRegion
#[pin_data]
pub(in crate::memory_hotplug) struct RegionInner {
    pub(super) geo: Geometry,
    #[pin]
    pub(super) record: Mutex<Record>,
}

impl RegionInner {
    /// Whether `[start, start + size)` lies in the region.
    pub(in crate::memory_hotplug) fn contains(&self, start: u64, size: u64) -> bool {
        start >= self.geo.start && start.saturating_add(size) <= self.geo.end
    }

    /// Onlines the `1 << order` pages from `pfn` on, part of a block of the region being onlined,
    /// for the online-page callback: accessible granules go to the page allocator, inaccessible
    /// ones stay offline as memmap initialization left them (`PageOffline()`, one reference).
    pub(in crate::memory_hotplug) fn online_pages(&self, pfn: usize, order: u32) {
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

impl RegionInner {
    /// Takes the pages of `segs` in online blocks from the page allocator (see [`pages::take`]).
    /// All or nothing: on failure, what was taken is given back.
    ///
    /// # Safety
    ///
    /// The caller holds a [`pages::NoHotplug`] and the record's lock (`rec`), every granule of
    /// `segs` is accessible in an added block that is not in a transition, and on success the
    /// caller marks them inaccessible before unlocking.
    pub(super) unsafe fn take_from_kernel(&self, rec: &Record, segs: Segments) -> Result {
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
    pub(super) unsafe fn hand_over(&self, rec: &Record, segs: Segments) {
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
