// SPDX-License-Identifier: GPL-2.0

//! Plugging in sub-block mode: sub-blocks into partly plugged blocks first, then new memory
//! blocks, whole ones in batches and the rest as one partly plugged block.

use super::{
    blocks::BlockState,
    SubBlockMode, //
};
use crate::{
    error::StepError,
    hotplug,
    manager::{
        Ctx,
        Manager, //
    },
    state::RunState,
    status::Reason, //
};
use kernel::{
    memory_hotplug::PagesError,
    prelude::*, //
};

/// New blocks to plug and add.
struct NewBlocks {
    /// The first of them.
    mb: usize,
    /// Sub-blocks to plug from its start on.
    nr_sbs: usize,
    /// The smallest plug that still makes sense if the device refuses this one: a whole
    /// block, or the memmap's sub-blocks and one more of a partly plugged one (only the
    /// memmap's if no more is wanted).
    least: u64,
}

impl SubBlockMode {
    /// Plugs toward `st.requested` below `usable_end`.
    pub(super) fn plug_toward(
        &self,
        cx: &Ctx<'_>,
        st: &mut RunState,
        usable_end: u64,
    ) -> Result<(), StepError> {
        self.grow(cx, usable_end)?;
        let l = self.layout();
        // Sub-blocks one request can carry.
        let max_per_request = usize::try_from(
            (u64::from(u16::MAX) * cx.device.geometry.block_size.get() / l.sb_size).max(1),
        )
        .unwrap_or(usize::MAX);
        loop {
            let want = usize::try_from(st.requested.saturating_sub(self.plugged()) / l.sb_size)
                .unwrap_or(usize::MAX);
            if want == 0 {
                return Ok(());
            }
            cx.check_request(st)?;
            // Sub-blocks one request may ask for now.
            let limit = usize::try_from(st.plug_limit.get() / l.sb_size)
                .unwrap_or(usize::MAX)
                .clamp(1, max_per_request);
            let max_sbs = want.min(limit);
            let res = match self.plug_partial(cx, st, max_sbs) {
                Ok(true) => Ok(()),
                Ok(false) => {
                    let Some(new) = self.plan_new_blocks(cx, st, want, max_sbs)? else {
                        return Ok(());
                    };
                    self.plug_new_blocks(cx, st, new.mb, new.nr_sbs)
                        .map_err(|e| (e, new.nr_sbs as u64 * l.sb_size, new.least))
                }
                Err(e) => Err((e, max_sbs as u64 * l.sb_size, l.sb_size)),
            };
            match res {
                Ok(()) => {
                    st.plug_accepted();
                    cx.update_sizes(st);
                }
                Err((StepError::Device(f), tried, least))
                    if cx.smaller_plugs(st, &f, tried, least) => {}
                Err((e, _, _)) => return Err(e),
            }
        }
    }

    /// Which new blocks to plug next, toward `want` more sub-blocks (`max_sbs` in one request):
    /// whole ones while a whole one is wanted, then one partly plugged (which holds at least
    /// its memmap). `None` when no new block makes sense or the usable region is full.
    fn plan_new_blocks(
        &self,
        cx: &Ctx<'_>,
        st: &mut RunState,
        want: usize,
        max_sbs: usize,
    ) -> Result<Option<NewBlocks>, StepError> {
        let l = self.layout();
        let unit = cx.device.geometry.unit;
        let whole = want / l.per;
        if whole == 0 && want < l.memmap_sbs {
            return Ok(None);
        }
        // A partly plugged new block gets more than its memmap whenever more is wanted, also
        // when refusals made the plug limit smaller: with nothing else accessible the region
        // vetoes onlining it, and adding is what onlines a block by itself.
        let partial_least = if want > l.memmap_sbs {
            l.memmap_sbs + 1
        } else {
            l.memmap_sbs
        };
        // Keep added-but-offline memory within the limit; the notifier resumes us.
        let room = usize::try_from(cx.offline.room(unit) / unit).unwrap_or(usize::MAX);
        if room == 0 {
            return Err(StepError::Guest(Reason::WaitingForOnline));
        }
        cx.offline.go_on();
        let memmap_on_memory = cx.device.probed.memmap_on_memory;
        let fits = usize::try_from(hotplug::memmap_room(
            memmap_on_memory,
            unit.get(),
            whole.max(1) as u64,
        ))
        .unwrap_or(1);
        if fits == 0 {
            return Err(StepError::Guest(Reason::MemmapNoRoom));
        }
        let (max_blocks, nr_sbs) = if whole > 0 {
            let max = usize::try_from(cx.device.geometry.max_units()).unwrap_or(1);
            let limit = usize::try_from(st.plug_limit.get() / unit)
                .unwrap_or(usize::MAX)
                .max(1);
            (whole.min(max).min(room).min(fits).min(limit), None)
        } else {
            self.hold_callback(cx, st)?;
            (1, Some(max_sbs.max(partial_least)))
        };
        let Some((mb, count)) = self.blocks.lock().unused_run(max_blocks) else {
            // The usable region is full.
            return Ok(None);
        };
        let nr_sbs = nr_sbs.unwrap_or(count * l.per);
        let least = if nr_sbs < l.per {
            partial_least.max(1) as u64 * l.sb_size
        } else {
            unit.get()
        };
        Ok(Some(NewBlocks { mb, nr_sbs, least }))
    }

