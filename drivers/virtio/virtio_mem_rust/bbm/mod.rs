// SPDX-License-Identifier: GPL-2.0

//! Big-block mode: big blocks of one or more Linux memory blocks are plugged and added whole,
//! and removed whole before they are unplugged (see [`blocks`] for their states and the order
//! they go in).

mod blocks;

use crate::{
    error::StepError,
    hotplug::{
        self,
        Hotplug, //
    },
    manager::{
        Ctx,
        Manager, //
    },
    module_parameters,
    state::RunState,
    status::{
        Event,
        Reason, //
    }, //
};
use blocks::{
    BbState,
    BigBlocks,
    Usage, //
};
use kernel::{
    fmt,
    memory_hotplug::{
        self,
        PagesError,
        Undo, //
    },
    new_mutex,
    prelude::*,
    sync::Mutex, //
};

/// Big-block mode's records.
#[pin_data]
pub(crate) struct BigBlockMode {
    /// Size of a big block.
    unit: u64,
    /// The kernel's memory block size (a big block is onlined and offlined in these).
    memory_block_size: u64,
    /// The state of every big block; taken briefly by steps and debugfs.
    #[pin]
    bigs: Mutex<BigBlocks>,
}

impl BigBlockMode {
    /// The records of the big blocks of `[first, end)`, `unit` bytes each.
    pub(crate) fn new(
        first: u64,
        end: u64,
        unit: u64,
        memory_block_size: u64,
    ) -> Result<impl PinInit<Self, Error>> {
        let bigs = BigBlocks::new(first, end, unit)?;
        Ok(try_pin_init!(Self {
            unit,
            memory_block_size,
            bigs <- new_mutex!(bigs),
        }))
    }

    /// How the memory of the added big block at `addr` is used (for the unplug order), or
    /// `None` while one of its memory blocks is being onlined or offlined.
    fn usage(&self, hotplug: Option<&Hotplug>, addr: u64) -> Option<Usage> {
        let region = &hotplug?.region;
        let mut usage = Usage::Offline;
        let mut at = addr;
        while at < addr + self.unit {
            let u = match region.block_state(at)? {
                memory_hotplug::BlockState::Offline => Usage::Offline,
                memory_hotplug::BlockState::Online { movable: true } => Usage::Movable,
                memory_hotplug::BlockState::Online { movable: false } => Usage::Kernel,
                _ => return None,
            };
            usage = usage.max(u);
            at += self.memory_block_size;
        }
        Some(usage)
    }

    /// Adds back big block `i`, which the device backs but which is not added.
    fn add_back(&self, cx: &Ctx<'_>, st: &mut RunState, i: usize) -> Result {
        let addr = self.bigs.lock().addr(i);
        let res = st
            .hotplug
            .as_mut()
            .ok_or(ENODEV)
            .and_then(|h| h.add(cx.device, cx.offline, addr, self.unit, self.unit));
        match res {
            Ok(()) => {
                self.bigs.lock().set(i, 1, BbState::Added);
                Ok(())
            }
            Err(e) => {
                dev_err!(
                    cx.device.dev(),
                    "adding the plugged big block [{:#x}-{:#x}] failed ({:?}); it stays plugged \
                     and is tried again later\n",
                    addr,
                    addr + self.unit - 1,
                    e
                );
                Err(e)
            }
        }
    }

    /// Plugs big blocks `i..i + n` at the device and adds each to the system.
    fn plug_and_add(
        &self,
        cx: &Ctx<'_>,
        st: &mut RunState,
        i: usize,
        n: usize,
    ) -> Result<(), StepError> {
        let addr = self.bigs.lock().addr(i);
        let req = cx.device.request(true, addr, n as u64 * self.unit)?;
        cx.device.send(&req)?;
        self.bigs.lock().set(i, n, BbState::Plugged);
        // One big block per add, the pieces it will be removed in.
        for k in 0..n {
            let at = addr + k as u64 * self.unit;
            let added = st
                .hotplug()?
                .add(cx.device, cx.offline, at, self.unit, self.unit);
            if let Err(e) = added {
                let rest = n - k;
                self.bigs.lock().set(i + k, rest, BbState::Unused);
                return Err(cx.unplug_after_failed_add(st, at, rest as u64 * self.unit, e));
            }
            self.bigs.lock().set(i + k, 1, BbState::Added);
        }
        Ok(())
    }

