// SPDX-License-Identifier: GPL-2.0

//! What the driver shows operators: the state of the run loop, why it stopped short of the
//! requested size, and counters.
//!
//! The run loop publishes a [`Status`] after each step; the sysfs attributes (see
//! [`crate::attrs`]) read it without waiting for a step to finish.

use crate::{
    power::Refused,
    protocol::{
        Refusal,
        Request,
        SendError, //
    }, //
};
use kernel::{
    fmt,
    prelude::*,
    sync::atomic::{
        Atomic,
        Relaxed, //
    }, //
};

/// What the run loop is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activity {
    /// The plugged size is the requested size (as near as the block size allows).
    Idle,
    /// Plugging toward the requested size.
    Plugging,
    /// Unplugging toward the requested size.
    Unplugging,
    /// Stopped short for a reason that passes by itself (the device is busy or refused, or
    /// user space has still to online memory); retried at `retry_at`.
    Waiting,
    /// Stopped short for a reason in the guest (free memory, unmovable pages, ...); retried
    /// at `retry_at` and whenever the requested size changes.
    Stalled,
    /// The device answered with nonsense: no more requests until the driver is bound again.
    Stopped,
    /// The driver is unbinding.
    Unbinding,
}

impl Activity {
    /// The word the `activity` attribute shows.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Activity::Idle => "idle",
            Activity::Plugging => "plugging",
            Activity::Unplugging => "unplugging",
            Activity::Waiting => "waiting",
            Activity::Stalled => "stalled",
            Activity::Stopped => "stopped",
            Activity::Unbinding => "unbinding",
        }
    }
}

/// Why the run loop stopped short of the requested size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Unplugging more would leave less available memory than the safety margin.
    Margin,
    /// The remaining plugged memory holds pages that cannot be moved.
    Unmovable,
    /// The device answered `BUSY`.
    DeviceBusy,
    /// The device answered `NACK` (e.g. it may not plug more now).
    DeviceRefused,
    /// The device answered `ERROR`: our view and the device's differ; resynchronizing.
    DeviceError,
    /// The device did not answer in time.
    Timeout,
    /// Sending the request failed.
    ExchangeFailed,
    /// The memmap (and on a KASAN kernel, the shadow) of the next block would not fit in the
    /// free kernel memory.
    MemmapNoRoom,
    /// Adding memory failed (e.g. the memmap allocation).
    AddFailed,
    /// Added memory waits for user space to online it.
    WaitingForOnline,
    /// Only offline memory may be unplugged (`unplug_online=0`) and none is left.
    OfflineOnly,
    /// The memory blocks to plug into or unplug are being onlined or offlined: the run goes on
    /// when that is over.
    Transition,
    /// The driver's records and the kernel's disagree, or a request would not fit: a bug,
    /// described in the kernel log.
    Internal,
    /// Another driver holds the kernel's online-page callback.
    NoCallback,
    /// The device answered with a value the protocol does not define.
    Nonsense(u16),
    /// The device's config makes no sense (e.g. a request beyond its region).
    BadConfig,
}

