// SPDX-License-Identifier: GPL-2.0

//! The device runtime: work items that follow the device's requested size.
//!
//! A config change (and probe) queues a step on the freezable system workqueue. A step re-reads
//! the requested and usable sizes, does what earlier steps left for it (take over memory an
//! earlier binding left added, unplug all memory plugged from before, resynchronize with the
//! device), and then lets the mode (see [`crate::manager::Manager`]) plug or unplug toward the
//! request. One `PLUG` request and one memory add cover a batch of up to 8G (see
//! [`crate::plug`]), and the request is read again between batches: a step stops early when it
//! moved.
//!
//! What the kernel may touch is the business of the device's `SystemRamRegion`: it records
//! which pages of added memory are backed, keeps the others away from the page allocator
//! whenever a block is onlined, and hands pages over or takes them back only atomically with
//! the device request that plugs or unplugs them, so that onlining and offlining by user space
//! cannot get in between. The modes only plan.
//!
//! A step that stops short says why with a [`StepError`], and only [`Runtime::step`] decides
//! what follows: a plug the device refuses or does not answer in time is tried again at half
//! the size by the mode; what still fails is retried from a delayed work item with back-off
//! (see [`crate::backoff`]), after a resync if the device answered `ERROR` or not in time; the
//! guest in the way stalls with the reason; an answer outside the protocol halts the device.
//! Every step that stops short sets a reason: `idle` means the request is met. After each step
//! the runtime publishes a status (see [`crate::attrs`]).

use crate::{
    device::DeviceClient,
    error::{
        Failed,
        StepError, //
    },
    hotplug::OfflineMemory,
    manager::{
        Ctx,
        Manager,
        RunLoop, //
    },
    protocol::Request,
    state::{
        Pending,
        RunState, //
    },
    status::{
        Activity,
        Event,
        Reason,
        Status, //
    }, //
};
use kernel::{
    memory_hotplug::MemoryNotifier,
    new_mutex,
    new_spinlock,
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Full,
            Relaxed, //
        },
        Arc,
        Mutex,
        SpinLock, //
    },
    time::{
        msecs_to_jiffies,
        BootTime,
        Instant, //
    },
    workqueue::{
        self,
        impl_has_delayed_work,
        impl_has_work,
        mod_arc_delayed_work,
        new_delayed_work,
        new_work,
        DelayedWork,
        Work,
        WorkItem, //
    }, //
};

/// How long to wait before looking again when free memory may come back, in seconds.
const MEMORY_RETRY_SECS: u32 = 5;

/// Where the runtime is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Following the device's request.
    Running,
    /// The device answered outside the protocol: no requests until it is bound again.
    Halted,
    /// Unbinding: no steps, no kicks; only requests that give memory back.
    Unbinding,
}

/// What probe found of the device's region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// The region was free; the device has this much plugged from before (to be unplugged).
    Free { plugged_size: u64 },
    /// An earlier binding parked the region with memory added: take it over.
    Parked,
}

/// The per-device runtime, shared by its work items, the memory notifier, the sysfs and
/// debugfs files and the driver's bound data.
///
/// # Locks
///
/// Lock order: `state`, then the mode's own lock (sub-block mode's block states, big-block
/// mode's big blocks), then `lifecycle`, then `status`.
///
/// - `state` is held for a whole step, and at unbind for the whole give-back. Steps add and
///   remove memory with it held: that takes the device hotplug lock and `mem_hotplug_lock`,
///   and onlining during an add runs the memory notifiers. So the memory notifier
///   ([`crate::events`]) never takes `state`.
/// - The mode's lock is taken by the notifier (with `mem_hotplug_lock` held by the onlining or
///   offlining) and briefly by steps. It is never held across a call of the region's methods,
///   which may wait for memory being onlined (the region's locking rules): that onlining would
///   wait for the notifier, which waits for the mode's lock.
/// - `lifecycle` is taken by the notifier when it queues a step, so that no step is queued
///   after unbind cancelled the work items; `status` is taken last, briefly, also by sysfs.
/// - `notifier` holds the memory notifier's registration: taken alone at probe, and under
///   `state` at unbind only to take the registration out, which is dropped (unregistered)
///   once `notifier` is let go.
/// - The region's own notifier and online-page callback take only the region's lock.
#[pin_data]
pub(crate) struct Runtime {
    pub(crate) device: DeviceClient,
    /// Sub-block or big-block mode, with its records.
    pub(crate) mode: Arc<dyn Manager>,
    pub(crate) offline: OfflineMemory,
    /// A step stalled because a memory block was being onlined or offlined: the notifier
    /// queues a step when that is over.
    pub(crate) waiting_for_transition: Atomic<bool>,
    /// Test knob (debugfs `remove_delay_ms`): how long to wait between unplugging the last
    /// sub-block of a memory block and removing it, to widen that window for tests.
    pub(crate) remove_delay_ms: Atomic<u32>,
    /// Test knob (debugfs `hide_persistent_suspend`): not 0 makes suspend behave as if the
    /// device did not offer `VIRTIO_MEM_F_PERSISTENT_SUSPEND`. QEMU offers it whenever the
    /// machine can wake from suspend, so no real device lets a test reach the refusal of S3.
    pub(crate) hide_persistent_suspend: Atomic<u32>,
    #[pin]
    pub(crate) state: Mutex<RunState>,
    /// The memory notifier, registered while bound. It holds a reference to the runtime, so it
    /// is dropped at unbind (before the region is parked: no event of ours after that).
    #[pin]
    pub(crate) notifier: Mutex<Option<Pin<KBox<MemoryNotifier<Runtime>>>>>,
    #[pin]
    pub(crate) lifecycle: SpinLock<Lifecycle>,
    /// What the sysfs attributes show.
    #[pin]
    pub(crate) status: SpinLock<Status>,
    #[pin]
    work: Work<Runtime, 0>,
    #[pin]
    retry: DelayedWork<Runtime, 1>,
}

