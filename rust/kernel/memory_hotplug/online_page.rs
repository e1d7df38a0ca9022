// SPDX-License-Identifier: GPL-2.0

//! Onlining hotplugged memory page range by page range: the online-page callback.
//!
//! C headers: [`include/linux/memory_hotplug.h`](srctree/include/linux/memory_hotplug.h),
//! [`include/linux/page-flags.h`](srctree/include/linux/page-flags.h).
//!
//! When a memory block is onlined, the kernel hands its pages to the online-page callback in
//! naturally aligned chunks of up to `MAX_PAGE_ORDER`; the default callback gives them all to the
//! page allocator. A driver that adds memory blocks of which only parts are backed (plugged)
//! must keep the other pages away from the page allocator: it registers an
//! [`OnlinePageHandler`] for its physical range, and decides for every [`OnliningPages`] chunk in
//! that range whether it goes [online](OnliningPages::online) or is
//! [kept offline](OnliningPages::keep_offline) (`PageOffline()`, never touched by the kernel).
//!
//! The kernel has one callback for the whole system. The abstraction sets it while at least one
//! handler is registered, and dispatches by physical address, so any number of devices (of any
//! driver using this abstraction) share it. A C driver that set its own callback (such as
//! `virtio_mem`) excludes us until it restores the default: registration then fails with
//! `EBUSY`.
//!
//! Pages kept offline are marked `PageDirty()` as well, as the C virtio-mem driver does, to
//! remember that they never went through the page allocator; [`OnlinePageCallback::fake_online`]
//! hands them over later, once they are backed.

use crate::{
    bindings,
    page::{PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    sync::Arc,
};
use core::{
    mem::ManuallyDrop,
    sync::atomic::AtomicU8,
};

/// Decides which pages of memory being onlined in a registered range go to the page allocator.
pub trait OnlinePageHandler: Send + Sync + 'static {
    /// Called for every chunk of pages onlined in the registered range, with the memory hotplug
    /// lock held (so it must not add, remove, online or offline memory) and with a lock held that
    /// dropping any [`OnlinePageCallback`] takes. It may sleep.
    ///
    /// Every page of `pages` must be either onlined or kept offline; pages not dealt with (the
    /// chunk is dropped) are kept offline.
    fn online_pages(this: &Arc<Self>, pages: OnliningPages);
}

/// A naturally aligned chunk of pages that is being onlined, handed to an
/// [`OnlinePageHandler`]; consumed by onlining it or keeping it offline.
///
/// # Invariants
///
/// `pfn` is the first of `1 << order` pages of a memory block that the kernel is onlining and
/// passed to the online-page callback; they were not handed to the page allocator yet. Their
/// memmap is initialized, each page `PageOffline()` with a reference count of one.
#[must_use = "dropping the pages keeps them offline"]
pub struct OnliningPages {
    pfn: usize,
    order: u32,
}

impl OnliningPages {
    /// The physical address of the first page.
    pub fn start(&self) -> u64 {
        (self.pfn as u64) << PAGE_SHIFT
    }

    /// The size of the chunk in bytes (a power of two).
    pub fn size(&self) -> u64 {
        (PAGE_SIZE as u64) << self.order
    }

    /// Hands the pages to the page allocator: the kernel may use them from now on.
    pub fn online(self) {
        let this = ManuallyDrop::new(self);
        // SAFETY: By the type invariant the pages are being onlined and were not given to the
        // page allocator; `this` is not dropped, so this happens once.
        unsafe { bindings::generic_online_page(bindings::pfn_to_page(this.pfn), this.order) };
    }

    /// Keeps the pages offline: they stay `PageOffline()`, are never given to the page
    /// allocator, and are remembered as never onlined (`PageDirty()`).
    pub fn keep_offline(self) {
        let this = ManuallyDrop::new(self);
        keep_offline(this.pfn, 1 << this.order);
    }

    /// Splits the chunk into chunks of at most `max_size` bytes (at least one page).
    pub fn split(self, max_size: u64) -> SplitPages {
        let this = ManuallyDrop::new(self);
        let pages = (max_size >> PAGE_SHIFT).max(1);
        let order = (u64::BITS - 1 - pages.leading_zeros()).min(this.order);
        SplitPages {
            pfn: this.pfn,
            end: this.pfn + (1 << this.order),
            order,
        }
    }
}

