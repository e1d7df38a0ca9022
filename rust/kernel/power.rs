// SPDX-License-Identifier: GPL-2.0

//! System sleep: what the system is suspending to, and the PM notifier chain.
//!
//! C header: [`include/linux/suspend.h`](srctree/include/linux/suspend.h).
//!
//! A bus's `freeze` callback runs for suspend (to idle, standby or RAM) and for hibernation
//! alike; [`suspend_target`] tells them apart, as C drivers read `pm_suspend_target_state`. A
//! [`PmNotifier`] hears about a sleep before anything is frozen, and can refuse it there.

use crate::{
    bindings,
    prelude::*,
    sync::Arc,
    types::Opaque, //
};

/// A sleep state a system suspends to (`PM_SUSPEND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuspendTarget {
    /// Suspend-to-idle (s2idle, `freeze` in `/sys/power/state`): no firmware involved, the
    /// CPUs idle and devices are suspended; everything is as before when it wakes up.
    ToIdle,
    /// Power-on suspend (`standby`).
    Standby,
    /// Suspend to RAM (`mem` with `deep` in `/sys/power/mem_sleep`, ACPI S3): the firmware
    /// takes over and hands back on wake-up.
    Mem,
}

/// The sleep state the system is suspending to, or `None` when it is not suspending (running,
/// or hibernating: hibernation is not a suspend). Meaningful in the PM callbacks of a suspend.
pub fn suspend_target() -> Option<SuspendTarget> {
    #[cfg(CONFIG_SUSPEND)]
    {
        // SAFETY: Reads a global the PM core sets before it suspends devices (and resets after
        // resume); a stale value is still a value of the type.
        let state =
            unsafe { core::ptr::read_volatile(&raw const bindings::pm_suspend_target_state) };
        match state {
            bindings::PM_SUSPEND_TO_IDLE => Some(SuspendTarget::ToIdle),
            bindings::PM_SUSPEND_STANDBY => Some(SuspendTarget::Standby),
            bindings::PM_SUSPEND_MEM => Some(SuspendTarget::Mem),
            _ => None,
        }
    }
    #[cfg(not(CONFIG_SUSPEND))]
    None
}

/// A transition of the whole system, as the PM notifier chain reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Suspend (any [`SuspendTarget`]).
    Suspend,
    /// Hibernation: an image of memory is written out and the machine powered off.
    Hibernation,
    /// The boot kernel restores a hibernation image (it replaces the running system).
    Restore,
}

impl Transition {
    /// The transition an action announces (`Some(.., true)`) or ends (`Some(.., false)`).
    fn from_action(action: c_ulong) -> Option<(Self, bool)> {
        Some(match u32::try_from(action).ok()? {
            bindings::PM_SUSPEND_PREPARE => (Self::Suspend, true),
            bindings::PM_POST_SUSPEND => (Self::Suspend, false),
            bindings::PM_HIBERNATION_PREPARE => (Self::Hibernation, true),
            bindings::PM_POST_HIBERNATION => (Self::Hibernation, false),
            bindings::PM_RESTORE_PREPARE => (Self::Restore, true),
            bindings::PM_POST_RESTORE => (Self::Restore, false),
            _ => return None,
        })
    }
}

/// Hears about system sleep; see [`PmNotifier`].
///
/// Both methods run in process context, before user space is frozen and after it is thawed, with
/// the system's sleep lock held: they may sleep, but must not start a sleep themselves.
pub trait PmNotifierHandler: Send + Sync {
    /// A transition is about to begin. An error refuses it: the PM core tells the notifiers
    /// that heard about it already that it is over ([`PmNotifierHandler::finished`]) and
    /// returns the error to whoever asked for the sleep (the writer of `/sys/power/state`).
    fn prepare(this: &Arc<Self>, transition: Transition) -> Result {
        let _ = (this, transition);
        Ok(())
    }

    /// A transition is over (the system woke up, or it failed or was refused).
    fn finished(this: &Arc<Self>, transition: Transition) {
        let _ = (this, transition);
    }
}

