// SPDX-License-Identifier: GPL-2.0

//! Bindings hand the device's memory on: at probe the region is reserved, or taken over from an
//! earlier binding of the same device that parked it with memory still added; at unbind what is
//! not in use is given back (removed and unplugged) and the rest is parked.

use crate::{
    device::Probed,
    error::StepError,
    hotplug::Hotplug,
    protocol::Request,
    run::{
        Found, //
        Lifecycle,
        Runtime,
    },
    state::RunState, //
};
use kernel::{
    c_str,
    device::Core,
    memory_hotplug::{
        MemoryGroup,
        SystemRamRegion, //
    },
    page::PAGE_SIZE,
    prelude::*,
    str::CString,
    sync::Arc,
    virtio,
    workqueue::{
        cancel_arc_delayed_work_sync,
        cancel_arc_work_sync, //
    }, //
};

/// Reserves the device's region (tracked in `granule`s, added in `unit`s) and registers its
/// memory group, or takes over the region an earlier binding of this device parked. Reserving
/// fails while any of the region is in use, e.g. memory that an earlier driver added and could
/// not take back when it was unbound; if that driver was this one (even from before a module
/// reload), it parked the region.
pub(crate) fn claim(
    dev: &virtio::Device<Core<'_>>,
    probed: &Probed,
    granule: u64,
    unit: u64,
) -> Result<(Hotplug, Found)> {
    let config = &probed.config;
    let name = CString::try_from_fmt(fmt!("{}", dev.as_ref().name()))?;
    let ram_name = c_str!("System RAM (virtio_mem)");
    // The region as the device provides it, which must be the one its config was checked with.
    let range = dev.device_memory()?;
    if (range.start(), range.size()) != (config.addr, config.region_size) {
        dev_err!(
            dev,
            "refusing device: its region moved to [{:#x}, +{:#x}) since probe read it\n",
            range.start(),
            range.size()
        );
        return Err(EINVAL);
    }
    let e = match SystemRamRegion::request(range, granule, name, ram_name) {
        Ok(region) => {
            let unit_pages = usize::try_from(unit / PAGE_SIZE as u64)?;
            let group = MemoryGroup::register_dynamic(probed.nid, unit_pages)?;
            let found = Found::Free {
                plugged_size: config.plugged_size,
            };
            return Ok((Hotplug { region, group }, found));
        }
        Err(e) => e,
    };
    let Some((region, group)) =
        SystemRamRegion::take_over(dev.as_ref(), config.addr, config.region_size)
    else {
        dev_err!(
            dev,
            "refusing device: its region [{:#x}-{:#x}] is in use already (memory left added by \
             another driver?)\n",
            config.addr,
            config.addr + config.region_size - 1
        );
        return Err(e);
    };
    if region.granule() != granule {
        dev_err!(
            dev,
            "refusing device: the memory an earlier binding left added is tracked in units of \
             {:#x}, not {:#x} (bound in another mode?); load the driver with the parameters it \
             had\n",
            region.granule(),
            granule
        );
        region.park(dev.as_ref(), group);
        return Err(EBUSY);
    }
    dev_info!(
        dev,
        "taking over memory that an earlier binding left added ({:#x} bytes)\n",
        region.added()
    );
    Ok((Hotplug { region, group }, Found::Parked))
}

impl Runtime {
    /// A probe that failed after the region was handed to the runtime: nothing ran yet, so
    /// nothing is given back; the region is parked for the next binding (or released if
    /// nothing is added).
    pub(crate) fn abandon(&self, dev: &virtio::Device<Core<'_>>) {
        let hotplug = self.state.lock().hotplug.take();
        if let Some(h) = hotplug {
            h.park(dev.as_ref());
        }
    }

    /// Stops the runtime for unbind and waits until no work item runs or is queued. Then gives
    /// back what it can: offline blocks are removed, free memory is unplugged (within the
    /// safety margin) and whatever is plugged but not added is unplugged; a halted device is
    /// not asked anything. Memory that stays in use is parked with the region for the next
    /// binding of the device to take over; the region keeps its unplugged pages offline
    /// meanwhile, whatever happened here. Only the first call does anything.
    pub(crate) fn stop(self: &Arc<Self>) {
        let was = {
            // A step in progress ends first; the notifier queues no step from here on.
            let _st = self.state.lock();
            let mut lifecycle = self.lifecycle.lock();
            if *lifecycle == Lifecycle::Unbinding {
                return;
            }
            core::mem::replace(&mut *lifecycle, Lifecycle::Unbinding)
        };
        cancel_arc_work_sync::<Runtime, 0>(self);
        cancel_arc_delayed_work_sync::<Runtime, 1>(self);

        let mut st = self.state.lock();
        st.reason = None;
        st.backoff.cancelled();
        self.publish(&mut st);
        // Nobody but us onlines or offlines the region's memory while we give it back.
        if let Some(h) = st.hotplug.as_mut() {
            h.region.block_hotplug(true);
        }
        if was != Lifecycle::Halted {
            self.give_back(&mut st);
        }
        // Unregistered outside its own lock (the lock order: `state`, then `notifier`).
        let notifier = self.notifier.lock().take();
        drop(notifier);
        let added = st.added();
        if added > 0 {
            dev_info!(
                self.device.dev(),
                "{:#x} bytes stay added to the system ({:#x} plugged): memory in use; the next \
                 binding of this device takes it over\n",
                added,
                self.plugged()
            );
        }
        self.publish(&mut st);
        // Releases the region and the group, or parks them while memory stays added.
        if let Some(h) = st.hotplug.take() {
            h.region.park(self.device.dev(), h.group);
        }
    }

    /// At unbind: gives back what is not in use. If nothing stays added and something is
    /// plugged, by our records or by the device's (a request it may have done without saying
    /// so), everything is unplugged (`UNPLUG_ALL`).
    fn give_back(self: &Arc<Self>, st: &mut RunState) {
        if let Err(e) = self.mode.give_back(&self.cx(), st) {
            self.gave_back_short(st, e);
        }
        if st.hotplug.is_none() || st.added() > 0 {
            return;
        }
        if self.plugged() == 0 && self.device.read_plugged().is_ok_and(|size| size == 0) {
            return;
        }
        match self.device.send(&Request::UnplugAll) {
            Ok(_) => self.mode.forget_plugged(),
            Err(f) => {
                self.gave_back_short(st, f.into());
                dev_warn!(
                    self.device.dev(),
                    "unplugging all memory at unbind failed; the next driver will\n"
                )
            }
        }
    }

    /// Says why unbind gives back less than it might.
    fn gave_back_short(&self, st: &mut RunState, e: StepError) {
        match e {
            StepError::Device(f) | StepError::Halted(f) => self.log_failed(st, &f),
            StepError::Guest(why) => dev_info!(
                self.device.dev(),
                "unbinding stopped short of the requested size: {}\n",
                why
            ),
            StepError::Moved | StepError::Unbound => {}
        }
    }
}
