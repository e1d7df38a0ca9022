// SPDX-License-Identifier: GPL-2.0

//! The run loop: work items that follow the device's requested size.
//!
//! A config change (and probe) queues [`Worker`] on the freezable system workqueue. The work
//! re-reads the requested and usable sizes and plugs toward the request. In sub-block mode it
//! plugs sub-blocks into partly plugged memory blocks first, then adds new blocks (see
//! [`crate::sbm`]); the online-page callback and the memory notifier keep unplugged sub-blocks
//! of added blocks offline. In big-block mode it plugs and adds whole big blocks. Either way,
//! one `PLUG` request and one memory add cover a batch of up to 8G (see [`crate::plug`]).
//! Memory plugged before we were bound is unplugged first (`UNPLUG_ALL`). A `NACK`, `BUSY` or
//! a failed exchange is retried from a delayed work item, with the delay doubling from 5 s to
//! 300 s; an `ERROR` or an answer outside the protocol stops the device with a message.
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
    protocol::{self, Refusal, Request, SendError},
    sbm::{BlockState, OnlineDecision, SubBlocks, Transition},
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

/// Why unplugging stopped short of the requested size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stall {
    /// Taking more would leave less available memory than the safety margin.
    Margin,
    /// The remaining plugged memory holds pages that cannot be moved.
    Unmovable,
    /// The device refused (NACK, BUSY) or the exchange failed.
    Refused,
    /// Only offline memory may be unplugged (`unplug_online=0`) and none is left.
    OfflineOnly,
    /// Nothing is left that could be unplugged now (e.g. blocks being onlined or offlined).
    NothingToUnplug,
    /// The online-page callback is held by another driver.
    NoCallback,
    /// The device is stopped or unbinding.
    Stopped,
}

impl kernel::fmt::Display for Stall {
    fn fmt(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        f.write_str(match self {
            Stall::Margin => "free memory below the safety margin",
            Stall::Unmovable => "blocks hold unmovable pages",
            Stall::Refused => "device refused or busy",
            Stall::OfflineOnly => "only offline memory may be unplugged (unplug_online=0)",
            Stall::NothingToUnplug => "no memory block can be unplugged right now",
            Stall::NoCallback => "the online-page callback is held by another driver",
            Stall::Stopped => "the device is stopped",
        })
    }
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
    /// Delay before the next retry.
    retry_secs: u32,
    /// Set at unbind: no more requests.
    stopping: bool,
    /// The device answered with nonsense or `ERROR`: no more requests until rebound.
    stopped: bool,
    /// The device has memory plugged from before we were bound: unplug it all first.
    unplug_all: bool,
    /// Why unplugging stopped short of the request, if it did.
    stall: Option<Stall>,
    /// Whether the message that the online-page callback is taken was logged.
    told_no_callback: bool,
    /// The memory notifier, registered while bound (it holds a reference to the worker).
    notifier: Option<Pin<KBox<MemoryNotifier<Worker>>>>,
    /// Sub-block mode: the online-page callback, registered while an added block is partly
    /// plugged (it holds a reference to the worker). Dropped without holding `blocks`, which
    /// the callback takes.
    online_cb: Option<OnlinePageCallback<Worker>>,
}

