// SPDX-License-Identifier: GPL-2.0

//! Fault injection for tests (debugfs `inject`): a device that refuses, does not answer, answers
//! late, or answers outside the protocol, one request kind at a time.
//!
//! Each fault is one of two kinds, and the difference is what the test is about:
//!
//! - a *definite* answer (`nack`, `busy`, `error`) replaces the exchange: the request never
//!   reaches the device, which is what such an answer says. `timeout` is the same with no answer
//!   at all (the device never saw the request).
//! - an *indefinite* one (`undefined`, `short`, `lost`, `late`) is made of the device's own
//!   answer: the device got the request and did what it does, and the driver sees a value the
//!   protocol does not define, an answer too short to hold a type, no answer (`lost`), or no
//!   answer in time with the virtqueue busy until the late answer comes ([`LATE_MS`]). The
//!   driver must take each of them as "the device may have done it".
//!
//! Up to [`SLOTS`] faults are armed at once (e.g. an `ERROR` to a `PLUG`, then a fault to the
//! `STATE` requests of the resync it causes). A slot is one `u64`, taken and counted down with
//! compare-and-exchange, so that the request path takes no lock for it.

use crate::protocol::{
    Request,
    RESP_SIZE, //
};
use kernel::{
    bindings, fmt,
    prelude::*,
    sync::atomic::{
        Atomic,
        Full,
        Relaxed, //
    },
    time::{
        BootTime,
        Instant, //
    },
    uaccess::UserSliceReader,
};

/// How many faults may be armed at once.
pub(crate) const SLOTS: usize = 4;
/// How long after its timeout a `late` answer comes in, in ms: until then the virtqueue is
/// busy and every request fails before reaching the device, as the virtqueue makes it.
pub(crate) const LATE_MS: i64 = 8000;

/// Which requests a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Plug = 1,
    Unplug = 2,
    UnplugAll = 3,
    State = 4,
    Any = 5,
}

const TARGETS: [(&str, Target); 5] = [
    ("plug", Target::Plug),
    ("unplug", Target::Unplug),
    ("unplug_all", Target::UnplugAll),
    ("state", Target::State),
    ("any", Target::Any),
];

impl Target {
    fn matches(self, req: &Request) -> bool {
        matches!(
            (self, req),
            (Target::Any, _)
                | (Target::Plug, Request::Plug { .. })
                | (Target::Unplug, Request::Unplug { .. })
                | (Target::UnplugAll, Request::UnplugAll)
                | (Target::State, Request::State { .. })
        )
    }
}

/// What the driver sees instead of the device's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `NACK`, and the device never saw the request.
    Nack = 1,
    /// `BUSY`, and the device never saw the request.
    Busy = 2,
    /// `ERROR`, and the device never saw the request.
    Error = 3,
    /// No answer, and the device never saw the request.
    Timeout = 4,
    /// The device acted; its answer's type becomes a value the protocol does not define.
    Undefined = 5,
    /// The device acted; its answer is cut to one byte.
    Short = 6,
    /// The device acted; its answer is dropped (a timeout).
    Lost = 7,
    /// The device acted; its answer comes after the timeout, [`LATE_MS`] later.
    Late = 8,
}

const FAULTS: [(&str, Fault); 8] = [
    ("nack", Fault::Nack),
    ("busy", Fault::Busy),
    ("error", Fault::Error),
    ("timeout", Fault::Timeout),
    ("undefined", Fault::Undefined),
    ("short", Fault::Short),
    ("lost", Fault::Lost),
    ("late", Fault::Late),
];

/// The answer type `undefined` puts in the device's answer.
pub(crate) const UNDEFINED: u16 = 0xbad;

impl Fault {
    /// The answer a definite fault gives without asking the device (`None` for `timeout` and
    /// the indefinite ones).
    pub(crate) fn answer(self) -> Option<[u8; RESP_SIZE]> {
        let ty = match self {
            Fault::Nack => bindings::VIRTIO_MEM_RESP_NACK,
            Fault::Busy => bindings::VIRTIO_MEM_RESP_BUSY,
            Fault::Error => bindings::VIRTIO_MEM_RESP_ERROR,
            _ => return None,
        };
        let mut a = [0u8; RESP_SIZE];
        a[0..2].copy_from_slice(&(ty as u16).to_le_bytes());
        Some(a)
    }

    /// Whether the device gets the request.
    pub(crate) fn reaches_device(self) -> bool {
        !matches!(
            self,
            Fault::Nack | Fault::Busy | Fault::Error | Fault::Timeout
        )
    }
}

/// One armed fault, packed: target (bits 0-7), fault (8-15), how many more (16-47).
fn pack(target: Target, fault: Fault, count: u32) -> u64 {
    target as u64 | (fault as u64) << 8 | u64::from(count) << 16
}

fn unpack(v: u64) -> Option<(Target, Fault, u32)> {
    let count = (v >> 16) as u32;
    let target = TARGETS.iter().find(|t| t.1 as u64 == v & 0xff)?.1;
    let fault = FAULTS.iter().find(|f| f.1 as u64 == (v >> 8) & 0xff)?.1;
    (count > 0).then_some((target, fault, count))
}

