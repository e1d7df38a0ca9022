// SPDX-License-Identifier: GPL-2.0

//! The page-level steps behind a [`super::SystemRamRegion`]'s inaccessible pages.
//!
//! Every function here acts on the `struct page`s of a range that the caller's region records
//! as its own (see the region's invariants): that record, not the pages' flags, says who owns
//! them. The flags are kept as the kernel expects them (`PageOffline()` for pages the page
//! allocator must not have, which dump tools and `/proc/kcore` skip).

use crate::{
    bindings,
    prelude::*, //
};

/// Holds off onlining and offlining of memory anywhere (the memory hotplug lock, for reading)
/// while it lives.
///
/// Taking pages with [`take`] needs it: offlining isolates a block's pageblocks before it tells
/// the memory notifiers, and an `alloc_contig_range()` that fails to isolate a range in that
/// window undoes the isolation of every pageblock of the range, offlining's too, after which
/// offlining retries forever. Take it before any lock that a memory notifier or the online-page
/// callback takes (those run with the hotplug lock held for writing), and never around setting
/// or restoring the online-page callback (which take it themselves).
pub(super) struct NoHotplug(());

impl NoHotplug {
    pub(super) fn new() -> Self {
        // SAFETY: No preconditions; released in `drop`.
        unsafe { bindings::get_online_mems() };
        Self(())
    }
}

impl Drop for NoHotplug {
    fn drop(&mut self) {
        // SAFETY: Taken in `new`.
        unsafe { bindings::put_online_mems() };
    }
}

/// Calls `f` with the `struct page` of each of the `nr` pages from `pfn` on, in order, until it
/// returns `false`; returns whether it never did. One `pfn_to_page` per memory section (the
/// memmap of a section is contiguous), not per page: these loops run over whole memory blocks.
///
/// # Safety
///
/// The memmap of the pages must be initialized: they are online, or being onlined or offlined.
unsafe fn walk(pfn: usize, nr: usize, mut f: impl FnMut(*mut bindings::page) -> bool) -> bool {
    let per_section = bindings::PAGES_PER_SECTION as usize;
    let end = pfn + nr;
    let mut at = pfn;
    while at < end {
        let section_end = ((at / per_section + 1) * per_section).min(end);
        // SAFETY: The memmap is initialized (safety requirement).
        let first = unsafe { bindings::pfn_to_page(at as c_ulong) };
        for i in 0..section_end - at {
            // SAFETY: The `struct page`s of one section are contiguous.
            if !f(unsafe { first.add(i) }) {
                return false;
            }
        }
        at = section_end;
    }
    true
}

/// Calls `f(pfn, order)` for the naturally aligned chunks of at most `MAX_PAGE_ORDER` that
/// `[pfn, pfn + nr)` splits into, in order.
fn chunks(pfn: usize, nr: usize, mut f: impl FnMut(usize, u32)) {
    let end = pfn + nr;
    let mut at = pfn;
    while at < end {
        let mut order = bindings::MAX_PAGE_ORDER.min(at.trailing_zeros());
        while at + (1 << order) > end {
            order -= 1;
        }
        f(at, order);
        at += 1 << order;
    }
}

/// Hands pages that were kept offline when their block was onlined to the page allocator, as
/// onlining would have (`generic_online_page()`, which also counts them as managed).
///
/// # Safety
///
/// The `nr` pages from `pfn` on are online and were kept offline by the caller's region when
/// their block was onlined: untouched since memmap initialization (`PageOffline()`, one
/// reference, never in the page allocator), and nobody else hands them over.
pub(super) unsafe fn online_kept(pfn: usize, nr: usize) {
    chunks(pfn, nr, |at, order| {
        // SAFETY: The pages are online and were never given to the page allocator (safety
        // requirement); a chunk is naturally aligned and at most `MAX_PAGE_ORDER`.
        unsafe { bindings::generic_online_page(bindings::pfn_to_page(at as c_ulong), order) };
    });
}

