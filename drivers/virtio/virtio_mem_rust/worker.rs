// SPDX-License-Identifier: GPL-2.0

//! The run loop: work items that follow the device's requested size.
//!
//! A config change (and probe) queues [`Worker`] on the freezable system workqueue. The work
//! re-reads the requested and usable sizes and plugs toward the request: one `PLUG` request
//! and one memory add per batch of units (see [`crate::plug`]). A `NACK`, `BUSY` or a failed
//! exchange is retried from a delayed work item, with the delay doubling from 5 s to 300 s; an
//! `ERROR` or an answer outside the protocol stops the device with a message.
//!
//! When user space onlines memory (no auto-onlining), added memory stays offline until it does.
//! So that a burst of plugs cannot fill the guest with offline memory (whose memmap still costs
//! memory), at most [`Worker::offline_limit`] bytes are added and not yet online at a time; the
//! memory notifier counts onlined and offlined memory of the region and resumes plugging when
//! half of that is online again.

use crate::{
    config::Raw,
    plug::Geometry,
    protocol::{self, Refusal, Request, SendError},
};
use core::{
    mem::offset_of,
    sync::atomic::{AtomicBool, AtomicI64, Ordering},
};
use kernel::{
    device,
    memory_hotplug::{
        MemoryEvent, MemoryGroup, MemoryNotifier, MemoryNotifierHandler, MemoryRange,
        SystemRamRegion,
    },
    new_mutex,
    prelude::*,
    sync::{aref::ARef, Arc, Mutex},
    time::msecs_to_jiffies,
    virtio,
    workqueue::{
        self, cancel_arc_delayed_work_sync, cancel_arc_work_sync, impl_has_delayed_work,
        impl_has_work, new_delayed_work, new_work, DelayedWork, Work, WorkItem,
    },
};

/// First retry delay after a refused or failed request, in seconds.
const RETRY_MIN_SECS: u32 = 5;
/// Longest retry delay, in seconds.
const RETRY_MAX_SECS: u32 = 300;

/// Offline memory the driver allows at least (more if two units are bigger), as the C driver.
const OFFLINE_LIMIT_MIN: u64 = 1 << 30;

/// Mutable state of the run loop.
struct State {
    /// The device's reserved region; `None` once unbound.
    region: Option<SystemRamRegion>,
    /// End of the plugged and added run of units `[geometry.first, added_end)`.
    added_end: u64,
    /// Delay before the next retry.
    retry_secs: u32,
    /// Set at unbind: no more requests.
    stopping: bool,
    /// The device answered with nonsense or `ERROR`: no more requests until rebound.
    stopped: bool,
    /// Whether the "cannot unplug yet" message was logged for the current request.
    told_unplug: bool,
    /// The memory notifier, registered while bound (it holds a reference to the worker).
    notifier: Option<Pin<KBox<MemoryNotifier<Worker>>>>,
}

/// The per-device run loop, shared by its work items and the driver's data.
#[pin_data]
pub(crate) struct Worker {
    dev: ARef<virtio::Device>,
    /// Start of the device's region.
    addr: u64,
    vq: virtio::Virtqueue,
    geometry: Geometry,
    group: MemoryGroup,
    /// Bytes of the region that are added but offline (a signed count, updated from the memory
    /// notifier without the state lock, which is held while memory is added and onlined).
    offline: AtomicI64,
    /// Plugging waits for memory to be onlined.
    waiting_for_online: AtomicBool,
    #[pin]
    state: Mutex<State>,
    #[pin]
    work: Work<Worker, 0>,
    #[pin]
    retry: DelayedWork<Worker, 1>,
}

impl_has_work! {
    impl HasWork<Self, 0> for Worker { self.work }
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self, 1> for Worker { self.retry }
}

impl WorkItem<0> for Worker {
    type Pointer = Arc<Worker>;

    fn run(this: Arc<Worker>) {
        this.step();
    }
}

impl WorkItem<1> for Worker {
    type Pointer = Arc<Worker>;

    fn run(this: Arc<Worker>) {
        this.step();
    }
}

