// SPDX-License-Identifier: GPL-2.0

//! Sub-block mode: the state of every Linux memory block of the region and which of its
//! sub-blocks are plugged.
//!
//! A memory block is added to the system whole, but only its plugged sub-blocks may be used:
//!
//! ```text
//!             plug + add                user space or auto-online
//!   Unused ---------------> Offline ------------------------------> Online {movable}
//!     ^                      |   ^  <------------------------------   |
//!     |     add failed:      |   |   offline (unplugged pages were   |
//!     +----------------------+   |   released at GoingOffline)       |
//!           unplug               |                                   |
//!                   GoingOnline -+-> Online      GoingOffline -------+-> Offline
//!                   (cancel: back to Offline)    (cancel: back to Online)
//! ```
//!
//! Each block has a bitmap of plugged sub-blocks: the driver's plan, and what the device backs.
//! Which pages the kernel may use is the device region's record
//! ([`kernel::memory_hotplug::SystemRamRegion`]), changed together with each `PLUG` and
//! `UNPLUG`: it keeps unplugged sub-blocks offline when a block is onlined and hands a newly
//! plugged sub-block of an online block to the kernel at once. Blocks in a transition
//! (`GoingOnline`, `GoingOffline`) are left alone by the run loop until the memory notifier
//! reports the outcome.
//!
//! With memmap-on-memory, the first `memmap_sbs` sub-blocks of an added block hold its memmap:
//! they are plugged before the block is added and unplugged only after it is removed. A block
//! that is removed but still has plugged sub-blocks (`Unused` with plugged sub-blocks) is
//! unplugged before anything else.

use core::num::{
    NonZeroU64,
    NonZeroUsize, //
};
use kernel::{
    bitmap::BitmapVec,
    prelude::*, //
};

/// The state of one memory block of the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockState {
    /// Not added to the system.
    Unused,
    /// Added and offline.
    Offline,
    /// Being onlined.
    GoingOnline,
    /// Online, in `ZONE_MOVABLE` or a kernel zone.
    Online { movable: bool },
    /// Being offlined.
    GoingOffline { movable: bool },
}

impl BlockState {
    /// Whether the block is added to the system.
    pub(crate) fn is_added(self) -> bool {
        self != BlockState::Unused
    }

    /// Whether the block's plugged pages belong to the page allocator (online, or being
    /// offlined).
    pub(crate) fn is_online(self) -> bool {
        matches!(
            self,
            BlockState::Online { .. } | BlockState::GoingOffline { .. }
        )
    }
}

/// One memory block: its state and its plugged sub-blocks.
struct Block {
    state: BlockState,
    plugged: BitmapVec,
    /// Number of plugged sub-blocks.
    nr_plugged: usize,
}

/// The kind of an added block, for the order of unplugging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Removed from the system but still plugged (e.g. the memmap sub-blocks).
    Removed,
    Offline,
    Movable,
    Kernel,
}

impl Class {
    /// The class of a block in `state`; `None` if it is not added or in a transition.
    fn of(state: BlockState) -> Option<Class> {
        match state {
            BlockState::Unused => Some(Class::Removed),
            BlockState::Offline => Some(Class::Offline),
            BlockState::Online { movable: true } => Some(Class::Movable),
            BlockState::Online { movable: false } => Some(Class::Kernel),
            _ => None,
        }
    }
}

/// A memory event, as the block states see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    GoingOnline,
    Online { movable: bool },
    CancelOnline,
    GoingOffline,
    Offline,
    CancelOffline,
}

/// The sub-block state of a region: blocks from `first` on, growing with the usable region.
pub(crate) struct SubBlocks {
    /// Address of block 0: the first memory-block aligned, hotpluggable address of the region.
    first: u64,
    /// End of the region.
    end: u64,
    mb_size: NonZeroU64,
    sb_size: NonZeroU64,
    sbs_per_mb: NonZeroUsize,
    /// Grown with the usable region, which may reach a region of any size: kvmalloc, as kmalloc
    /// of more than 4 MiB warns.
    blocks: KVVec<Block>,
    /// Number of plugged sub-blocks in all blocks.
    nr_plugged: u64,
    /// Sub-blocks at the start of each added block that hold its memmap.
    memmap_sbs: usize,
}

