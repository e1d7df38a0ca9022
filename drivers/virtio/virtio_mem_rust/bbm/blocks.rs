// SPDX-License-Identifier: GPL-2.0

//! Big-block mode: the state of every big block of the region.
//!
//! A big block (one or more Linux memory blocks) is plugged and added whole, and unplugged only
//! after it was removed whole. Any big block may go, not just the top one: offline ones first,
//! then movable, then kernel ones, highest address first within each class, as the C driver
//! picks them. A big block the device still backs but that is not added (adding it back after
//! a refused unplug failed) is tracked as such, so that it is added again or unplugged later.
//!
//! ```text
//!            PLUG, add               offline+remove, UNPLUG
//!   Unused ---------------> Added ---------------------------> Unused
//!                            |  ^
//!    UNPLUG refused,         |  | added back
//!    adding back failed      v  |
//!                          Plugged (not added) ---UNPLUG---> Unused
//! ```

use core::num::NonZeroU64;
use kernel::prelude::*;

/// The state of one big block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BbState {
    /// Neither plugged nor added.
    Unused,
    /// Plugged and added to the system.
    Added,
    /// Plugged but not added (adding it back failed): to be added again or unplugged.
    Plugged,
}

/// How a big block's memory is used, for the order of unplugging.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Usage {
    /// Plugged but not added: costs nothing to unplug.
    NotAdded,
    /// Added, every memory block offline.
    Offline,
    /// Some memory block online, all of them in `ZONE_MOVABLE`.
    Movable,
    /// Some memory block online in a kernel zone.
    Kernel,
}

/// The big blocks of a region: `first` (aligned) on, `bb_size` each, up to the region's end.
pub(crate) struct BigBlocks {
    first: u64,
    bb_size: NonZeroU64,
    /// One byte per big block of the region, however big: kvmalloc, as kmalloc of more than
    /// 4 MiB warns.
    states: KVVec<BbState>,
}

impl BigBlocks {
    /// The big blocks of `[first, end)`, `first` aligned to `bb_size`.
    pub(crate) fn new(first: u64, end: u64, bb_size: u64) -> Result<Self> {
        let bb_size = NonZeroU64::new(bb_size).ok_or(EINVAL)?;
        let n = (end.saturating_sub(first) / bb_size) as usize;
        Ok(Self {
            first,
            bb_size,
            states: KVVec::from_elem(BbState::Unused, n, GFP_KERNEL)?,
        })
    }

    /// Number of big blocks.
    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }

    /// Address of big block `i`.
    pub(crate) fn addr(&self, i: usize) -> u64 {
        self.first + i as u64 * self.bb_size.get()
    }

    /// State of big block `i`.
    pub(crate) fn state(&self, i: usize) -> BbState {
        self.states.get(i).copied().unwrap_or(BbState::Unused)
    }

    /// Sets the state of big blocks `i..i + n`.
    pub(crate) fn set(&mut self, i: usize, n: usize, state: BbState) {
        for s in self.states.iter_mut().skip(i).take(n) {
            *s = state;
        }
    }

    /// Bytes plugged (added or not).
    pub(crate) fn plugged_bytes(&self) -> u64 {
        self.states
            .iter()
            .filter(|&&s| s != BbState::Unused)
            .count() as u64
            * self.bb_size.get()
    }

    /// The first run of unused big blocks below `usable_end`, at most `max` long, as
    /// `(i, n)`.
    pub(crate) fn unused_run(&self, usable_end: u64, max: usize) -> Option<(usize, usize)> {
        let limit = self
            .states
            .len()
            .min((usable_end.saturating_sub(self.first) / self.bb_size) as usize);
        let i = (0..limit).find(|&i| self.states[i] == BbState::Unused)?;
        let n = (i..limit)
            .take(max)
            .take_while(|&j| self.states[j] == BbState::Unused)
            .count();
        Some((i, n))
    }

    /// A big block that is plugged but not added.
    pub(crate) fn next_plugged(&self) -> Option<usize> {
        self.states.iter().position(|&s| s == BbState::Plugged)
    }

    /// The next big block to unplug: the one of the lowest usage (as `usage` reports it for an
    /// added one; `None` while it cannot be unplugged now, e.g. being onlined), highest address
    /// first, not in `skip` (big blocks that failed this pass); with `online` false, offline or
    /// not added ones only.
    pub(crate) fn next_unplug(
        &self,
        online: bool,
        skip: &[usize],
        usage: impl Fn(u64) -> Option<Usage>,
    ) -> Option<(usize, Usage)> {
        let mut best: Option<(usize, Usage)> = None;
        for i in (0..self.states.len()).rev() {
            if skip.contains(&i) {
                continue;
            }
            let u = match self.states[i] {
                BbState::Unused => continue,
                BbState::Plugged => Usage::NotAdded,
                BbState::Added => match usage(self.addr(i)) {
                    Some(u) => u,
                    None => continue,
                },
            };
            if !online && u > Usage::Offline {
                continue;
            }
            if best.is_none_or(|(_, b)| u < b) {
                best = Some((i, u));
            }
        }
        best
    }
}

#[kunit_tests(virtio_mem_rust_bbm)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn plugs_the_lowest_unused_run() {
        let mut b = BigBlocks::new(4 * GIB, 12 * GIB, GIB).unwrap();
        assert_eq!(b.len(), 8);
        assert_eq!(b.unused_run(12 * GIB, 3), Some((0, 3)));
        assert_eq!(b.unused_run(6 * GIB, 8), Some((0, 2)));
        b.set(0, 2, BbState::Added);
        b.set(3, 1, BbState::Plugged);
        assert_eq!(b.unused_run(12 * GIB, 8), Some((2, 1)));
        assert_eq!(b.plugged_bytes(), 3 * GIB);
        assert_eq!(b.next_plugged(), Some(3));
        assert_eq!(b.addr(3), 7 * GIB);
    }

    #[test]
    fn unplugs_cheapest_first_highest_first() {
        let mut b = BigBlocks::new(4 * GIB, 12 * GIB, GIB).unwrap();
        b.set(0, 5, BbState::Added);
        // 0: kernel, 1: movable, 2: offline, 3: movable, 4: being onlined.
        let usage = |addr: u64| match (addr - 4 * GIB) / GIB {
            0 => Some(Usage::Kernel),
            1 | 3 => Some(Usage::Movable),
            2 => Some(Usage::Offline),
            _ => None,
        };
        assert_eq!(b.next_unplug(true, &[], usage), Some((2, Usage::Offline)));
        assert_eq!(b.next_unplug(true, &[2], usage), Some((3, Usage::Movable)));
        assert_eq!(
            b.next_unplug(true, &[2, 3], usage),
            Some((1, Usage::Movable))
        );
        assert_eq!(
            b.next_unplug(true, &[1, 2, 3], usage),
            Some((0, Usage::Kernel))
        );
        // Only offline memory may go: the offline one below the online ones is found.
        assert_eq!(b.next_unplug(false, &[], usage), Some((2, Usage::Offline)));
        assert_eq!(b.next_unplug(false, &[2], usage), None);
        // A plugged block that is not added goes before all.
        b.set(6, 1, BbState::Plugged);
        assert_eq!(b.next_unplug(false, &[], usage), Some((6, Usage::NotAdded)));
    }
}
