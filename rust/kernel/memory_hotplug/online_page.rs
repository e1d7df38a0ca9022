// SPDX-License-Identifier: GPL-2.0

//! The kernel's online-page callback, shared by every [`super::SystemRamRegion`] that needs it.
//!
//! When a memory block is onlined, the kernel hands its pages to the online-page callback in
//! naturally aligned chunks of up to `MAX_PAGE_ORDER`; the default callback gives them all to the
//! page allocator. The kernel has one callback for the whole system: this registry sets it while
//! at least one region is registered, and dispatches each chunk to the region that contains it,
//! whose record decides page by page (see `RegionInner::online_pages`). A chunk outside every
//! registered region goes to the page allocator as it would without us. A C driver that set its
//! own callback (such as `virtio_mem`) excludes us until it restores the default: registration
//! then fails with `EPERM`.
//!
//! Dispatch does not hold the registry's lock while a region decides: it takes a reference to
//! the region under the lock and lets go, so regions of different devices do not wait for each
//! other (the C driver walks an RCU list for the same reason).

use super::region::RegionInner;
use crate::{
    bindings,
    new_mutex,
    page::{
        PAGE_SHIFT,
        PAGE_SIZE, //
    },
    prelude::*,
    sync::{
        Arc,
        Mutex,
        SetOnce, //
    }, //
};

/// The registered regions.
#[pin_data]
struct Registry {
    /// Serializes registering and unregistering, and with them setting and restoring the
    /// kernel's callback. Never taken by the callback itself: setting and restoring wait for
    /// memory being onlined, whose callback takes `regions`.
    #[pin]
    owner: Mutex<()>,
    /// The regions the callback dispatches to; held only briefly.
    #[pin]
    regions: Mutex<KVec<Arc<RegionInner>>>,
}

static REGISTRY: SetOnce<Pin<KBox<Registry>>> = SetOnce::new();

/// The registry, created on first use.
fn registry() -> Result<&'static Registry> {
    loop {
        if let Some(r) = REGISTRY.as_ref() {
            return Ok(r);
        }
        // The first caller's registry wins; a racing one drops its own (and finds the winner's
        // on the next pass).
        let r = KBox::pin_init(
            pin_init!(Registry {
                owner <- new_mutex!(()),
                regions <- new_mutex!(KVec::new()),
            }),
            GFP_KERNEL,
        )?;
        REGISTRY.populate(r);
    }
}

/// The kernel's online-page callback while regions are registered.
///
/// # Safety
///
/// Called by the kernel only, for `1 << order` pages being onlined from `page` on.
unsafe extern "C" fn online_page_callback(page: *mut bindings::page, order: c_uint) {
    // SAFETY: `page` is a valid page being onlined.
    let pfn = unsafe { bindings::page_to_pfn(page) } as usize;
    let start = (pfn as u64) << PAGE_SHIFT;
    let size = (PAGE_SIZE as u64) << order;
    // Onlining memory never crosses memory blocks, so a chunk is in one region or none.
    let region = REGISTRY.as_ref().and_then(|r| {
        r.regions
            .lock()
            .iter()
            .find(|region| region.contains(start, size))
            .cloned()
    });
    match region {
        Some(region) => region.online_pages(pfn, order),
        // SAFETY: Not memory of a region: online it as the kernel's default callback does.
        None => unsafe { bindings::generic_online_page(page, order) },
    }
}

/// Registers `region` with the callback, setting the kernel's callback if it is the first.
/// Fails with `EPERM` if another driver holds the kernel's online-page callback.
pub(super) fn register(region: &Arc<RegionInner>) -> Result {
    let reg = registry()?;
    let _owner = reg.owner.lock();
    let mut regions = reg.regions.lock();
    regions.reserve(1, GFP_KERNEL)?;
    let first = regions.is_empty();
    // Setting the callback waits for memory being onlined, which may be in the callback: that
    // takes `regions`, so do not hold it here.
    drop(regions);
    if first {
        // SAFETY: The callback is a valid `online_page_callback_t` that lives in the kernel
        // image; it is restored when the last region goes.
        let ret = unsafe { bindings::set_online_page_callback(Some(online_page_callback)) };
        if ret != 0 {
            return Err(EPERM);
        }
    }
    // Room was reserved above, and only owners (serialized by `owner`) add.
    reg.regions
        .lock()
        .push_within_capacity(region.clone())
        .map_err(|_| ENOMEM)
}

/// Unregisters `region`. The last one restores the kernel's callback first, which waits for
/// memory being onlined: until then, the rest of an onlining in progress still finds every
/// region.
pub(super) fn unregister(region: &Arc<RegionInner>) {
    let Ok(reg) = registry() else {
        return;
    };
    let _owner = reg.owner.lock();
    let last = {
        let regions = reg.regions.lock();
        regions.len() == 1 && regions.iter().any(|r| Arc::ptr_eq(r, region))
    };
    if last {
        // SAFETY: We set this callback when the first region registered. Restoring waits for
        // memory being onlined, which may be in the callback: `regions` is not held.
        unsafe { bindings::restore_online_page_callback(Some(online_page_callback)) };
    }
    reg.regions.lock().retain(|r| !Arc::ptr_eq(r, region));
}