    /// A partly plugged block needs the kernel's online-page callback: claims it before
    /// anything is plugged for it.
    fn hold_callback(&self, cx: &Ctx<'_>, st: &mut RunState) -> Result<(), StepError> {
        let claimed = st
            .hotplug
            .as_mut()
            .map_or(Err(ENODEV), |h| h.region.hold_online_page_callback());
        let Err(e) = claimed else {
            return Ok(());
        };
        if !st.told_no_callback {
            dev_warn!(
                cx.device.dev(),
                "cannot hold the online-page callback ({:?}; another driver, such as \
                 virtio_mem, holds it?): plugging whole memory blocks only\n",
                e
            );
            st.told_no_callback = true;
        }
        Err(StepError::Guest(Reason::NoCallback))
    }

    /// Plugs up to `max_sbs` sub-blocks into a partly plugged block, if there is one that is not
    /// in a transition; `Ok(false)` if there is none. The region hands the pages to the kernel
    /// (if the block is online) atomically with the `PLUG`.
    fn plug_partial(
        &self,
        cx: &Ctx<'_>,
        st: &mut RunState,
        max_sbs: usize,
    ) -> Result<bool, StepError> {
        // Only steps (under the state lock) change plugged sub-blocks, so the plan holds
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
        let req = cx.device.request(true, addr, size)?;
        let region = &mut st.hotplug()?.region;
        match region.give_pages(addr, size, || cx.device.send(&req).map(|_| ())) {
            Ok(()) => {
                self.blocks.lock().set_plugged(mb, sb, count, true);
                Ok(true)
            }
            Err(PagesError::Step(f)) => Err(f.into()),
            Err(PagesError::Region(e)) => Err(cx.region_error(addr, size, e)),
        }
    }

    /// Plugs the first `nr_sbs` sub-blocks from block `mb` on (unused blocks) and adds their
    /// blocks to the system, each with its plugged part accessible.
    fn plug_new_blocks(
        &self,
        cx: &Ctx<'_>,
        st: &mut RunState,
        mb: usize,
        nr_sbs: usize,
    ) -> Result<(), StepError> {
        let l = self.layout();
        let addr = self.blocks.lock().block_addr(mb);
        let nr_blocks = nr_sbs.div_ceil(l.per);
        let req = cx.device.request(true, addr, nr_sbs as u64 * l.sb_size)?;
        cx.device.send(&req)?;
        // Mark them added before adding: onlining during the add looks them up.
        self.set_new_blocks(mb, nr_blocks, nr_sbs, true);
        // One memory block per add: memory must be removed in the pieces it was added in (a
        // bigger add may get a 1G direct mapping that removing one block cannot split).
        for i in 0..nr_blocks {
            let block = addr + i as u64 * l.mb_size;
            let plugged = (nr_sbs - i * l.per).min(l.per) as u64 * l.sb_size;
            let added = st
                .hotplug()?
                .add(cx.device, cx.offline, block, l.mb_size, plugged);
            if let Err(e) = added {
                let rest_sbs = nr_sbs - i * l.per;
                self.set_new_blocks(mb + i, nr_blocks - i, rest_sbs, false);
                let rest = rest_sbs as u64 * l.sb_size;
                return Err(cx.unplug_after_failed_add(st, block, rest, e));
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
}
