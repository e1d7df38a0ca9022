// SPDX-License-Identifier: GPL-2.0

//! The address arithmetic of a region: its memory blocks and granules ([`Geometry`]), and the
//! runs of granules ([`Segment`]) a range of it is made of ([`Segments`]).

use crate::{
    page::{
        PAGE_SHIFT,
        PAGE_SIZE, //
    },
    prelude::*, //
};
use core::ops::Range;

/// The fixed geometry of a region: where its memory blocks and granules are.
#[derive(Clone, Copy, Debug)]
pub(in crate::memory_hotplug) struct Geometry {
    /// Start of the region.
    pub(super) start: u64,
    /// End of the region (exclusive).
    pub(super) end: u64,
    /// Address of block 0: `start` rounded down to a memory block.
    base: u64,
    /// Size of a memory block.
    pub(super) mb_size: u64,
    /// Size of a granule (a power of two that divides `mb_size`).
    pub(super) granule: u64,
    /// `log2(mb_size)` and `log2(granule)`: indices are computed with shifts (no division can
    /// panic).
    mb_shift: u32,
    pub(super) g_shift: u32,
    /// Granules per memory block.
    pub(super) per_block: usize,
}

/// A run of granules inside one memory block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Segment {
    pub(super) block: usize,
    pub(super) first: usize,
    pub(super) count: usize,
}

impl Geometry {
    pub(super) fn new(start: u64, size: u64, mb_size: u64, granule: u64) -> Result<Self> {
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

    pub(super) fn block_addr(&self, block: usize) -> u64 {
        self.base + block as u64 * self.mb_size
    }

    /// The block holding `addr`, if it is in the region.
    pub(super) fn block_of(&self, addr: u64) -> Option<usize> {
        (self.start..self.end)
            .contains(&addr)
            .then(|| ((addr - self.base) >> self.mb_shift) as usize)
    }

    /// The blocks of `[start, start + size)`: whole memory blocks inside the region.
    pub(super) fn blocks(&self, start: u64, size: u64) -> Result<Range<usize>> {
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
    pub(super) fn segments(&self, start: u64, size: u64) -> Result<Segments> {
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
    pub(super) fn pfns(&self, s: Segment) -> (usize, usize) {
        let addr = self.block_addr(s.block) + s.first as u64 * self.granule;
        (
            (addr >> PAGE_SHIFT) as usize,
            ((s.count as u64 * self.granule) >> PAGE_SHIFT) as usize,
        )
    }
}

/// The segments of a range; see [`Geometry::segments`].
#[derive(Clone)]
pub(super) struct Segments {
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