/// The per-device run loop, shared by its work items and the driver's data.
///
/// Lock order: `state`, then `blocks`. The memory notifier and the online-page callback take
/// only `blocks` (they run while memory is added, with `state` held), so `blocks` is never held
/// while adding, removing, onlining or offlining memory.
#[pin_data]
pub(crate) struct Worker {
    dev: ARef<virtio::Device>,
    /// Start of the device's region.
    addr: u64,
    vq: virtio::Virtqueue,
    geometry: Geometry,
    group: MemoryGroup,
    /// Sub-block mode (`blocks` tracks the region) rather than big-block mode.
    sub_blocks: bool,
    /// Bytes of the region that are added but offline (a signed count, updated from the memory
    /// notifier without the state lock, which is held while memory is added and onlined).
    offline: AtomicI64,
    /// Plugging waits for memory to be onlined.
    waiting_for_online: AtomicBool,
    #[pin]
    state: Mutex<State>,
    /// Sub-block mode: the state of every memory block; its `removing` flag stops onlining and
    /// the notifier's kicks at unbind in both modes.
    #[pin]
    blocks: Mutex<SubBlocks>,
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
    /// Creates the run loop of a device; nothing runs until [`Worker::kick`]. `sb_size` is
    /// the sub-block size in sub-block mode (`None`: big-block mode); `plugged_size` is what
    /// the device has plugged already.
    pub(crate) fn new(
        dev: &virtio::Device<device::Bound>,
        vq: virtio::Virtqueue,
        geometry: Geometry,
        sb_size: Option<NonZeroU64>,
        plugged_size: u64,
        group: MemoryGroup,
        region: SystemRamRegion,
    ) -> Result<Arc<Self>> {
        let sbm = SubBlocks::new(
            geometry.first,
            geometry.end,
            geometry.unit,
            sb_size.unwrap_or(geometry.unit),
        );
        Arc::pin_init(
            try_pin_init!(Worker {
                dev: dev.into(),
                addr: region.start(),
                vq,
                geometry,
                group,
                sub_blocks: sb_size.is_some(),
                offline: AtomicI64::new(0),
                waiting_for_online: AtomicBool::new(false),
                state <- new_mutex!(State {
                    region: Some(region),
                    added_end: geometry.first,
                    retry_secs: RETRY_MIN_SECS,
                    stopping: false,
                    stopped: false,
                    unplug_all: plugged_size > 0,
                    stall: None,
                    told_no_callback: false,
                    notifier: None,
                    online_cb: None,
                }),
                blocks <- new_mutex!(sbm),
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
        if self.sub_blocks {
            self.remove_offline_blocks(&mut st);
        }
        // Unregister the notifier, then the online-page callback: no partly plugged block is
        // offline any more, so nothing that needs the callback can be onlined.
        st.notifier = None;
        st.online_cb = None;
        let added = st.region.as_ref().map_or(0, |r| r.added());
        if added > 0 {
            dev_warn!(
                self.dev.as_ref(),
                "{:#x} bytes of memory stay added to the system ({:#x} plugged; online memory \
                 is not unplugged at unbind); the region stays reserved, so the device cannot be \
                 bound again\n",
                added,
                self.plugged_in(&st)
            );
        }
        // Releases the reservation, or keeps it while memory stays added.
        st.region = None;
    }

    /// At unbind: removes the blocks that are offline. Partly plugged ones must go: without
    /// the online-page callback, onlining them would hand unplugged memory to the kernel; the
    /// others are not in use either, and removing them lets the device be bound again. If
    /// nothing stays added, everything is unplugged (`UNPLUG_ALL`); otherwise the device keeps
    /// the removed blocks plugged until the next driver unplugs them.
    fn remove_offline_blocks(&self, st: &mut State) {
        let (len, mb_size) = {
            let b = self.blocks.lock();
            (b.len(), b.mb_size().get())
        };
        for mb in 0..len {
            if self.blocks.lock().state(mb) != BlockState::Offline {
                continue;
            }
            if let Err((addr, e)) = self.remove_block(st, mb) {
                dev_err!(
                    self.dev.as_ref(),
                    "removing the offline block [{:#x}-{:#x}] failed: {:?}\n",
                    addr,
                    addr + mb_size - 1,
                    e
                );
            }
        }
        let nothing_added = !matches!(st.region.as_ref(), Some(r) if r.added() > 0);
        if nothing_added && self.plugged_in(st) > 0 && !st.stopped {
            match protocol::send(&self.vq, &Request::UnplugAll) {
                Ok(_) => {
                    let mut b = self.blocks.lock();
                    let per = b.sbs_per_mb().get();
                    for mb in 0..len {
                        b.set_plugged(mb, 0, per, false);
                    }
                }
                Err(e) => dev_warn!(
                    self.dev.as_ref(),
                    "unplugging all memory at unbind failed ({:?}); the next driver will\n",
                    e
                ),
            }
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
        if st.unplug_all {
            // Memory plugged before we were bound (e.g. before a reboot or by another driver)
            // is not added by us: start from nothing.
            if let Err(again) = self.request(&mut st, &Request::UnplugAll) {
                if again {
                    self.retry_later(&mut st);
                }
                return;
            }
            dev_info!(self.dev.as_ref(), "unplugged all memory plugged from before\n");
            st.unplug_all = false;
            // The usable region may have shrunk.
            return self.kick();
        }
        if self.sub_blocks {
            // Blocks whose sub-blocks are all unplugged go first (an unplug that could not
            // remove its block right away, or one left by a failed run).
            self.remove_empty_blocks(&mut st);
        }
        let plugged = self.plugged_in(&st);
        if requested < plugged {
            if self.sub_blocks {
                self.unplug_sbm(&mut st, requested);
            } else {
                self.unplug_bbm(&mut st, requested);
            }
            return;
        }
        st.stall = None;
        let usable_end = self.addr + usable;
        if self.sub_blocks {
            self.plug_sbm(&mut st, requested, usable_end);
        } else {
            self.plug_bbm(&mut st, requested, usable_end);
        }
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
                    return self.stall(st, Stall::Margin);
                }
                region.offline_and_remove_memory(addr, unit)
            } else {
                match region.remove_memory(addr, unit) {
                    Err(e) if e == EBUSY => return self.stall(st, Stall::OfflineOnly),
                    res => res,
                }
            };
            match res {
                Ok(()) => {}
                Err(e) if e == EBUSY => return self.stall(st, Stall::Unmovable),
                Err(e) => {
                    dev_err!(
                        self.dev.as_ref(),
                        "removing the big block [{:#x}-{:#x}] failed: {:?}\n",
                        addr,
                        addr + unit - 1,
                        e
                    );
                    return self.stall(st, Stall::Unmovable);
                }
            }
            // Removed: it is no longer offline either (the notifier counted it offline).
            self.offline.fetch_sub(unit as i64, Ordering::SeqCst);
            st.added_end = addr;
            let nb_blocks = self.geometry.nb_blocks(unit).unwrap_or(u16::MAX);
            if let Err(again) = self.request(st, &Request::Unplug { addr, nb_blocks }) {
                // Still plugged: add it back, so that nothing plugged is left unused.
                if self.add(st, addr, unit).is_ok() {
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
                return self.stall(st, if again { Stall::Refused } else { Stall::Stopped });
            }
            st.retry_secs = RETRY_MIN_SECS;
        }
        st.stall = None;
    }

    /// Sub-block mode: unplugs toward `requested`, block by block in the order of
    /// [`SubBlocks::next_unplug`]: offline blocks first, then (with `unplug_online`) online
    /// ones, whose pages are migrated away first. Stops short, says why and retries later
    /// when that would take free memory below the safety margin, or when the device refuses.
    fn unplug_sbm(self: &Arc<Self>, st: &mut State, requested: u64) {
        let online = module_parameters::unplug_online.value();
        let mut cursor = None;
        let mut busy = false;
        loop {
            let (plugged, sb_size) = {
                let b = self.blocks.lock();
                (b.plugged_bytes(), b.sb_size())
            };
            let want = usize::try_from(plugged.saturating_sub(requested) / sb_size)
                .unwrap_or(usize::MAX);
            if want == 0 {
                st.stall = None;
                st.retry_secs = RETRY_MIN_SECS;
                return;
            }
            let next = self.blocks.lock().next_unplug(cursor, online);
            let Some((class, mb)) = next else {
                let why = if busy {
                    Stall::Unmovable
                } else if online {
                    Stall::NothingToUnplug
                } else {
                    Stall::OfflineOnly
                };
                return self.stall(st, why);
            };
            cursor = Some((class, mb));
            match self.unplug_block(st, mb, want) {
                Ok(()) => st.retry_secs = RETRY_MIN_SECS,
                Err(Stall::Unmovable) => busy = true,
                Err(Stall::Stopped) => return,
                Err(why) => return self.stall(st, why),
            }
        }
    }

    /// Unplugs up to `want` sub-blocks of block `mb`, highest first, and removes the block
    /// when nothing of it stays plugged. Sub-blocks of an online block whose pages cannot be
    /// moved are skipped.
    fn unplug_block(self: &Arc<Self>, st: &mut State, mb: usize, want: usize) -> Result<(), Stall> {
        let mut left = want;
        // Sub-blocks from here up that could not be taken offline are skipped.
        let mut below = usize::MAX;
        let mut busy = false;
        let mut whole_failed = false;
        while left > 0 {
            let mut b = self.blocks.lock();
            let state = b.state(mb);
            let online = matches!(state, BlockState::Online { .. });
            if !online && state != BlockState::Offline {
                // Being onlined or offlined: a later run sees it.
                break;
            }
            let nr = b.nr_plugged(mb);
            // A fully plugged online block that is to go whole is taken in one piece, else
            // sub-block by sub-block; offline blocks a run at a time.
            let whole = online && !whole_failed && nr == b.sbs_per_mb().get() && left >= nr;
            let max = if online && !whole { 1 } else { left };
            let Some((sb, count)) = b.last_plugged_run(mb, below, max) else {
                break;
            };
            let sb_size = b.sb_size().get();
            let addr = b.block_addr(mb) + sb as u64 * sb_size;
            let size = count as u64 * sb_size;
            // What stays plugged and added needs the online-page callback (onlining it later).
            if (nr > count || online) && st.online_cb.is_none() {
                drop(b);
                if !self.ensure_online_callback(st) {
                    return Err(Stall::NoCallback);
                }
                continue;
            }
            if online {
                if memory_hotplug::available_memory() < size + unplug_margin() {
                    return Err(Stall::Margin);
                }
                let Some(cb) = st.online_cb.as_mut() else {
                    return Err(Stall::NoCallback);
                };
                match cb.fake_offline(addr, size) {
                    Ok(()) => {}
                    Err(e) if e == EBUSY => {
                        // Some page cannot be moved: try smaller pieces, or below it.
                        if whole {
                            whole_failed = true;
                        } else {
                            below = sb;
                        }
                        busy = true;
                        continue;
                    }
                    Err(e) if e == ENOMEM => return Err(Stall::Margin),
                    Err(e) => {
                        dev_err!(
                            self.dev.as_ref(),
                            "taking [{:#x}-{:#x}] offline failed: {:?}\n",
                            addr,
                            addr + size - 1,
                            e
                        );
                        return Err(Stall::Unmovable);
                    }
                }
            }
            let nb_blocks =
                self.geometry.nb_blocks(size).ok_or(Stall::Stopped)?;
            if let Err(again) = self.request(st, &Request::Unplug { addr, nb_blocks }) {
                if online {
                    // Give the pages back exactly as they were.
                    self.fake_online(st, addr, size);
                }
                return Err(if again { Stall::Refused } else { Stall::Stopped });
            }
            b.set_plugged(mb, sb, count, false);
            left = left.saturating_sub(count);
        }
        self.remove_empty_blocks(st);
        if busy && left > 0 {
            return Err(Stall::Unmovable);
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
            if let Err((addr, e)) = self.remove_block(st, mb) {
                let mb_size = self.geometry.unit.get();
                dev_warn!(
                    self.dev.as_ref(),
                    "removing the unplugged block [{:#x}-{:#x}] failed ({:?}); retrying later\n",
                    addr,
                    addr + mb_size - 1,
                    e
                );
                return;
            }
        }
    }

    /// Removes added block `mb` from the system (offlining it first if it is online) and marks
    /// it unused; its sub-blocks keep their plugged state. On failure, returns its address and
    /// the error.
    fn remove_block(&self, st: &mut State, mb: usize) -> Result<(), (u64, Error)> {
        let (state, addr) = {
            let b = self.blocks.lock();
            (b.state(mb), b.block_addr(mb))
        };
        let mb_size = self.geometry.unit.get();
        let region = st.region.as_mut().ok_or((addr, ENODEV))?;
        let res = if state == BlockState::Offline {
            region.remove_memory(addr, mb_size)
        } else {
            region.offline_and_remove_memory(addr, mb_size)
        };
        res.map_err(|e| (addr, e))?;
        // It counted as offline (an online block went offline on the way out).
        self.offline.fetch_sub(mb_size as i64, Ordering::SeqCst);
        self.blocks.lock().set_state(mb, BlockState::Unused);
        Ok(())
    }

    /// Records why unplugging stopped short, says so once per reason, and retries later:
    /// soon when free memory may come back, with back-off otherwise.
    fn stall(self: &Arc<Self>, st: &mut State, why: Stall) {
        if st.stall != Some(why) {
            dev_info!(
                self.dev.as_ref(),
                "unplugging stopped short of the requested size: {}\n",
                why
            );
            st.stall = Some(why);
        }
        match why {
            Stall::Stopped => {}
            Stall::Margin => {
                let delay = msecs_to_jiffies(RETRY_MIN_SECS * 1000);
                let _ = workqueue::system_freezable()
                    .enqueue_delayed::<Arc<Worker>, 1>(self.clone(), delay);
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

    /// Big-block mode: plug and add whole big blocks, one contiguous run from the start.
    fn plug_bbm(self: &Arc<Self>, st: &mut State, requested: u64, usable_end: u64) {
        while let Some((addr, size)) = self.geometry.next_plug(st.added_end, requested, usable_end)
        {
            // Keep added-but-offline memory within the limit; the notifier resumes us.
            let size = size.min(self.offline_room());
            if size == 0 {
                return;
            }
            self.waiting_for_online.store(false, Ordering::SeqCst);
            if let Err(again) = self.plug_and_add(st, addr, size) {
                if again {
                    self.retry_later(st);
                }
                return;
            }
            st.retry_secs = RETRY_MIN_SECS;
        }
    }

    /// Sub-block mode: plug sub-blocks into partly plugged blocks first, then add new memory
    /// blocks, whole ones in batches and the rest as one partly plugged block.
    fn plug_sbm(self: &Arc<Self>, st: &mut State, requested: u64, usable_end: u64) {
        if let Err(e) = self.blocks.lock().grow(usable_end) {
            dev_err!(self.dev.as_ref(), "tracking the usable region failed: {:?}\n", e);
            return self.retry_later(st);
        }
        let (sb_size, sbs_per_mb) = {
            let b = self.blocks.lock();
            (b.sb_size(), b.sbs_per_mb())
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
            let done = match self.plug_partial(st, want.min(max_sbs_per_request)) {
                Ok(done) => done,
                Err(again) => {
                    if again {
                        self.retry_later(st);
                    }
                    break;
                }
            };
            if done {
                st.retry_secs = RETRY_MIN_SECS;
                continue;
            }
            // New blocks: whole ones while a whole one is wanted, then one partly plugged.
            let whole = want / sbs_per_mb;
            let room = usize::try_from(self.offline_room() / self.geometry.unit)
                .unwrap_or(usize::MAX);
            if room == 0 {
                break;
            }
            let (max_blocks, nr_sbs) = if whole > 0 {
                let max = usize::try_from(self.geometry.max_units()).unwrap_or(1);
                (whole.min(max).min(room), None)
            } else {
                if !self.ensure_online_callback(st) {
                    break;
                }
                (1, Some(want.min(max_sbs_per_request)))
            };
            self.waiting_for_online.store(false, Ordering::SeqCst);
            let Some((mb, count)) = self.blocks.lock().unused_run(max_blocks) else {
                // The usable region is full.
                break;
            };
            let nr_sbs = nr_sbs.unwrap_or(count * sbs_per_mb.get());
            if let Err(again) = self.plug_new_blocks(st, mb, nr_sbs) {
                if again {
                    self.retry_later(st);
                }
                break;
            }
            st.retry_secs = RETRY_MIN_SECS;
        }
        // Give the online-page callback back when no added block needs it.
        let needed = self.blocks.lock().any_partial_added();
        if !needed {
            st.online_cb = None;
        }
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
        let nr_blocks = (nr_sbs + sbs_per_mb.get() - 1) / sbs_per_mb;
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
        // Counted as offline before it is added: auto-onlining reports it online during the add.
        self.offline.fetch_add(size as i64, Ordering::SeqCst);
        region.add_memory(&self.group, addr, size).inspect_err(|_| {
            self.offline.fetch_sub(size as i64, Ordering::SeqCst);
        })
    }

    /// After adding `[addr, addr + size)` failed with `e`, unplugs its plugged part (`plugged`
    /// bytes, `nb_blocks` device blocks) again.
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
        if let Err(e) = protocol::send(&self.vq, &Request::Unplug { addr, nb_blocks }) {
            dev_err!(
                self.dev.as_ref(),
                "unplugging [{:#x}-{:#x}] failed too ({:?}); stopping until it is bound again\n",
                addr,
                addr + plugged - 1,
                e
            );
            st.stopped = true;
            return Err(false);
        }
        Err(true)
    }

    /// Reads the requested and usable region sizes.
    fn read_sizes(&self) -> Result<(u64, u64)> {
        Ok((
            self.vq.read_config(offset_of!(Raw, requested_size))?,
            self.vq.read_config(offset_of!(Raw, usable_region_size))?,
        ))
    }

    /// Sends `req`. On failure, says whether to retry later (`Err(true)`: refused for now or the
    /// exchange failed) or not (`Err(false)`: unbound, or the device answered `ERROR` or
    /// nonsense, which stops the device).
    fn request(&self, st: &mut State, req: &Request) -> Result<(), bool> {
        match protocol::send(&self.vq, req) {
            Ok(_) => Ok(()),
            Err(SendError::Transport(e)) if e == ENODEV => Err(false),
            Err(
                e @ (SendError::Transport(_) | SendError::Refused(Refusal::Nack | Refusal::Busy)),
            ) => {
                dev_info!(
                    self.dev.as_ref(),
                    "{} failed ({:?}); retrying in {} s\n",
                    req,
                    e,
                    st.retry_secs
                );
                Err(true)
            }
            Err(SendError::Refused(r)) => {
                dev_err!(
                    self.dev.as_ref(),
                    "device answered {:?} to {}; stopping until it is bound again\n",
                    r,
                    req
                );
                st.stopped = true;
                Err(false)
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
        let delay = msecs_to_jiffies(st.retry_secs * 1000);
        st.retry_secs = (st.retry_secs * 2).min(RETRY_MAX_SECS);
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
        let size = range.size as i64;
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