fn name<T: PartialEq + Copy>(table: &[(&'static str, T)], v: T) -> &'static str {
    table.iter().find(|e| e.1 == v).map_or("?", |e| e.0)
}

/// The armed faults of one device, and the late answer it waits for.
pub(crate) struct Injector {
    slots: [Atomic<u64>; SLOTS],
    /// Until when (ms of `CLOCK_BOOTTIME`) a late answer keeps the virtqueue busy; 0 if none.
    busy_until_ms: Atomic<i64>,
}

fn now_ms() -> i64 {
    Instant::<BootTime>::now().as_nanos() / 1_000_000
}

impl Injector {
    pub(crate) const fn new() -> Self {
        Self {
            slots: [const { Atomic::new(0) }; SLOTS],
            busy_until_ms: Atomic::new(0),
        }
    }

    /// Arms a fault from a line `TARGET FAULT [COUNT]` (count 1 by default), in a free slot;
    /// `clear` disarms all.
    pub(crate) fn arm(&self, line: &str) -> Result {
        let mut words = line.split_whitespace();
        let first = words.next().ok_or(EINVAL)?;
        if first == "clear" {
            for s in &self.slots {
                s.store(0, Relaxed);
            }
            self.busy_until_ms.store(0, Relaxed);
            return Ok(());
        }
        let target = TARGETS.iter().find(|t| t.0 == first).ok_or(EINVAL)?.1;
        let fault_name = words.next().ok_or(EINVAL)?;
        let fault = FAULTS.iter().find(|f| f.0 == fault_name).ok_or(EINVAL)?.1;
        let count = match words.next() {
            Some(n) => n.parse::<u32>().map_err(|_| EINVAL)?,
            None => 1,
        };
        if words.next().is_some() || count == 0 || count > u32::from(u16::MAX) {
            return Err(EINVAL);
        }
        let v = pack(target, fault, count);
        for s in &self.slots {
            let old = s.load(Relaxed);
            if unpack(old).is_none() && s.cmpxchg(old, v, Full).is_ok() {
                return Ok(());
            }
        }
        Err(ENOSPC)
    }

    /// Arms a fault from what user space wrote to a debugfs file (see [`Injector::arm`]).
    pub(crate) fn store(&self, r: &mut UserSliceReader) -> Result {
        let mut buf = [0u8; 64];
        let n = r.len();
        if n > buf.len() {
            return Err(EINVAL);
        }
        r.read_slice(&mut buf[..n])?;
        let line = core::str::from_utf8(&buf[..n]).map_err(|_| EINVAL)?;
        self.arm(line.trim())
    }

    /// The fault for `req`, if one is armed for it (counted down).
    pub(crate) fn take(&self, req: &Request) -> Option<Fault> {
        for s in &self.slots {
            loop {
                let v = s.load(Relaxed);
                let Some((target, fault, count)) = unpack(v) else {
                    break;
                };
                if !target.matches(req) {
                    break;
                }
                let next = if count > 1 {
                    pack(target, fault, count - 1)
                } else {
                    0
                };
                if s.cmpxchg(v, next, Full).is_ok() {
                    return Some(fault);
                }
            }
        }
        None
    }

    /// A late answer is due [`LATE_MS`] from now.
    pub(crate) fn answer_late(&self) {
        self.busy_until_ms.store(now_ms() + LATE_MS, Relaxed);
    }

    /// Whether a late answer still keeps the virtqueue busy.
    pub(crate) fn waiting_for_late_answer(&self) -> bool {
        now_ms() < self.busy_until_ms.load(Relaxed)
    }

    /// Writes the armed faults, one `TARGET FAULT COUNT` line each.
    pub(crate) fn write(&self, f: &mut impl fmt::Write) -> fmt::Result {
        for s in &self.slots {
            if let Some((target, fault, count)) = unpack(s.load(Relaxed)) {
                writeln!(
                    f,
                    "{} {} {}",
                    name(&TARGETS, target),
                    name(&FAULTS, fault),
                    count
                )?;
            }
        }
        if self.waiting_for_late_answer() {
            writeln!(f, "late answer pending")?;
        }
        Ok(())
    }
}

#[kunit_tests(virtio_mem_rust_fault)]
mod tests {
    use super::*;

    const PLUG: Request = Request::Plug {
        addr: 0,
        nb_blocks: 1,
    };
    const STATE: Request = Request::State {
        addr: 0,
        nb_blocks: 1,
    };

    #[test]
    fn armed_faults_count_down_per_target() {
        let inj = Injector::new();
        assert_eq!(inj.arm("state lost 2"), Ok(()));
        assert_eq!(inj.arm("plug nack"), Ok(()));
        assert_eq!(inj.take(&Request::UnplugAll), None);
        assert_eq!(inj.take(&PLUG), Some(Fault::Nack));
        assert_eq!(inj.take(&PLUG), None);
        assert_eq!(inj.take(&STATE), Some(Fault::Lost));
        assert_eq!(inj.take(&STATE), Some(Fault::Lost));
        assert_eq!(inj.take(&STATE), None);
    }

    #[test]
    fn bad_lines_are_refused() {
        let inj = Injector::new();
        for bad in [
            "",
            "plug",
            "plug nope",
            "nope nack",
            "plug nack 0",
            "plug nack 1 2",
        ] {
            assert_eq!(inj.arm(bad), Err(EINVAL));
        }
        for _ in 0..SLOTS {
            assert_eq!(inj.arm("any busy 3"), Ok(()));
        }
        assert_eq!(inj.arm("any busy"), Err(ENOSPC));
        assert_eq!(inj.arm("clear"), Ok(()));
        assert_eq!(inj.take(&PLUG), None);
    }

    #[test]
    fn only_definite_faults_keep_the_request_from_the_device() {
        for (_, f) in FAULTS {
            let definite = f.answer().is_some();
            assert_eq!(f.reaches_device(), !(definite || f == Fault::Timeout));
        }
    }
}
