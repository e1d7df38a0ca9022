// SPDX-License-Identifier: GPL-2.0

//! The run loop: work items that follow the device's requested size.
//!
//! A config change (and probe) queues [`Worker`] on the freezable system workqueue. The work
//! re-reads the requested and usable sizes and plugs toward the request. In sub-block mode it
//! plugs sub-blocks into partly plugged memory blocks first, then adds new blocks (see
//! [`crate::sbm`]); the online-page callback and the memory notifier keep unplugged sub-blocks
//! of added blocks offline. In big-block mode it plugs and adds whole big blocks. Either way,
//! one `PLUG` request and one memory add cover a batch of up to 8G (see [`crate::plug`]).
//! Memory plugged before we were bound is unplugged first (`UNPLUG_ALL`), unless an earlier
//! binding parked its region with memory still added: then that memory is taken over, its
//! blocks rediscovered (the pages of online blocks tell which sub-blocks are in use) and the
//! device made to agree. A plug the device refuses (`NACK`, `BUSY`: e.g. the host cannot
//! allocate that much now) is tried again right away at half the size, down to one block, so
//! that what the host can back is plugged. What still fails (also a failed exchange) is retried
//! from a delayed work item, with the delay doubling from 5 s to 300 s; after an `ERROR` or a
//! timeout the plugged state is first resynchronized with `STATE` requests. Only an answer
//! outside the protocol stops the device, with a message that names it.
//!
//! After each step the run loop publishes a [`Status`] for the sysfs attributes, wakes pollers
//! of `activity` when it changes, and sends a uevent when the requested size is reached or the
//! loop stalls.
//!
//! When user space onlines memory (no auto-onlining), added memory stays offline until it does.
//! So that a burst of plugs cannot fill the guest with offline memory (whose memmap still costs
//! memory), at most [`Worker::offline_limit`] bytes are added and not yet online at a time; the
//! memory notifier counts onlined and offlined memory of the region and resumes plugging when
//! half of that is online again.

use crate::{
    config::Raw,
    module_parameters,
    plug::Geometry,
    protocol::{self, Request, SendError},
    sbm::{BlockState, OnlineDecision, SubBlocks, Transition},
    status::{Activity, Counters, Event, Reason, Status},
    Mode,
};
use core::{
    mem::offset_of,
    num::NonZeroU64,
    sync::atomic::{AtomicBool, AtomicI64, Ordering},
};
use kernel::{
    device,
    memory_hotplug::{
        self, MemoryEvent, MemoryGroup, MemoryNotification, MemoryNotifier, MemoryNotifierHandler,
        OnlinePageCallback, OnlinePageHandler, OnliningPages, SystemRamRegion,
    },
    new_mutex, new_spinlock,
    prelude::*,
    str::CString,
    sync::{
        aref::ARef,
        atomic::{Atomic, Full, Relaxed},
        Arc, Mutex, SpinLock,
    },
    sysfs,
    time::{msecs_to_jiffies, BootTime, Instant},
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

/// Free kernel memory that adding memory (whose memmap comes from it) leaves at least.
const MEMMAP_RESERVE_MIN: u64 = 32 << 20;

/// How long to wait before looking again when free memory may come back, in seconds.
const MEMORY_RETRY_SECS: u32 = 5;

/// The sysfs group of the device's attributes (see [`crate::attrs`]).
pub(crate) const ATTR_GROUP: &CStr = c"virtio_mem";

/// What the driver knows of the device that never changes while bound.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Info {
    pub(crate) mode: Mode,
    pub(crate) nid: i32,
    pub(crate) region_size: u64,
    pub(crate) device_block_size: u64,
    pub(crate) memory_block_size: u64,
    /// Added memory holds its own memmap.
    pub(crate) memmap_on_memory: bool,
}

/// How a binding starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// The region was free; the device has this much plugged from before (to be unplugged).
    Fresh { plugged_size: u64 },
    /// An earlier binding parked the region with memory added: take it over.
    TakeOver,
}

/// The free memory unplug leaves at least, in bytes: the `unplug_margin_mb` module parameter,
/// or by default four times the page allocator's reserves (its high watermarks), and at least
/// 128M.
fn unplug_margin() -> u64 {
    match module_parameters::unplug_margin_mb.value() {
        0 => (4 * memory_hotplug::reserved_memory()).max(128 << 20),
        mb => mb << 20,
    }
}

/// Mutable state of the run loop.
struct State {
    /// The device's reserved region; `None` once unbound.
    region: Option<SystemRamRegion>,
    /// Big-block mode: end of the plugged and added run of big blocks `[geometry.first,
    /// added_end)`.
    added_end: u64,
    /// The memory group of the memory we add; `None` once unbound.
    group: Option<MemoryGroup>,
    /// Delay before the next retry.
    retry_secs: u32,
    /// The most bytes one `PLUG` asks for: halved when the device refuses a plug (e.g. the
    /// host cannot back that much now), so that what it can back is plugged; doubled again
    /// after each plug it accepts.
    plug_limit: u64,
    /// When the scheduled retry runs, in ms of `CLOCK_BOOTTIME`.
    retry_at_ms: Option<i64>,
    /// Set at unbind: no more requests but those that give memory back.
    stopping: bool,
    /// The device answered with nonsense: no more requests until rebound.
    stopped: bool,
    /// The device has memory plugged from before we were bound: unplug it all first.
    unplug_all: bool,
    /// Memory added by an earlier binding is to be taken over first.
    take_over: bool,
    /// Our view of the plugged state and the device's may differ (after `ERROR` or a
    /// timeout): resynchronize with `STATE` requests first.
    resync: bool,
    /// Why this step stopped short of the request, if it did.
    reason: Option<Reason>,
    /// The reason last logged (each is logged once while it lasts).
    logged: Option<Reason>,
    /// Whether the message that the online-page callback is taken was logged.
    told_no_callback: bool,
    /// Whether the message that plugs are made smaller was logged.
    told_smaller_plugs: bool,
    /// The memory notifier, registered while bound (it holds a reference to the worker).
    notifier: Option<Pin<KBox<MemoryNotifier<Worker>>>>,
    /// Sub-block mode: the online-page callback, registered while an added block is partly
    /// plugged (it holds a reference to the worker). Dropped without holding `blocks`, which
    /// the callback takes.
    online_cb: Option<OnlinePageCallback<Worker>>,
}