/// A registered PM notifier: its handler hears about every system sleep until the notifier is
/// dropped (which waits for a running notification to finish). Without `CONFIG_PM_SLEEP` there
/// is no sleep to hear about, and registering does nothing (as in C).
#[pin_data(PinnedDrop)]
pub struct PmNotifier<H: PmNotifierHandler> {
    handler: Arc<H>,
    #[pin]
    nb: Opaque<bindings::notifier_block>,
}

// SAFETY: The notifier block is only touched by the notifier chain under its own lock; the
// handler is `Send + Sync`.
unsafe impl<H: PmNotifierHandler> Send for PmNotifier<H> {}
// SAFETY: See above.
unsafe impl<H: PmNotifierHandler> Sync for PmNotifier<H> {}

impl<H: PmNotifierHandler + 'static> PmNotifier<H> {
    /// Registers `handler`. Notifiers of higher `priority` are called first: one that refuses a
    /// sleep should come before those that would prepare for it.
    pub fn new(handler: Arc<H>, priority: i32) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            handler,
            nb <- Opaque::try_ffi_init(move |slot: *mut bindings::notifier_block| {
                // SAFETY: `slot` is valid for writes and pinned.
                unsafe {
                    slot.write(bindings::notifier_block {
                        notifier_call: Some(Self::callback),
                        priority,
                        ..Default::default()
                    })
                };
                // SAFETY: `slot` is an initialized notifier block that stays pinned until
                // `drop` unregisters it; the handler is initialized already (fields are
                // initialized in order), so a notification may come at once.
                #[cfg(CONFIG_PM_SLEEP)]
                return crate::error::to_result(unsafe { bindings::register_pm_notifier(slot) });
                #[cfg(not(CONFIG_PM_SLEEP))]
                Ok(())
            }),
        })
    }

    extern "C" fn callback(
        nb: *mut bindings::notifier_block,
        action: c_ulong,
        _data: *mut c_void,
    ) -> c_int {
        let Some((transition, begins)) = Transition::from_action(action) else {
            return bindings::NOTIFY_DONE as c_int;
        };
        // SAFETY: `nb` is the `nb` field of a registered, hence live, `PmNotifier<H>`
        // (`Opaque<T>` has the layout of `T`).
        let this = unsafe {
            &*crate::container_of!(nb.cast::<Opaque<bindings::notifier_block>>(), Self, nb)
        };
        if !begins {
            H::finished(&this.handler, transition);
            return bindings::NOTIFY_OK as c_int;
        }
        match H::prepare(&this.handler, transition) {
            Ok(()) => bindings::NOTIFY_OK as c_int,
            // `notifier_from_errno()`: stops the chain; the PM core turns it back into the error.
            Err(e) => {
                (bindings::NOTIFY_STOP_MASK as c_int)
                    | (bindings::NOTIFY_OK as c_int - e.to_errno())
            }
        }
    }
}

#[pinned_drop]
impl<H: PmNotifierHandler> PinnedDrop for PmNotifier<H> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `nb` was registered in `new`; unregistering waits for running notifications
        // (the chain is a blocking notifier chain under a rwsem).
        #[cfg(CONFIG_PM_SLEEP)]
        unsafe {
            bindings::unregister_pm_notifier(self.nb.get())
        };
    }
}

#[macros::kunit_tests(rust_kernel_power)]
mod tests {
    use super::*;

    #[test]
    fn actions_name_a_transition_and_its_end() {
        let table = [
            (
                bindings::PM_HIBERNATION_PREPARE,
                Transition::Hibernation,
                true,
            ),
            (
                bindings::PM_POST_HIBERNATION,
                Transition::Hibernation,
                false,
            ),
            (bindings::PM_SUSPEND_PREPARE, Transition::Suspend, true),
            (bindings::PM_POST_SUSPEND, Transition::Suspend, false),
            (bindings::PM_RESTORE_PREPARE, Transition::Restore, true),
            (bindings::PM_POST_RESTORE, Transition::Restore, false),
        ];
        for (action, transition, begins) in table {
            assert_eq!(
                Transition::from_action(action as c_ulong),
                Some((transition, begins))
            );
        }
        assert_eq!(Transition::from_action(0), None);
        assert_eq!(Transition::from_action(7), None);
    }
}
