// SPDX-License-Identifier: GPL-2.0

//! Crash dumps: whether this kernel is a kdump capture kernel, and callbacks that keep
//! `/proc/vmcore` away from memory that is not there.
//!
//! C header: [`include/linux/crash_dump.h`](srctree/include/linux/crash_dump.h).
//!
//! After a crash, kexec boots a capture kernel that exports the crashed kernel's memory as
//! `/proc/vmcore`. Memory a device provides may be gone although the crashed kernel's list of
//! memory ranges has it (a paravirtualized device unplugged it); reading it could make the
//! hypervisor back it again, or fault. A driver of such memory registers a `VmcoreCallback`
//! whose `VmcoreHandler::pfn_is_ram` says which pages are not there: `/proc/vmcore` reads them
//! as zeroes. (Not links: both exist only with `CONFIG_PROC_VMCORE`.)

use crate::bindings;
#[cfg(CONFIG_PROC_VMCORE)]
use crate::{
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Full, //
        },
        Arc, //
    },
    types::Opaque, //
};

/// Whether this kernel was booted by kexec to capture the crash dump of the kernel before
/// (`elfcorehdr=` was given): memory of the crashed kernel must be left as it is.
pub fn is_kdump_kernel() -> bool {
    // SAFETY: Reads a value set once at boot from the command line.
    unsafe { bindings::is_kdump_kernel() }
}

/// Says which pages of the crashed kernel's memory `/proc/vmcore` may read.
#[cfg(CONFIG_PROC_VMCORE)]
pub trait VmcoreHandler: Send + Sync {
    /// Whether page frame `pfn` is RAM and may be read. `true` when the handler cannot tell
    /// (e.g. the page is not its own): any handler answering `false` makes `/proc/vmcore` show
    /// zeroes instead of reading the page. Called in process context, by readers of
    /// `/proc/vmcore`; may sleep.
    fn pfn_is_ram(&self, pfn: usize) -> bool;
}

/// A registered vmcore callback: `/proc/vmcore` asks the handler about every page it reads
/// until the callback is unregistered ([`VmcoreCallback::unregister`], or dropped), which waits
/// for running calls to finish.
///
/// Register it before user space opens `/proc/vmcore`, typically at probe: pages read before
/// were read without asking (the kernel warns once about a late registration). Unregister it
/// before what the handler asks goes away (a driver: at the start of unbind, before its device
/// is reset), not from the handler itself, whose call the unregistration would wait for.
#[cfg(CONFIG_PROC_VMCORE)]
#[pin_data(PinnedDrop)]
pub struct VmcoreCallback<H: VmcoreHandler> {
    handler: Arc<H>,
    /// Whether `cb` is still registered: unregistered once, by `unregister` or the drop.
    registered: Atomic<bool>,
    #[pin]
    cb: Opaque<bindings::vmcore_cb>,
}

// SAFETY: The callback struct is only touched by the vmcore code under its own mutex (and SRCU
// for the calls); the handler is `Send + Sync`.
#[cfg(CONFIG_PROC_VMCORE)]
unsafe impl<H: VmcoreHandler> Send for VmcoreCallback<H> {}
// SAFETY: See above.
#[cfg(CONFIG_PROC_VMCORE)]
unsafe impl<H: VmcoreHandler> Sync for VmcoreCallback<H> {}

#[cfg(CONFIG_PROC_VMCORE)]
impl<H: VmcoreHandler + 'static> VmcoreCallback<H> {
    /// Registers `handler` with `/proc/vmcore`.
    pub fn new(handler: Arc<H>) -> impl PinInit<Self> {
        pin_init!(Self {
            handler,
            registered: Atomic::new(true),
            cb <- Opaque::ffi_init(|slot: *mut bindings::vmcore_cb| {
                // SAFETY: `slot` is valid for writes and pinned; the handler is initialized
                // already (fields are initialized in order), so a call may come at once.
                // `register_vmcore_cb` initializes `next` and cannot fail.
                unsafe {
                    slot.write(bindings::vmcore_cb {
                        pfn_is_ram: Some(Self::pfn_is_ram_callback),
                        ..Default::default()
                    });
                    bindings::register_vmcore_cb(slot);
                }
            }),
        })
    }

    /// Unregisters the callback now, waiting for running calls to finish: `/proc/vmcore` asks
    /// the handler nothing more. Dropping it later does nothing more. Calls after the first do
    /// nothing.
    pub fn unregister(self: Pin<&Self>) {
        if self.registered.xchg(false, Full) {
            // SAFETY: `cb` was registered in `new` and, by the flag just taken, not unregistered
            // since; unregistering removes it from the list and waits (`synchronize_srcu`) for
            // the calls that still see it. `cb` stays pinned and untouched until the drop.
            unsafe { bindings::unregister_vmcore_cb(self.cb.get()) };
        }
    }

    extern "C" fn pfn_is_ram_callback(cb: *mut bindings::vmcore_cb, pfn: c_ulong) -> bool {
        // SAFETY: `cb` is the `cb` field of a registered, hence live, `VmcoreCallback<H>`
        // (`Opaque<T>` has the layout of `T`): it is unregistered, waiting for running calls,
        // before it is freed.
        let this =
            unsafe { &*crate::container_of!(cb.cast::<Opaque<bindings::vmcore_cb>>(), Self, cb) };
        this.handler.pfn_is_ram(pfn)
    }
}

#[cfg(CONFIG_PROC_VMCORE)]
#[pinned_drop]
impl<H: VmcoreHandler> PinnedDrop for VmcoreCallback<H> {
    fn drop(self: Pin<&mut Self>) {
        if self.registered.xchg(false, Full) {
            // SAFETY: `cb` was registered in `new` and not unregistered since (`unregister`
            // takes the flag first); unregistering removes it from the list and waits
            // (`synchronize_srcu`) for the calls that still see it.
            unsafe { bindings::unregister_vmcore_cb(self.cb.get()) };
        }
    }
}