impl SubBlocks {
    /// The state of a region whose memory blocks of `mb_size` start at `first` (aligned) and
    /// end before `end`, with sub-blocks of `sb_size` (which divides `mb_size`); the first
    /// `memmap_sbs` sub-blocks of an added block hold its memmap.
    pub(crate) fn new(
        first: u64,
        end: u64,
        mb_size: NonZeroU64,
        sb_size: NonZeroU64,
        memmap_sbs: usize,
    ) -> Self {
        Self {
            first,
            end,
            mb_size,
            sb_size,
            sbs_per_mb: NonZeroUsize::new((mb_size.get() / sb_size) as usize)
                .unwrap_or(NonZeroUsize::MIN),
            blocks: KVVec::new(),
            nr_plugged: 0,
            memmap_sbs,
        }
    }

    /// Sub-blocks at the start of each added block that hold its memmap.
    pub(crate) fn memmap_sbs(&self) -> usize {
        self.memmap_sbs
    }

    /// Size of a sub-block.
    pub(crate) fn sb_size(&self) -> NonZeroU64 {
        self.sb_size
    }

    /// Size of a memory block.
    pub(crate) fn mb_size(&self) -> NonZeroU64 {
        self.mb_size
    }

    /// Sub-blocks per memory block.
    pub(crate) fn sbs_per_mb(&self) -> NonZeroUsize {
        self.sbs_per_mb
    }