impl Drop for OnliningPages {
    fn drop(&mut self) {
        keep_offline(self.pfn, 1 << self.order);
    }
}

/// The chunks of a split [`OnliningPages`]; chunks not taken are kept offline.
pub struct SplitPages {
    pfn: usize,
    end: usize,
    order: u32,
}

impl Iterator for SplitPages {
    type Item = OnliningPages;

    fn next(&mut self) -> Option<OnliningPages> {
        if self.pfn >= self.end {
            return None;
        }
        // INVARIANT: A naturally aligned part of the chunk being onlined, handed out once.
        let pages = OnliningPages {
            pfn: self.pfn,
            order: self.order,
        };
        self.pfn += 1 << self.order;
        Some(pages)
    }
}

impl Drop for SplitPages {
    fn drop(&mut self) {
        if self.pfn < self.end {
            keep_offline(self.pfn, self.end - self.pfn);
        }
    }
}

/// Marks `nr` pages being onlined from `pfn` on as kept offline.
fn keep_offline(pfn: usize, nr: usize) {
    // SAFETY: The caller passes pages being onlined, whose memmap is initialized (they are
    // `PageOffline()` already); `page_offline_begin/end` synchronize with readers of the flag.
    unsafe {
        bindings::page_offline_begin();
        super::walk_pages(pfn, nr, |_, page| {
            bindings::SetPageDirty(page);
            true
        });
        bindings::page_offline_end();
    }
}

/// Whether the `nr` pages from `pfn` on are all online (memory is onlined in whole sections,
/// so one page per section tells).
fn all_online(pfn: usize, nr: usize) -> bool {
    let per_section = bindings::PAGES_PER_SECTION as usize;
    let mut at = pfn;
    while at < pfn + nr {
        // SAFETY: `pfn_to_online_page` only looks up the section's state.
        if unsafe { bindings::pfn_to_online_page(at as c_ulong) }.is_null() {
            return false;
        }
        at = (at / per_section + 1) * per_section;
    }
    true
}

/// Whether every page of `[start, start + size)` (page-aligned) is online and fake-offline:
/// `PageOffline()` with the one reference of the driver that keeps it away from the kernel (kept
/// offline when its block was onlined, or taken with [`OnlinePageCallback::fake_offline`]).
/// Such pages are not in use; any other page of online memory may be. A driver that takes over
/// memory another binding left online tells from this which of it is in use.
pub fn is_fake_offline(start: u64, size: u64) -> bool {
    let Ok((pfn, nr)) = super::page_range(start, size, 0, u64::MAX) else {
        return false;
    };
    if !all_online(pfn, nr) {
        return false;
    }
    // SAFETY: The pages are online, so their memmap is initialized and valid to read.
    unsafe {
        super::walk_pages(pfn, nr, |_, page| {
            bindings::PageOffline(page) && bindings::page_ref_count(page) == 1
        })
    }
}

/// One registered handler: the range it decides for and how to call it.
struct Entry {
    start: u64,
    end: u64,
    /// The handler, `Arc::as_ptr` of the `Arc<H>` that the registration owns.
    handler: *const c_void,
    /// Calls `H::online_pages` on `handler`.
    call: unsafe fn(*const c_void, OnliningPages),
}

// SAFETY: `handler` points to an `H: Send + Sync`; the entry is only used under `ENTRIES`.
unsafe impl Send for Entry {}

/// The registered handlers.
type Entries = KVec<Entry>;

crate::global_lock! {
    // SAFETY: `init_locks` initializes it before any use.
    unsafe(uninit) static ONLINE_PAGE_OWNER: Mutex<()> = ();
}

crate::global_lock! {
    // SAFETY: `init_locks` initializes it before any use.
    unsafe(uninit) static ONLINE_PAGE_ENTRIES: Mutex<Entries> = KVec::new();
}

/// 0: the locks are not initialized, 1: being initialized, 2: ready.
static LOCKS_READY: AtomicU8 = AtomicU8::new(0);

/// Initializes the registry's locks on first use.
fn init_locks() {
    super::init_once(&LOCKS_READY, || {
        // SAFETY: `init_once` runs this once, before anybody uses the locks.
        unsafe {
            ONLINE_PAGE_OWNER.init();
            ONLINE_PAGE_ENTRIES.init();
        }
    });
}

