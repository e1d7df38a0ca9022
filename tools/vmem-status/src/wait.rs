//! `wait`: block until a device has done what it was asked.

use std::time::{Duration, Instant};

use crate::poll::Watch;
use crate::sysfs::{Activity, Device, Error, Status};

/// When a device counts as done (`--until`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Until {
    /// Idle with the request plugged (as near as the block size allows).
    #[value(
        help = "(default) activity is idle and plugged_size is requested_size \
                    rounded down to block_size. Fails (exit 3) if the device is stopped; \
                    a stalled or waiting device is retrying, so it is waited for until \
                    the timeout"
    )]
    Reached,
    /// Idle, waiting, stalled or stopped: the driver has stopped working on the request.
    #[value(
        help = "activity is idle, waiting, stalled or stopped: the driver got there \
                    or stopped short (the uevents' reached and stalled)"
    )]
    Settled,
}

/// What to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub until: Until,
    /// The requested size must be this.
    pub size: Option<u64>,
}

/// What one look at a device says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Done,
    /// It will not get there without outside help (the device is stopped).
    Failed,
    /// Look again later.
    NotYet,
}

/// The plugged size a reached request has: `requested` rounded down to the block size.
pub fn expected_plugged(status: &Status) -> u64 {
    match status.block_size {
        0 => status.requested,
        b => status.requested - status.requested % b,
    }
}

/// Judges `status` against `target`.
///
/// For [`Until::Reached`] only `stopped` fails: a device shows `stalled` or `waiting` while it
/// retries, and may get there yet.
pub fn judge(status: &Status, target: &Target) -> Verdict {
    let size_ok = target.size.is_none_or(|size| size == status.requested);
    match target.until {
        Until::Reached => {
            if status.activity == Activity::Stopped {
                Verdict::Failed
            } else if status.activity == Activity::Idle
                && size_ok
                && status.plugged == expected_plugged(status)
            {
                Verdict::Done
            } else {
                Verdict::NotYet
            }
        }
        Until::Settled => {
            let settled = matches!(
                status.activity,
                Activity::Idle | Activity::Waiting | Activity::Stalled | Activity::Stopped
            );
            if settled && size_ok {
                Verdict::Done
            } else {
                Verdict::NotYet
            }
        }
    }
}

/// How a wait ended, with the last status read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done(Status),
    Failed(Status),
    TimedOut(Status),
}