    /// Number of blocks tracked.
    pub(crate) fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Tracks every whole block below `usable_end` (and the region's end). The usable region
    /// only grows while the driver is bound.
    pub(crate) fn grow(&mut self, usable_end: u64) -> Result {
        let end = usable_end.min(self.end);
        let want = (end.saturating_sub(self.first) / self.mb_size) as usize;
        while self.blocks.len() < want {
            let plugged = BitmapVec::new(self.sbs_per_mb.get(), GFP_KERNEL)?;
            self.blocks.push(
                Block {
                    state: BlockState::Unused,
                    plugged,
                    nr_plugged: 0,
                },
                GFP_KERNEL,
            )?;
        }
        Ok(())
    }

    /// Address of block `mb`.
    pub(crate) fn block_addr(&self, mb: usize) -> u64 {
        self.first + mb as u64 * self.mb_size.get()
    }

    /// The block containing `addr`, if tracked.
    pub(crate) fn block_of(&self, addr: u64) -> Option<usize> {
        let mb = (addr.checked_sub(self.first)? / self.mb_size) as usize;
        (mb < self.blocks.len()).then_some(mb)
    }

    /// The state of block `mb`.
    pub(crate) fn state(&self, mb: usize) -> BlockState {
        self.blocks.get(mb).map_or(BlockState::Unused, |b| b.state)
    }

    /// Sets the state of block `mb`.
    pub(crate) fn set_state(&mut self, mb: usize, state: BlockState) {
        if let Some(b) = self.blocks.get_mut(mb) {
            b.state = state;
        }
    }

    /// Bytes plugged in all blocks.
    pub(crate) fn plugged_bytes(&self) -> u64 {
        self.nr_plugged * self.sb_size.get()
    }

    /// Number of plugged sub-blocks of block `mb`.
    pub(crate) fn nr_plugged(&self, mb: usize) -> usize {
        self.blocks.get(mb).map_or(0, |b| b.nr_plugged)
    }

    /// Whether block `mb` has plugged and unplugged sub-blocks.
    pub(crate) fn is_partial(&self, mb: usize) -> bool {
        let n = self.nr_plugged(mb);
        n > 0 && n < self.sbs_per_mb.get()
    }

    /// An added block with nothing plugged but its memmap, to be removed.
    pub(crate) fn next_empty_added(&self) -> Option<usize> {
        (0..self.blocks.len()).find(|&mb| {
            matches!(
                self.state(mb),
                BlockState::Offline | BlockState::Online { .. }
            ) && self.nr_plugged(mb) <= self.memmap_sbs
        })
    }

    /// A block that is not added but has plugged sub-blocks, to be unplugged.
    pub(crate) fn next_plugged_not_added(&self) -> Option<usize> {
        (0..self.blocks.len())
            .find(|&mb| self.state(mb) == BlockState::Unused && self.nr_plugged(mb) > 0)
    }

    /// The last run of plugged sub-blocks of block `mb` below sub-block `below`, at most `max`
    /// long (its highest part), as `(sb, count)`; never the memmap of an added block.
    pub(crate) fn last_plugged_run(
        &self,
        mb: usize,
        below: usize,
        max: usize,
    ) -> Option<(usize, usize)> {
        let below = below.min(self.sbs_per_mb.get());
        let floor = if self.state(mb).is_added() {
            self.memmap_sbs
        } else {
            0
        };
        let last = (floor..below).rev().find(|&sb| self.is_plugged(mb, sb))?;
        let first = (floor..=last)
            .rev()
            .take(max)
            .take_while(|&sb| self.is_plugged(mb, sb))
            .last()?;
        Some((first, last + 1 - first))
    }

    /// The unplug classes in the order they are tried, as the C driver does: removed blocks
    /// and offline blocks (partly plugged, then full) cost nothing to unplug; online ones need
    /// their pages migrated away, movable before kernel (more reliable, and kernel memory is
    /// scarcer), and partly plugged before full (so that whole blocks can go).
    const UNPLUG_ORDER: [(Class, bool); 8] = [
        (Class::Removed, true),
        (Class::Removed, false),
        (Class::Offline, true),
        (Class::Offline, false),
        (Class::Movable, true),
        (Class::Kernel, true),
        (Class::Movable, false),
        (Class::Kernel, false),
    ];

    /// The next block to unplug from after `cursor` (a position this returned before, `None`
    /// to start), highest address first within each class of [`Self::UNPLUG_ORDER`]; with
    /// `online` false, offline blocks only. Each block comes at most once per walk.
    pub(crate) fn next_unplug(
        &self,
        cursor: Option<(usize, usize)>,
        online: bool,
    ) -> Option<(usize, usize)> {
        let classes = if online { 8 } else { 4 };
        let (first_class, mut below) = match cursor {
            Some((c, mb)) => (c, mb),
            None => (0, self.blocks.len()),
        };
        for c in first_class..classes {
            let (class, partial) = Self::UNPLUG_ORDER[c];
            if let Some(mb) = (0..below).rev().find(|&mb| {
                let n = self.nr_plugged(mb);
                n > 0
                    && (n < self.sbs_per_mb.get()) == partial
                    && Class::of(self.state(mb)) == Some(class)
            }) {
                return Some((c, mb));
            }
            below = self.blocks.len();
        }
        None
    }

    /// Whether sub-block `sb` of block `mb` is plugged.
    pub(crate) fn is_plugged(&self, mb: usize, sb: usize) -> bool {
        self.blocks
            .get(mb)
            .is_some_and(|b| sb < self.sbs_per_mb.get() && b.plugged.next_bit(sb) == Some(sb))
    }

    /// Marks `count` sub-blocks of block `mb` from `sb` on as plugged (or unplugged).
    pub(crate) fn set_plugged(&mut self, mb: usize, sb: usize, count: usize, plugged: bool) {
        let sbs = self.sbs_per_mb.get();
        let Some(b) = self.blocks.get_mut(mb) else {
            return;
        };
        for i in sb..(sb + count).min(sbs) {
            let was = b.plugged.next_bit(i) == Some(i);
            if was == plugged {
                continue;
            }
            if plugged {
                b.plugged.set_bit(i);
                b.nr_plugged += 1;
                self.nr_plugged += 1;
            } else {
                b.plugged.clear_bit(i);
                b.nr_plugged -= 1;
                self.nr_plugged -= 1;
            }
        }
    }

    /// The first run of unplugged sub-blocks of block `mb`, at most `max` long, as
    /// `(sb, count)`.
    pub(crate) fn unplugged_run(&self, mb: usize, max: usize) -> Option<(usize, usize)> {
        let b = self.blocks.get(mb)?;
        let sb = b.plugged.next_zero_bit(0)?;
        let sbs = self.sbs_per_mb.get();
        let run_end = if sb + 1 < sbs {
            b.plugged.next_bit(sb + 1).unwrap_or(sbs)
        } else {
            sbs
        };
        let count = (run_end - sb).min(max);
        (count > 0).then_some((sb, count))
    }

    /// The runs of unplugged sub-blocks of block `mb`, as `(sb, count)`.
    pub(crate) fn unplugged_runs(&self, mb: usize) -> UnpluggedRuns<'_> {
        UnpluggedRuns {
            sbm: self,
            mb,
            next: 0,
        }
    }

