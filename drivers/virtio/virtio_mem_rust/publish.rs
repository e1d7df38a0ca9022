// SPDX-License-Identifier: GPL-2.0

//! What the runtime tells operators after each step: the [`Status`] the sysfs attributes show
//! (see [`crate::attrs`]), a `POLLPRI` wake-up of pollers of `activity` when it changes, and a
//! `KOBJ_CHANGE` uevent (`VIRTIO_MEM_EVENT=reached|stalled|stopped`) when the requested size is
//! reached, the runtime stalls or the device is halted.

use crate::{
    hotplug,
    run::{
        Lifecycle,
        Runtime, //
    },
    state::RunState,
    status::{
        Activity,
        Status, //
    }, //
};
use kernel::{
    prelude::*,
    str::CString,
    sysfs, //
};

/// The sysfs group of the device's attributes (see [`crate::attrs`]).
pub(crate) const ATTR_GROUP: &CStr = c"virtio_mem";

impl Runtime {
    /// Bytes of plugged memory the page allocator has, `added` being what the region added.
    pub(crate) fn online_bytes(&self, added: u64) -> u64 {
        let (online, blocks) = self.mode.online(&self.cx(), added);
        let probed = &self.device.probed;
        hotplug::allocator_bytes(
            probed.memmap_on_memory,
            probed.memory_block_size,
            online,
            blocks,
        )
    }

    /// Updates the published sizes during a step (no notification).
    pub(crate) fn update_sizes(&self, st: &RunState) {
        let plugged = self.plugged();
        let added = st.added();
        let online = self.online_bytes(added);
        let mut s = self.status.lock();
        s.plugged = plugged;
        s.added = added;
        s.online = online;
    }

    /// Updates the published online size after user space onlined or offlined memory.
    pub(crate) fn update_online(&self) {
        let added = self.status.lock().added;
        let online = self.online_bytes(added);
        self.status.lock().online = online;
    }

    /// Publishes the outcome of a step: the sizes, the activity and the reason. Wakes pollers
    /// of `activity` when they changed, and sends a uevent when the request is reached, the
    /// runtime stalls or the device is halted.
    pub(crate) fn publish(&self, st: &mut RunState) {
        self.update_sizes(st);
        let lifecycle = *self.lifecycle.lock();
        let activity = match (lifecycle, st.reason) {
            (Lifecycle::Halted, _) => Activity::Stopped,
            (Lifecycle::Unbinding, _) => Activity::Unbinding,
            (Lifecycle::Running, Some(r)) => r.activity(),
            (Lifecycle::Running, None) => Activity::Idle,
        };
        if st.reason.is_none() {
            st.forget_logged();
        }
        let (old, new) = {
            let mut s = self.status.lock();
            let old = *s;
            s.activity = activity;
            s.reason = st.reason;
            s.retry_at_ms = st.backoff.retry_at_ms();
            (old, *s)
        };
        if old.activity == new.activity && old.reason == new.reason {
            return;
        }
        self.notify();
        let event = match new.activity {
            Activity::Idle => "reached",
            Activity::Waiting | Activity::Stalled => "stalled",
            Activity::Stopped => "stopped",
            _ => return,
        };
        self.uevent(event, &new);
    }

    /// Wakes whoever polls the `activity` attribute.
    fn notify(&self) {
        sysfs::notify(self.device.dev(), ATTR_GROUP, c"activity");
    }

    /// Sends a change uevent: `VIRTIO_MEM_EVENT=<event>` with the sizes and the reason.
    fn uevent(&self, event: &str, s: &Status) {
        let env = [
            CString::try_from_fmt(fmt!("VIRTIO_MEM_EVENT={event}")),
            CString::try_from_fmt(fmt!("VIRTIO_MEM_REQUESTED={}", s.requested)),
            CString::try_from_fmt(fmt!("VIRTIO_MEM_PLUGGED={}", s.plugged)),
            CString::try_from_fmt(fmt!(
                "VIRTIO_MEM_REASON={}",
                s.reason.map_or("none", |r| r.code())
            )),
        ];
        let mut strs = KVec::new();
        for e in &env {
            let Ok(e) = e else {
                return;
            };
            if strs.push(&**e, GFP_KERNEL).is_err() {
                return;
            }
        }
        if let Err(e) = sysfs::uevent_change(self.device.dev(), &strs) {
            dev_warn!(self.device.dev(), "sending a uevent failed: {:?}\n", e);
        }
    }

    /// Records the requested size a step works toward; a new one shows as plugging or
    /// unplugging at once (a retry of the same one keeps showing why it stopped short).
    pub(crate) fn show_request(&self, requested: u64, plugged: u64) {
        let changed = {
            let mut s = self.status.lock();
            if s.requested == requested && s.activity != Activity::Idle {
                false
            } else {
                s.requested = requested;
                let activity = if requested < plugged {
                    Activity::Unplugging
                } else if requested > plugged {
                    Activity::Plugging
                } else {
                    s.activity
                };
                let changed = activity != s.activity;
                s.activity = activity;
                changed
            }
        };
        if changed {
            self.notify();
        }
    }
}