impl_has_work! {
    impl HasWork<Self, 0> for Runtime { self.work }
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self, 1> for Runtime { self.retry }
}

impl WorkItem<0> for Runtime {
    type Pointer = Arc<Runtime>;

    fn run(this: Arc<Runtime>) {
        this.step(false);
    }
}

impl WorkItem<1> for Runtime {
    type Pointer = Arc<Runtime>;

    fn run(this: Arc<Runtime>) {
        this.step(true);
    }
}

impl Runtime {
    /// Creates the runtime of a device; nothing runs until [`Runtime::kick`].
    /// A runtime for the device; the caller hands it the claimed region (`RunState::hotplug`)
    /// once this succeeded, so that a failure here leaves the region with the caller.
    pub(crate) fn new(
        device: DeviceClient,
        mode: Arc<dyn Manager>,
        found: Found,
    ) -> Result<Arc<Self>> {
        let offline = OfflineMemory::new(device.geometry.unit.get());
        let pending = Pending {
            take_over: found == Found::Parked,
            unplug_all: matches!(found, Found::Free { plugged_size } if plugged_size > 0),
            resync: false,
        };
        Arc::pin_init(
            try_pin_init!(Runtime {
                device,
                mode,
                offline,
                waiting_for_transition: Atomic::new(false),
                remove_delay_ms: Atomic::new(0),
                hide_persistent_suspend: Atomic::new(0),
                state <- new_mutex!(RunState::new(pending)),
                notifier <- new_mutex!(None),
                lifecycle <- new_spinlock!(Lifecycle::Running),
                status <- new_spinlock!(Status::new()),
                work <- new_work!("virtio_mem_rust::Runtime::work"),
                retry <- new_delayed_work!("virtio_mem_rust::Runtime::retry"),
            }),
            GFP_KERNEL,
        )
    }

    /// Registers the memory notifier that tracks onlining of the region's memory.
    pub(crate) fn watch_memory(self: &Arc<Self>) -> Result {
        let notifier = KBox::pin_init(MemoryNotifier::new(self.clone()), GFP_KERNEL)?;
        *self.notifier.lock() = Some(notifier);
        Ok(())
    }

    /// Queues a step now (the device's config changed). Callable from atomic context.
    pub(crate) fn kick(self: &Arc<Self>) {
        // Already queued is fine: that step reads the new config.
        let _ = workqueue::system_freezable().enqueue::<Arc<Runtime>, 0>(self.clone());
    }

    /// Queues a step unless unbinding began (which cancels the work items after it is set).
    pub(crate) fn kick_if_running(self: &Arc<Self>) {
        let lifecycle = self.lifecycle.lock();
        if *lifecycle != Lifecycle::Unbinding {
            self.kick();
        }
    }