/// The per-device run loop, shared by its work items and the driver's data.
///
/// Lock order: `state`, then `blocks`, then `status`. The memory notifier and the online-page
/// callback take only `blocks` (they run while memory is added, with `state` held), so `blocks`
/// is never held while adding, removing, onlining or offlining memory.
#[pin_data]
pub(crate) struct Worker {
    dev: ARef<virtio::Device>,
    /// Start of the device's region.
    pub(crate) addr: u64,
    pub(crate) vq: virtio::Virtqueue,
    pub(crate) geometry: Geometry,
    pub(crate) info: Info,
    /// Sub-block mode (`blocks` tracks the region) rather than big-block mode.
    sub_blocks: bool,
    /// Request and event counters.
    pub(crate) counters: Counters,
    /// Bytes of the region that are added but offline (a signed count, updated from the memory
    /// notifier without the state lock, which is held while memory is added and onlined).
    offline: AtomicI64,
    /// Plugging waits for memory to be onlined.
    waiting_for_online: AtomicBool,
    /// Fault injection (debugfs `lose_answers`): this many more answers of the device are
    /// dropped as if they had not come in time. The device acts on the request; the driver
    /// sees a timeout.
    pub(crate) lose_answers: Atomic<u32>,
    #[pin]
    state: Mutex<State>,
    /// Sub-block mode: the state of every memory block; its `removing` flag stops onlining and
    /// the notifier's kicks at unbind in both modes.
    #[pin]
    pub(crate) blocks: Mutex<SubBlocks>,
    /// What the sysfs attributes show; taken last, briefly.
    #[pin]
    pub(crate) status: SpinLock<Status>,
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
        info: Info,
        start: Start,
        group: MemoryGroup,
        region: SystemRamRegion,
    ) -> Result<Arc<Self>> {
        let sb_size = match info.mode {
            Mode::SubBlock { sb_size } => NonZeroU64::new(sb_size),
            Mode::BigBlock { .. } => None,
        };
        // With memmap-on-memory the first sub-blocks of each block hold its memmap.
        let pinned = match sb_size {
            Some(sb) if info.memmap_on_memory => {
                let memmap = memory_hotplug::memmap_size(geometry.unit.get());
                usize::try_from(memmap.div_ceil(sb.get())).map_err(|_| EINVAL)?
            }
            _ => 0,
        };
        let sbm = SubBlocks::new(
            geometry.first,
            geometry.end,
            geometry.unit,
            sb_size.unwrap_or(geometry.unit),
            pinned,
        );
        Arc::pin_init(
            try_pin_init!(Worker {
                dev: dev.into(),
                addr: region.start(),
                vq,
                geometry,
                info,
                sub_blocks: sb_size.is_some(),
                counters: Counters::new(),
                offline: AtomicI64::new(0),
                waiting_for_online: AtomicBool::new(false),
                lose_answers: Atomic::new(0),
                state <- new_mutex!(State {
                    region: Some(region),
                    group: Some(group),
                    added_end: geometry.first,
                    retry_secs: RETRY_MIN_SECS,
                    plug_limit: u64::MAX,
                    retry_at_ms: None,
                    stopping: false,
                    stopped: false,
                    unplug_all: matches!(start, Start::Fresh { plugged_size } if plugged_size > 0),
                    take_over: start == Start::TakeOver,
                    resync: false,
                    reason: None,
                    logged: None,
                    told_no_callback: false,
                    told_smaller_plugs: false,
                    notifier: None,
                    online_cb: None,
                }),
                blocks <- new_mutex!(sbm),
                status <- new_spinlock!(Status::new()),
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

    /// Stops the run loop for unbind and waits until no work item runs or is queued. Then gives
    /// back what it can: offline blocks are removed, free memory is unplugged (within the
    /// safety margin) and whatever is plugged but not added is unplugged. Memory that stays in
    /// use is parked with the region for the next binding of the device to take over. Only the
    /// first call does anything.
    pub(crate) fn stop(self: &Arc<Self>) {
        {
            let mut st = self.state.lock();
            if st.stopping {
                return;
            }
            st.stopping = true;
        }
        // From here on memory of the region is not onlined and the notifier queues no work.
        self.blocks.lock().removing = true;
        cancel_arc_work_sync::<Worker, 0>(self);
        cancel_arc_delayed_work_sync::<Worker, 1>(self);

        let mut st = self.state.lock();
        st.reason = None;
        st.retry_at_ms = None;
        self.publish(&mut st);
        if !st.stopped {
            self.give_back(&mut st);
        }
        // Unregister the notifier, then the online-page callback: no partly plugged block is
        // offline any more, so nothing that needs the callback can be onlined.
        st.notifier = None;
        st.online_cb = None;
        let added = st.region.as_ref().map_or(0, |r| r.added());
        if added > 0 {
            dev_info!(
                self.dev.as_ref(),
                "{:#x} bytes stay added to the system ({:#x} plugged): memory in use; the next \
                 binding of this device takes it over\n",
                added,
                self.plugged_in(&st)
            );
        }
        self.publish(&mut st);
        // Releases the region and the group, or parks them while memory stays added.
        if let (Some(region), Some(group)) = (st.region.take(), st.group.take()) {
            region.park(group);
        }
    }

    /// At unbind: gives back what is not in use. Offline blocks go first: partly plugged ones
    /// must, since without the online-page callback onlining them would hand unplugged memory to
    /// the kernel. If nothing stays added, everything is unplugged (`UNPLUG_ALL`).
    fn give_back(self: &Arc<Self>, st: &mut State) {
        if self.sub_blocks {
            self.remove_offline_blocks(st);
            self.unplug_sbm(st, 0);
            let _ = self.unplug_strays(st);
        } else {
            self.unplug_bbm(st, 0);
        }
        let nothing_added = !matches!(st.region.as_ref(), Some(r) if r.added() > 0);
        if nothing_added && self.plugged_in(st) > 0 {
            match self.request(st, &Request::UnplugAll) {
                Ok(_) => {
                    let mut b = self.blocks.lock();
                    let per = b.sbs_per_mb().get();
                    for mb in 0..b.len() {
                        b.set_plugged(mb, 0, per, false);
                    }
                    st.added_end = self.geometry.first;
                }
                Err(_) => dev_warn!(
                    self.dev.as_ref(),
                    "unplugging all memory at unbind failed; the next driver will\n"
                ),
            }
        }
    }

    /// Removes the blocks that are offline.
    fn remove_offline_blocks(&self, st: &mut State) {
        let len = self.blocks.lock().len();
        for mb in 0..len {
            if self.blocks.lock().state(mb) != BlockState::Offline {
                continue;
            }
            // A failure is logged; the block stays added.
            let _ = self.remove_block(st, mb);
        }
    }

    /// Bytes plugged by this binding.
    pub(crate) fn plugged(&self) -> u64 {
        self.plugged_in(&self.state.lock())
    }

    /// Bytes plugged by this binding, from the locked state.
    fn plugged_in(&self, st: &State) -> u64 {
        if self.sub_blocks {
            self.blocks.lock().plugged_bytes()
        } else {
            st.added_end - self.geometry.first
        }
    }

    /// Bytes of plugged memory that the page allocator has: plugged memory of online blocks,
    /// less their memmap if it lives in them. `added` is what the region has added.
    fn online_in(&self, b: &SubBlocks, added: u64) -> u64 {
        // Plugged bytes of online memory, and how many memory blocks hold them.
        let (online, blocks) = if self.sub_blocks {
            let sb = b.sb_size().get();
            (0..b.len())
                .filter(|&mb| b.state(mb).is_online())
                .fold((0, 0), |(bytes, n), mb| (bytes + b.nr_plugged(mb) as u64 * sb, n + 1))
        } else {
            let offline = u64::try_from(self.offline.load(Ordering::SeqCst)).unwrap_or(0);
            let online = added.saturating_sub(offline);
            (online, online / self.info.memory_block_size.max(1))
        };
        if !self.info.memmap_on_memory {
            return online;
        }
        // Each online memory block keeps its memmap.
        online.saturating_sub(blocks * memory_hotplug::memmap_size(self.info.memory_block_size))
    }

    /// Updates the published sizes during a step (no notification).
    fn update_sizes(&self, st: &State) {
        let plugged = self.plugged_in(st);
        let added = st.region.as_ref().map_or(0, |r| r.added());
        let online = self.online_in(&self.blocks.lock(), added);
        let mut s = self.status.lock();
        s.plugged = plugged;
        s.added = added;
        s.online = online;
    }

    /// Publishes the outcome of a step: the sizes, the activity and the reason. Wakes pollers
    /// of `activity` when they changed, and sends a uevent when the request is reached, the run
    /// loop stalls or the device is stopped.
    fn publish(&self, st: &mut State) {
        self.update_sizes(st);
        let activity = if st.stopped {
            Activity::Stopped
        } else if st.stopping {
            Activity::Unbinding
        } else if let Some(r) = st.reason {
            r.activity()
        } else {
            Activity::Idle
        };
        if st.reason.is_none() {
            st.logged = None;
        }
        let (old, new) = {
            let mut s = self.status.lock();
            let old = *s;
            s.activity = activity;
            s.reason = st.reason;
            s.retry_at_ms = st.retry_at_ms;
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
        sysfs::notify(self.dev.as_ref(), ATTR_GROUP, c"activity");
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
            match e {
                Ok(e) => {
                    if strs.push(&**e, GFP_KERNEL).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        if let Err(e) = sysfs::uevent_change(self.dev.as_ref(), &strs) {
            dev_warn!(self.dev.as_ref(), "sending a uevent failed: {:?}\n", e);
        }
    }

    /// Records the requested size a step works toward; a new one shows as plugging or
    /// unplugging at once (a retry of the same one keeps showing why it stopped short).
    fn begin(&self, requested: u64, plugged: u64) {
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

    /// One run: follow the requested size until it is met or something stops us.
    fn step(self: &Arc<Self>) {
        let mut st = self.state.lock();
        if st.stopping || st.stopped {
            return;
        }
        st.reason = None;
        st.retry_at_ms = None;
        self.run(&mut st);
        self.publish(&mut st);
    }

    fn run(self: &Arc<Self>, st: &mut State) {
        let (requested, usable) = match self.read_sizes() {
            Ok(sizes) => sizes,
            Err(e) if e == ENODEV => return,
            Err(e) => {
                dev_err!(self.dev.as_ref(), "reading the config failed: {:?}\n", e);
                return self.stall(st, Reason::ExchangeFailed);
            }
        };
        if requested > self.info.region_size || usable > self.info.region_size {
            dev_err!(
                self.dev.as_ref(),
                "device asks for {:#x} bytes with a usable region of {:#x}, but its region is \
                 {:#x} bytes: stopping until it is bound again\n",
                requested,
                usable,
                self.info.region_size
            );
            st.stopped = true;
            st.reason = Some(Reason::BadConfig);
            return;
        }
        self.begin(requested, self.plugged_in(st));
        let usable_end = self.addr + usable;
        if st.take_over {
            if self.take_over(st, usable_end).is_err() {
                return self.retry_later(st);
            }
            st.take_over = false;
        }
        if st.unplug_all {
            // Memory plugged before we were bound (e.g. before a reboot or by another driver)
            // is not added by us: start from nothing.
            if let Err(again) = self.request(st, &Request::UnplugAll) {
                if again {
                    self.retry_later(st);
                }
                return;
            }
            dev_info!(self.dev.as_ref(), "unplugged all memory plugged from before\n");
            st.unplug_all = false;
            // The usable region may have shrunk.
            return self.kick();
        }
        if st.resync {
            if let Err(again) = self.resync(st, usable_end) {
                if again {
                    self.retry_later(st);
                }
                return;
            }
            st.resync = false;
        }
        if self.sub_blocks {
            // Blocks whose sub-blocks are all unplugged go first (an unplug that could not
            // remove its block right away, or one left by a failed run), then what is plugged
            // but not added.
            self.remove_empty_blocks(st);
            if let Err(again) = self.unplug_strays(st) {
                if again {
                    self.retry_later(st);
                }
                return;
            }
        }
        let plugged = self.plugged_in(st);
        if requested < plugged {
            if self.sub_blocks {
                self.unplug_sbm(st, requested);
            } else {
                self.unplug_bbm(st, requested);
            }
            return;
        }
        if self.sub_blocks {
            self.plug_sbm(st, requested, usable_end);
        } else {
            self.plug_bbm(st, requested, usable_end);
        }
    }

    /// Takes over the memory an earlier binding left added (its region was parked): finds the
    /// added blocks and their online state. Sub-blocks of online blocks count as plugged unless
    /// their pages are kept offline (unplugged); for offline blocks the device is asked, with
    /// `STATE` requests. Then the device is made to agree: what is plugged but not added is
    /// unplugged, and memory in use that the device lost is plugged again.
    fn take_over(self: &Arc<Self>, st: &mut State, usable_end: u64) -> Result<(), bool> {
        self.counters.count(Event::TakeOver);
        let unit = self.geometry.unit.get();
        if self.sub_blocks {
            if let Err(e) = self.blocks.lock().grow(usable_end) {
                dev_err!(self.dev.as_ref(), "tracking the usable region failed: {:?}\n", e);
                return Err(true);
            }
            let (len, sb_size, per) = {
                let b = self.blocks.lock();
                (b.len(), b.sb_size().get(), b.sbs_per_mb().get())
            };
            for mb in 0..len {
                let addr = self.blocks.lock().block_addr(mb);
                let added = st.region.as_ref().is_some_and(|r| r.is_added(addr, unit));
                if !added {
                    continue;
                }
                let state = match memory_hotplug::online_zone(addr) {
                    Some(movable) => BlockState::Online { movable },
                    None => {
                        self.offline.fetch_add(unit as i64, Ordering::SeqCst);
                        BlockState::Offline
                    }
                };
                self.blocks.lock().set_state(mb, state);
                if state.is_online() {
                    // The pages tell: a sub-block is unplugged only if all its pages are kept
                    // offline by us; anything else may be in use and must stay plugged, whatever
                    // the device says (the resync below plugs it again if it lost it).
                    for sb in 0..per {
                        let at = addr + sb as u64 * sb_size;
                        if !memory_hotplug::is_fake_offline(at, sb_size) {
                            self.blocks.lock().set_plugged(mb, sb, 1, true);
                        }
                    }
                    continue;
                }
                match self.query(st, addr, unit)? {
                    protocol::BlockState::Plugged => self.blocks.lock().set_plugged(mb, 0, per, true),
                    protocol::BlockState::Unplugged => {}
                    protocol::BlockState::Mixed => {
                        for sb in 0..per {
                            let at = addr + sb as u64 * sb_size;
                            if self.query(st, at, sb_size)? == protocol::BlockState::Plugged {
                                self.blocks.lock().set_plugged(mb, sb, 1, true);
                            }
                        }
                    }
                }
                // The memmap of an added block is in use, online or not.
                let mut b = self.blocks.lock();
                let pinned = b.pinned();
                if pinned > 0 {
                    b.set_plugged(mb, 0, pinned, true);
                }
            }
            // Unplugged and partly plugged added blocks need the callback to stay safe.
            let partial = self.blocks.lock().any_partial_added();
            if partial && !self.ensure_online_callback(st) {
                self.remove_offline_blocks(st);
            }
        } else {
            let mut end = self.geometry.first;
            while end + unit <= self.geometry.end
                && st.region.as_ref().is_some_and(|r| r.is_added(end, unit))
            {
                if memory_hotplug::online_zone(end).is_none() {
                    self.offline.fetch_add(unit as i64, Ordering::SeqCst);
                }
                end += unit;
            }
            st.added_end = end;
        }
        dev_info!(
            self.dev.as_ref(),
            "took over {:#x} bytes of memory that an earlier binding left added ({:#x} plugged)\n",
            st.region.as_ref().map_or(0, |r| r.added()),
            self.plugged_in(st)
        );
        // Whatever else the device has plugged is unused: make the device agree with us.
        self.resync(st, usable_end)
    }

    /// Asks the device whether `[addr, addr + size)` is plugged.
    fn query(&self, st: &mut State, addr: u64, size: u64) -> Result<protocol::BlockState, bool> {
        let nb_blocks = self.geometry.nb_blocks(size).ok_or(false)?;
        match self.request(st, &Request::State { addr, nb_blocks })? {
            Some(state) => Ok(state),
            None => Err(false),
        }
    }

    /// Makes the device's plugged state of `[addr, addr + size)` match ours (`plugged`), with
    /// `STATE` requests and, where it differs, `PLUG` or `UNPLUG`: a mixed range is split in
    /// halves down to device blocks.
    fn make_state(&self, st: &mut State, addr: u64, size: u64, plugged: bool) -> Result<(), bool> {
        let block = self.geometry.block_size.get();
        let fix = match (self.query(st, addr, size)?, plugged) {
            (protocol::BlockState::Plugged, true) | (protocol::BlockState::Unplugged, false) => {
                return Ok(())
            }
            (protocol::BlockState::Unplugged, true) | (protocol::BlockState::Plugged, false) => {
                let nb_blocks = self.geometry.nb_blocks(size).ok_or(false)?;
                if plugged {
                    Request::Plug { addr, nb_blocks }
                } else {
                    Request::Unplug { addr, nb_blocks }
                }
            }
            (protocol::BlockState::Mixed, _) => {
                let blocks = size / block;
                if blocks < 2 {
                    return Err(false);
                }
                let half = blocks / 2 * block;
                self.make_state(st, addr, half, plugged)?;
                return self.make_state(st, addr + half, size - half, plugged);
            }
        };
        dev_warn!(
            self.dev.as_ref(),
            "the device's plugged state of [{:#x}-{:#x}] differs from the driver's; sending {}\n",
            addr,
            addr + size - 1,
            fix
        );
        self.request(st, &fix).map(|_| ())
    }

    /// Makes the device's plugged state match ours everywhere below `usable_end`.
    fn resync(&self, st: &mut State, usable_end: u64) -> Result<(), bool> {
        self.counters.count(Event::Resync);
        let unit = self.geometry.unit.get();
        let chunk = self.geometry.max_units() * unit;
        let mut tracked_end = self.geometry.first;
        if self.sub_blocks {
            let (len, sb_size, per) = {
                let b = self.blocks.lock();
                (b.len(), b.sb_size().get(), b.sbs_per_mb().get())
            };
            for mb in 0..len {
                let (addr, nr) = {
                    let b = self.blocks.lock();
                    (b.block_addr(mb), b.nr_plugged(mb))
                };
                if nr == 0 || nr == per {
                    self.make_state(st, addr, unit, nr == per)?;
                } else {
                    for sb in 0..per {
                        let plugged = self.blocks.lock().is_plugged(mb, sb);
                        self.make_state(st, addr + sb as u64 * sb_size, sb_size, plugged)?;
                    }
                }
                tracked_end = addr + unit;
            }
        } else {
            let mut at = self.geometry.first;
            while at < st.added_end {
                let size = chunk.min(st.added_end - at);
                self.make_state(st, at, size, true)?;
                at += size;
            }
            tracked_end = st.added_end;
        }
        let end = usable_end - (usable_end - tracked_end.min(usable_end)) % unit;
        let mut at = tracked_end;
        while at < end {
            let size = chunk.min(end - at);
            self.make_state(st, at, size, false)?;
            at += size;
        }
        Ok(())
    }

    /// Big-block mode: unplugs whole big blocks from the top of the plugged run while at least
    /// one fits above `requested`. Each is offlined (its pages in use migrated away; with
    /// `unplug_online=0` only if it is offline already) and removed, then unplugged; if the
    /// device refuses, it is added back. Stops short, as in sub-block mode, when that would
    /// take available memory below the safety margin or the pages cannot be moved.
    fn unplug_bbm(self: &Arc<Self>, st: &mut State, requested: u64) {
        let unit = self.geometry.unit.get();
        while self.plugged_in(st) >= requested + unit {
            let addr = st.added_end - unit;
            let Some(region) = st.region.as_mut() else {
                return;
            };
            let res = if module_parameters::unplug_online.value() {
                if memory_hotplug::available_memory() < unit + unplug_margin() {
                    return self.stall(st, Reason::Margin);
                }
                region.offline_and_remove_memory(addr, unit)
            } else {
                match region.remove_memory(addr, unit) {
                    Err(e) if e == EBUSY => return self.stall(st, Reason::OfflineOnly),
                    res => res,
                }
            };
            if let Err(e) = res {
                self.counters.count(Event::UnplugFailed);
                if e != EBUSY {
                    dev_err!(
                        self.dev.as_ref(),
                        "removing the big block [{:#x}-{:#x}] failed: {:?}\n",
                        addr,
                        addr + unit - 1,
                        e
                    );
                }
                return self.stall(st, Reason::Unmovable);
            }
            self.counters.count(Event::BlockRemoved);
            // Removed: it is no longer offline either (the notifier counted it offline).
            self.offline.fetch_sub(unit as i64, Ordering::SeqCst);
            st.added_end = addr;
            let nb_blocks = self.geometry.nb_blocks(unit).unwrap_or(u16::MAX);
            if let Err(again) = self.request(st, &Request::Unplug { addr, nb_blocks }) {
                if st.reason == Some(Reason::Timeout) {
                    // The device may have unplugged it: it stays removed, and the resync makes
                    // the device agree that it is unplugged.
                    dev_warn!(
                        self.dev.as_ref(),
                        "no answer to the UNPLUG of the big block [{:#x}-{:#x}]: taking it as \
                         unplugged\n",
                        addr,
                        addr + unit - 1
                    );
                } else if self.add(st, addr, unit).is_ok() {
                    // Still plugged: added back, so that nothing plugged is left unused.
                    st.added_end = addr + unit;
                } else {
                    dev_err!(
                        self.dev.as_ref(),
                        "adding the big block [{:#x}-{:#x}] back failed; it stays plugged and \
                         unused\n",
                        addr,
                        addr + unit - 1
                    );
                }
                if again {
                    self.retry_later(st);
                }
                return;
            }
            st.retry_secs = RETRY_MIN_SECS;
            self.update_sizes(st);
        }
    }

    /// Sub-block mode: unplugs toward `requested`, block by block in the order of
    /// [`SubBlocks::next_unplug`]: removed and offline blocks first, then (with
    /// `unplug_online`) online ones, whose pages are migrated away first. Stops short, says why
    /// and retries later when that would take free memory below the safety margin, or when the
    /// device refuses.
    fn unplug_sbm(self: &Arc<Self>, st: &mut State, requested: u64) {
        let online = module_parameters::unplug_online.value();
        let mut cursor = None;
        let mut busy = false;
        // Whether this walk over the blocks unplugged something (removed blocks, whose memmap
        // is to be unplugged, may appear behind the cursor).
        let mut progress = false;
        loop {
            let (plugged, sb_size) = {
                let b = self.blocks.lock();
                (b.plugged_bytes(), b.sb_size())
            };
            let want = usize::try_from(plugged.saturating_sub(requested) / sb_size)
                .unwrap_or(usize::MAX);
            if want == 0 {
                st.retry_secs = RETRY_MIN_SECS;
                return;
            }
            let next = self.blocks.lock().next_unplug(cursor, online);
            if next.is_none() && progress {
                cursor = None;
                progress = false;
                continue;
            }
            let Some((class, mb)) = next else {
                let why = if busy {
                    Reason::Unmovable
                } else if online {
                    Reason::NothingToUnplug
                } else {
                    Reason::OfflineOnly
                };
                return self.stall(st, why);
            };
            cursor = Some((class, mb));
            let before = self.blocks.lock().plugged_bytes();
            let res = self.unplug_block(st, mb, want);
            progress |= self.blocks.lock().plugged_bytes() < before;
            match res {
                Ok(()) => st.retry_secs = RETRY_MIN_SECS,
                Err(None) => return,
                Err(Some(Reason::Unmovable)) => busy = true,
                Err(Some(why)) => return self.stall(st, why),
            }
            self.update_sizes(st);
        }
    }

    /// Unplugs up to `want` sub-blocks of block `mb`, highest first, and removes the block
    /// when nothing of it but its memmap stays plugged and that is wanted too. Sub-blocks of an
    /// online block whose pages cannot be moved are skipped. `Err(None)`: a request failed and
    /// a retry is scheduled (or the device is stopped).
    fn unplug_block(
        self: &Arc<Self>,
        st: &mut State,
        mb: usize,
        want: usize,
    ) -> Result<(), Option<Reason>> {
        let mut left = want;
        // Sub-blocks from here up that could not be taken offline are skipped.
        let mut below = usize::MAX;
        let mut busy = false;
        let mut whole_failed = false;
        while left > 0 {
            let mut b = self.blocks.lock();
            let state = b.state(mb);
            let online = matches!(state, BlockState::Online { .. });
            let added = state.is_added();
            if !online && state != BlockState::Offline && added {
                // Being onlined or offlined: a later run sees it.
                break;
            }
            let nr = b.nr_plugged(mb);
            let pinned = if added { b.pinned() } else { 0 };
            // A fully plugged online block that is to go whole (but its memmap) is taken in one
            // piece, else sub-block by sub-block; offline and removed blocks a run at a time.
            let whole =
                online && !whole_failed && nr == b.sbs_per_mb().get() && left >= nr - pinned;
            let max = if online && !whole { 1 } else { left };
            let Some((sb, count)) = b.last_plugged_run(mb, below, max) else {
                break;
            };
            let sb_size = b.sb_size().get();
            let addr = b.block_addr(mb) + sb as u64 * sb_size;
            let size = count as u64 * sb_size;
            // What stays plugged and added needs the online-page callback (onlining it later).
            if added && (nr > count || online) && st.online_cb.is_none() {
                drop(b);
                if !self.ensure_online_callback(st) {
                    return Err(Some(Reason::NoCallback));
                }
                continue;
            }
            if online {
                if memory_hotplug::available_memory() < size + unplug_margin() {
                    return Err(Some(Reason::Margin));
                }
                let Some(cb) = st.online_cb.as_mut() else {
                    return Err(Some(Reason::NoCallback));
                };
                match cb.fake_offline(addr, size) {
                    Ok(()) => {}
                    Err(e) if e == EBUSY => {
                        self.counters.count(Event::UnplugFailed);
                        // Some page cannot be moved: try smaller pieces, or below it.
                        if whole {
                            whole_failed = true;
                        } else {
                            below = sb;
                        }
                        busy = true;
                        continue;
                    }
                    Err(e) if e == ENOMEM => return Err(Some(Reason::Margin)),
                    Err(e) => {
                        self.counters.count(Event::UnplugFailed);
                        dev_err!(
                            self.dev.as_ref(),
                            "taking [{:#x}-{:#x}] offline failed: {:?}\n",
                            addr,
                            addr + size - 1,
                            e
                        );
                        return Err(Some(Reason::Unmovable));
                    }
                }
            }
            let nb_blocks = self.geometry.nb_blocks(size).ok_or(None)?;
            if let Err(again) = self.request(st, &Request::Unplug { addr, nb_blocks }) {
                if st.reason == Some(Reason::Timeout) {
                    // The device may have unplugged it: the pages stay unused (offline) until
                    // the resync has made the device agree that it is unplugged.
                    dev_warn!(
                        self.dev.as_ref(),
                        "no answer to the UNPLUG of [{:#x}-{:#x}]: taking it as unplugged\n",
                        addr,
                        addr + size - 1
                    );
                    b.set_plugged(mb, sb, count, false);
                } else if online {
                    // The device did not unplug it: give the pages back exactly as they were.
                    self.fake_online(st, addr, size);
                }
                drop(b);
                if again {
                    self.retry_later(st);
                }
                return Err(None);
            }
            b.set_plugged(mb, sb, count, false);
            left = left.saturating_sub(count);
        }
        // Nothing but the memmap left, and that is to go too: remove the block; its memmap
        // sub-blocks are then unplugged as those of a removed block.
        let (state, nr, pinned) = {
            let b = self.blocks.lock();
            (b.state(mb), b.nr_plugged(mb), b.pinned())
        };
        if matches!(state, BlockState::Offline | BlockState::Online { .. })
            && nr <= pinned
            && left >= nr
        {
            if self.remove_block(st, mb).is_err() {
                self.counters.count(Event::UnplugFailed);
                return Err(Some(Reason::Unmovable));
            }
        }
        if busy && left > 0 {
            return Err(Some(Reason::Unmovable));
        }
        Ok(())
    }

    /// Removes added blocks with nothing plugged: offline ones, and online ones after offlining
    /// them (their pages are all fake-offline, so the notifier lets offlining skip them).
    fn remove_empty_blocks(&self, st: &mut State) {
        // Each pass removes a block (it becomes unused) or stops.
        loop {
            let Some(mb) = self.blocks.lock().next_empty_added() else {
                return;
            };
            if self.remove_block(st, mb).is_err() {
                return;
            }
        }
    }

    /// Unplugs what is plugged in blocks that are not added (the memmap of a removed block,
    /// or blocks whose removal happened without their unplug).
    fn unplug_strays(&self, st: &mut State) -> Result<(), bool> {
        loop {
            // Not `while let`: that would hold the lock over the loop body.
            let next = self.blocks.lock().next_stray();
            let Some(mb) = next else {
                return Ok(());
            };
            let (addr, sb, count) = {
                let b = self.blocks.lock();
                let Some((sb, count)) = b.last_plugged_run(mb, usize::MAX, usize::MAX) else {
                    return Ok(());
                };
                (b.block_addr(mb) + sb as u64 * b.sb_size().get(), sb, count)
            };
            let size = count as u64 * self.blocks.lock().sb_size().get();
            let nb_blocks = self.geometry.nb_blocks(size).ok_or(false)?;
            self.request(st, &Request::Unplug { addr, nb_blocks })?;
            self.blocks.lock().set_plugged(mb, sb, count, false);
        }
    }

    /// Removes added block `mb` from the system (offlining it first if it is online) and marks
    /// it unused; its sub-blocks keep their plugged state. A failure is logged; the block stays
    /// added and a later run tries again.
    fn remove_block(&self, st: &mut State, mb: usize) -> Result {
        let (state, addr) = {
            let b = self.blocks.lock();
            (b.state(mb), b.block_addr(mb))
        };
        let mb_size = self.geometry.unit.get();
        let region = st.region.as_mut().ok_or(ENODEV)?;
        let res = if state == BlockState::Offline {
            region.remove_memory(addr, mb_size)
        } else {
            region.offline_and_remove_memory(addr, mb_size)
        };
        res.inspect_err(|e| {
            dev_warn!(
                self.dev.as_ref(),
                "removing the {:?} block [{:#x}-{:#x}] failed ({:?})\n",
                state,
                addr,
                addr + mb_size - 1,
                e
            )
        })?;
        self.counters.count(Event::BlockRemoved);
        // It counted as offline (an online block went offline on the way out).
        self.offline.fetch_sub(mb_size as i64, Ordering::SeqCst);
        self.blocks.lock().set_state(mb, BlockState::Unused);
        Ok(())
    }

    /// Records why this step stopped short, says so once while it lasts, and retries later:
    /// soon when free memory may come back, with back-off otherwise.
    fn stall(self: &Arc<Self>, st: &mut State, why: Reason) {
        st.reason = Some(why);
        if st.logged != Some(why) {
            let requested = self.status.lock().requested;
            let what = if st.stopping {
                "unbinding"
            } else if requested < self.plugged_in(st) {
                "unplugging"
            } else {
                "plugging"
            };
            dev_info!(
                self.dev.as_ref(),
                "{} stopped short of the requested size: {}\n",
                what,
                why
            );
            st.logged = Some(why);
        }
        match why {
            Reason::Margin | Reason::MemmapNoRoom => self.retry_in(st, MEMORY_RETRY_SECS),
            Reason::WaitingForOnline => {}
            _ => self.retry_later(st),
        }
    }

    /// Room for more added-but-offline memory, in bytes (a multiple of the unit). Announces the
    /// wait for onlining before looking, so that memory onlined in between still wakes us; the
    /// caller clears it if it goes on.
    fn offline_room(&self) -> u64 {
        self.waiting_for_online.store(true, Ordering::SeqCst);
        let offline = u64::try_from(self.offline.load(Ordering::SeqCst)).unwrap_or(0);
        let room = self.offline_limit().saturating_sub(offline);
        room - room % self.geometry.unit
    }

    /// How many more units may be added now, at most `want`: all of them with memmap-on-memory;
    /// otherwise as many as leave the page allocator's reserves of free kernel memory after
    /// their memmap is allocated from it. 0 means stall (the caller says why).
    fn memmap_room(&self, want: u64) -> u64 {
        if self.info.memmap_on_memory {
            return want;
        }
        let per_unit = memory_hotplug::memmap_size(self.geometry.unit.get()).max(1);
        let reserve = memory_hotplug::reserved_memory().max(MEMMAP_RESERVE_MIN);
        let free = memory_hotplug::free_kernel_memory().saturating_sub(reserve);
        want.min(free / per_unit)
    }

    /// Big-block mode: plug and add whole big blocks, one contiguous run from the start.
    fn plug_bbm(self: &Arc<Self>, st: &mut State, requested: u64, usable_end: u64) {
        let unit = self.geometry.unit;
        while let Some((addr, size)) = self.geometry.next_plug(st.added_end, requested, usable_end)
        {
            // Keep added-but-offline memory within the limit; the notifier resumes us.
            let size = size.min(self.offline_room());
            if size == 0 {
                return self.stall(st, Reason::WaitingForOnline);
            }
            self.waiting_for_online.store(false, Ordering::SeqCst);
            let size = self.memmap_room(size / unit) * unit.get();
            if size == 0 {
                return self.stall(st, Reason::MemmapNoRoom);
            }
            let size = size.min(st.plug_limit / unit * unit.get()).max(unit.get());
            if let Err(again) = self.plug_and_add(st, addr, size) {
                if again && self.smaller_plugs(st, size, unit.get()) {
                    continue;
                }
                if again {
                    self.retry_later(st);
                }
                return;
            }
            self.plug_accepted(st);
            self.update_sizes(st);
        }
    }

    /// Sub-block mode: plug sub-blocks into partly plugged blocks first, then add new memory
    /// blocks, whole ones in batches and the rest as one partly plugged block.
    fn plug_sbm(self: &Arc<Self>, st: &mut State, requested: u64, usable_end: u64) {
        if let Err(e) = self.blocks.lock().grow(usable_end) {
            dev_err!(self.dev.as_ref(), "tracking the usable region failed: {:?}\n", e);
            return self.stall(st, Reason::ExchangeFailed);
        }
        let (sb_size, sbs_per_mb, pinned) = {
            let b = self.blocks.lock();
            (b.sb_size(), b.sbs_per_mb(), b.pinned())
        };
        // Sub-blocks one request can carry.
        let max_sbs_per_request = usize::try_from(
            (u64::from(u16::MAX) * self.geometry.block_size.get() / sb_size).max(1),
        )
        .unwrap_or(usize::MAX);
        loop {
            let plugged = self.blocks.lock().plugged_bytes();
            let want = usize::try_from(requested.saturating_sub(plugged) / sb_size)
                .unwrap_or(usize::MAX);
            if want == 0 {
                break;
            }
            // Sub-blocks one request may ask for now.
            let limit = usize::try_from(st.plug_limit / sb_size)
                .unwrap_or(usize::MAX)
                .clamp(1, max_sbs_per_request);
            let max_sbs = want.min(limit);
            let done = match self.plug_partial(st, max_sbs) {
                Ok(done) => done,
                Err(again) => {
                    let tried = max_sbs as u64 * sb_size.get();
                    if again && self.smaller_plugs(st, tried, sb_size.get()) {
                        continue;
                    }
                    if again {
                        self.retry_later(st);
                    }
                    break;
                }
            };
            if done {
                self.plug_accepted(st);
                self.update_sizes(st);
                continue;
            }
            // New blocks: whole ones while a whole one is wanted, then one partly plugged (which
            // holds at least its memmap).
            let whole = want / sbs_per_mb;
            if whole == 0 && want < pinned {
                break;
            }
            let room = usize::try_from(self.offline_room() / self.geometry.unit)
                .unwrap_or(usize::MAX);
            if room == 0 {
                self.stall(st, Reason::WaitingForOnline);
                break;
            }
            let fits = usize::try_from(self.memmap_room(whole.max(1) as u64)).unwrap_or(1);
            if fits == 0 {
                self.waiting_for_online.store(false, Ordering::SeqCst);
                self.stall(st, Reason::MemmapNoRoom);
                break;
            }
            let (max_blocks, nr_sbs) = if whole > 0 {
                let max = usize::try_from(self.geometry.max_units()).unwrap_or(1);
                let limit_blocks = usize::try_from(st.plug_limit / self.geometry.unit)
                    .unwrap_or(usize::MAX)
                    .max(1);
                (whole.min(max).min(room).min(fits).min(limit_blocks), None)
            } else {
                if !self.ensure_online_callback(st) {
                    self.waiting_for_online.store(false, Ordering::SeqCst);
                    self.stall(st, Reason::NoCallback);
                    break;
                }
                (1, Some(max_sbs.max(pinned)))
            };
            self.waiting_for_online.store(false, Ordering::SeqCst);
            let Some((mb, count)) = self.blocks.lock().unused_run(max_blocks) else {
                // The usable region is full.
                break;
            };
            let nr_sbs = nr_sbs.unwrap_or(count * sbs_per_mb.get());
            if let Err(again) = self.plug_new_blocks(st, mb, nr_sbs) {
                // Down to one block, or to the memmap's sub-blocks of a partly plugged one.
                let tried = nr_sbs as u64 * sb_size.get();
                let least = if nr_sbs < sbs_per_mb.get() {
                    pinned.max(1) as u64 * sb_size.get()
                } else {
                    self.geometry.unit.get()
                };
                if again && self.smaller_plugs(st, tried, least) {
                    continue;
                }
                if again {
                    self.retry_later(st);
                }
                break;
            }
            self.plug_accepted(st);
            self.update_sizes(st);
        }
        // Give the online-page callback back when no added block needs it.
        let needed = self.blocks.lock().any_partial_added();
        if !needed {
            st.online_cb = None;
        }
    }

    /// After a plug of `tried` bytes failed: if the device refused it (`BUSY` or `NACK`, e.g.
    /// the host could not allocate that much) and plugs down to `least` bytes are possible,
    /// halves the plug limit and says to try again right away.
    fn smaller_plugs(&self, st: &mut State, tried: u64, least: u64) -> bool {
        let refused = matches!(st.reason, Some(Reason::DeviceBusy | Reason::DeviceRefused));
        if !refused || st.resync || tried <= least {
            return false;
        }
        st.plug_limit = (tried / 2).max(least);
        // Going on: the refusal is not why this step stops, unless a later one is.
        st.reason = None;
        if !st.told_smaller_plugs {
            dev_info!(
                self.dev.as_ref(),
                "the device refused to plug {:#x} bytes at once; trying smaller pieces\n",
                tried
            );
            st.told_smaller_plugs = true;
        }
        true
    }

    /// After a plug the device accepted: back to the shortest retry delay, and more may be
    /// asked for at once again.
    fn plug_accepted(&self, st: &mut State) {
        st.retry_secs = RETRY_MIN_SECS;
        st.plug_limit = st.plug_limit.saturating_mul(2);
    }

    /// Registers the online-page callback unless it is registered; says whether it is.
    fn ensure_online_callback(self: &Arc<Self>, st: &mut State) -> bool {
        if st.online_cb.is_some() {
            return true;
        }
        match OnlinePageCallback::register(self.addr, self.geometry.end - self.addr, self.clone())
        {
            Ok(cb) => {
                st.online_cb = Some(cb);
                true
            }
            Err(e) => {
                if !st.told_no_callback {
                    dev_warn!(
                        self.dev.as_ref(),
                        "cannot register the online-page callback ({:?}; another driver, such as \
                         virtio_mem, holds it?): plugging whole memory blocks only\n",
                        e
                    );
                    st.told_no_callback = true;
                }
                false
            }
        }
    }

    /// Plugs up to `max_sbs` sub-blocks into a partly plugged block, if there is one that is not
    /// in a transition. `Ok(false)` if there is none.
    fn plug_partial(&self, st: &mut State, max_sbs: usize) -> Result<bool, bool> {
        // Hold the block states during the request, so that the block is not onlined or
        // offlined meanwhile.
        let mut b = self.blocks.lock();
        let Some(mb) = b.next_partial() else {
            return Ok(false);
        };
        let Some((sb, count)) = b.unplugged_run(mb, max_sbs) else {
            return Ok(false);
        };
        let sb_size = b.sb_size().get();
        let addr = b.block_addr(mb) + sb as u64 * sb_size;
        let size = count as u64 * sb_size;
        let nb_blocks = self.geometry.nb_blocks(size).ok_or(false)?;
        self.request(st, &Request::Plug { addr, nb_blocks })?;
        b.set_plugged(mb, sb, count, true);
        if let BlockState::Online { .. } = b.state(mb) {
            // The pages were kept offline when the block was onlined: hand them over.
            self.fake_online(st, addr, size);
        }
        Ok(true)
    }

    /// Hands the fake-offline pages of `[addr, addr + size)`, in an online block and plugged,
    /// to the kernel; if that fails they stay unused, and the driver says so.
    fn fake_online(&self, st: &mut State, addr: u64, size: u64) {
        let res = st
            .online_cb
            .as_mut()
            .map_or(Err(ENOENT), |cb| cb.fake_online(addr, size));
        if let Err(e) = res {
            dev_err!(
                self.dev.as_ref(),
                "cannot online the plugged pages [{:#x}-{:#x}] ({:?}); they stay unused\n",
                addr,
                addr + size - 1,
                e
            );
        }
    }

    /// Plugs the first `nr_sbs` sub-blocks from block `mb` on (unused blocks) and adds their
    /// blocks to the system.
    fn plug_new_blocks(&self, st: &mut State, mb: usize, nr_sbs: usize) -> Result<(), bool> {
        let (addr, sb_size, sbs_per_mb, mb_size) = {
            let b = self.blocks.lock();
            (b.block_addr(mb), b.sb_size().get(), b.sbs_per_mb(), b.mb_size().get())
        };
        let nr_blocks = nr_sbs.div_ceil(sbs_per_mb.get());
        let size = nr_sbs as u64 * sb_size;
        let nb_blocks = self.geometry.nb_blocks(size).ok_or(false)?;
        self.request(st, &Request::Plug { addr, nb_blocks })?;
        // Mark them added before adding: onlining during the add looks them up.
        self.set_new_blocks(mb, nr_blocks, nr_sbs, true);
        // One memory block per add: memory must be removed in the pieces it was added in (a
        // bigger add may get a 1G direct mapping that removing one block cannot split).
        for i in 0..nr_blocks {
            let block = addr + i as u64 * mb_size;
            if let Err(e) = self.add(st, block, mb_size) {
                let rest_sbs = nr_sbs - i * sbs_per_mb.get();
                self.set_new_blocks(mb + i, nr_blocks - i, rest_sbs, false);
                let rest = rest_sbs as u64 * sb_size;
                let nb = self.geometry.nb_blocks(rest).ok_or(false)?;
                return self.unplug_after_failed_add(st, block, rest, nb, e);
            }
        }
        Ok(())
    }

    /// Marks `nr_blocks` blocks from `mb` on as added with their first `nr_sbs` sub-blocks
    /// plugged, or back as unused and unplugged.
    fn set_new_blocks(&self, mb: usize, nr_blocks: usize, nr_sbs: usize, added: bool) {
        let mut b = self.blocks.lock();
        let per = b.sbs_per_mb().get();
        for i in 0..nr_blocks {
            let sbs = (nr_sbs - i * per).min(per);
            b.set_plugged(mb + i, 0, sbs, added);
            let state = if added {
                BlockState::Offline
            } else {
                BlockState::Unused
            };
            b.set_state(mb + i, state);
        }
    }

    /// Adds `[addr, addr + size)` (plugged) to the system, counting it offline until onlined.
    fn add(&self, st: &mut State, addr: u64, size: u64) -> Result {
        let region = st.region.as_mut().ok_or(ENODEV)?;
        let group = st.group.as_ref().ok_or(ENODEV)?;
        // Counted as offline before it is added: auto-onlining reports it online during the add.
        self.offline.fetch_add(size as i64, Ordering::SeqCst);
        match region.add_memory(group, addr, size, self.info.memmap_on_memory) {
            Ok(()) => {
                self.counters.count(Event::BlockAdded);
                Ok(())
            }
            Err(e) => {
                self.counters.count(Event::AddFailed);
                self.offline.fetch_sub(size as i64, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// After adding `[addr, addr + size)` failed with `e`, unplugs its plugged part (`plugged`
    /// bytes, `nb_blocks` device blocks) again. Retried later (`Err(true)`) unless the device
    /// is stopped.
    fn unplug_after_failed_add(
        &self,
        st: &mut State,
        addr: u64,
        plugged: u64,
        nb_blocks: u16,
        e: Error,
    ) -> Result<(), bool> {
        dev_err!(
            self.dev.as_ref(),
            "adding memory [{:#x}-{:#x}] failed ({:?}); unplugging it again\n",
            addr,
            addr + plugged - 1,
            e
        );
        st.reason = Some(Reason::AddFailed);
        if let Err(again) = self.request(st, &Request::Unplug { addr, nb_blocks }) {
            dev_err!(
                self.dev.as_ref(),
                "unplugging [{:#x}-{:#x}] failed too; resynchronizing with the device later\n",
                addr,
                addr + plugged - 1,
            );
            st.resync = true;
            return Err(again);
        }
        Err(true)
    }

    /// Reads the requested and usable region sizes.
    pub(crate) fn read_sizes(&self) -> Result<(u64, u64)> {
        Ok((
            self.vq.read_config(offset_of!(Raw, requested_size))?,
            self.vq.read_config(offset_of!(Raw, usable_region_size))?,
        ))
    }

    /// Sends `req` (waiting a bounded time for the answer) and counts it. On failure, records
    /// why in `st.reason` and says whether to retry later (`Err(true)`: refused for now, the
    /// exchange failed or timed out, or the device answered `ERROR`, after which the plugged
    /// state is resynchronized first) or not (`Err(false)`: unbound, or the device answered
    /// nonsense, which stops it).
    fn request(&self, st: &mut State, req: &Request) -> Result<Option<protocol::BlockState>, bool> {
        let mut res = protocol::send(&self.vq, req);
        let lose = self.lose_answers.load(Relaxed);
        if res.is_ok() && lose > 0 && self.lose_answers.cmpxchg(lose, lose - 1, Full).is_ok() {
            dev_info!(
                self.dev.as_ref(),
                "dropping the device's answer to {} (debugfs lose_answers)\n",
                req
            );
            res = Err(SendError::Transport(ETIMEDOUT));
        }
        self.counters.request(req, res.err());
        let e = match res {
            Ok(state) => return Ok(state),
            Err(SendError::Transport(e)) if e == ENODEV => return Err(false),
            Err(e) => e,
        };
        let reason = Reason::of(e);
        st.reason = Some(reason);
        match reason {
            Reason::Nonsense(v) => {
                dev_err!(
                    self.dev.as_ref(),
                    "device answered {} to {}, a value the protocol does not define; stopping \
                     until it is bound again\n",
                    v,
                    req
                );
                st.stopped = true;
                Err(false)
            }
            Reason::DeviceError | Reason::Timeout => {
                let what = if reason == Reason::Timeout {
                    "no answer within the time limit"
                } else {
                    "the device answered ERROR"
                };
                dev_err!(
                    self.dev.as_ref(),
                    "{}: {}; resynchronizing with STATE requests before going on\n",
                    req,
                    what
                );
                st.resync = true;
                Err(true)
            }
            _ => {
                dev_info!(self.dev.as_ref(), "{} failed ({})\n", req, reason);
                Err(true)
            }
        }
    }

    /// Plugs `[addr, addr + size)` at the device and adds it to the system (big-block mode).
    /// On failure, says whether to retry later (`Err(true)`) or not (`Err(false)`).
    /// Advances `st.added_end` over what was added.
    fn plug_and_add(&self, st: &mut State, addr: u64, size: u64) -> Result<(), bool> {
        let nb_blocks = self.geometry.nb_blocks(size).ok_or(false)?;
        self.request(st, &Request::Plug { addr, nb_blocks })?;
        // One big block per add, the pieces it will be removed in (see `plug_new_blocks`).
        let unit = self.geometry.unit.get();
        let mut at = addr;
        while at < addr + size {
            if let Err(e) = self.add(st, at, unit) {
                let rest = addr + size - at;
                let nb = self.geometry.nb_blocks(rest).ok_or(false)?;
                return self.unplug_after_failed_add(st, at, rest, nb, e);
            }
            at += unit;
            st.added_end = at;
        }
        Ok(())
    }

    /// Schedules the next run after the current back-off delay, and doubles the delay.
    fn retry_later(self: &Arc<Self>, st: &mut State) {
        let secs = st.retry_secs;
        st.retry_secs = (st.retry_secs * 2).min(RETRY_MAX_SECS);
        // A failed request is logged each time; a stall once (see `stall`).
        if !st.stopping && st.reason.is_some_and(|r| r.activity() == Activity::Waiting) {
            dev_info!(self.dev.as_ref(), "retrying in {} s\n", secs);
        }
        self.retry_in(st, secs);
    }

    /// Schedules the next run in `secs` seconds (not while unbinding) and records when.
    fn retry_in(self: &Arc<Self>, st: &mut State, secs: u32) {
        if st.stopping {
            return;
        }
        let now_ms = Instant::<BootTime>::now().as_nanos() / 1_000_000;
        st.retry_at_ms = Some(now_ms + i64::from(secs) * 1000);
        let delay = msecs_to_jiffies(secs * 1000);
        let _ =
            workqueue::system_freezable().enqueue_delayed::<Arc<Worker>, 1>(self.clone(), delay);
    }
}
impl MemoryNotifierHandler for Worker {
    fn notify(this: &Arc<Self>, n: &MemoryNotification) -> Result {
        let range = n.range();
        let end = range.start + range.size;
        if end <= this.geometry.first || range.start >= this.geometry.end {
            return Ok(());
        }
        let event = n.event();
        let mut b = this.blocks.lock();
        if this.sub_blocks {
            this.track_blocks(&mut b, n)?;
        } else if event == MemoryEvent::GoingOnline && b.removing {
            return Err(EBUSY);
        }
        // Whole memory blocks: with memmap-on-memory the range leaves out the block's memmap,
        // but the block was counted whole when it was added.
        let mbs = this.info.memory_block_size.max(1);
        let start = range.start - range.start % mbs;
        let size = (end.div_ceil(mbs) * mbs - start) as i64;
        match event {
            MemoryEvent::Online => {
                let offline = this.offline.fetch_sub(size, Ordering::SeqCst) - size;
                let resume = (this.offline_limit() / 2) as i64;
                // Not after unbind began: it cancels the work items after setting `removing`.
                if offline <= resume
                    && !b.removing
                    && this.waiting_for_online.swap(false, Ordering::SeqCst)
                {
                    this.kick();
                }
            }
            MemoryEvent::Offline => {
                this.offline.fetch_add(size, Ordering::SeqCst);
            }
            _ => {}
        }
        if matches!(event, MemoryEvent::Online | MemoryEvent::Offline) {
            // User space may online and offline memory at any time: keep `online_size` right.
            let added = this.status.lock().added;
            let online = this.online_in(&b, added);
            this.status.lock().online = online;
        }
        Ok(())
    }
}

impl Worker {
    /// Sub-block mode: keeps the block states in step with a memory event. Vetoes onlining of
    /// blocks that are not added by us or while unbinding. When a block goes offline, drops
    /// the reference of its unplugged (kept offline) pages so that offlining skips them, and
    /// takes it back if offlining is cancelled.
    fn track_blocks(&self, b: &mut SubBlocks, n: &MemoryNotification) -> Result {
        let range = n.range();
        let t = match n.event() {
            MemoryEvent::GoingOnline => Transition::GoingOnline,
            MemoryEvent::Online => Transition::Online {
                movable: n.is_movable(),
            },
            MemoryEvent::CancelOnline => Transition::CancelOnline,
            MemoryEvent::GoingOffline => Transition::GoingOffline,
            MemoryEvent::Offline => Transition::Offline,
            MemoryEvent::CancelOffline => Transition::CancelOffline,
        };
        if t == Transition::GoingOnline && b.removing {
            return Err(EBUSY);
        }
        let mb_size = b.mb_size().get();
        let sb_size = b.sb_size().get();
        let mut addr = range.start - range.start % b.mb_size();
        let mut result = Ok(());
        while addr < range.start + range.size {
            let Some(mb) = b.block_of(addr) else {
                addr += mb_size;
                continue;
            };
            match b.transition(mb, t) {
                Ok(_) => {}
                Err(state) => {
                    let refusing = if t == Transition::GoingOnline {
                        ", refusing"
                    } else {
                        ""
                    };
                    dev_warn!(
                        self.dev.as_ref(),
                        "memory block [{:#x}-{:#x}]: {:?} in state {:?}{}\n",
                        addr,
                        addr + mb_size - 1,
                        t,
                        state,
                        refusing
                    );
                    if t == Transition::GoingOnline {
                        result = Err(EBUSY);
                    }
                    addr += mb_size;
                    continue;
                }
            }
            let block = b.block_addr(mb);
            let runs = b.unplugged_runs(mb).map(|(sb, count)| {
                (block + sb as u64 * sb_size, count as u64 * sb_size)
            });
            match t {
                Transition::GoingOffline => {
                    for (start, size) in runs {
                        if let Err(e) = n.release_offline_pages(start, size) {
                            dev_err!(
                                self.dev.as_ref(),
                                "cannot release the unplugged pages [{:#x}-{:#x}] for offlining \
                                 ({:?}); refusing\n",
                                start,
                                start + size - 1,
                                e
                            );
                            // Offlining is cancelled: the cancel event takes back what was
                            // released.
                            result = Err(EBUSY);
                            break;
                        }
                    }
                }
                Transition::CancelOffline => {
                    for (start, size) in runs {
                        // Fails (harmlessly) for runs a refused offlining did not release.
                        let _ = n.reacquire_offline_pages(start, size);
                    }
                }
                _ => {}
            }
            addr += mb_size;
        }
        result
    }
}

impl OnlinePageHandler for Worker {
    fn online_pages(this: &Arc<Self>, pages: OnliningPages) {
        let b = this.blocks.lock();
        match b.online_decision(pages.start(), pages.size()) {
            OnlineDecision::Online => pages.online(),
            OnlineDecision::KeepOffline => pages.keep_offline(),
            OnlineDecision::PerSubBlock => {
                for p in pages.split(b.sb_size().get()) {
                    if b.is_plugged_at(p.start()) {
                        p.online();
                    } else {
                        p.keep_offline();
                    }
                }
            }
        }
    }
}