/// Takes the `nr` pages from `pfn` on, online memory, from the kernel: migrates what is in use
/// elsewhere (never invoking the OOM killer), then marks them `PageOffline()` and stops counting
/// them as managed memory. Fails, changing nothing, with `EBUSY` if some page cannot be moved
/// and `ENOMEM` if there is no memory to move it to.
///
/// # Safety
///
/// The pages are online, accessible memory of the caller's region, whose lock the caller holds
/// (so the block cannot go offline meanwhile), and the caller holds a [`NoHotplug`].
pub(super) unsafe fn take(pfn: usize, nr: usize) -> Result {
    let gfp = bindings::GFP_KERNEL | bindings::__GFP_NOWARN;
    // SAFETY: The range is online (safety requirement), so its memmap is initialized.
    let movable = unsafe { bindings::is_zone_movable_page(bindings::pfn_to_page(pfn as c_ulong)) };
    // `ZONE_MOVABLE` promises that its pages can be moved, yet a migration can fail for a moment
    // (a page briefly pinned or locked): there, try a few times, as the C driver does. In a
    // kernel zone a failure usually means an unmovable page: fail at once.
    let mut tries = if movable { 5 } else { 1 };
    loop {
        // SAFETY: The range is online (safety requirement). `alloc_contig_range` isolates and
        // migrates it, or fails without changing anything (nobody else isolates it meanwhile:
        // the caller holds a `NoHotplug`).
        let ret = crate::error::to_result(unsafe {
            bindings::alloc_contig_range_noprof(
                pfn as c_ulong,
                (pfn + nr) as c_ulong,
                0, // ACR_FLAGS_NONE
                gfp,
            )
        });
        tries -= 1;
        match ret {
            Ok(()) => break,
            Err(e) if e == EBUSY && tries > 0 => continue,
            Err(e) => return Err(e),
        }
    }
    // SAFETY: The pages are ours now, one reference each; marking them offline under
    // `page_offline_begin/end` tells readers such as /proc/kcore to leave them alone.
    unsafe {
        bindings::page_offline_begin();
        walk(pfn, nr, |page| {
            bindings::__SetPageOffline(page);
            true
        });
        bindings::page_offline_end();
        bindings::adjust_managed_page_count(bindings::pfn_to_page(pfn as c_ulong), -(nr as c_long));
    }
    Ok(())
}

/// Gives pages taken with [`take`] back to the page allocator.
///
/// # Safety
///
/// The `nr` pages from `pfn` on were taken with [`take`] by the caller's region, whose lock the
/// caller holds, and are still online with the one reference each that `take` got.
pub(super) unsafe fn give_taken(pfn: usize, nr: usize) {
    // SAFETY: The pages are online and ours (safety requirement): clearing the flag and freeing
    // them undoes `take`, which allocated them.
    unsafe {
        walk(pfn, nr, |page| {
            bindings::__ClearPageOffline(page);
            true
        });
        bindings::free_contig_range(pfn as c_ulong, nr as c_ulong);
        bindings::adjust_managed_page_count(bindings::pfn_to_page(pfn as c_ulong), nr as c_long);
    }
}

/// While their block goes offline: drops the one reference of each of the `nr` pages from
/// `pfn` on, so that offlining skips them as unused (`PageOffline()` without references). All
/// or nothing: if some page has another reference (a transient one somebody took), the ones
/// dropped are taken back and `false` is returned.
///
/// # Safety
///
/// The pages are inaccessible pages of the caller's region (kept offline or taken, one
/// reference each held for the region) in a block the kernel is offlining, and the caller holds
/// the region's lock.
pub(super) unsafe fn freeze(pfn: usize, nr: usize) -> bool {
    let mut done = 0;
    // SAFETY: The memmap is initialized (the block is being offlined). `page_ref_freeze` sets
    // the count from 1 to 0 atomically, or fails and changes nothing.
    let all = unsafe {
        walk(pfn, nr, |page| {
            if bindings::page_ref_freeze(page, 1) {
                done += 1;
                true
            } else {
                false
            }
        })
    };
    if !all {
        // SAFETY: These `done` pages were frozen just above; give them their reference back.
        unsafe { unfreeze(pfn, done) };
    }
    all
}

/// Undoes [`freeze`] when offlining is cancelled: every page gets its one reference back.
///
/// # Safety
///
/// The `nr` pages from `pfn` on were frozen with [`freeze`] by the caller's region, whose lock
/// the caller holds, and are still frozen (their block is online again after a cancelled
/// offlining).
pub(super) unsafe fn unfreeze(pfn: usize, nr: usize) {
    // SAFETY: The pages are frozen at a count of 0 (safety requirement).
    unsafe {
        walk(pfn, nr, |page| {
            bindings::page_ref_unfreeze(page, 1);
            true
        })
    };
}