impl Reason {
    /// A short token, for the uevent's `VIRTIO_MEM_REASON`.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Reason::Margin => "margin",
            Reason::Unmovable => "unmovable",
            Reason::DeviceBusy => "device-busy",
            Reason::DeviceRefused => "device-refused",
            Reason::DeviceError => "device-error",
            Reason::Timeout => "timeout",
            Reason::ExchangeFailed => "exchange-failed",
            Reason::MemmapNoRoom => "memmap-no-room",
            Reason::AddFailed => "add-failed",
            Reason::WaitingForOnline => "waiting-for-online",
            Reason::OfflineOnly => "offline-only",
            Reason::Transition => "transition",
            Reason::Internal => "internal",
            Reason::NoCallback => "no-callback",
            Reason::Nonsense(_) => "nonsense",
            Reason::BadConfig => "bad-config",
        }
    }

    /// Whether the reason passes without anything changing in the guest.
    pub(crate) fn activity(self) -> Activity {
        match self {
            Reason::DeviceBusy
            | Reason::DeviceRefused
            | Reason::DeviceError
            | Reason::Timeout
            | Reason::ExchangeFailed
            | Reason::WaitingForOnline
            | Reason::Transition => Activity::Waiting,
            Reason::Nonsense(_) | Reason::BadConfig => Activity::Stopped,
            _ => Activity::Stalled,
        }
    }

    /// Why a request failed.
    pub(crate) fn of(e: SendError) -> Reason {
        match e {
            SendError::Refused(Refusal::Nack) => Reason::DeviceRefused,
            SendError::Refused(Refusal::Busy) => Reason::DeviceBusy,
            SendError::Refused(Refusal::Error) => Reason::DeviceError,
            SendError::Refused(Refusal::Nonsense(v)) => Reason::Nonsense(v),
            SendError::Transport(e) if e == ETIMEDOUT => Reason::Timeout,
            SendError::Transport(_) => Reason::ExchangeFailed,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Margin => f.write_str("free memory below the safety margin"),
            Reason::Unmovable => f.write_str("blocks hold unmovable pages"),
            Reason::DeviceBusy => f.write_str("device busy"),
            Reason::DeviceRefused => f.write_str("device refused"),
            Reason::DeviceError => f.write_str(
                "device answered ERROR; resynchronizing the plugged state with STATE requests",
            ),
            Reason::Timeout => f.write_str("device did not answer in time"),
            Reason::ExchangeFailed => f.write_str("sending the request failed"),
            Reason::MemmapNoRoom => {
                f.write_str("memmap of the next block does not fit in free kernel memory")
            }
            Reason::AddFailed => f.write_str("adding memory failed (memmap allocation failed?)"),
            Reason::WaitingForOnline => f.write_str("added memory waits to be onlined"),
            Reason::OfflineOnly => {
                f.write_str("only offline memory may be unplugged (unplug_online=0)")
            }
            Reason::Transition => f.write_str("memory blocks are being onlined or offlined"),
            Reason::Internal => f.write_str("internal error (see the kernel log)"),
            Reason::NoCallback => f.write_str("the online-page callback is held by another driver"),
            Reason::Nonsense(v) => write!(f, "device answered with undefined value {v}"),
            Reason::BadConfig => f.write_str("device config makes no sense"),
        }
    }
}

/// The published state of a device.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Status {
    /// The requested size the run loop last read.
    pub(crate) requested: u64,
    /// Bytes plugged by this driver.
    pub(crate) plugged: u64,
    /// Bytes of plugged memory the page allocator has (what MemTotal gained).
    pub(crate) online: u64,
    /// Bytes of the region added to the system.
    pub(crate) added: u64,
    pub(crate) activity: Activity,
    /// Why the last step stopped short, if it did.
    pub(crate) reason: Option<Reason>,
    /// When the next retry runs, in ms of `CLOCK_BOOTTIME` (as `/proc/uptime`).
    pub(crate) retry_at_ms: Option<i64>,
    /// The last sleep the driver refused, until a later one is allowed.
    pub(crate) refused: Option<Refused>,
}

impl Status {
    pub(crate) const fn new() -> Self {
        Self {
            requested: 0,
            plugged: 0,
            online: 0,
            added: 0,
            activity: Activity::Idle,
            reason: None,
            retry_at_ms: None,
            refused: None,
        }
    }
}

/// Request kinds, as the counters name them.
const KINDS: [&str; 4] = ["plug", "unplug", "unplug_all", "state"];
/// Outcomes, as the counters name them.
const OUTCOMES: [&str; 6] = ["ack", "nack", "busy", "error", "nonsense", "failed"];

/// Named event counters other than requests.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    /// A memory block (or big block) was added to the system.
    BlockAdded,
    /// A memory block (or big block) was removed from the system.
    BlockRemoved,
    /// Adding memory failed.
    AddFailed,
    /// Taking online memory for unplug failed (pages in use could not be moved, or offlining
    /// a block failed).
    UnplugFailed,
    /// A resynchronization with the device ran (STATE requests).
    Resync,
    /// The driver took over memory left added by an earlier binding.
    TakeOver,
}