impl Worker {
    /// Creates the run loop of a device; nothing runs until [`Worker::kick`].
    pub(crate) fn new(
        dev: &virtio::Device<device::Bound>,
        vq: virtio::Virtqueue,
        geometry: Geometry,
        group: MemoryGroup,
        region: SystemRamRegion,
    ) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Worker {
                dev: dev.into(),
                addr: region.start(),
                vq,
                geometry,
                group,
                offline: AtomicI64::new(0),
                waiting_for_online: AtomicBool::new(false),
                state <- new_mutex!(State {
                    region: Some(region),
                    added_end: geometry.first,
                    retry_secs: RETRY_MIN_SECS,
                    stopping: false,
                    stopped: false,
                    told_unplug: false,
                    notifier: None,
                }),
                work <- new_work!("virtio_mem_rust::Worker::work"),
                retry <- new_delayed_work!("virtio_mem_rust::Worker::retry"),
            }),
            GFP_KERNEL,
        )
    }

    /// Registers the memory notifier that tracks onlining of the region's memory.
    pub(crate) fn watch_memory(self: &Arc<Self>) -> Result {
        let notifier = KBox::pin_init(MemoryNotifier::new(self.clone()), GFP_KERNEL)?;
        self.state.lock().notifier = Some(notifier);
        Ok(())
    }

    /// The most memory that may be added and still offline.
    pub(crate) fn offline_limit(&self) -> u64 {
        (2 * self.geometry.unit.get()).max(OFFLINE_LIMIT_MIN)
    }

    /// Queues a run now (the device's config changed). Callable from atomic context.
    pub(crate) fn kick(self: &Arc<Self>) {
        // Already queued is fine: that run reads the new config.
        let _ = workqueue::system_freezable().enqueue::<Arc<Worker>, 0>(self.clone());
    }

    /// Stops the run loop for unbind and waits until no work item runs or is queued. Memory
    /// that stays added keeps its region reserved. Only the first call does anything.
    pub(crate) fn stop(self: &Arc<Self>) {
        // Unregister the notifier first (it could queue work, and it holds a reference).
        let notifier = {
            let mut st = self.state.lock();
            if st.stopping {
                return;
            }
            st.stopping = true;
            st.notifier.take()
        };
        drop(notifier);
        cancel_arc_work_sync::<Worker, 0>(self);
        cancel_arc_delayed_work_sync::<Worker, 1>(self);

        let mut st = self.state.lock();
        let added = self.plugged_in(&st);
        if added > 0 {
            dev_warn!(
                self.dev.as_ref(),
                "{:#x} bytes of memory stay added to the system (unplug is not supported yet); \
                 the region stays reserved, so the device cannot be bound again\n",
                added
            );
        }
        // Releases the reservation, or keeps it while memory stays added.
        st.region = None;
    }

    /// Bytes plugged and added by this binding.
    pub(crate) fn plugged(&self) -> u64 {
        self.plugged_in(&self.state.lock())
    }

    /// Bytes plugged and added, from the locked state.
    fn plugged_in(&self, st: &State) -> u64 {
        st.added_end - self.geometry.first
    }

    /// One run: plug toward the requested size until it is met or something stops us.
    fn step(self: &Arc<Self>) {
        let mut st = self.state.lock();
        if st.stopping || st.stopped {
            return;
        }
        let (requested, usable) = match self.read_sizes() {
            Ok(sizes) => sizes,
            Err(e) if e == ENODEV => return,
            Err(e) => {
                dev_err!(self.dev.as_ref(), "reading the config failed: {:?}\n", e);
                return self.retry_later(&mut st);
            }
        };
        let plugged = self.plugged_in(&st);
        if requested < plugged {
            if !st.told_unplug {
                dev_info!(
                    self.dev.as_ref(),
                    "requested size {:#x} is below the plugged size {:#x}: unplug is not \
                     supported yet\n",
                    requested,
                    plugged
                );
                st.told_unplug = true;
            }
            return;
        }
        st.told_unplug = false;

        let usable_end = self.addr + usable;
        while let Some((addr, size)) = self.geometry.next_plug(st.added_end, requested, usable_end)
        {
            // Keep added-but-offline memory within the limit; the notifier resumes us. Announce
            // the wait before looking, so that memory onlined in between still wakes us.
            self.waiting_for_online.store(true, Ordering::SeqCst);
            let offline = u64::try_from(self.offline.load(Ordering::SeqCst)).unwrap_or(0);
            let room = self.offline_limit().saturating_sub(offline);
            let size = size.min(room - room % self.geometry.unit);
            if size == 0 {
                return;
            }
            self.waiting_for_online.store(false, Ordering::SeqCst);
            if let Err(again) = self.plug_and_add(&mut st, addr, size) {
                if again {
                    self.retry_later(&mut st);
                }
                return;
            }
            st.added_end = addr + size;
            st.retry_secs = RETRY_MIN_SECS;
        }
    }

    /// Reads the requested and usable region sizes.
    fn read_sizes(&self) -> Result<(u64, u64)> {
        Ok((
            self.vq.read_config(offset_of!(Raw, requested_size))?,
            self.vq.read_config(offset_of!(Raw, usable_region_size))?,
        ))
    }

    /// Plugs `[addr, addr + size)` at the device and adds it to the system. On failure, says
    /// whether to retry later (`Err(true)`) or not (`Err(false)`: unbound or stopped).
    fn plug_and_add(&self, st: &mut State, addr: u64, size: u64) -> Result<(), bool> {
        let nb_blocks = u16::try_from(size / self.geometry.block_size).map_err(|_| false)?;
        match protocol::send(&self.vq, &Request::Plug { addr, nb_blocks }) {
            Ok(_) => {}
            Err(SendError::Transport(e)) if e == ENODEV => return Err(false),
            Err(
                e @ (SendError::Transport(_) | SendError::Refused(Refusal::Nack | Refusal::Busy)),
            ) => {
                dev_info!(
                    self.dev.as_ref(),
                    "plugging [{:#x}-{:#x}] failed ({:?}); retrying in {} s\n",
                    addr,
                    addr + size - 1,
                    e,
                    st.retry_secs
                );
                return Err(true);
            }
            Err(SendError::Refused(r)) => {
                dev_err!(
                    self.dev.as_ref(),
                    "device answered {:?} to PLUG [{:#x}-{:#x}]; stopping until it is bound again\n",
                    r,
                    addr,
                    addr + size - 1
                );
                st.stopped = true;
                return Err(false);
            }
        }

        let Some(region) = st.region.as_mut() else {
            return Err(false);
        };
        // Counted as offline before it is added: auto-onlining reports it online during the add.
        self.offline.fetch_add(size as i64, Ordering::SeqCst);
        if let Err(e) = region.add_memory(&self.group, addr, size) {
            self.offline.fetch_sub(size as i64, Ordering::SeqCst);
            dev_err!(
                self.dev.as_ref(),
                "adding memory [{:#x}-{:#x}] failed ({:?}); unplugging it again\n",
                addr,
                addr + size - 1,
                e
            );
            if let Err(e) = protocol::send(&self.vq, &Request::Unplug { addr, nb_blocks }) {
                dev_err!(
                    self.dev.as_ref(),
                    "unplugging [{:#x}-{:#x}] failed too ({:?}); stopping until it is bound again\n",
                    addr,
                    addr + size - 1,
                    e
                );
                st.stopped = true;
                return Err(false);
            }
            return Err(true);
        }
        Ok(())
    }

    /// Schedules the next run after the current back-off delay, and doubles the delay.
    fn retry_later(self: &Arc<Self>, st: &mut State) {
        let delay = msecs_to_jiffies(st.retry_secs * 1000);
        st.retry_secs = (st.retry_secs * 2).min(RETRY_MAX_SECS);
        let _ =
            workqueue::system_freezable().enqueue_delayed::<Arc<Worker>, 1>(self.clone(), delay);
    }
}

impl MemoryNotifierHandler for Worker {
    fn notify(this: &Arc<Self>, event: MemoryEvent, range: MemoryRange) -> Result {
        let end = range.start + range.size;
        if end <= this.geometry.first || range.start >= this.geometry.end {
            return Ok(());
        }
        let size = range.size as i64;
        match event {
            MemoryEvent::Online => {
                let offline = this.offline.fetch_sub(size, Ordering::SeqCst) - size;
                let resume = (this.offline_limit() / 2) as i64;
                // The notifier is unregistered before the work items are cancelled at unbind,
                // so this cannot queue work after that.
                if offline <= resume && this.waiting_for_online.swap(false, Ordering::SeqCst) {
                    this.kick();
                }
            }
            MemoryEvent::Offline => {
                this.offline.fetch_add(size, Ordering::SeqCst);
            }
            _ => {}
        }
        Ok(())
    }
}
