// SPDX-License-Identifier: GPL-2.0

//! The run loop's state: what a step works toward and what earlier steps left for it.
//!
//! It is a module of its own so that the modes, which get it with each call, need nothing of
//! the run loop ([`crate::run`]) that holds it.

use crate::{
    backoff::{
        Backoff,
        PlugLimit, //
    },
    error::StepError,
    hotplug::Hotplug,
    status::Reason, //
};

/// What the next step does before following the request.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pending {
    /// Memory added by an earlier binding is to be taken over.
    pub(crate) take_over: bool,
    /// The device has memory plugged from before we were bound: unplug it all.
    pub(crate) unplug_all: bool,
    /// Our view of the plugged state and the device's may differ (after `ERROR` or a
    /// timeout): resynchronize with `STATE` requests.
    pub(crate) resync: bool,
}

/// The run loop's state, under [`crate::run::Runtime`]'s state lock. The modes get it with
/// every call (see [`crate::manager::Manager`]), so it knows nothing of the run loop itself.
pub(crate) struct RunState {
    /// The device's region and memory group; `None` once unbound (parked or released).
    pub(crate) hotplug: Option<Hotplug>,
    /// The requested size this step works toward.
    pub(crate) requested: u64,
    pub(crate) backoff: Backoff,
    pub(crate) plug_limit: PlugLimit,
    pub(crate) pending: Pending,
    /// Why this step stopped short of the request, if it did.
    pub(crate) reason: Option<Reason>,
    /// The reason last logged (each is logged once while it lasts).
    logged: Option<Reason>,
    /// Whether the message that the online-page callback is taken was logged.
    pub(crate) told_no_callback: bool,
}

impl RunState {
    /// The state of a new runtime: nothing added yet, `pending` left by probe.
    pub(crate) fn new(pending: Pending) -> Self {
        RunState {
            hotplug: None,
            requested: 0,
            backoff: Backoff::new(),
            plug_limit: PlugLimit::new(),
            pending,
            reason: None,
            logged: None,
            told_no_callback: false,
        }
    }

    /// The device accepted a plug: back to the shortest retry delay, and more may be asked
    /// for at once again.
    pub(crate) fn plug_accepted(&mut self) {
        self.backoff.reset();
        self.plug_limit.accepted();
    }

    /// The request is met: a later stall is logged again.
    pub(crate) fn forget_logged(&mut self) {
        self.logged = None;
    }

    /// Whether a stall for `why` is to be logged: the first time while it lasts.
    pub(crate) fn first_time(&mut self, why: Reason) -> bool {
        self.logged.replace(why) != Some(why)
    }

    /// The region and group, which are there until unbind parks them.
    pub(crate) fn hotplug(&mut self) -> Result<&mut Hotplug, StepError> {
        self.hotplug.as_mut().ok_or(StepError::Unbound)
    }

    /// Bytes added to the system.
    pub(crate) fn added(&self) -> u64 {
        self.hotplug.as_ref().map_or(0, |h| h.added())
    }
}
