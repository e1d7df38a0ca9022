// SPDX-License-Identifier: GPL-2.0

//! What a region records of its memory blocks ([`Record`]): which are added, their
//! [`BlockState`], and which of their granules are inaccessible (not backed by the device).

use super::geometry::{
    Geometry,
    Segment,
    Segments, //
};
use crate::{
    bitmap::BitmapVec,
    prelude::*, //
};
use core::ops::Range;

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

/// What the region knows of one of its memory blocks.
pub(super) struct Block {
    /// `None` while the block is not added.
    pub(super) state: Option<BlockState>,
    /// Going offline: the references of the inaccessible pages were dropped.
    pub(super) frozen: bool,
    /// Granules at the start of the block that hold its memmap (`memmap_on_memory`): always
    /// accessible while the block is added.
    memmap: usize,
    /// Inaccessible granules.
    off: BitmapVec,
    /// Of those, the ones taken from the page allocator while the block was online (as opposed
    /// to kept offline when it was onlined).
    pub(super) taken: BitmapVec,
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

    pub(super) fn is_off(&self, granule: usize) -> bool {
        self.off.next_bit(granule) == Some(granule)
    }

    pub(super) fn is_taken(&self, granule: usize) -> bool {
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
    pub(super) fn off_runs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
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
///
/// [`RegionInner`]: super::RegionInner
pub(in crate::memory_hotplug) struct Record {
    /// Up to the last added block of a region of any size: kvmalloc, as kmalloc of more than
    /// 4 MiB warns.
    pub(super) blocks: KVVec<Block>,
    /// Number of added blocks.
    pub(super) nr_added: usize,
    /// Number of inaccessible granules in added blocks.
    pub(super) nr_off: usize,
    /// Onlining and offlining by others is refused (while the owner gives memory back).
    pub(super) blocked: bool,
    /// The online-page callback dispatches pages of the region to it.
    pub(super) covered: bool,
    /// The owner is offlining these blocks itself (allowed while `blocked`).
    pub(super) owner_offlining: Option<Range<usize>>,
}

impl Record {
    pub(super) fn new() -> Self {
        Self {
            blocks: KVVec::new(),
            nr_added: 0,
            nr_off: 0,
            blocked: false,
            covered: false,
            owner_offlining: None,
        }
    }

    pub(super) fn state(&self, block: usize) -> Option<BlockState> {
        self.blocks.get(block).and_then(|b| b.state)
    }

    /// Records `blocks` as added, of which the first `accessible` granules (counted from the
    /// first block) are accessible and the first `memmap` granules of each block hold its
    /// memmap. Fails with `EEXIST` if one of them is added already, `EINVAL` if a block's memmap
    /// would be inaccessible, and `ENOMEM`; changing nothing.
    pub(super) fn add(
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
    pub(super) fn remove(&mut self, geo: &Geometry, blocks: Range<usize>) {
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
    pub(super) fn check_remove(&self, blocks: Range<usize>, offline_only: bool) -> Result {
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
    pub(super) fn parts(&self, segs: Segments) -> impl Iterator<Item = Segment> + '_ {
        segs.filter_map(move |s| self.clip(s))
    }

    /// Checks that every granule of `segs` but memmap ones may be made accessible (or, with
    /// `to_accessible` false, inaccessible): each is in an added block (`ENOENT`) that is not
    /// in a transition (`EAGAIN`) and not in that state already (`EINVAL`); and some granule
    /// is not memmap (`EINVAL`).
    pub(super) fn check_pages(&self, segs: Segments, to_accessible: bool) -> Result {
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
    pub(super) fn set_pages(&mut self, segs: Segments, accessible: bool) {
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
    pub(super) fn accessible(&self, segs: Segments) -> bool {
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
    ///
    /// [`SystemRamRegion::offline_and_remove_memory`]:
    ///     super::SystemRamRegion::offline_and_remove_memory
    pub(super) fn may_online(&self, geo: &Geometry, block: usize) -> Result {
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
    pub(super) fn may_offline(&self, block: usize) -> Result {
        if self.blocked && !self.owner_offlines(block) {
            return Err(EBUSY);
        }
        match self.state(block) {
            Some(BlockState::Online { .. }) => Ok(()),
            _ => Err(EBUSY),
        }
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
