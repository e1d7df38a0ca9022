// SPDX-License-Identifier: GPL-2.0

//! What ends a step of the run loop before the request is met, and what follows from it.
//!
//! Every way a step can stop is one variant of [`StepError`]; only the step (see
//! [`crate::run`]) decides what follows from it: back off and retry, stall until the guest
//! changes, stop until the device is bound again, start over, or stop quietly.

use crate::{
    protocol::Request,
    status::{
        Activity,
        Reason, //
    }, //
};
use kernel::prelude::*;

/// A request that did not succeed: why, and what was asked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Failed {
    pub(crate) reason: Reason,
    pub(crate) req: Option<Request>,
}

impl Failed {
    /// Whether the device got no answer in time.
    pub(crate) fn timed_out(&self) -> bool {
        self.reason == Reason::Timeout
    }

    /// Whether the device may have done what was asked although it did not say so: no answer
    /// in time, or one the protocol does not define (or too short to hold a type). Only `ACK`,
    /// `NACK`, `BUSY` and `ERROR` say what the device did; a request that failed before it was
    /// sent (the virtqueue busy or gone) did not reach the device. So an `UNPLUG` with such an
    /// answer leaves its pages unusable for good, as if unplugged, until a `STATE` says more.
    pub(crate) fn may_have_acted(&self) -> bool {
        matches!(self.reason, Reason::Timeout | Reason::Nonsense(_))
    }
}

/// Why a step ended before the requested size was met.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StepError {
    /// A request failed at the device: it was busy or refused, answered `ERROR`, did not answer
    /// in time, or the exchange failed. Back off and try again; after `ERROR` or a timeout the
    /// plugged state is resynchronized first.
    Device(Failed),
    /// Something in the guest is in the way (free memory, unmovable pages, memory waiting to
    /// be onlined, blocks in a transition, the online-page callback, a bug): stall and say why.
    Guest(Reason),
    /// The device answered outside the protocol, or its config makes no sense: no more
    /// requests until it is bound again.
    Halted(Failed),
    /// The requested size moved while the step worked toward the old one: a new step starts
    /// at once.
    Moved,
    /// The device is going away: stop quietly.
    Unbound,
}

impl From<Failed> for StepError {
    fn from(f: Failed) -> Self {
        if f.reason.activity() == Activity::Stopped {
            StepError::Halted(f)
        } else {
            StepError::Device(f)
        }
    }
}

impl StepError {
    /// The reason the step shows for it, if it shows one.
    pub(crate) fn reason(&self) -> Option<Reason> {
        match self {
            StepError::Device(f) | StepError::Halted(f) => Some(f.reason),
            StepError::Guest(r) => Some(*r),
            StepError::Moved | StepError::Unbound => None,
        }
    }

    /// A step error for a bug: the driver's records and the kernel's disagree, or a request
    /// would not fit (the caller logs what happened).
    pub(crate) const fn internal() -> Self {
        StepError::Guest(Reason::Internal)
    }
}

#[kunit_tests(virtio_mem_rust_error)]
mod tests {
    use super::*;

    fn failed(reason: Reason) -> Failed {
        Failed { reason, req: None }
    }

    #[test]
    fn failures_map_to_what_follows() {
        assert!(matches!(
            StepError::from(failed(Reason::DeviceBusy)),
            StepError::Device(_)
        ));
        assert!(matches!(
            StepError::from(failed(Reason::Timeout)),
            StepError::Device(_)
        ));
        assert!(matches!(
            StepError::from(failed(Reason::Nonsense(7))),
            StepError::Halted(_)
        ));
        assert!(matches!(
            StepError::from(failed(Reason::BadConfig)),
            StepError::Halted(_)
        ));
        assert_eq!(
            StepError::from(failed(Reason::DeviceError)).reason(),
            Some(Reason::DeviceError)
        );
        assert_eq!(StepError::Moved.reason(), None);
        assert_eq!(StepError::internal().reason(), Some(Reason::Internal));
        assert!(failed(Reason::Timeout).timed_out());
        assert!(!failed(Reason::DeviceError).timed_out());
        for r in [
            Reason::Timeout,
            Reason::Nonsense(7),
            Reason::Nonsense(u16::MAX),
        ] {
            assert!(failed(r).may_have_acted());
        }
        for r in [
            Reason::DeviceError,
            Reason::DeviceBusy,
            Reason::DeviceRefused,
            Reason::ExchangeFailed,
        ] {
            assert!(!failed(r).may_have_acted());
        }
    }
}
