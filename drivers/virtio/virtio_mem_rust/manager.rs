// SPDX-License-Identifier: GPL-2.0

//! What each mode must do with the device's memory, and what it sees of the run loop.
//!
//! Each mode is one implementation of [`Manager`] (as nova-core picks a HAL per chipset):
//! [`crate::sbm::SubBlockMode`] and [`crate::bbm::BigBlockMode`]. The run loop (see
//! [`crate::run`]) only calls the trait, so a change to one mode cannot break the other.
//!
//! A mode sees the run loop only through a [`Ctx`]: the device, the accounting of offline
//! memory, and the three things a mode asks of the loop while it works ([`RunLoop`]). It cannot
//! queue steps, publish a status or change the runtime's life, and this module depends on
//! nothing of [`crate::run`].

use crate::{
    device::DeviceClient,
    error::{
        Failed,
        StepError, //
    },
    hotplug::OfflineMemory,
    state::RunState,
    status::Reason, //
};
use kernel::{
    fmt,
    memory_hotplug::MemoryNotification,
    prelude::*,
    sync::{
        atomic::Atomic,
        Mutex, //
    }, //
};

/// What a mode may ask of the run loop during a step (implemented by
/// [`crate::run::Runtime`]).
pub(crate) trait RunLoop: Sync {
    /// `Err(StepError::Moved)` if the requested size moved away from `st.requested` (not while
    /// unbinding): the mode stops after its current batch.
    fn check_request(&self, st: &RunState) -> Result<(), StepError>;

    /// Publishes the sizes during a step (no notification).
    fn update_sizes(&self, st: &RunState);

    /// After a plug of `tried` bytes failed with `f`: whether to go on at once with smaller
    /// plugs (down to `least` bytes), the plug limit halved.
    fn smaller_plugs(&self, st: &mut RunState, f: &Failed, tried: u64, least: u64) -> bool;
}

/// What a mode gets of the runtime for one call.
pub(crate) struct Ctx<'a> {
    pub(crate) device: &'a DeviceClient,
    pub(crate) offline: &'a OfflineMemory,
    /// Test knob (debugfs `remove_delay_ms`), see [`crate::run::Runtime`].
    pub(crate) remove_delay_ms: &'a Atomic<u32>,
    pub(crate) run: &'a dyn RunLoop,
}

impl Ctx<'_> {
    /// See [`RunLoop::check_request`].
    pub(crate) fn check_request(&self, st: &RunState) -> Result<(), StepError> {
        self.run.check_request(st)
    }

    /// See [`RunLoop::update_sizes`].
    pub(crate) fn update_sizes(&self, st: &RunState) {
        self.run.update_sizes(st)
    }

    /// See [`RunLoop::smaller_plugs`].
    pub(crate) fn smaller_plugs(
        &self,
        st: &mut RunState,
        f: &Failed,
        tried: u64,
        least: u64,
    ) -> bool {
        self.run.smaller_plugs(st, f, tried, least)
    }

    /// What a refusal of the region means for the step: the block is being onlined or
    /// offlined (`EAGAIN`: wait for it), another driver holds the online-page callback
    /// (`EPERM`), free memory ran out (`ENOMEM`). Anything else means the driver's records and
    /// the region's disagree: a bug, logged as one.
    pub(crate) fn region_error(&self, addr: u64, size: u64, e: Error) -> StepError {
        StepError::Guest(if e == EAGAIN {
            Reason::Transition
        } else if e == EPERM {
            Reason::NoCallback
        } else if e == ENOMEM {
            Reason::Margin
        } else {
            dev_err!(
                self.device.dev(),
                "internal error: the memory region refused [{:#x}-{:#x}] ({:?})\n",
                addr,
                addr + size - 1,
                e
            );
            Reason::Internal
        })
    }

    /// After adding `[addr, addr + plugged)`, which the device had just plugged, failed with
    /// `e`: unplugs it again. The step stops either way.
    pub(crate) fn unplug_after_failed_add(
        &self,
        st: &mut RunState,
        addr: u64,
        plugged: u64,
        e: Error,
    ) -> StepError {
        dev_err!(
            self.device.dev(),
            "adding memory [{:#x}-{:#x}] failed ({:?}); unplugging it again\n",
            addr,
            addr + plugged - 1,
            e
        );
        let req = match self.device.request(false, addr, plugged) {
            Ok(req) => req,
            Err(e) => return e,
        };
        if let Err(f) = self.device.send(&req) {
            dev_err!(
                self.device.dev(),
                "unplugging [{:#x}-{:#x}] failed too; resynchronizing with the device later\n",
                addr,
                addr + plugged - 1,
            );
            st.pending.resync = true;
            return f.into();
        }
        StepError::Guest(Reason::AddFailed)
    }
}

/// What a mode does with the device's memory. Every method but [`Self::memory_event`],
/// [`Self::online`] and [`Self::plugged`] is called by the run loop with its state lock held
/// (`st`); the mode keeps its own records behind its own lock, which it never holds across a
/// call of the region's methods (see [`crate::run::Runtime`]'s lock order).
pub(crate) trait Manager: Send + Sync {
    /// Bytes plugged by this binding.
    fn plugged(&self) -> u64;

    /// Plugged bytes of online memory, and in how many memory blocks they are (`added`: what
    /// the region has added).
    fn online(&self, cx: &Ctx<'_>, added: u64) -> (u64, u64);

    /// Takes over the memory an earlier binding left added: the parked region's record says
    /// which units are added, their online state, and which of their pages are backed.
    fn take_over(&self, cx: &Ctx<'_>, st: &mut RunState, usable_end: u64) -> Result<(), StepError>;

    /// Makes the device's plugged state agree with the mode's records, for every unit it
    /// tracks below `usable_end`; returns where the tracked units end.
    fn resync(&self, cx: &Ctx<'_>, usable_end: u64) -> Result<u64, StepError>;

    /// Work earlier steps left over, done before plugging or unplugging.
    fn tidy(&self, _cx: &Ctx<'_>, _st: &mut RunState) -> Result<(), StepError> {
        Ok(())
    }

    /// Plugs and adds toward `st.requested` below `usable_end`.
    fn plug(&self, cx: &Ctx<'_>, st: &mut RunState, usable_end: u64) -> Result<(), StepError>;

    /// Removes and unplugs toward `requested`.
    fn unplug(&self, cx: &Ctx<'_>, st: &mut RunState, requested: u64) -> Result<(), StepError>;

    /// At unbind: removes what is not in use and unplugs it.
    fn give_back(&self, cx: &Ctx<'_>, st: &mut RunState) -> Result<(), StepError>;

    /// The device unplugged everything (`UNPLUG_ALL`).
    fn forget_plugged(&self);

    /// A memory event of the region (the notifier's `prepare` and `complete` both pass theirs).
    fn memory_event(&self, _cx: &Ctx<'_>, _n: &MemoryNotification) {}

    /// One line per unit with its state (debugfs). `state` is the run loop's state lock, which
    /// a step holds throughout: a mode that needs it blocks until the step ends, and sub-block
    /// mode must not (tests watch its dump during a step, see `online_race.sh`).
    fn dump(&self, state: &Mutex<RunState>, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}