    /// What the mode gets of the runtime for a call (see [`Ctx`]).
    pub(crate) fn cx(&self) -> Ctx<'_> {
        Ctx {
            device: &self.device,
            offline: &self.offline,
            remove_delay_ms: &self.remove_delay_ms,
            run: self,
        }
    }

    /// Bytes plugged by this binding.
    pub(crate) fn plugged(&self) -> u64 {
        self.mode.plugged()
    }

    /// One step: follow the requested size until it is met or something stops us. `retry`: the
    /// delayed retry work item runs it (so it is no longer queued).
    fn step(self: &Arc<Self>, retry: bool) {
        let mut st = self.state.lock();
        if retry {
            st.backoff.ran();
        }
        if *self.lifecycle.lock() != Lifecycle::Running {
            return;
        }
        st.reason = None;
        st.backoff.clear();
        if let Err(e) = self.follow(&mut st) {
            if !self.stopped_short(&mut st, e) {
                return;
            }
        }
        self.publish(&mut st);
    }

    /// The sequence of a step.
    fn follow(self: &Arc<Self>, st: &mut RunState) -> Result<(), StepError> {
        let (requested, usable) = self.read_request()?;
        st.requested = requested;
        self.show_request(requested, self.plugged());
        let usable_end = self.device.addr() + usable;
        if st.pending.take_over {
            self.mode.take_over(&self.cx(), st, usable_end)?;
            st.pending.take_over = false;
            self.device.count(Event::TakeOver);
            dev_info!(
                self.device.dev(),
                "took over {:#x} bytes of memory that an earlier binding left added ({:#x} \
                 plugged)\n",
                st.added(),
                self.plugged()
            );
            // Whatever else the device has plugged is unused: make the device agree with us.
            st.pending.resync = true;
        }
        if st.pending.unplug_all {
            // Memory plugged before we were bound (e.g. before a reboot or by another driver)
            // is not added by us: start from nothing.
            self.device.send(&Request::UnplugAll)?;
            dev_info!(
                self.device.dev(),
                "unplugged all memory plugged from before\n"
            );
            st.pending.unplug_all = false;
            // The usable region may have shrunk.
            return Err(StepError::Moved);
        }
        if st.pending.resync {
            self.resync(usable_end)?;
            st.pending.resync = false;
        }
        self.mode.tidy(&self.cx(), st)?;
        if requested < self.plugged() {
            self.mode.unplug(&self.cx(), st, requested)
        } else {
            self.mode.plug(&self.cx(), st, usable_end)
        }
    }

    /// Reads the requested and usable sizes, and checks them against the region.
    fn read_request(&self) -> Result<(u64, u64), StepError> {
        let region_size = self.device.probed.config.region_size;
        let (requested, usable) = match self.device.read_sizes() {
            Ok(sizes) => sizes,
            Err(e) if e == ENODEV => return Err(StepError::Unbound),
            Err(e) => {
                dev_err!(self.device.dev(), "reading the config failed: {:?}\n", e);
                return Err(StepError::Guest(Reason::ExchangeFailed));
            }
        };
        if requested > region_size || usable > region_size {
            dev_err!(
                self.device.dev(),
                "device asks for {:#x} bytes with a usable region of {:#x}, but its region is \
                 {:#x} bytes: stopping until it is bound again\n",
                requested,
                usable,
                region_size
            );
            return Err(StepError::Halted(Failed {
                reason: Reason::BadConfig,
                req: None,
            }));
        }
        Ok((requested, usable))
    }

    /// Makes the device's plugged state match ours everywhere below `usable_end`.
    fn resync(&self, usable_end: u64) -> Result<(), StepError> {
        self.device.count(Event::Resync);
        let tracked_end = self.mode.resync(&self.cx(), usable_end)?;
        self.device.resync_untracked(tracked_end, usable_end)
    }

    /// What follows from a step that stopped short: the only place that decides it. Returns
    /// whether the step's outcome is to be published.
    fn stopped_short(self: &Arc<Self>, st: &mut RunState, e: StepError) -> bool {
        match e {
            StepError::Moved => {
                // The next step follows the new request at once: nothing is reached or stalled
                // meanwhile, so only the sizes are published.
                self.kick();
                self.update_sizes(st);
                return false;
            }
            // The device is going away: unbind publishes what follows.
            StepError::Unbound => return false,
            StepError::Device(f) => {
                st.reason = Some(f.reason);
                self.log_failed(st, &f);
                self.retry_later(st);
            }
            StepError::Halted(f) => {
                st.reason = Some(f.reason);
                if let Some(req) = f.req {
                    dev_err!(
                        self.device.dev(),
                        "device answered {} to {}, a value the protocol does not define; \
                         stopping until it is bound again\n",
                        f.reason,
                        req
                    );
                }
                let mut lifecycle = self.lifecycle.lock();
                if *lifecycle == Lifecycle::Running {
                    *lifecycle = Lifecycle::Halted;
                }
            }
            StepError::Guest(why) => self.stall(st, why),
        }
        true
    }

    /// Says what failed; after `ERROR` or a timeout, the next step resynchronizes first.
    pub(crate) fn log_failed(&self, st: &mut RunState, f: &Failed) {
        let dev = self.device.dev();
        let Some(req) = f.req else {
            // Logged where it happened.
            return;
        };
        if matches!(f.reason, Reason::DeviceError | Reason::Timeout) {
            let what = if f.timed_out() {
                "no answer within the time limit"
            } else {
                "the device answered ERROR"
            };
            dev_err!(
                dev,
                "{}: {}; resynchronizing with STATE requests before going on\n",
                req,
                what
            );
            st.pending.resync = true;
        } else {
            dev_info!(dev, "{} failed ({})\n", req, f.reason);
        }
    }

    /// Records why this step stopped short, says so once while it lasts, and retries later:
    /// soon when free memory may come back, when the notifier says so for blocks being onlined
    /// or offlined or memory waiting to be onlined, with back-off otherwise.
    fn stall(self: &Arc<Self>, st: &mut RunState, why: Reason) {
        st.reason = Some(why);
        if st.first_time(why) {
            let what = if st.requested < self.plugged() {
                "unplugging"
            } else {
                "plugging"
            };
            dev_info!(
                self.device.dev(),
                "{} stopped short of the requested size: {}\n",
                what,
                why
            );
        }
        match why {
            Reason::Margin | Reason::MemmapNoRoom => self.retry_in(st, MEMORY_RETRY_SECS),
            Reason::WaitingForOnline => {}
            Reason::Transition => {
                self.waiting_for_transition.store(true, Relaxed);
                // In case the transition ended before the flag was seen.
                self.retry_in(st, 1);
            }
            _ => self.retry_later(st),
        }
    }

    /// Schedules the next step after the current back-off delay, and doubles the delay.
    fn retry_later(self: &Arc<Self>, st: &mut RunState) {
        let secs = st.backoff.next_delay();
        // A failed request is logged each time; a stall once (see `stall`).
        if st.reason.is_some_and(|r| r.activity() == Activity::Waiting) {
            dev_info!(self.device.dev(), "retrying in {} s\n", secs);
        }
        self.retry_in(st, secs);
    }

    /// Schedules the next step in `secs` seconds and records when. A retry queued for later is
    /// moved up; one queued for sooner stays.
    fn retry_in(self: &Arc<Self>, st: &mut RunState, secs: u32) {
        let now_ms = Instant::<BootTime>::now().as_nanos() / 1_000_000;
        if let Some(secs) = st.backoff.schedule(now_ms, secs) {
            let delay = msecs_to_jiffies(secs * 1000);
            mod_arc_delayed_work::<Runtime, 1>(workqueue::system_freezable(), self, delay);
        }
    }

    /// Whether the notifier should queue a step because a transition a step waited for ended.
    pub(crate) fn transition_ended(&self) -> bool {
        self.waiting_for_transition.xchg(false, Full)
    }
}

