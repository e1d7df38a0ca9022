// SPDX-License-Identifier: GPL-2.0

//! The run loop: work items that follow the device's requested size.
//!
//! A config change (and probe) queues [`Worker`] on the freezable system workqueue. The work
//! re-reads the requested and usable sizes and plugs toward the request. In sub-block mode it
//! plugs sub-blocks into partly plugged memory blocks first, then adds new blocks (see
//! [`crate::sbm`]); in big-block mode it plugs and adds whole big blocks (see [`crate::bbm`]).
//! One `PLUG` request and one memory add cover a batch of up to 8G (see [`crate::plug`]), and
//! the request is read again between batches: a run stops early when it moved.
//!
//! What the kernel may touch is the business of the device's [`SystemRamRegion`]: it records
//! which pages of added memory are backed, keeps the others away from the page allocator
//! whenever a block is onlined, and hands pages over or takes them back only atomically with
//! the device request that plugs or unplugs them ([`SystemRamRegion::give_pages`],
//! [`SystemRamRegion::take_pages`]), so that onlining and offlining by user space cannot get
//! in between. The run loop only plans.
//!
//! Memory plugged before we were bound is unplugged first (`UNPLUG_ALL`), unless an earlier
//! binding parked its region with memory still added: then that memory is taken over (the
//! region's record says which blocks are added and which of their pages are backed) and the
//! device made to agree. A plug the device refuses (`NACK`, `BUSY`) or does not answer in time
//! is tried again at half the size, down to one block, so that what the host can back is
//! plugged. What still fails (also a failed exchange) is retried from a delayed work item, with
//! the delay doubling from 5 s to 300 s; after an `ERROR` or a timeout the plugged state is
//! first resynchronized with `STATE` requests. Only an answer outside the protocol stops the
//! device, with a message that names it.
//!
//! After each step the run loop publishes a [`Status`] for the sysfs attributes, wakes pollers
//! of `activity` when it changes, and sends a uevent when the requested size is reached or the
//! loop stalls. Every way a step stops short of the request sets a [`Reason`]: `idle` means the
//! request is met.
//!
//! When user space onlines memory (no auto-onlining), added memory stays offline until it does.
//! So that a burst of plugs cannot fill the guest with offline memory (whose memmap still costs
//! memory), at most [`Worker::offline_limit`] bytes are added and not yet online at a time; the
//! memory notifier counts onlined and offlined memory of the region and resumes plugging when
//! half of that is online again.

use crate::{
    bbm::{
        BbState,
        BigBlocks,
        Usage, //
    },
    config::Raw,
    module_parameters,
    plug::Geometry,
    protocol::{
        self,
        Request,
        SendError, //
    },
    sbm::{
        BlockState,
        SubBlocks,
        Transition, //
    },
    status::{
        Activity,
        Counters,
        Event,
        Reason,
        Status, //
    },
    Mode,
};
use core::{
    num::NonZeroU64,
    sync::atomic::{
        AtomicBool,
        AtomicI64,
        Ordering, //
    },
};
use kernel::{
    bindings,
    device,
    memory_hotplug::{
        self,
        MemoryEvent,
        MemoryGroup,
        MemoryNotification,
        MemoryNotifier,
        MemoryNotifierHandler,
        PagesError,
        SystemRamRegion,
        Undo, //
    },
    new_mutex,
    new_spinlock,
    prelude::*,
    str::CString,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Full,
            Relaxed, //
        },
        Arc,
        Mutex,
        SpinLock, //
    },
    sysfs,
    time::{
        delay::fsleep,
        msecs_to_jiffies,
        BootTime,
        Delta,
        Instant, //
    },
    virtio,
    workqueue::{
        self,
        cancel_arc_delayed_work_sync,
        cancel_arc_work_sync,
        impl_has_delayed_work,
        impl_has_work,
        mod_arc_delayed_work,
        new_delayed_work,
        new_work,
        DelayedWork,
        Work,
        WorkItem, //
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

/// The answer `garble_answers` makes of the device's.
const GARBLED: u16 = 0xbad;

/// Takes one from a fault-injection counter if it is not 0; says whether it did.
fn take_one(counter: &Atomic<u32>) -> bool {
    let n = counter.load(Relaxed);
    n > 0 && counter.cmpxchg(n, n - 1, Full).is_ok()
}

/// A request that did not succeed, or a step that could not be taken: why, and what was asked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Failed {
    reason: Reason,
    req: Option<Request>,
}

impl Failed {
    fn internal() -> Self {
        Self {
            reason: Reason::Internal,
            req: None,
        }
    }
}

/// Why a step stops short of the request.
#[derive(Clone, Copy, Debug)]
enum Short {
    /// A request failed (or could not be sent).
    Request(Failed),
    /// Something in the guest is in the way: free memory, unmovable pages, blocks being
    /// onlined, ...
    Stall(Reason),
}

impl From<Failed> for Short {
    fn from(f: Failed) -> Self {
        Short::Request(f)
    }
}

/// Mutable state of the run loop.
struct State {
    /// The device's reserved region; `None` once unbound.
    region: Option<SystemRamRegion>,
    /// The memory group of the memory we add; `None` once unbound.
    group: Option<MemoryGroup>,
    /// Big-block mode: the big blocks (none in sub-block mode).
    bigs: BigBlocks,
    /// The requested size this run works toward.
    requested: u64,
    /// Delay before the next retry.
    retry_secs: u32,
    /// The most bytes one `PLUG` asks for: halved when the device refuses a plug or does not
    /// answer in time (e.g. the host cannot back that much now, or needs long to), so that what
    /// it can back is plugged; doubled again after each plug it accepts.
    plug_limit: u64,
    /// When the retry this step scheduled runs, in ms of `CLOCK_BOOTTIME` (shown in sysfs).
    retry_at_ms: Option<i64>,
    /// When the queued retry work item runs, if one is queued.
    queued_retry_ms: Option<i64>,
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
}

/// The per-device run loop, shared by its work items and the driver's data.
///
/// Lock order: `state`, then `blocks`, then `status`. The memory notifier takes only `blocks`
/// (it runs while memory is added, onlined or offlined, with `state` held by the add or
/// removal), so `blocks` is never held across a call of the region's methods, which may wait
/// for memory being onlined (see [`SystemRamRegion`]'s locking rules); the region's own
/// notifier and online-page callback take only the region's lock.
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
    /// A step stopped because a memory block was being onlined or offlined: the notifier
    /// queues a run when that is over.
    waiting_for_transition: AtomicBool,
    /// Fault injection (debugfs `lose_answers`): this many more answers of the device are
    /// dropped as if they had not come in time. The device acts on the request; the driver
    /// sees a timeout.
    pub(crate) lose_answers: Atomic<u32>,
    /// Fault injection (debugfs `garble_answers`): this many more answers of the device are
    /// replaced by a value the protocol does not define, which stops the device.
    pub(crate) garble_answers: Atomic<u32>,
    /// Test knob (debugfs `remove_delay_ms`): how long to wait between unplugging the last
    /// sub-block of a memory block and removing it, to widen that window for tests.
    pub(crate) remove_delay_ms: Atomic<u32>,
    #[pin]
    state: Mutex<State>,
    /// Sub-block mode: the state of every memory block; its `removing` flag stops the
    /// notifier's kicks at unbind in both modes.
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
        this.step(false);
    }
}