/// The kernel's online-page callback while handlers are registered.
///
/// # Safety
///
/// Called by the kernel only, for `1 << order` pages being onlined from `page` on.
unsafe extern "C" fn online_page_callback(page: *mut bindings::page, order: c_uint) {
    // SAFETY: `page` is a valid page being onlined.
    let pfn = unsafe { bindings::page_to_pfn(page) };
    // INVARIANT: The kernel passes a chunk being onlined, once.
    let pages = OnliningPages {
        pfn: pfn as usize,
        order,
    };
    let (start, size) = (pages.start(), pages.size());
    // Initialized: the callback is set only after a registration.
    let entries = ONLINE_PAGE_ENTRIES.lock();
    match entries
        .iter()
        .find(|e| e.start <= start && start + size <= e.end)
    {
        // SAFETY: The entry is registered, so its handler is alive; `call` matches it.
        Some(e) => unsafe { (e.call)(e.handler, pages) },
        None => {
            drop(entries);
            pages.online();
        }
    }
}

/// Calls `H::online_pages` for a type-erased handler.
///
/// # Safety
///
/// `handler` must come from `Arc::as_ptr` of an `Arc<H>` that stays alive during the call.
unsafe fn call_handler<H: OnlinePageHandler>(handler: *const c_void, pages: OnliningPages) {
    // SAFETY: By the safety requirements `handler` is an `Arc<H>`'s pointer; `ManuallyDrop`
    // keeps this temporary from dropping the owner's reference.
    let arc = ManuallyDrop::new(unsafe { Arc::from_raw(handler.cast::<H>()) });
    H::online_pages(&arc, pages);
}

/// A registered [`OnlinePageHandler`] for a physical range; unregistered on drop, which waits
/// for a running call of the handler. While registered, the handler decides for every page
/// onlined in the range.
pub struct OnlinePageCallback<H: OnlinePageHandler> {
    start: u64,
    end: u64,
    handler: Arc<H>,
}

impl<H: OnlinePageHandler> OnlinePageCallback<H> {
    /// Registers `handler` for pages onlined in `[start, start + size)`. Fails with `EEXIST` if
    /// another handler covers part of the range, and with `EBUSY` if somebody else (e.g. the C
    /// virtio-mem driver) set the kernel's online-page callback.
    pub fn register(start: u64, size: u64, handler: Arc<H>) -> Result<Self> {
        let end = start.checked_add(size).ok_or(EINVAL)?;
        if size == 0 {
            return Err(EINVAL);
        }
        init_locks();
        let _owner = ONLINE_PAGE_OWNER.lock();
        let mut entries = ONLINE_PAGE_ENTRIES.lock();
        if entries.iter().any(|e| e.start < end && start < e.end) {
            return Err(EEXIST);
        }
        entries.reserve(1, GFP_KERNEL)?;
        let first = entries.is_empty();
        // Setting the callback waits for memory being onlined, which may call the current
        // callback: that takes `ONLINE_PAGE_ENTRIES`, so do not hold it here.
        drop(entries);
        if first {
            // SAFETY: The callback is a valid `online_page_callback_t` that lives in the kernel
            // image; it is restored when the last handler goes.
            let ret = unsafe { bindings::set_online_page_callback(Some(online_page_callback)) };
            if ret != 0 {
                return Err(EBUSY);
            }
        }
        let entry = Entry {
            start,
            end,
            handler: Arc::as_ptr(&handler).cast(),
            call: call_handler::<H>,
        };
        // Room was reserved above and only owners (serialized by `ONLINE_PAGE_OWNER`) add.
        if ONLINE_PAGE_ENTRIES
            .lock()
            .push_within_capacity(entry)
            .is_err()
        {
            return Err(ENOMEM);
        }
        Ok(Self {
            start,
            end,
            handler,
        })
    }

    /// Checks that `[start, start + size)` is a non-empty, page-aligned part of the range and
    /// returns its first pfn and number of pages.
    fn pages_of(&self, start: u64, size: u64) -> Result<(usize, usize)> {
        super::page_range(start, size, self.start, self.end)
    }