    /// A partly plugged block to plug more sub-blocks into, not in a transition: online kernel
    /// blocks first (their memory cannot be unplugged easily anyway), then online movable ones,
    /// then offline ones, as the C driver does. Not an offline block with only its memmap
    /// plugged: nothing could online it (the region vetoes a block with nothing else
    /// accessible), and sub-blocks plugged into it would keep it offline for good, since only
    /// adding memory onlines it by itself. The next step's tidying removes it, and it is added
    /// again with more than its memmap.
    pub(crate) fn next_partial(&self) -> Option<usize> {
        let order = [
            BlockState::Online { movable: false },
            BlockState::Online { movable: true },
            BlockState::Offline,
        ];
        order.iter().find_map(|want| {
            (0..self.blocks.len()).find(|&mb| {
                self.state(mb) == *want
                    && self.is_partial(mb)
                    && !(*want == BlockState::Offline && self.nr_plugged(mb) <= self.memmap_sbs)
            })
        })
    }

    /// Whether block `mb` is not added and has nothing plugged.
    fn is_free(&self, mb: usize) -> bool {
        self.state(mb) == BlockState::Unused && self.nr_plugged(mb) == 0
    }

    /// The first run of unused blocks with nothing plugged, at most `max` long, as
    /// `(mb, count)`.
    pub(crate) fn unused_run(&self, max: usize) -> Option<(usize, usize)> {
        let mb = (0..self.blocks.len()).find(|&mb| self.is_free(mb))?;
        let count = (mb..self.blocks.len())
            .take(max)
            .take_while(|&i| self.is_free(i))
            .count();
        (count > 0).then_some((mb, count))
    }

    /// Applies a memory event to block `mb`. Returns the state it had, or `Err` with that state
    /// if the event does not fit it.
    pub(crate) fn transition(
        &mut self,
        mb: usize,
        t: Transition,
    ) -> Result<BlockState, BlockState> {
        let old = self.state(mb);
        let new = match (old, t) {
            (BlockState::Offline, Transition::GoingOnline) => BlockState::GoingOnline,
            (BlockState::GoingOnline, Transition::Online { movable }) => {
                BlockState::Online { movable }
            }
            (BlockState::GoingOnline, Transition::CancelOnline) => BlockState::Offline,
            (BlockState::Online { movable }, Transition::GoingOffline) => {
                BlockState::GoingOffline { movable }
            }
            (BlockState::GoingOffline { .. }, Transition::Offline) => BlockState::Offline,
            (BlockState::GoingOffline { movable }, Transition::CancelOffline) => {
                BlockState::Online { movable }
            }
            _ => return Err(old),
        };
        self.set_state(mb, new);
        Ok(old)
    }
}

/// Iterator over the runs of unplugged sub-blocks of a block.
pub(crate) struct UnpluggedRuns<'a> {
    sbm: &'a SubBlocks,
    mb: usize,
    next: usize,
}

impl Iterator for UnpluggedRuns<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        let sbs = self.sbm.sbs_per_mb.get();
        let b = self.sbm.blocks.get(self.mb)?;
        if self.next >= sbs {
            return None;
        }
        let sb = b.plugged.next_zero_bit(self.next)?;
        let end = if sb + 1 < sbs {
            b.plugged.next_bit(sb + 1).unwrap_or(sbs)
        } else {
            sbs
        };
        self.next = end;
        Some((sb, end - sb))
    }
}