impl WorkItem<1> for Worker {
    type Pointer = Arc<Worker>;

    fn run(this: Arc<Worker>) {
        this.step(true);
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
        let bigs = if sb_size.is_some() {
            BigBlocks::new(geometry.first, geometry.first, geometry.unit.get())?
        } else {
            BigBlocks::new(geometry.first, geometry.end, geometry.unit.get())?
        };
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
                waiting_for_transition: AtomicBool::new(false),
                lose_answers: Atomic::new(0),
                garble_answers: Atomic::new(0),
                remove_delay_ms: Atomic::new(0),
                state <- new_mutex!(State {
                    region: Some(region),
                    group: Some(group),
                    bigs,
                    requested: 0,
                    retry_secs: RETRY_MIN_SECS,
                    plug_limit: u64::MAX,
                    retry_at_ms: None,
                    queued_retry_ms: None,
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
    /// use is parked with the region for the next binding of the device to take over; the
    /// region keeps its unplugged pages offline meanwhile, whatever happened here (also if the
    /// device was stopped or a removal failed). Only the first call does anything.
    pub(crate) fn stop(self: &Arc<Self>) {
        {
            let mut st = self.state.lock();
            if st.stopping {
                return;
            }
            st.stopping = true;
        }
        // From here on the notifier queues no work.
        self.blocks.lock().removing = true;
        cancel_arc_work_sync::<Worker, 0>(self);
        cancel_arc_delayed_work_sync::<Worker, 1>(self);

        let mut st = self.state.lock();
        st.reason = None;
        st.retry_at_ms = None;
        st.queued_retry_ms = None;
        self.publish(&mut st);
        // Nobody but us onlines or offlines the region's memory while we give it back.
        if let Some(region) = st.region.as_mut() {
            region.block_hotplug(true);
        }
        if !st.stopped {
            self.give_back(&mut st);
        }
        st.notifier = None;
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
            region.park(self.dev.as_ref(), group);
        }
    }

    /// At unbind: gives back what is not in use. Offline blocks go first. If nothing stays
    /// added, everything is unplugged (`UNPLUG_ALL`).
    fn give_back(self: &Arc<Self>, st: &mut State) {
        if self.sub_blocks {
            self.remove_offline_blocks(st);
            self.unplug_sbm(st, 0);
            if let Err(f) = self.unplug_strays(st) {
                self.note(st, f);
            }
        } else {
            self.unplug_bbm(st, 0);
        }
        let nothing_added = !matches!(st.region.as_ref(), Some(r) if r.added() > 0);
        if nothing_added && self.plugged_in(st) > 0 {
            match self.send(&Request::UnplugAll) {
                Ok(_) => {
                    let mut b = self.blocks.lock();
                    let per = b.sbs_per_mb().get();
                    for mb in 0..b.len() {
                        b.set_plugged(mb, 0, per, false);
                    }
                    let n = st.bigs.len();
                    st.bigs.set(0, n, BbState::Unused);
                }
                Err(f) => {
                    self.note(st, f);
                    dev_warn!(
                        self.dev.as_ref(),
                        "unplugging all memory at unbind failed; the next driver will\n"
                    )
                }
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
            // A failure is logged; the block stays added, and the region keeps its unplugged
            // pages offline.
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
            st.bigs.plugged_bytes()
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

    /// One run: follow the requested size until it is met or something stops us. `retry`: the
    /// delayed retry work item runs it (so it is no longer queued).
    fn step(self: &Arc<Self>, retry: bool) {
        let mut st = self.state.lock();
        if retry {
            st.queued_retry_ms = None;
        }
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
        st.requested = requested;
        self.begin(requested, self.plugged_in(st));
        let usable_end = self.addr + usable;
        if st.take_over {
            if let Err(f) = self.take_over(st, usable_end) {
                return self.failed(st, f);
            }
            st.take_over = false;
        }
        if st.unplug_all {
            // Memory plugged before we were bound (e.g. before a reboot or by another driver)
            // is not added by us: start from nothing.
            if let Err(f) = self.send(&Request::UnplugAll) {
                return self.failed(st, f);
            }
            dev_info!(self.dev.as_ref(), "unplugged all memory plugged from before\n");
            st.unplug_all = false;
            // The usable region may have shrunk.
            return self.kick();
        }
        if st.resync {
            if let Err(f) = self.resync(st, usable_end) {
                return self.failed(st, f);
            }
            st.resync = false;
        }
        if self.sub_blocks {
            // Blocks whose sub-blocks are all unplugged go first (an unplug that could not
            // remove its block right away, or one left by a failed run), then what is plugged
            // but not added.
            self.remove_empty_blocks(st);
            if let Err(f) = self.unplug_strays(st) {
                return self.failed(st, f);
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

    /// Whether the device's requested size moved away from what this run works toward: the run
    /// stops after its current batch, and a new one starts at once (as the C driver aborts a
    /// run with `-EAGAIN` when the config changed).
    fn request_moved(self: &Arc<Self>, st: &State) -> bool {
        let moved = matches!(self.read_sizes(), Ok((requested, _)) if requested != st.requested);
        if moved {
            self.kick();
        }
        moved
    }

    /// Takes over the memory an earlier binding left added (its region was parked): the
    /// region's record says which blocks are added, their online state, and which of their
    /// pages are backed (plugged). Then the device is made to agree: what is plugged but not
    /// added (or not backed) is unplugged, and memory in use that the device lost is plugged
    /// again.
    fn take_over(self: &Arc<Self>, st: &mut State, usable_end: u64) -> Result<(), Failed> {
        self.counters.count(Event::TakeOver);
        let unit = self.geometry.unit.get();
        let mbs = self.info.memory_block_size;
        let Some(region) = st.region.as_ref() else {
            return Ok(());
        };
        if self.sub_blocks {
            let mut b = self.blocks.lock();
            if let Err(e) = b.grow(usable_end) {
                dev_err!(self.dev.as_ref(), "tracking the usable region failed: {:?}\n", e);
                return Err(Failed::internal());
            }
            let (sb_size, per) = (b.sb_size().get(), b.sbs_per_mb().get());
            for mb in 0..b.len() {
                let addr = b.block_addr(mb);
                let Some(state) = region.block_state(addr) else {
                    continue;
                };
                let state = match state {
                    memory_hotplug::BlockState::Offline => {
                        self.offline.fetch_add(unit as i64, Ordering::SeqCst);
                        BlockState::Offline
                    }
                    memory_hotplug::BlockState::GoingOnline => BlockState::GoingOnline,
                    memory_hotplug::BlockState::Online { movable } => BlockState::Online { movable },
                    memory_hotplug::BlockState::GoingOffline { movable } => {
                        BlockState::GoingOffline { movable }
                    }
                };
                b.set_state(mb, state);
                for sb in 0..per {
                    if region.is_accessible(addr + sb as u64 * sb_size, sb_size) {
                        b.set_plugged(mb, sb, 1, true);
                    }
                }
            }
        } else {
            for i in 0..st.bigs.len() {
                let addr = st.bigs.addr(i);
                if !region.is_added(addr, unit) {
                    continue;
                }
                st.bigs.set(i, 1, BbState::Added);
                let mut at = addr;
                while at < addr + unit {
                    if region.block_state(at) == Some(memory_hotplug::BlockState::Offline) {
                        self.offline.fetch_add(mbs as i64, Ordering::SeqCst);
                    }
                    at += mbs;
                }
            }
        }
        dev_info!(
            self.dev.as_ref(),
            "took over {:#x} bytes of memory that an earlier binding left added ({:#x} plugged)\n",
            region.added(),
            self.plugged_in(st)
        );
        // Whatever else the device has plugged is unused: make the device agree with us.
        self.resync(st, usable_end)
    }

    /// The number of device blocks of `size` bytes, which one request must be able to carry:
    /// requests are cut to fit, so a failure here is a bug, reported as one.
    fn nb_blocks(&self, size: u64) -> Result<u16, Failed> {
        self.geometry.nb_blocks(size).ok_or_else(|| {
            dev_err!(
                self.dev.as_ref(),
                "internal error: a request for {:#x} bytes does not fit in one request\n",
                size
            );
            Failed::internal()
        })
    }

    /// Asks the device whether `[addr, addr + size)` is plugged.
    fn query(&self, addr: u64, size: u64) -> Result<protocol::BlockState, Failed> {
        let req = Request::State {
            addr,
            nb_blocks: self.nb_blocks(size)?,
        };
        match self.send(&req)? {
            Some(state) => Ok(state),
            None => Err(Failed {
                reason: Reason::Nonsense(u16::MAX),
                req: Some(req),
            }),
        }
    }

    /// Makes the device's plugged state of `[addr, addr + size)` match ours (`plugged`), with
    /// `STATE` requests and, where it differs, `PLUG` or `UNPLUG`: a mixed range is split in
    /// halves down to device blocks.
    fn make_state(&self, addr: u64, size: u64, plugged: bool) -> Result<(), Failed> {
        let block = self.geometry.block_size.get();
        let fix = match (self.query(addr, size)?, plugged) {
            (protocol::BlockState::Plugged, true) | (protocol::BlockState::Unplugged, false) => {
                return Ok(())
            }
            (protocol::BlockState::Unplugged, true) | (protocol::BlockState::Plugged, false) => {
                let nb_blocks = self.nb_blocks(size)?;
                if plugged {
                    Request::Plug { addr, nb_blocks }
                } else {
                    Request::Unplug { addr, nb_blocks }
                }
            }
            (protocol::BlockState::Mixed, _) => {
                let blocks = size / block;
                if blocks < 2 {
                    // One device block cannot be partly plugged.
                    dev_err!(
                        self.dev.as_ref(),
                        "the device says the one block at {:#x} is partly plugged\n",
                        addr
                    );
                    return Err(Failed {
                        reason: Reason::Nonsense(bindings::VIRTIO_MEM_STATE_MIXED as u16),
                        req: None,
                    });
                }
                let half = blocks / 2 * block;
                self.make_state(addr, half, plugged)?;
                return self.make_state(addr + half, size - half, plugged);
            }
        };
        dev_warn!(
            self.dev.as_ref(),
            "the device's plugged state of [{:#x}-{:#x}] differs from the driver's; sending {}\n",
            addr,
            addr + size - 1,
            fix
        );
        self.send(&fix).map(|_| ())
    }

    /// Makes the device's plugged state match ours everywhere below `usable_end`.
    fn resync(&self, st: &mut State, usable_end: u64) -> Result<(), Failed> {
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
                    self.make_state(addr, unit, nr == per)?;
                } else {
                    for sb in 0..per {
                        let plugged = self.blocks.lock().is_plugged(mb, sb);
                        self.make_state(addr + sb as u64 * sb_size, sb_size, plugged)?;
                    }
                }
                tracked_end = addr + unit;
            }
        } else {
            // Runs of big blocks that are plugged or not, in requests of at most `chunk`.
            let mut i = 0;
            while i < st.bigs.len() && st.bigs.addr(i) + unit <= usable_end {
                let plugged = st.bigs.state(i) != BbState::Unused;
                let mut n = 1;
                while i + n < st.bigs.len()
                    && (n as u64) * unit < chunk
                    && st.bigs.addr(i + n) + unit <= usable_end
                    && (st.bigs.state(i + n) != BbState::Unused) == plugged
                {
                    n += 1;
                }
                self.make_state(st.bigs.addr(i), n as u64 * unit, plugged)?;
                i += n;
            }
            tracked_end = self.geometry.first + i as u64 * unit;
        }
        let end = usable_end - (usable_end - tracked_end.min(usable_end)) % unit;
        let mut at = tracked_end;
        while at < end {
            let size = chunk.min(end - at);
            self.make_state(at, size, false)?;
            at += size;
        }
        Ok(())
    }

    /// How the memory of the added big block at `addr` is used (for the unplug order), or
    /// `None` while one of its memory blocks is being onlined or offlined.
    fn bb_usage(&self, region: Option<&SystemRamRegion>, addr: u64) -> Option<Usage> {
        let region = region?;
        let mbs = self.info.memory_block_size;
        let mut usage = Usage::Offline;
        let mut at = addr;
        while at < addr + self.geometry.unit.get() {
            let u = match region.block_state(at)? {
                memory_hotplug::BlockState::Offline => Usage::Offline,
                memory_hotplug::BlockState::Online { movable: true } => Usage::Movable,
                memory_hotplug::BlockState::Online { movable: false } => Usage::Kernel,
                _ => return None,
            };
            usage = usage.max(u);
            at += mbs;
        }
        Some(usage)
    }

    /// Big-block mode: unplugs whole big blocks while at least one fits above `requested`:
    /// any big block, the cheapest first (see [`BigBlocks::next_unplug`]), with
    /// `unplug_online=0` only offline ones. The pages of an online big block are taken from
    /// the kernel first (migrated away; this fails fast for a page that cannot move, and then
    /// the next big block is tried), so that offlining it, then removing it, cannot wedge on
    /// a page in use; then the device is asked to unplug it. If the device refuses, it is added
    /// back; if that fails, it stays tracked as plugged and not added, and is added or
    /// unplugged later. Stops short, as in sub-block mode, when unplugging would take available
    /// memory below the safety margin.
    fn unplug_bbm(self: &Arc<Self>, st: &mut State, requested: u64) {
        let unit = self.geometry.unit.get();
        let online_ok = module_parameters::unplug_online.value();
        // Big blocks that could not go in this run.
        let mut skip = KVec::new();
        loop {
            if st.bigs.plugged_bytes() < requested + unit {
                st.retry_secs = RETRY_MIN_SECS;
                return;
            }
            if !st.stopping && self.request_moved(st) {
                return;
            }
            let next = st.bigs.next_unplug(online_ok, &skip, |addr| {
                self.bb_usage(st.region.as_ref(), addr)
            });
            let Some((i, usage)) = next else {
                let why = if !skip.is_empty() {
                    Reason::Unmovable
                } else if !online_ok {
                    Reason::OfflineOnly
                } else {
                    Reason::Transition
                };
                return self.stall(st, why);
            };
            match self.unplug_bb(st, i, usage) {
                Ok(()) => {
                    st.retry_secs = RETRY_MIN_SECS;
                    self.update_sizes(st);
                }
                Err(Short::Stall(Reason::Unmovable)) => {
                    if skip.push(i, GFP_KERNEL).is_err() {
                        return self.stall(st, Reason::Unmovable);
                    }
                }
                Err(s) => return self.short(st, s),
            }
        }
    }

    /// Big-block mode: removes big block `i` (used as `usage` says) from the system and
    /// unplugs it.
    fn unplug_bb(self: &Arc<Self>, st: &mut State, i: usize, usage: Usage) -> Result<(), Short> {
        let unit = self.geometry.unit.get();
        let addr = st.bigs.addr(i);
        let nb_blocks = self.nb_blocks(unit)?;
        let req = Request::Unplug { addr, nb_blocks };
        if usage == Usage::NotAdded {
            match self.send(&req) {
                Ok(_) => st.bigs.set(i, 1, BbState::Unused),
                Err(f) => {
                    if f.reason == Reason::Timeout {
                        st.bigs.set(i, 1, BbState::Unused);
                    }
                    return Err(f.into());
                }
            }
            return Ok(());
        }
        if usage != Usage::Offline && memory_hotplug::available_memory() < unit + unplug_margin()
        {
            return Err(Short::Stall(Reason::Margin));
        }
        let region = st.region.as_mut().ok_or(Short::Stall(Reason::Internal))?;
        if usage == Usage::Offline {
            match region.remove_memory(addr, unit) {
                Ok(()) => {}
                // Onlined meanwhile: a later pass sees it online.
                Err(e) if e == EBUSY || e == EAGAIN => return Err(Short::Stall(Reason::Unmovable)),
                Err(e) => return Err(self.region_error(addr, unit, e)),
            }
        } else {
            // Take every page first: fails fast if one cannot be moved, and then offlining
            // skips them all.
            match region.take_pages(addr, unit, || Ok::<(), Undo<()>>(())) {
                Ok(()) => {}
                Err(PagesError::Region(e)) if e == EBUSY => {
                    self.counters.count(Event::UnplugFailed);
                    return Err(Short::Stall(Reason::Unmovable));
                }
                Err(PagesError::Region(e)) => return Err(self.region_error(addr, unit, e)),
                Err(PagesError::Step(())) => return Err(Short::Stall(Reason::Internal)),
            }
            if let Err(e) = region.offline_and_remove_memory(addr, unit) {
                self.counters.count(Event::UnplugFailed);
                dev_warn!(
                    self.dev.as_ref(),
                    "offlining the big block [{:#x}-{:#x}] failed ({:?}); giving its pages back\n",
                    addr,
                    addr + unit - 1,
                    e
                );
                if let Err(e) = region.give_pages(addr, unit, || Ok::<(), ()>(())) {
                    dev_err!(
                        self.dev.as_ref(),
                        "giving the pages of [{:#x}-{:#x}] back failed ({:?}); they stay unused\n",
                        addr,
                        addr + unit - 1,
                        e
                    );
                }
                return Err(Short::Stall(Reason::Unmovable));
            }
        }
        self.counters.count(Event::BlockRemoved);
        // Removed: it is no longer offline either (the notifier counted it offline).
        self.offline.fetch_sub(unit as i64, Ordering::SeqCst);
        st.bigs.set(i, 1, BbState::Plugged);
        match self.send(&req) {
            Ok(_) => {
                st.bigs.set(i, 1, BbState::Unused);
                Ok(())
            }
            Err(f) if f.reason == Reason::Timeout => {
                // The device may have unplugged it: it stays removed, and the resync makes the
                // device agree that it is unplugged.
                dev_warn!(
                    self.dev.as_ref(),
                    "no answer to the UNPLUG of the big block [{:#x}-{:#x}]: taking it as \
                     unplugged\n",
                    addr,
                    addr + unit - 1
                );
                st.bigs.set(i, 1, BbState::Unused);
                Err(f.into())
            }
            Err(f) => {
                // Still plugged: added back, so that nothing plugged is left unused; if that
                // fails, a later run adds it or unplugs it.
                if self.add(st, addr, unit, unit).is_ok() {
                    st.bigs.set(i, 1, BbState::Added);
                } else {
                    dev_err!(
                        self.dev.as_ref(),
                        "adding the big block [{:#x}-{:#x}] back failed; it stays plugged and \
                         is tried again later\n",
                        addr,
                        addr + unit - 1
                    );
                }
                Err(f.into())
            }
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
            if !st.stopping && self.request_moved(st) {
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
                    Reason::Transition
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
                Err(Short::Stall(Reason::Unmovable)) => busy = true,
                Err(s) => return self.short(st, s),
            }
            self.update_sizes(st);
        }
    }

    /// Unplugs up to `want` sub-blocks of block `mb`, highest first, and removes the block
    /// when nothing of it but its memmap stays plugged and that is wanted too. Sub-blocks of an
    /// online block whose pages cannot be moved are skipped (`Stall(Unmovable)` if that left
    /// some of `want`).
    fn unplug_block(self: &Arc<Self>, st: &mut State, mb: usize, want: usize) -> Result<(), Short> {
        let mut left = want;
        // Sub-blocks from here up that could not be taken offline are skipped.
        let mut below = usize::MAX;
        let mut busy = false;
        let mut whole_failed = false;
        while left > 0 {
            // The plan, made under `blocks`, which is not held across the region's calls (they
            // may wait for memory being onlined, whose notifier takes it); only the run loop
            // changes plugged sub-blocks, and the region refuses blocks in a transition.
            let (sb, count, addr, size, online, added, whole) = {
                let b = self.blocks.lock();
                let state = b.state(mb);
                let online = matches!(state, BlockState::Online { .. });
                let added = state.is_added();
                if !online && state != BlockState::Offline && added {
                    // Being onlined or offlined: a later run sees it.
                    break;
                }
                let nr = b.nr_plugged(mb);
                let pinned = if added { b.pinned() } else { 0 };
                // A fully plugged online block that is to go whole (but its memmap) is taken in
                // one piece, else sub-block by sub-block; offline and removed blocks a run at a
                // time.
                let whole =
                    online && !whole_failed && nr == b.sbs_per_mb().get() && left >= nr - pinned;
                let max = if online && !whole { 1 } else { left };
                let Some((sb, count)) = b.last_plugged_run(mb, below, max) else {
                    break;
                };
                let sb_size = b.sb_size().get();
                let addr = b.block_addr(mb) + sb as u64 * sb_size;
                (sb, count, addr, count as u64 * sb_size, online, added, whole)
            };
            if online && memory_hotplug::available_memory() < size + unplug_margin() {
                return Err(Short::Stall(Reason::Margin));
            }
            let req = Request::Unplug {
                addr,
                nb_blocks: self.nb_blocks(size)?,
            };
            if !added {
                // Plugged sub-blocks of a removed block (its memmap): nothing of it is in use.
                match self.send(&req) {
                    Ok(_) => self.blocks.lock().set_plugged(mb, sb, count, false),
                    Err(f) => {
                        if f.reason == Reason::Timeout {
                            self.blocks.lock().set_plugged(mb, sb, count, false);
                        }
                        return Err(f.into());
                    }
                }
                left = left.saturating_sub(count);
                continue;
            }
            let region = st.region.as_mut().ok_or(Short::Stall(Reason::Internal))?;
            // The region takes the pages (migrating what is in use) and keeps them offline, then
            // the device unplugs them; if it refuses, the pages go back as they were.
            let res = region.take_pages(addr, size, || match self.send(&req) {
                Ok(_) => Ok(()),
                Err(f) if f.reason == Reason::Timeout => Err(Undo::Keep(f)),
                Err(f) => Err(Undo::GiveBack(f)),
            });
            match res {
                Ok(()) => {
                    self.blocks.lock().set_plugged(mb, sb, count, false);
                    left = left.saturating_sub(count);
                }
                Err(PagesError::Step(f)) => {
                    if f.reason == Reason::Timeout {
                        // The device may have unplugged it: the pages stay offline until the
                        // resync has made the device agree that it is unplugged.
                        dev_warn!(
                            self.dev.as_ref(),
                            "no answer to the UNPLUG of [{:#x}-{:#x}]: taking it as unplugged\n",
                            addr,
                            addr + size - 1
                        );
                        self.blocks.lock().set_plugged(mb, sb, count, false);
                    }
                    return Err(f.into());
                }
                Err(PagesError::Region(e)) if e == EBUSY => {
                    self.counters.count(Event::UnplugFailed);
                    // Some page cannot be moved: try smaller pieces, or below it.
                    if whole {
                        whole_failed = true;
                    } else {
                        below = sb;
                    }
                    busy = true;
                }
                Err(PagesError::Region(e)) => return Err(self.region_error(addr, size, e)),
            }
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
            let delay = self.remove_delay_ms.load(Relaxed);
            if delay > 0 {
                // Test knob: user space may try to online the emptied block meanwhile; the
                // region refuses, since nothing of it is backed.
                fsleep(Delta::from_millis(delay.into()));
            }
            if self.remove_block(st, mb).is_err() {
                self.counters.count(Event::UnplugFailed);
                return Err(Short::Stall(Reason::Unmovable));
            }
        }
        if busy && left > 0 {
            return Err(Short::Stall(Reason::Unmovable));
        }
        Ok(())
    }

    /// What a refusal of the region means for the step: the block is being onlined or offlined
    /// (`EAGAIN`: wait for it), another driver holds the online-page callback (`EPERM`), free
    /// memory ran out (`ENOMEM`). Anything else means the driver's records and the region's
    /// disagree: a bug, logged as one.
    fn region_error(&self, addr: u64, size: u64, e: Error) -> Short {
        Short::Stall(if e == EAGAIN {
            Reason::Transition
        } else if e == EPERM {
            Reason::NoCallback
        } else if e == ENOMEM {
            Reason::Margin
        } else {
            dev_err!(
                self.dev.as_ref(),
                "internal error: the memory region refused [{:#x}-{:#x}] ({:?})\n",
                addr,
                addr + size - 1,
                e
            );
            Reason::Internal
        })
    }

    /// Removes added blocks with nothing plugged: offline ones, and online ones after offlining
    /// them (their pages are all inaccessible, so offlining skips them).
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
    fn unplug_strays(&self, _st: &mut State) -> Result<(), Failed> {
        loop {
            // Not `while let`: that would hold the lock over the loop body.
            let next = self.blocks.lock().next_stray();
            let Some(mb) = next else {
                return Ok(());
            };
            let (addr, sb, count, sb_size) = {
                let b = self.blocks.lock();
                let Some((sb, count)) = b.last_plugged_run(mb, usize::MAX, usize::MAX) else {
                    return Ok(());
                };
                let sb_size = b.sb_size().get();
                (b.block_addr(mb) + sb as u64 * sb_size, sb, count, sb_size)
            };
            let nb_blocks = self.nb_blocks(count as u64 * sb_size)?;
            if let Err(f) = self.send(&Request::Unplug { addr, nb_blocks }) {
                if f.reason == Reason::Timeout {
                    self.blocks.lock().set_plugged(mb, sb, count, false);
                }
                return Err(f);
            }
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

    /// Ends the step short of the request: a failed request is noted (and retried later); a
    /// stall says why.
    fn short(self: &Arc<Self>, st: &mut State, s: Short) {
        match s {
            Short::Request(f) => self.failed(st, f),
            Short::Stall(why) => self.stall(st, why),
        }
    }

    /// Records why this step stopped short, says so once while it lasts, and retries later:
    /// soon when free memory may come back, when the notifier says so for blocks being onlined
    /// or offlined, with back-off otherwise.
    fn stall(self: &Arc<Self>, st: &mut State, why: Reason) {
        st.reason = Some(why);
        if st.logged != Some(why) {
            let what = if st.stopping {
                "unbinding"
            } else if st.requested < self.plugged_in(st) {
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
            Reason::Transition => {
                self.waiting_for_transition.store(true, Ordering::SeqCst);
                // In case the transition ended before the flag was seen.
                self.retry_in(st, 1);
            }
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

    /// Big-block mode: adds back big blocks that are plugged but not added, then plugs and adds
    /// whole big blocks, the lowest unused ones first.
    fn plug_bbm(self: &Arc<Self>, st: &mut State, requested: u64, usable_end: u64) {
        let unit = self.geometry.unit;
        loop {
            let plugged = st.bigs.plugged_bytes();
            let want = (requested - requested % unit).saturating_sub(plugged) / unit;
            if want == 0 {
                return;
            }
            if self.request_moved(st) {
                return;
            }
            // Keep added-but-offline memory within the limit; the notifier resumes us.
            let room = self.offline_room() / unit;
            if room == 0 {
                return self.stall(st, Reason::WaitingForOnline);
            }
            self.waiting_for_online.store(false, Ordering::SeqCst);
            let fits = self.memmap_room(want.min(room));
            if fits == 0 {
                return self.stall(st, Reason::MemmapNoRoom);
            }
            if let Some(i) = st.bigs.next_plugged() {
                let addr = st.bigs.addr(i);
                if let Err(e) = self.add(st, addr, unit.get(), unit.get()) {
                    dev_err!(
                        self.dev.as_ref(),
                        "adding the plugged big block [{:#x}-{:#x}] failed ({:?})\n",
                        addr,
                        addr + unit.get() - 1,
                        e
                    );
                    return self.stall(st, Reason::AddFailed);
                }
                st.bigs.set(i, 1, BbState::Added);
                self.update_sizes(st);
                continue;
            }
            let max = fits
                .min(self.geometry.max_units())
                .min((st.plug_limit / unit).max(1));
            let Some((i, n)) = st.bigs.unused_run(usable_end, max as usize) else {
                // The usable region is full.
                return;
            };
            let size = n as u64 * unit.get();
            if let Err(s) = self.plug_and_add(st, i, n) {
                if let Short::Request(f) = s {
                    if self.smaller_plugs(st, &f, size, unit.get()) {
                        continue;
                    }
                }
                return self.short(st, s);
            }
            self.plug_accepted(st);
            self.update_sizes(st);
        }
    }

    /// Big-block mode: plugs big blocks `i..i + n` at the device and adds each to the system.
    fn plug_and_add(&self, st: &mut State, i: usize, n: usize) -> Result<(), Short> {
        let unit = self.geometry.unit.get();
        let addr = st.bigs.addr(i);
        let nb_blocks = self.nb_blocks(n as u64 * unit)?;
        self.send(&Request::Plug { addr, nb_blocks })?;
        st.bigs.set(i, n, BbState::Plugged);
        // One big block per add, the pieces it will be removed in (see `plug_new_blocks`).
        for k in 0..n {
            let at = addr + k as u64 * unit;
            if let Err(e) = self.add(st, at, unit, unit) {
                let rest = n - k;
                st.bigs.set(i + k, rest, BbState::Unused);
                let nb = self.nb_blocks(rest as u64 * unit)?;
                return Err(self.unplug_after_failed_add(st, at, rest as u64 * unit, nb, e));
            }
            st.bigs.set(i + k, 1, BbState::Added);
        }
        Ok(())
    }

    /// Sub-block mode: plug sub-blocks into partly plugged blocks first, then add new memory
    /// blocks, whole ones in batches and the rest as one partly plugged block.
    fn plug_sbm(self: &Arc<Self>, st: &mut State, requested: u64, usable_end: u64) {
        if let Err(e) = self.blocks.lock().grow(usable_end) {
            dev_err!(self.dev.as_ref(), "tracking the usable region failed: {:?}\n", e);
            return self.stall(st, Reason::Internal);
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
            if self.request_moved(st) {
                return;
            }
            // Sub-blocks one request may ask for now.
            let limit = usize::try_from(st.plug_limit / sb_size)
                .unwrap_or(usize::MAX)
                .clamp(1, max_sbs_per_request);
            let max_sbs = want.min(limit);
            let done = match self.plug_partial(st, max_sbs) {
                Ok(done) => done,
                Err(s) => {
                    let tried = max_sbs as u64 * sb_size.get();
                    if let Short::Request(f) = s {
                        if self.smaller_plugs(st, &f, tried, sb_size.get()) {
                            continue;
                        }
                    }
                    return self.short(st, s);
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
                return self.stall(st, Reason::WaitingForOnline);
            }
            self.waiting_for_online.store(false, Ordering::SeqCst);
            let fits = usize::try_from(self.memmap_room(whole.max(1) as u64)).unwrap_or(1);
            if fits == 0 {
                return self.stall(st, Reason::MemmapNoRoom);
            }
            let (max_blocks, nr_sbs) = if whole > 0 {
                let max = usize::try_from(self.geometry.max_units()).unwrap_or(1);
                let limit_blocks = usize::try_from(st.plug_limit / self.geometry.unit)
                    .unwrap_or(usize::MAX)
                    .max(1);
                (whole.min(max).min(room).min(fits).min(limit_blocks), None)
            } else {
                // A partly plugged block needs the kernel's online-page callback: claim it
                // before plugging anything for it.
                let claimed = st
                    .region
                    .as_mut()
                    .map_or(Err(ENODEV), |r| r.hold_online_page_callback());
                if let Err(e) = claimed {
                    if !st.told_no_callback {
                        dev_warn!(
                            self.dev.as_ref(),
                            "cannot hold the online-page callback ({:?}; another driver, such \
                             as virtio_mem, holds it?): plugging whole memory blocks only\n",
                            e
                        );
                        st.told_no_callback = true;
                    }
                    return self.stall(st, Reason::NoCallback);
                }
                (1, Some(max_sbs.max(pinned)))
            };
            let Some((mb, count)) = self.blocks.lock().unused_run(max_blocks) else {
                // The usable region is full.
                break;
            };
            let nr_sbs = nr_sbs.unwrap_or(count * sbs_per_mb.get());
            if let Err(s) = self.plug_new_blocks(st, mb, nr_sbs) {
                // Down to one block, or to the memmap's sub-blocks of a partly plugged one.
                let tried = nr_sbs as u64 * sb_size.get();
                let least = if nr_sbs < sbs_per_mb.get() {
                    pinned.max(1) as u64 * sb_size.get()
                } else {
                    self.geometry.unit.get()
                };
                if let Short::Request(f) = s {
                    if self.smaller_plugs(st, &f, tried, least) {
                        continue;
                    }
                }
                return self.short(st, s);
            }
            self.plug_accepted(st);
            self.update_sizes(st);
        }
    }

    /// After a plug of `tried` bytes failed with `f`: if the device refused it (`BUSY` or
    /// `NACK`, e.g. the host could not allocate that much) and plugs down to `least` bytes are
    /// possible, halves the plug limit and says to try again right away. After a timeout the
    /// limit is halved too (a host slower than the timeout for a big plug gets smaller ones),
    /// but the retry comes after the resync that a timeout needs.
    fn smaller_plugs(&self, st: &mut State, f: &Failed, tried: u64, least: u64) -> bool {
        let refused = matches!(f.reason, Reason::DeviceBusy | Reason::DeviceRefused);
        if tried <= least || !(refused || f.reason == Reason::Timeout) {
            return false;
        }
        st.plug_limit = (tried / 2).max(least);
        if !st.told_smaller_plugs {
            dev_info!(
                self.dev.as_ref(),
                "the device {} a plug of {:#x} bytes; trying smaller pieces\n",
                if refused { "refused" } else { "did not answer in time to" },
                tried
            );
            st.told_smaller_plugs = true;
        }
        // Going on at once after a refusal (it is not why this step stops, unless a later
        // one is); a timeout stops the step for the resync.
        refused && !st.resync
    }

    /// After a plug the device accepted: back to the shortest retry delay, and more may be
    /// asked for at once again.
    fn plug_accepted(&self, st: &mut State) {
        st.retry_secs = RETRY_MIN_SECS;
        st.plug_limit = st.plug_limit.saturating_mul(2);
    }

    /// Plugs up to `max_sbs` sub-blocks into a partly plugged block, if there is one that is not
    /// in a transition. `Ok(false)` if there is none. The region hands the pages to the kernel
    /// (if the block is online) atomically with the `PLUG`.
    fn plug_partial(&self, st: &mut State, max_sbs: usize) -> Result<bool, Short> {
        // Only the run loop (under `state`) changes plugged sub-blocks, so the plan holds
        // without `blocks`, which must not be held across the region's calls (they may wait for
        // memory being onlined, whose notifier takes it).
        let (mb, sb, count, addr, size) = {
            let b = self.blocks.lock();
            let Some(mb) = b.next_partial() else {
                return Ok(false);
            };
            let Some((sb, count)) = b.unplugged_run(mb, max_sbs) else {
                return Ok(false);
            };
            let sb_size = b.sb_size().get();
            let addr = b.block_addr(mb) + sb as u64 * sb_size;
            (mb, sb, count, addr, count as u64 * sb_size)
        };
        let req = Request::Plug {
            addr,
            nb_blocks: self.nb_blocks(size)?,
        };
        let region = st.region.as_mut().ok_or(Short::Stall(Reason::Internal))?;
        match region.give_pages(addr, size, || self.send(&req).map(|_| ())) {
            Ok(()) => {
                self.blocks.lock().set_plugged(mb, sb, count, true);
                Ok(true)
            }
            Err(PagesError::Step(f)) => Err(f.into()),
            Err(PagesError::Region(e)) => Err(self.region_error(addr, size, e)),
        }
    }

    /// Plugs the first `nr_sbs` sub-blocks from block `mb` on (unused blocks) and adds their
    /// blocks to the system, each with its plugged part accessible.
    fn plug_new_blocks(&self, st: &mut State, mb: usize, nr_sbs: usize) -> Result<(), Short> {
        let (addr, sb_size, sbs_per_mb, mb_size) = {
            let b = self.blocks.lock();
            (b.block_addr(mb), b.sb_size().get(), b.sbs_per_mb(), b.mb_size().get())
        };
        let nr_blocks = nr_sbs.div_ceil(sbs_per_mb.get());
        let size = nr_sbs as u64 * sb_size;
        let nb_blocks = self.nb_blocks(size)?;
        self.send(&Request::Plug { addr, nb_blocks })?;
        // Mark them added before adding: onlining during the add looks them up.
        self.set_new_blocks(mb, nr_blocks, nr_sbs, true);
        // One memory block per add: memory must be removed in the pieces it was added in (a
        // bigger add may get a 1G direct mapping that removing one block cannot split).
        for i in 0..nr_blocks {
            let block = addr + i as u64 * mb_size;
            let plugged = (nr_sbs - i * sbs_per_mb.get()).min(sbs_per_mb.get()) as u64 * sb_size;
            if let Err(e) = self.add(st, block, mb_size, plugged) {
                let rest_sbs = nr_sbs - i * sbs_per_mb.get();
                self.set_new_blocks(mb + i, nr_blocks - i, rest_sbs, false);
                let rest = rest_sbs as u64 * sb_size;
                let nb = self.nb_blocks(rest)?;
                return Err(self.unplug_after_failed_add(st, block, rest, nb, e));
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

    /// Adds `[addr, addr + size)` (of which the first `accessible` bytes are plugged) to the
    /// system, counting it offline until onlined.
    fn add(&self, st: &mut State, addr: u64, size: u64, accessible: u64) -> Result {
        let region = st.region.as_mut().ok_or(ENODEV)?;
        let group = st.group.as_ref().ok_or(ENODEV)?;
        // Counted as offline before it is added: auto-onlining reports it online during the add.
        self.offline.fetch_add(size as i64, Ordering::SeqCst);
        match region.add_memory(group, addr, size, self.info.memmap_on_memory, accessible) {
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
    /// bytes, `nb_blocks` device blocks) again. The step stops either way.
    fn unplug_after_failed_add(
        &self,
        st: &mut State,
        addr: u64,
        plugged: u64,
        nb_blocks: u16,
        e: Error,
    ) -> Short {
        dev_err!(
            self.dev.as_ref(),
            "adding memory [{:#x}-{:#x}] failed ({:?}); unplugging it again\n",
            addr,
            addr + plugged - 1,
            e
        );
        if let Err(f) = self.send(&Request::Unplug { addr, nb_blocks }) {
            dev_err!(
                self.dev.as_ref(),
                "unplugging [{:#x}-{:#x}] failed too; resynchronizing with the device later\n",
                addr,
                addr + plugged - 1,
            );
            st.resync = true;
            return f.into();
        }
        Short::Stall(Reason::AddFailed)
    }

    /// Reads the requested and usable region sizes.
    pub(crate) fn read_sizes(&self) -> Result<(u64, u64)> {
        Ok((
            self.vq.read_config(|c: &Raw| &c.requested_size)?,
            self.vq.read_config(|c: &Raw| &c.usable_region_size)?,
        ))
    }

    /// Reads the device's plugged size.
    pub(crate) fn read_plugged(&self) -> Result<u64> {
        self.vq.read_config(|c: &Raw| &c.plugged_size)
    }

    /// Sends `req`, waiting a bounded time for the answer, and counts it. The failure says why.
    fn send(&self, req: &Request) -> Result<Option<protocol::BlockState>, Failed> {
        let mut res = protocol::send(&self.vq, req);
        if res.is_ok() && take_one(&self.lose_answers) {
            dev_info!(
                self.dev.as_ref(),
                "dropping the device's answer to {} (debugfs lose_answers)\n",
                req
            );
            res = Err(SendError::Transport(ETIMEDOUT));
        } else if res.is_ok() && take_one(&self.garble_answers) {
            dev_info!(
                self.dev.as_ref(),
                "garbling the device's answer to {} (debugfs garble_answers)\n",
                req
            );
            res = Err(SendError::Refused(protocol::Refusal::Nonsense(GARBLED)));
        }
        self.counters.request(req, res.err());
        res.map_err(|e| Failed {
            reason: Reason::of(e),
            req: Some(*req),
        })
    }

    /// Records a failed request (or step) in `st.reason`, says so, and tells whether to retry
    /// later: not if the device answered nonsense (it is stopped) or is gone.
    fn note(&self, st: &mut State, f: Failed) -> bool {
        st.reason = Some(f.reason);
        let dev = self.dev.as_ref();
        match (f.reason, f.req) {
            (Reason::Nonsense(v), req) => {
                match req {
                    Some(req) => dev_err!(
                        dev,
                        "device answered {} to {}, a value the protocol does not define; \
                         stopping until it is bound again\n",
                        v,
                        req
                    ),
                    None => dev_err!(dev, "stopping until the device is bound again\n"),
                }
                st.stopped = true;
                false
            }
            (Reason::DeviceError | Reason::Timeout, Some(req)) => {
                let what = if f.reason == Reason::Timeout {
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
                st.resync = true;
                true
            }
            (reason, Some(req)) => {
                dev_info!(dev, "{} failed ({})\n", req, reason);
                true
            }
            // Logged where it happened.
            (_, None) => true,
        }
    }

    /// A request (or step) failed: records it and retries later, if that makes sense.
    fn failed(self: &Arc<Self>, st: &mut State, f: Failed) {
        if self.note(st, f) {
            self.retry_later(st);
        }
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

    /// Schedules the next run in `secs` seconds (not while unbinding) and records when. A retry
    /// queued for later is moved up; one queued for sooner stays (it runs a step that schedules
    /// again if it needs to).
    fn retry_in(self: &Arc<Self>, st: &mut State, secs: u32) {
        if st.stopping {
            return;
        }
        let now_ms = Instant::<BootTime>::now().as_nanos() / 1_000_000;
        let at = now_ms + i64::from(secs) * 1000;
        match st.queued_retry_ms {
            Some(queued) if queued > now_ms && queued <= at => {
                st.retry_at_ms = Some(queued);
            }
            _ => {
                let delay = msecs_to_jiffies(secs * 1000);
                mod_arc_delayed_work::<Worker, 1>(workqueue::system_freezable(), self, delay);
                st.retry_at_ms = Some(at);
                st.queued_retry_ms = Some(at);
            }
        }
    }

    /// Formats the big blocks and their states (debugfs).
    pub(crate) fn dump_bigs(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        let st = self.state.lock();
        for i in 0..st.bigs.len() {
            let addr = st.bigs.addr(i);
            let state = match st.bigs.state(i) {
                BbState::Unused => "unused",
                BbState::Plugged => "plugged-not-added",
                BbState::Added => match self.bb_usage(st.region.as_ref(), addr) {
                    Some(Usage::Offline) => "offline",
                    Some(Usage::Movable) => "online-movable",
                    Some(Usage::Kernel) => "online-kernel",
                    _ => "in-transition",
                },
            };
            writeln!(f, "{addr:#x} {state}")?;
        }
        Ok(())
    }
}

impl MemoryNotifierHandler for Worker {
    fn prepare(this: &Arc<Self>, n: &MemoryNotification) -> Result {
        if this.sub_blocks && this.concerns(n) {
            this.track_blocks(&mut this.blocks.lock(), n);
        }
        // The region vetoes what must not happen; the driver only follows.
        Ok(())
    }

    fn complete(this: &Arc<Self>, n: &MemoryNotification) {
        if !this.concerns(n) {
            return;
        }
        let range = n.range();
        let end = range.start + range.size;
        let event = n.event();
        let mut b = this.blocks.lock();
        if this.sub_blocks {
            this.track_blocks(&mut b, n);
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
        // A step waited for a block being onlined or offlined: that is over.
        if !b.removing && this.waiting_for_transition.swap(false, Ordering::SeqCst) {
            this.kick();
        }
        if matches!(event, MemoryEvent::Online | MemoryEvent::Offline) {
            // User space may online and offline memory at any time: keep `online_size` right.
            let added = this.status.lock().added;
            let online = this.online_in(&b, added);
            this.status.lock().online = online;
        }
    }
}

impl Worker {
    /// Whether a memory event is about the device's region.
    fn concerns(&self, n: &MemoryNotification) -> bool {
        let range = n.range();
        range.start + range.size > self.geometry.first && range.start < self.geometry.end
    }

    /// Sub-block mode: keeps the block states in step with a memory event. Events the states do
    /// not expect are logged, except a cancel of a change we never saw (another notifier vetoed
    /// it before ours was called).
    fn track_blocks(&self, b: &mut SubBlocks, n: &MemoryNotification) {
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
        let mb_size = b.mb_size().get();
        let mut addr = range.start - range.start % b.mb_size();
        while addr < range.start + range.size {
            if let Some(mb) = b.block_of(addr) {
                if let Err(state) = b.transition(mb, t) {
                    let unseen_cancel = matches!(
                        (t, state),
                        (Transition::CancelOnline, BlockState::Offline)
                            | (Transition::CancelOffline, BlockState::Online { .. })
                    );
                    if !unseen_cancel {
                        dev_warn!(
                            self.dev.as_ref(),
                            "memory block [{:#x}-{:#x}]: {:?} in state {:?}\n",
                            addr,
                            addr + mb_size - 1,
                            t,
                            state
                        );
                    }
                }
            }
            addr += mb_size;
        }
    }
}