    /// Takes the added big block at `addr` (used as `usage` says) out of the system: an offline
    /// one is removed; the pages of an online one are taken first (migrated away; this fails
    /// fast for a page that cannot move), so that offlining it, then removing it, cannot wedge
    /// on a page in use.
    fn remove(
        &self,
        cx: &Ctx<'_>,
        st: &mut RunState,
        addr: u64,
        usage: Usage,
    ) -> Result<(), StepError> {
        let unit = self.unit;
        if usage != Usage::Offline && !hotplug::above_margin(unit) {
            return Err(StepError::Guest(Reason::Margin));
        }
        let region = &mut st.hotplug()?.region;
        if usage == Usage::Offline {
            return match region.remove_memory(addr, unit) {
                Ok(()) => Ok(()),
                // Onlined meanwhile: a later pass sees it online.
                Err(e) if e == EBUSY || e == EAGAIN => Err(StepError::Guest(Reason::Unmovable)),
                Err(e) => Err(cx.region_error(addr, unit, e)),
            };
        }
        match region.take_pages(addr, unit, || Ok::<(), Undo<()>>(())) {
            Ok(()) => {}
            Err(PagesError::Region(e)) if e == EBUSY => {
                cx.device.count(Event::UnplugFailed);
                return Err(StepError::Guest(Reason::Unmovable));
            }
            Err(PagesError::Region(e)) => return Err(cx.region_error(addr, unit, e)),
            Err(PagesError::Step(())) => return Err(StepError::internal()),
        }
        let Err(e) = region.offline_and_remove_memory(addr, unit) else {
            return Ok(());
        };
        cx.device.count(Event::UnplugFailed);
        dev_warn!(
            cx.device.dev(),
            "offlining the big block [{:#x}-{:#x}] failed ({:?}); giving its pages back\n",
            addr,
            addr + unit - 1,
            e
        );
        if let Err(e) = region.give_pages(addr, unit, || Ok::<(), ()>(())) {
            dev_err!(
                cx.device.dev(),
                "giving the pages of [{:#x}-{:#x}] back failed ({:?}); they stay unused\n",
                addr,
                addr + unit - 1,
                e
            );
        }
        Err(StepError::Guest(Reason::Unmovable))
    }

    /// Removes big block `i` (used as `usage` says) from the system and unplugs it. If the
    /// device refuses, it is added back; if that fails, it stays tracked as plugged and not
    /// added, and is added or unplugged later.
    fn unplug_one(
        &self,
        cx: &Ctx<'_>,
        st: &mut RunState,
        i: usize,
        usage: Usage,
    ) -> Result<(), StepError> {
        let addr = self.bigs.lock().addr(i);
        let req = cx.device.request(false, addr, self.unit)?;
        if usage != Usage::NotAdded {
            self.remove(cx, st, addr, usage)?;
            cx.device.count(Event::BlockRemoved);
            // Removed: it is no longer offline either (the notifier counted it offline).
            cx.offline.removed(self.unit);
            self.bigs.lock().set(i, 1, BbState::Plugged);
        }
        let Err(f) = cx.device.send(&req) else {
            self.bigs.lock().set(i, 1, BbState::Unused);
            return Ok(());
        };
        if f.may_have_acted() {
            // The device may have unplugged it: it stays removed for good, and a resync (after
            // a timeout, or at the next binding after an answer the protocol does not define)
            // makes the device agree that it is unplugged.
            if usage != Usage::NotAdded {
                dev_warn!(
                    cx.device.dev(),
                    "no definite answer to the UNPLUG of the big block [{:#x}-{:#x}] ({}): \
                     taking it as unplugged\n",
                    addr,
                    addr + self.unit - 1,
                    f.reason
                );
            }
            self.bigs.lock().set(i, 1, BbState::Unused);
        } else if usage != Usage::NotAdded {
            // Still plugged: added back, so that nothing plugged is left unused.
            let _ = self.add_back(cx, st, i);
        }
        Err(f.into())
    }

    /// Why unplugging stops with nothing left to try: big blocks that failed this pass hold
    /// unmovable pages; with `unplug_online=0` only offline ones may go; otherwise the rest is
    /// being onlined or offlined.
    fn stuck(skipped: bool, online_ok: bool) -> StepError {
        StepError::Guest(if skipped {
            Reason::Unmovable
        } else if !online_ok {
            Reason::OfflineOnly
        } else {
            Reason::Transition
        })
    }
}

impl Manager for BigBlockMode {
    fn plugged(&self) -> u64 {
        self.bigs.lock().plugged_bytes()
    }

    fn online(&self, cx: &Ctx<'_>, added: u64) -> (u64, u64) {
        let online = added.saturating_sub(cx.offline.bytes());
        (online, online / self.memory_block_size.max(1))
    }

    fn take_over(
        &self,
        cx: &Ctx<'_>,
        st: &mut RunState,
        _usable_end: u64,
    ) -> Result<(), StepError> {
        let region = &st.hotplug()?.region;
        let mut bigs = self.bigs.lock();
        for i in 0..bigs.len() {
            let addr = bigs.addr(i);
            if !region.is_added(addr, self.unit) {
                continue;
            }
            bigs.set(i, 1, BbState::Added);
            let mut at = addr;
            while at < addr + self.unit {
                if region.block_state(at) == Some(memory_hotplug::BlockState::Offline) {
                    cx.offline.added(self.memory_block_size);
                }
                at += self.memory_block_size;
            }
        }
        Ok(())
    }