/// Waits until `dev` meets `target`, it fails, or `timeout` passes. Sleeps in poll(2) on
/// `activity`, waking on the driver's notification or after `interval` at the latest.
pub fn wait(
    dev: &Device,
    target: &Target,
    timeout: Duration,
    interval: Duration,
) -> Result<Outcome, Error> {
    let path = dev.attr_path("activity");
    let io_error = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let mut watch = Watch::open(&path).map_err(io_error)?;
    // `None`: a timeout too large to represent, i.e. none.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        // Arm first: a change after this read wakes the poll below, so none is missed
        // between reading the state and sleeping.
        watch.arm().map_err(io_error)?;
        let status = dev.status()?;
        match judge(&status, target) {
            Verdict::Done => return Ok(Outcome::Done(status)),
            Verdict::Failed => return Ok(Outcome::Failed(status)),
            Verdict::NotYet => {}
        }
        let rest = match deadline {
            Some(deadline) => {
                let rest = deadline.saturating_duration_since(Instant::now());
                if rest.is_zero() {
                    return Ok(Outcome::TimedOut(status));
                }
                rest.min(interval)
            }
            None => interval,
        };
        watch.wait(rest).map_err(io_error)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::Sysfs;
    use crate::testutil::FakeTree;
    use std::thread;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn status(activity: &str, requested: u64, plugged: u64) -> Status {
        Status {
            requested,
            plugged,
            block_size: 2 * MIB,
            activity: Activity::parse(activity),
            reason: None,
        }
    }

    const REACHED: Target = Target {
        until: Until::Reached,
        size: None,
    };
    const SETTLED: Target = Target {
        until: Until::Settled,
        size: None,
    };

    fn sized(target: Target, size: u64) -> Target {
        Target {
            size: Some(size),
            ..target
        }
    }

    #[test]
    fn reached_needs_idle_and_the_request_plugged() {
        assert_eq!(
            judge(&status("idle", 4 * GIB, 4 * GIB), &REACHED),
            Verdict::Done
        );
        assert_eq!(judge(&status("idle", 0, 0), &REACHED), Verdict::Done);
        // Rounded down to the block size.
        assert_eq!(
            judge(&status("idle", 4 * GIB + MIB, 4 * GIB), &REACHED),
            Verdict::Done
        );
        assert_eq!(
            judge(&status("idle", 4 * GIB + 3 * MIB, 4 * GIB), &REACHED),
            Verdict::NotYet
        );
        assert_eq!(
            judge(&status("idle", 4 * GIB, 2 * GIB), &REACHED),
            Verdict::NotYet
        );
        for busy in [
            "pending",
            "plugging",
            "unplugging",
            "waiting",
            "unbinding",
            "new-word",
        ] {
            assert_eq!(
                judge(&status(busy, 4 * GIB, 4 * GIB), &REACHED),
                Verdict::NotYet,
                "{busy}"
            );
        }
    }

    #[test]
    fn reached_fails_only_when_stopped() {
        assert_eq!(
            judge(&status("stopped", 4 * GIB, GIB), &REACHED),
            Verdict::Failed
        );
        assert_eq!(
            judge(&status("stopped", 4 * GIB, GIB), &sized(REACHED, 2 * GIB)),
            Verdict::Failed
        );
        assert_eq!(
            judge(&status("stalled", 4 * GIB, GIB), &REACHED),
            Verdict::NotYet
        );
    }

    #[test]
    fn reached_with_size_needs_that_request() {
        let target = sized(REACHED, 4 * GIB);
        assert_eq!(
            judge(&status("idle", 4 * GIB, 4 * GIB), &target),
            Verdict::Done
        );
        assert_eq!(
            judge(&status("idle", 2 * GIB, 2 * GIB), &target),
            Verdict::NotYet
        );
    }

    #[test]
    fn settled_accepts_idle_waiting_stalled_and_stopped() {
        for done in ["idle", "waiting", "stalled", "stopped"] {
            assert_eq!(
                judge(&status(done, 4 * GIB, GIB), &SETTLED),
                Verdict::Done,
                "{done}"
            );
        }
        for busy in ["pending", "plugging", "unplugging", "unbinding"] {
            assert_eq!(
                judge(&status(busy, 4 * GIB, GIB), &SETTLED),
                Verdict::NotYet,
                "{busy}"
            );
        }
        let target = sized(SETTLED, 8 * GIB);
        assert_eq!(
            judge(&status("stalled", 4 * GIB, GIB), &target),
            Verdict::NotYet
        );
        assert_eq!(
            judge(&status("stalled", 8 * GIB, GIB), &target),
            Verdict::Done
        );
    }

    fn device(tree: &FakeTree, name: &str) -> Device {
        Sysfs::new(tree.sysfs()).device(name).unwrap()
    }

    #[test]
    fn waits_for_the_driver_to_get_there() {
        let tree = FakeTree::new("waitdone");
        tree.add_device(
            "virtio0",
            &[
                ("requested_size", "6442450944\n"),
                ("activity", "plugging\n"),
            ],
        );
        let dev = device(&tree, "virtio0");
        let target = sized(REACHED, 6 * GIB);
        let start = Instant::now();
        let outcome = thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(200));
                tree.set("virtio0", "plugged_size", "6442450944\n");
                tree.set("virtio0", "activity", "idle\n");
            });
            wait(
                &dev,
                &target,
                Duration::from_secs(10),
                Duration::from_millis(50),
            )
            .unwrap()
        });
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert_eq!(outcome, Outcome::Done(status("idle", 6 * GIB, 6 * GIB)));
    }

    #[test]
    fn times_out_while_stalled_and_keeps_the_reason() {
        let tree = FakeTree::new("waitstalled");
        tree.add_device(
            "virtio0",
            &[
                ("requested_size", "1073741824\n"),
                ("activity", "stalled\n"),
                ("reason", "free memory below the safety margin\n"),
            ],
        );
        let dev = device(&tree, "virtio0");
        let outcome = wait(
            &dev,
            &REACHED,
            Duration::from_millis(200),
            Duration::from_millis(50),
        )
        .unwrap();
        let Outcome::TimedOut(last) = outcome else {
            panic!("expected a timeout, got {outcome:?}");
        };
        assert_eq!(last.activity, Activity::Stalled);
        assert_eq!(
            last.reason.as_deref(),
            Some("free memory below the safety margin")
        );
    }

    #[test]
    fn fails_when_the_device_stops() {
        let tree = FakeTree::new("waitstopped");
        tree.add_device("virtio0", &[("requested_size", "8589934592\n")]);
        let dev = device(&tree, "virtio0");
        let outcome = thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(100));
                tree.set(
                    "virtio0",
                    "reason",
                    "device answered with undefined value 7\n",
                );
                tree.set("virtio0", "activity", "stopped\n");
            });
            wait(
                &dev,
                &REACHED,
                Duration::from_secs(10),
                Duration::from_millis(50),
            )
            .unwrap()
        });
        assert!(matches!(outcome, Outcome::Failed(ref s) if s.activity == Activity::Stopped));
    }

    #[test]
    fn zero_timeout_looks_once() {
        let tree = FakeTree::new("waitzero");
        tree.add_device("virtio0", &[("activity", "plugging\n")]);
        let dev = device(&tree, "virtio0");
        let outcome = wait(&dev, &REACHED, Duration::ZERO, Duration::from_secs(1)).unwrap();
        assert!(matches!(outcome, Outcome::TimedOut(_)));
        tree.set("virtio0", "activity", "idle\n");
        let outcome = wait(&dev, &REACHED, Duration::ZERO, Duration::from_secs(1)).unwrap();
        assert!(matches!(outcome, Outcome::Done(_)));
    }

    #[test]
    fn a_vanished_device_is_an_error() {
        let tree = FakeTree::new("waitgone");
        tree.add_device("virtio0", &[("activity", "unbinding\n")]);
        let dev = device(&tree, "virtio0");
        tree.remove("virtio0", "plugged_size");
        let err = wait(
            &dev,
            &REACHED,
            Duration::from_secs(1),
            Duration::from_millis(50),
        )
        .unwrap_err();
        assert!(err.to_string().contains("plugged_size"), "{err}");
    }
}