/// The run loop's side of what a mode may ask of it (see [`Ctx`]).
impl RunLoop for Runtime {
    /// Whether the device's requested size moved away from what this step works toward: the
    /// mode stops after its current batch (`Err(Moved)`), and a new step starts at once (as the
    /// C driver aborts a run with `-EAGAIN` when the config changed). Not while unbinding.
    fn check_request(&self, st: &RunState) -> Result<(), StepError> {
        if *self.lifecycle.lock() == Lifecycle::Unbinding {
            return Ok(());
        }
        match self.device.read_sizes() {
            Ok((requested, _)) if requested != st.requested => Err(StepError::Moved),
            _ => Ok(()),
        }
    }

    /// After a plug of `tried` bytes failed with `f`: if the device refused it (`BUSY` or
    /// `NACK`, e.g. the host could not allocate that much) and plugs down to `least` bytes are
    /// possible, halves the plug limit and says to try again right away. After a timeout the
    /// limit is halved too (a host slower than the timeout for a big plug gets smaller ones),
    /// but the retry comes after the resync that a timeout needs.
    fn smaller_plugs(&self, st: &mut RunState, f: &Failed, tried: u64, least: u64) -> bool {
        let refused = matches!(f.reason, Reason::DeviceBusy | Reason::DeviceRefused);
        if !(refused || f.timed_out()) {
            return false;
        }
        let Some(first) = st.plug_limit.halve(tried, least) else {
            return false;
        };
        if first {
            dev_info!(
                self.device.dev(),
                "the device {} a plug of {:#x} bytes; trying smaller pieces\n",
                if refused {
                    "refused"
                } else {
                    "did not answer in time to"
                },
                tried
            );
        }
        // Going on at once after a refusal (it is not why this step stops, unless a later
        // one is); a timeout stops the step for the resync.
        refused && !st.pending.resync
    }

    fn update_sizes(&self, st: &RunState) {
        Runtime::update_sizes(self, st)
    }
}