const EVENTS: [&str; 6] = [
    "blocks_added",
    "blocks_removed",
    "add_failed",
    "unplug_failed",
    "resyncs",
    "takeovers",
];

/// Counters, updated without locks.
pub(crate) struct Counters {
    requests: [[Atomic<u64>; OUTCOMES.len()]; KINDS.len()],
    events: [Atomic<u64>; EVENTS.len()],
}

impl Counters {
    pub(crate) const fn new() -> Self {
        Self {
            requests: [const { [const { Atomic::new(0) }; OUTCOMES.len()] }; KINDS.len()],
            events: [const { Atomic::new(0) }; EVENTS.len()],
        }
    }

    /// Counts request `req` with its outcome: `None` for `ACK`, else the error.
    pub(crate) fn request(&self, req: &Request, err: Option<SendError>) {
        let kind = match req {
            Request::Plug { .. } => 0,
            Request::Unplug { .. } => 1,
            Request::UnplugAll => 2,
            Request::State { .. } => 3,
        };
        let o = match err {
            None => 0,
            Some(SendError::Refused(Refusal::Nack)) => 1,
            Some(SendError::Refused(Refusal::Busy)) => 2,
            Some(SendError::Refused(Refusal::Error)) => 3,
            Some(SendError::Refused(Refusal::Nonsense(_))) => 4,
            Some(SendError::Transport(_)) => 5,
        };
        self.requests[kind][o].add(1, Relaxed);
    }

    /// Counts `event`.
    pub(crate) fn count(&self, event: Event) {
        self.events[event as usize].add(1, Relaxed);
    }

    /// Writes every counter as a `name value` line.
    pub(crate) fn write(&self, f: &mut impl fmt::Write) -> fmt::Result {
        for (k, row) in KINDS.iter().zip(&self.requests) {
            for (o, n) in OUTCOMES.iter().zip(row) {
                writeln!(f, "{k}_{o} {}", n.load(Relaxed))?;
            }
        }
        for (e, n) in EVENTS.iter().zip(&self.events) {
            writeln!(f, "{e} {}", n.load(Relaxed))?;
        }
        Ok(())
    }
}

#[kunit_tests(virtio_mem_rust_status)]
mod tests {
    use super::*;
    use kernel::str::Formatter;

    #[test]
    fn reasons_map_to_activities() {
        assert_eq!(Reason::Margin.activity(), Activity::Stalled);
        assert_eq!(Reason::MemmapNoRoom.activity(), Activity::Stalled);
        assert_eq!(Reason::DeviceBusy.activity(), Activity::Waiting);
        assert_eq!(Reason::Timeout.activity(), Activity::Waiting);
        assert_eq!(Reason::WaitingForOnline.activity(), Activity::Waiting);
        assert_eq!(Reason::Nonsense(7).activity(), Activity::Stopped);
        assert_eq!(
            Reason::of(SendError::Refused(Refusal::Nack)),
            Reason::DeviceRefused
        );
        assert_eq!(Reason::of(SendError::Transport(ETIMEDOUT)), Reason::Timeout);
        assert_eq!(
            Reason::of(SendError::Transport(EIO)),
            Reason::ExchangeFailed
        );
        assert_eq!(
            Reason::of(SendError::Refused(Refusal::Nonsense(9))),
            Reason::Nonsense(9)
        );
        assert_eq!(Reason::Margin.code(), "margin");
    }

    #[test]
    fn counters_are_written_by_name() {
        let c = Counters::new();
        let plug = Request::Plug {
            addr: 0,
            nb_blocks: 1,
        };
        c.request(&plug, None);
        c.request(&plug, None);
        c.request(&Request::UnplugAll, Some(SendError::Refused(Refusal::Busy)));
        c.count(Event::TakeOver);
        let mut buf = [0u8; 1024];
        let mut f = Formatter::new(&mut buf);
        c.write(&mut f).unwrap();
        let n = f.bytes_written();
        let text = core::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("plug_ack 2\nplug_nack 0\n"));
        assert!(text.contains("\nunplug_all_busy 1\n"));
        assert!(text.ends_with("resyncs 0\ntakeovers 1\n"));
    }
}
