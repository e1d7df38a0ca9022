// SPDX-License-Identifier: GPL-2.0

//! System sleep, with the C driver's policy.
//!
//! - Suspend-to-idle is always allowed: no firmware is involved, the device keeps its state.
//! - Suspend through firmware (S3, standby) is refused while memory is plugged, unless the
//!   device offers `VIRTIO_MEM_F_PERSISTENT_SUSPEND` (it keeps plugged memory plugged across
//!   suspend and wake-up; QEMU offers it when the machine can wake from suspend). Without it,
//!   the machine could wake up with plugged memory gone.
//! - Hibernation, and restoring from a hibernation image, are refused: when the machine starts
//!   again, all of the device's memory is unplugged, and the image would describe memory that
//!   is not there. The PM notifier refuses it before anything is frozen.
//!
//! `kernel::virtio` resets the device and deletes the virtqueue after [`Runtime::freeze`]
//! allowed the sleep, and sets it up again before [`Runtime::restore`]. The device may have
//! changed while the machine slept and no config change interrupt tells of it, so restore
//! queues a step that reads the config again and resynchronizes the plugged state with `STATE`
//! requests before following the request. Steps run on the freezable workqueue: none runs
//! between freeze and thaw.

use crate::run::Runtime;
use kernel::{
    fmt,
    power::{
        PmNotifierHandler,
        SuspendTarget,
        Transition, //
    },
    prelude::*,
    sync::{
        atomic::Relaxed,
        Arc, //
    }, //
};

/// A sleep the driver refused, shown in the sysfs `reason` until a later sleep is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Suspend through firmware while memory is plugged, and the device does not keep it.
    Suspend,
    /// Hibernation or restoring from a hibernation image.
    Hibernation,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Suspend => f.write_str(
                "suspend refused: memory is plugged and the device does not keep it plugged \
                 across suspend (no VIRTIO_MEM_F_PERSISTENT_SUSPEND)",
            ),
            Refused::Hibernation => f.write_str(
                "hibernation refused: the device's memory is unplugged when the machine starts \
                 again",
            ),
        }
    }
}

/// Whether the device survives a sleep to `target` (`None`: hibernation) with `plugged` bytes
/// plugged, `persistent` saying whether it keeps plugged memory across suspend.
fn decide(target: Option<SuspendTarget>, plugged: u64, persistent: bool) -> Option<Refused> {
    match target {
        Some(SuspendTarget::ToIdle) => None,
        _ if plugged == 0 => None,
        Some(_) if persistent => None,
        Some(_) => Some(Refused::Suspend),
        // Hibernation got past the notifier (it cannot fail to register, but the refusal must
        // not depend on it).
        None => Some(Refused::Hibernation),
    }
}

impl Runtime {
    /// The system is going to sleep (to `target`, or hibernating if `None`): refuses what the
    /// device cannot survive. The workqueue is frozen already, so no step runs.
    pub(crate) fn freeze(&self, target: Option<SuspendTarget>) -> Result {
        // What the device has plugged, also from before this binding (memory the first step
        // has still to unplug); ours if the config cannot be read.
        let plugged = self.device.read_plugged().unwrap_or(0).max(self.plugged());
        let persistent = self.device.probed.persistent_suspend
            && self.hide_persistent_suspend.load(Relaxed) == 0;
        match decide(target, plugged, persistent) {
            None => self.allowed(),
            Some(why) => self.refuse(why),
        }
    }

    /// The system woke up; the virtqueue is back. The next step reads the config and
    /// resynchronizes before following the request.
    pub(crate) fn restore(self: &Arc<Self>) {
        self.state.lock().pending.resync = true;
        dev_info!(
            self.device.dev(),
            "resumed: resynchronizing the plugged state with the device\n"
        );
        self.kick_if_running();
    }

    fn allowed(&self) -> Result {
        self.status.lock().refused = None;
        Ok(())
    }

    fn refuse(&self, why: Refused) -> Result {
        dev_err!(self.device.dev(), "{}\n", why);
        self.status.lock().refused = Some(why);
        Err(EPERM)
    }
}

impl PmNotifierHandler for Runtime {
    fn prepare(this: &Arc<Self>, transition: Transition) -> Result {
        match transition {
            Transition::Hibernation | Transition::Restore => this.refuse(Refused::Hibernation),
            Transition::Suspend => Ok(()),
        }
    }
}

#[kunit_tests(virtio_mem_rust_power)]
mod tests {
    use super::*;

    #[test]
    fn sleep_policy_is_the_c_drivers() {
        const IDLE: Option<SuspendTarget> = Some(SuspendTarget::ToIdle);
        const MEM: Option<SuspendTarget> = Some(SuspendTarget::Mem);
        const STANDBY: Option<SuspendTarget> = Some(SuspendTarget::Standby);
        // Suspend-to-idle: always.
        assert_eq!(decide(IDLE, 1 << 30, false), None);
        // S3 and standby: with nothing plugged, or if the device keeps plugged memory.
        assert_eq!(decide(MEM, 0, false), None);
        assert_eq!(decide(MEM, 1 << 30, true), None);
        assert_eq!(decide(MEM, 1 << 30, false), Some(Refused::Suspend));
        assert_eq!(decide(STANDBY, 2 << 20, false), Some(Refused::Suspend));
        // Hibernation: persistent suspend does not help; nothing plugged, nothing lost.
        assert_eq!(decide(None, 1 << 30, true), Some(Refused::Hibernation));
        assert_eq!(decide(None, 0, true), None);
    }
}