#[kunit_tests(virtio_mem_rust_sbm)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn sbm() -> SubBlocks {
        let mb = NonZeroU64::new(128 * MIB).unwrap();
        let sb = NonZeroU64::new(2 * MIB).unwrap();
        let mut s = SubBlocks::new(4 * GIB, 8 * GIB, mb, sb, 0);
        s.grow(5 * GIB).unwrap();
        s
    }

    #[test]
    fn grows_with_the_usable_region() {
        let mut s = sbm();
        assert_eq!(s.len(), 8);
        assert_eq!(s.sbs_per_mb().get(), 64);
        s.grow(5 * GIB + 100 * MIB).unwrap();
        assert_eq!(s.len(), 8);
        s.grow(64 * GIB).unwrap();
        assert_eq!(s.len(), 32);
        assert_eq!(s.block_of(4 * GIB + 130 * MIB), Some(1));
        assert_eq!(s.block_of(8 * GIB), None);
        assert_eq!(s.block_of(GIB), None);
        assert_eq!(s.block_addr(31), 8 * GIB - 128 * MIB);
    }

    #[test]
    fn plugged_sub_blocks_are_counted() {
        let mut s = sbm();
        s.set_plugged(0, 0, 64, true);
        s.set_plugged(1, 0, 1, true);
        assert_eq!(s.plugged_bytes(), 130 * MIB);
        assert!(!s.is_partial(0));
        assert!(s.is_partial(1));
        // Setting again changes nothing; out of range is ignored.
        s.set_plugged(1, 0, 1, true);
        s.set_plugged(1, 63, 5, true);
        assert_eq!(s.nr_plugged(1), 2);
        s.set_plugged(1, 63, 1, false);
        assert_eq!(s.plugged_bytes(), 130 * MIB);
        assert!(s.is_plugged(1, 0) && !s.is_plugged(1, 1) && !s.is_plugged(1, 64));
    }

    #[test]
    fn an_offline_block_with_only_its_memmap_is_not_plugged_into() {
        let mb = NonZeroU64::new(128 * MIB).unwrap();
        let sb = NonZeroU64::new(2 * MIB).unwrap();
        let mut s = SubBlocks::new(4 * GIB, 5 * GIB, mb, sb, 1);
        s.grow(5 * GIB).unwrap();
        s.set_plugged(0, 0, 1, true);
        s.set_state(0, BlockState::Offline);
        assert_eq!(s.next_partial(), None);
        // Online (user space onlined it after more was accessible), or more than its memmap.
        s.set_state(0, BlockState::Online { movable: true });
        assert_eq!(s.next_partial(), Some(0));
        s.set_state(0, BlockState::Offline);
        s.set_plugged(0, 1, 1, true);
        assert_eq!(s.next_partial(), Some(0));
    }

    #[test]
    fn finds_unplugged_runs() {
        let mut s = sbm();
        assert_eq!(s.unplugged_run(0, 100), Some((0, 64)));
        assert_eq!(s.unplugged_run(0, 10), Some((0, 10)));
        s.set_plugged(0, 0, 3, true);
        s.set_plugged(0, 10, 2, true);
        assert_eq!(s.unplugged_run(0, 100), Some((3, 7)));
        let mut runs = s.unplugged_runs(0);
        assert_eq!(runs.next(), Some((3, 7)));
        assert_eq!(runs.next(), Some((12, 52)));
        assert_eq!(runs.next(), None);
        s.set_plugged(0, 0, 64, true);
        assert_eq!(s.unplugged_run(0, 100), None);
        assert_eq!(s.unplugged_runs(0).next(), None);
        s.set_plugged(0, 63, 1, false);
        assert_eq!(s.unplugged_run(0, 100), Some((63, 1)));
    }

    #[test]
    fn plugs_partial_blocks_first_kernel_then_movable_then_offline() {
        let mut s = sbm();
        assert_eq!(s.next_partial(), None);
        assert_eq!(s.unused_run(3), Some((0, 3)));
        for mb in 0..3 {
            s.set_plugged(mb, 0, 1, true);
        }
        s.set_state(0, BlockState::Offline);
        s.set_state(1, BlockState::Online { movable: true });
        s.set_state(2, BlockState::Online { movable: false });
        assert_eq!(s.next_partial(), Some(2));
        s.set_plugged(2, 0, 64, true);
        assert_eq!(s.next_partial(), Some(1));
        s.set_state(1, BlockState::GoingOffline { movable: true });
        assert_eq!(s.next_partial(), Some(0));
        s.set_state(0, BlockState::GoingOnline);
        assert_eq!(s.next_partial(), None);
        assert_eq!(s.unused_run(100), Some((3, 5)));
        s.set_state(5, BlockState::Offline);
        assert_eq!(s.unused_run(100), Some((3, 2)));
    }

    #[test]
    fn unplugs_offline_then_movable_then_kernel_highest_first() {
        let mut s = sbm();
        for mb in 0..6 {
            s.set_plugged(mb, 0, 64, true);
        }
        s.set_state(0, BlockState::Online { movable: false });
        s.set_state(1, BlockState::Online { movable: true });
        s.set_state(2, BlockState::Online { movable: true });
        s.set_state(3, BlockState::Offline);
        s.set_state(4, BlockState::Offline);
        s.set_state(5, BlockState::GoingOffline { movable: true });
        s.set_plugged(1, 60, 4, false);
        let mut order = KVec::new();
        let mut cursor = None;
        while let Some(c) = s.next_unplug(cursor, true) {
            order.push(c.1, GFP_KERNEL).unwrap();
            cursor = Some(c);
        }
        assert_eq!(&order[..], &[4, 3, 1, 2, 0]);
        assert_eq!(s.next_unplug(None, false), Some((3, 4)));
        assert_eq!(s.next_unplug(Some((3, 3)), false), None);
        assert_eq!(s.last_plugged_run(1, 64, 100), Some((0, 60)));
        assert_eq!(s.last_plugged_run(1, 64, 5), Some((55, 5)));
        assert_eq!(s.last_plugged_run(1, 55, 1), Some((54, 1)));
        assert_eq!(s.last_plugged_run(1, 0, 1), None);
        assert_eq!(s.last_plugged_run(6, 64, 5), None);
        assert_eq!(s.next_empty_added(), None);
        s.set_plugged(3, 0, 64, false);
        assert_eq!(s.next_empty_added(), Some(3));
        // A removed block with something plugged goes first, and is not plugged into.
        s.set_state(3, BlockState::Unused);
        s.set_plugged(3, 0, 1, true);
        assert_eq!(s.next_unplug(None, true), Some((0, 3)));
        assert_eq!(s.next_plugged_not_added(), Some(3));
        assert_eq!(s.unused_run(100), Some((6, 2)));
    }

    #[test]
    fn keeps_the_memmap_of_added_blocks() {
        let mb = NonZeroU64::new(128 * MIB).unwrap();
        let sb = NonZeroU64::new(2 * MIB).unwrap();
        let mut s = SubBlocks::new(4 * GIB, 8 * GIB, mb, sb, 1);
        s.grow(5 * GIB).unwrap();
        s.set_plugged(0, 0, 64, true);
        s.set_state(0, BlockState::Online { movable: true });
        assert_eq!(s.last_plugged_run(0, 64, 100), Some((1, 63)));
        s.set_plugged(0, 1, 63, false);
        assert_eq!(s.last_plugged_run(0, 64, 100), None);
        // Only the memmap is left: the block is empty and is removed; then the memmap goes.
        assert_eq!(s.next_empty_added(), Some(0));
        s.set_state(0, BlockState::Unused);
        assert_eq!(s.last_plugged_run(0, 64, 100), Some((0, 1)));
        assert_eq!(s.next_unplug(None, false), Some((0, 0)));
    }

    #[test]
    fn follows_memory_events() {
        let mut s = sbm();
        assert_eq!(
            s.transition(0, Transition::GoingOnline),
            Err(BlockState::Unused)
        );
        s.set_state(0, BlockState::Offline);
        assert!(s.transition(0, Transition::GoingOnline).is_ok());
        assert!(s.transition(0, Transition::CancelOnline).is_ok());
        assert_eq!(s.state(0), BlockState::Offline);
        assert!(s.transition(0, Transition::GoingOnline).is_ok());
        assert!(s
            .transition(0, Transition::Online { movable: true })
            .is_ok());
        assert_eq!(s.state(0), BlockState::Online { movable: true });
        assert!(s.transition(0, Transition::GoingOffline).is_ok());
        assert!(s.transition(0, Transition::CancelOffline).is_ok());
        assert_eq!(s.state(0), BlockState::Online { movable: true });
        assert!(s.transition(0, Transition::GoingOffline).is_ok());
        assert!(s.transition(0, Transition::Offline).is_ok());
        assert_eq!(s.state(0), BlockState::Offline);
        // A cancel of a change never seen (another notifier vetoed it first) does not fit.
        assert_eq!(
            s.transition(0, Transition::CancelOnline),
            Err(BlockState::Offline)
        );
    }
}