    fn resync(&self, cx: &Ctx<'_>, usable_end: u64) -> Result<u64, StepError> {
        let unit = self.unit;
        let chunk = cx.device.geometry.max_units() * unit;
        let (first, len) = {
            let bigs = self.bigs.lock();
            (bigs.addr(0), bigs.len())
        };
        let plugged = |i: usize| self.bigs.lock().state(i) != BbState::Unused;
        // Runs of big blocks that are plugged or not, in requests of at most `chunk`.
        let mut i = 0;
        while i < len && first + (i as u64 + 1) * unit <= usable_end {
            let p = plugged(i);
            let mut n = 1;
            while i + n < len
                && (n as u64) * unit < chunk
                && first + (i + n + 1) as u64 * unit <= usable_end
                && plugged(i + n) == p
            {
                n += 1;
            }
            cx.device
                .resync_range(first + i as u64 * unit, n as u64 * unit, p)?;
            i += n;
        }
        Ok(first + i as u64 * unit)
    }

    fn plug(&self, cx: &Ctx<'_>, st: &mut RunState, usable_end: u64) -> Result<(), StepError> {
        let unit = cx.device.geometry.unit;
        loop {
            let requested = st.requested;
            let want = (requested - requested % unit).saturating_sub(self.plugged()) / unit;
            if want == 0 {
                return Ok(());
            }
            cx.check_request(st)?;
            // Keep added-but-offline memory within the limit; the notifier resumes us.
            let room = cx.offline.room(unit) / unit;
            if room == 0 {
                return Err(StepError::Guest(Reason::WaitingForOnline));
            }
            cx.offline.go_on();
            let memmap_on_memory = cx.device.probed.memmap_on_memory;
            let fits = hotplug::memmap_room(memmap_on_memory, unit.get(), want.min(room));
            if fits == 0 {
                return Err(StepError::Guest(Reason::MemmapNoRoom));
            }
            let not_added = self.bigs.lock().next_plugged();
            if let Some(i) = not_added {
                self.add_back(cx, st, i)
                    .map_err(|_| StepError::Guest(Reason::AddFailed))?;
                cx.update_sizes(st);
                continue;
            }
            let max = fits
                .min(cx.device.geometry.max_units())
                .min((st.plug_limit.get() / unit).max(1));
            let Some((i, n)) = self.bigs.lock().unused_run(usable_end, max as usize) else {
                // The usable region is full.
                return Ok(());
            };
            let size = n as u64 * unit.get();
            match self.plug_and_add(cx, st, i, n) {
                Ok(()) => {
                    st.plug_accepted();
                    cx.update_sizes(st);
                }
                Err(StepError::Device(f)) if cx.smaller_plugs(st, &f, size, unit.get()) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn unplug(&self, cx: &Ctx<'_>, st: &mut RunState, requested: u64) -> Result<(), StepError> {
        let online_ok = module_parameters::unplug_online.value();
        // Big blocks that could not go in this pass.
        let mut skip = KVec::new();
        loop {
            if self.plugged() < requested + self.unit {
                st.backoff.reset();
                return Ok(());
            }
            cx.check_request(st)?;
            let next = self.bigs.lock().next_unplug(online_ok, &skip, |addr| {
                self.usage(st.hotplug.as_ref(), addr)
            });
            let Some((i, usage)) = next else {
                return Err(Self::stuck(!skip.is_empty(), online_ok));
            };
            match self.unplug_one(cx, st, i, usage) {
                Ok(()) => {
                    st.backoff.reset();
                    cx.update_sizes(st);
                }
                Err(StepError::Guest(Reason::Unmovable)) => skip
                    .push(i, GFP_KERNEL)
                    .map_err(|_| StepError::Guest(Reason::Unmovable))?,
                Err(e) => return Err(e),
            }
        }
    }

    fn give_back(&self, cx: &Ctx<'_>, st: &mut RunState) -> Result<(), StepError> {
        self.unplug(cx, st, 0)
    }

    fn forget_plugged(&self) {
        let mut bigs = self.bigs.lock();
        let n = bigs.len();
        bigs.set(0, n, BbState::Unused);
    }

    fn dump(&self, state: &Mutex<RunState>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# address state (big block {:#x})", self.unit)?;
        let st = state.lock();
        let bigs = self.bigs.lock();
        for i in 0..bigs.len() {
            let addr = bigs.addr(i);
            let state = match bigs.state(i) {
                BbState::Unused => "unused",
                BbState::Plugged => "plugged-not-added",
                BbState::Added => match self.usage(st.hotplug.as_ref(), addr) {
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
