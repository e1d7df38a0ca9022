// SPDX-License-Identifier: GPL-2.0

//! Plug planning: which part of the region to plug and add next.
//!
//! The driver plugs and adds memory in units: a Linux memory block in sub-block mode, a big
//! block in big-block mode. A unit is plugged completely before it is added, so every page the
//! kernel gets is backed by the device; plugged units form one run `[first, added_end)` from the
//! first unit-aligned address of the region.

use core::num::NonZeroU64;
use kernel::prelude::*;

/// The fixed geometry of a device's region, in bytes and physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// First unit-aligned address of the region that the kernel can hotplug.
    pub(crate) first: u64,
    /// End of the region (exclusive).
    pub(crate) end: u64,
    /// Size of a unit (memory block or big block), a multiple of the device block size.
    pub(crate) unit: NonZeroU64,
    /// Size of a device block.
    pub(crate) block_size: NonZeroU64,
}

/// At most this much is plugged with one request and added with one call.
pub(crate) const MAX_BATCH: u64 = 8 << 30;

impl Geometry {
    /// The geometry of a region `[addr, addr + size)` whose units are `unit` bytes, of which
    /// the kernel can hotplug from `pluggable_start` on. `None` if a size is zero or the unit
    /// is not a multiple of the block size.
    pub(crate) fn new(
        addr: u64,
        size: u64,
        unit: u64,
        block_size: u64,
        pluggable_start: u64,
    ) -> Option<Self> {
        let unit = NonZeroU64::new(unit)?;
        let block_size = NonZeroU64::new(block_size)?;
        if unit.get() % block_size != 0 {
            return None;
        }
        let start = addr.max(pluggable_start);
        let first = start.checked_add((unit.get() - start % unit) % unit)?;
        Some(Self {
            first,
            end: addr.checked_add(size)?,
            unit,
            block_size,
        })
    }

    /// The number of device blocks in `size` bytes, if one request can carry them.
    pub(crate) fn nb_blocks(&self, size: u64) -> Option<u16> {
        u16::try_from(size / self.block_size).ok()
    }

    /// The most units plugged with one request and added with one call: one request carries at
    /// most `u16::MAX` device blocks, and a batch is at most [`MAX_BATCH`] (but one unit).
    pub(crate) fn max_units(&self) -> u64 {
        let per_request = NonZeroU64::new(self.unit.get() / self.block_size)
            .map_or(1, |blocks_per_unit| {
                (u64::from(u16::MAX) / blocks_per_unit).max(1)
            });
        per_request.min((MAX_BATCH / self.unit).max(1))
    }

    /// The next range to plug, as `(start, size)`, given that `[first, added_end)` is plugged
    /// and added, the device asks for `requested` bytes and allows plugging below
    /// `usable_end`. `None` when nothing (more) can be plugged: the request is met to within a
    /// unit, or the usable region or the region is full.
    pub(crate) fn next_plug(
        &self,
        added_end: u64,
        requested: u64,
        usable_end: u64,
    ) -> Option<(u64, u64)> {
        let unit = self.unit;
        let plugged = added_end.saturating_sub(self.first);
        let want = requested - requested % unit;
        if plugged >= want {
            return None;
        }
        let room = usable_end.min(self.end).saturating_sub(added_end) / unit;
        let units = ((want - plugged) / unit).min(room).min(self.max_units());
        (units > 0).then(|| (added_end, units * unit.get()))
    }
}

#[kunit_tests(virtio_mem_rust_plug)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn geometry(addr: u64, unit: u64, block_size: u64, pluggable_start: u64) -> Geometry {
        Geometry::new(addr, 16 * GIB, unit, block_size, pluggable_start).unwrap()
    }

    fn sbm() -> Geometry {
        geometry(4 * GIB, 128 * MIB, 2 * MIB, 0)
    }

    #[test]
    fn first_unit_is_aligned_and_pluggable() {
        assert_eq!(sbm().first, 4 * GIB);
        assert_eq!(
            geometry(4 * GIB + 64 * MIB, 128 * MIB, 2 * MIB, 0).first,
            4 * GIB + 128 * MIB
        );
        assert_eq!(
            geometry(4 * GIB, 128 * MIB, 2 * MIB, 6 * GIB + MIB).first,
            6 * GIB + 128 * MIB
        );
        assert_eq!(Geometry::new(0, GIB, 0, 2 * MIB, 0), None);
        assert_eq!(Geometry::new(0, GIB, 128 * MIB, 0, 0), None);
        assert_eq!(Geometry::new(0, GIB, 128 * MIB, 3 * MIB, 0), None);
    }

    #[test]
    fn plugs_toward_the_request_in_units() {
        let g = sbm();
        assert_eq!(g.next_plug(g.first, GIB, g.end), Some((4 * GIB, GIB)));
        assert_eq!(g.next_plug(5 * GIB, GIB, g.end), None);
        // 4G + 130M: whole units only, the last 2M stay unplugged.
        assert_eq!(
            g.next_plug(5 * GIB, 4 * GIB + 130 * MIB, g.end),
            Some((5 * GIB, 3 * GIB + 128 * MIB))
        );
        assert_eq!(
            g.next_plug(8 * GIB + 128 * MIB, 4 * GIB + 130 * MIB, g.end),
            None
        );
        // Below what is plugged: nothing to plug.
        assert_eq!(g.next_plug(8 * GIB, GIB, g.end), None);
    }

    #[test]
    fn respects_the_usable_region_and_the_region() {
        let g = sbm();
        assert_eq!(
            g.next_plug(g.first, 16 * GIB, 6 * GIB),
            Some((4 * GIB, 2 * GIB))
        );
        assert_eq!(g.next_plug(6 * GIB, 16 * GIB, 6 * GIB), None);
        assert_eq!(
            g.next_plug(g.first, 32 * GIB, 64 * GIB),
            Some((4 * GIB, MAX_BATCH))
        );
        assert_eq!(
            g.next_plug(12 * GIB, 32 * GIB, 64 * GIB),
            Some((12 * GIB, 8 * GIB))
        );
        assert_eq!(g.next_plug(20 * GIB, 32 * GIB, 64 * GIB), None);
    }

    #[test]
    fn batches_fit_one_request() {
        // 4 KiB device blocks: a request carries at most 65535 of them (< 256 MiB), so one unit.
        let g = geometry(4 * GIB, 128 * MIB, 4096, 0);
        assert_eq!(
            g.next_plug(g.first, 4 * GIB, g.end),
            Some((4 * GIB, 128 * MIB))
        );
        // Big blocks of 1 GiB: one block per unit.
        let g = geometry(4 * GIB, GIB, GIB, 0);
        assert_eq!(
            g.next_plug(g.first, 3 * GIB + 10 * MIB, g.end),
            Some((4 * GIB, 3 * GIB))
        );
    }
}