    /// Hands fake-offline pages of online memory in the range to the page allocator, now that
    /// they may be used (e.g. the device backs them): pages the handler kept offline when their
    /// block was onlined, and pages taken with [`Self::fake_offline`]. Fails with `EINVAL`,
    /// changing nothing, unless every page of `[start, start + size)` is in the range, online,
    /// and fake-offline (`PageOffline()` with our reference).
    pub fn fake_online(&mut self, start: u64, size: u64) -> Result {
        let (pfn, nr) = self.pages_of(start, size)?;
        if !is_fake_offline(start, size) {
            return Err(EINVAL);
        }
        let max_order = bindings::MAX_PAGE_ORDER;
        let mut pfn_now = pfn;
        while pfn_now < pfn + nr {
            // The biggest naturally aligned chunk that fits.
            let mut order = max_order.min(pfn_now.trailing_zeros());
            while pfn_now + (1 << order) > pfn + nr {
                order -= 1;
            }
            let count = 1usize << order;
            // SAFETY: The pages are online and fake-offline, so not in the page allocator, and
            // we have `&mut self`, so nobody hands them over twice. Pages kept offline at
            // onlining (`PageDirty()`, all pages of a sub-block alike) never went through the
            // page allocator: `generic_online_page` gives them to it and counts them. Pages
            // taken by `fake_offline` were allocated: they are freed and counted again.
            unsafe {
                let first = bindings::pfn_to_page(pfn_now);
                if bindings::PageDirty(first) {
                    super::walk_pages(pfn_now, count, |_, page| {
                        bindings::ClearPageDirty(page);
                        true
                    });
                    bindings::generic_online_page(first, order);
                } else {
                    super::walk_pages(pfn_now, count, |_, page| {
                        bindings::__ClearPageOffline(page);
                        true
                    });
                    bindings::free_contig_range(pfn_now as c_ulong, count as c_ulong);
                    bindings::adjust_managed_page_count(first, count as c_long);
                }
            }
            pfn_now += count;
        }
        Ok(())
    }

    /// Takes the pages of `[start, start + size)`, online memory in the range, away from the
    /// kernel so that the device may stop backing them: migrates what is in use elsewhere
    /// (never invoking the OOM killer), then marks the pages fake-offline (`PageOffline()`, not
    /// counted as managed memory any more). [`Self::fake_online`] gives them back. Fails,
    /// changing nothing, with `EBUSY` if some page cannot be moved (e.g. unmovable kernel
    /// memory) and `ENOMEM` if there is no memory to move it to.
    pub fn fake_offline(&mut self, start: u64, size: u64) -> Result {
        let (pfn, nr) = self.pages_of(start, size)?;
        if !all_online(pfn, nr) {
            return Err(EINVAL);
        }
        let gfp = bindings::GFP_KERNEL | bindings::__GFP_NOWARN;
        // SAFETY: The range is online memory of our registration. `alloc_contig_range` isolates
        // and migrates it, or fails without changing anything.
        crate::error::to_result(unsafe {
            bindings::alloc_contig_range_noprof(
                pfn as c_ulong,
                (pfn + nr) as c_ulong,
                0, // ACR_FLAGS_NONE
                gfp,
            )
        })?;
        // SAFETY: The pages are ours now (one reference each); marking them offline under
        // `page_offline_begin/end` tells readers such as /proc/kcore to leave them alone.
        unsafe {
            bindings::page_offline_begin();
            super::walk_pages(pfn, nr, |_, page| {
                bindings::__SetPageOffline(page);
                true
            });
            bindings::page_offline_end();
            bindings::adjust_managed_page_count(bindings::pfn_to_page(pfn), -(nr as c_long));
        }
        Ok(())
    }
}

impl<H: OnlinePageHandler> Drop for OnlinePageCallback<H> {
    fn drop(&mut self) {
        let _owner = ONLINE_PAGE_OWNER.lock();
        let mut entries = ONLINE_PAGE_ENTRIES.lock();
        let ours = Arc::as_ptr(&self.handler).cast::<c_void>();
        entries.retain(|e| !(e.start == self.start && e.handler == ours));
        let last = entries.is_empty();
        drop(entries);
        if last {
            // SAFETY: We set this callback when the first handler registered. Restoring waits
            // for memory being onlined, which may be in the callback: `ONLINE_PAGE_ENTRIES` is
            // not held.
            unsafe { bindings::restore_online_page_callback(Some(online_page_callback)) };
        }
    }
}
