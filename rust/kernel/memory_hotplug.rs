// SPDX-License-Identifier: GPL-2.0

//! Memory hotplug.
//!
//! C headers: [`include/linux/memory_hotplug.h`](srctree/include/linux/memory_hotplug.h),
//! [`include/linux/memory.h`](srctree/include/linux/memory.h).
//!
//! Queries about where and in which units memory can be hot(un)plugged, and the NUMA node of
//! hotplugged memory.

use crate::bindings;
use core::ops::RangeInclusive;

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

/// The size of a pageblock, the unit the page allocator groups pages by mobility in; the
/// smallest unit that can be reliably isolated for unplug.
pub fn pageblock_size() -> u64 {
    // SAFETY: `pageblock_nr_pages` has no preconditions and is fixed at boot.
    let pages = unsafe { bindings::pageblock_nr_pages() };
    pages as u64 * crate::page::PAGE_SIZE as u64
}
