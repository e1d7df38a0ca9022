// SPDX-License-Identifier: GPL-2.0

//! Unplugging in sub-block mode: block by block in the order of
//! [`SubBlocks::next_unplug`](super::blocks::SubBlocks::next_unplug): removed and offline
//! blocks first, then (with `unplug_online`) online ones, whose pages are migrated away first.
//! A block goes once nothing of it but its memmap is plugged; its memmap sub-blocks are then
//! unplugged as those of a removed block.

use super::{
    blocks::BlockState,
    SubBlockMode, //
};
use crate::{
    error::StepError,
    hotplug,
    manager::Ctx,
    module_parameters,
    state::RunState,
    status::{
        Event,
        Reason, //
    }, //
};
use kernel::{
    memory_hotplug::{
        PagesError,
        Undo, //
    },
    prelude::*,
    sync::atomic::Relaxed,
    time::{
        delay::fsleep,
        Delta, //
    }, //
};

/// A run of plugged sub-blocks of one block to unplug in one request.
struct Piece {
    sb: usize,
    count: usize,
    addr: u64,
    size: u64,
    /// The block is online: its pages are taken (migrated) first.
    online: bool,
    /// The block is added (else only its memmap sub-blocks are left, unused).
    added: bool,
    /// All of a fully plugged online block (but its memmap) in one piece.
    whole: bool,
}

/// What became of a piece.
enum Outcome {
    Unplugged,
    /// Some page of it is in use and cannot be moved.
    InUse,
}

impl SubBlockMode {
    /// Unplugs toward `requested`. Stops short when that would take free memory below the
    /// safety margin, when the device refuses, or when the blocks left hold unmovable pages.
    pub(super) fn unplug_toward(
        &self,
        cx: &Ctx<'_>,
        st: &mut RunState,
        requested: u64,
    ) -> Result<(), StepError> {
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
            let want =
                usize::try_from(plugged.saturating_sub(requested) / sb_size).unwrap_or(usize::MAX);
            if want == 0 {
                st.backoff.reset();
                return Ok(());
            }
            cx.check_request(st)?;
            let next = self.blocks.lock().next_unplug(cursor, online);
            if next.is_none() && progress {
                cursor = None;
                progress = false;
                continue;
            }
            let Some((class, mb)) = next else {
                return Err(StepError::Guest(if busy {
                    Reason::Unmovable
                } else if online {
                    Reason::Transition
                } else {
                    Reason::OfflineOnly
                }));
            };
            cursor = Some((class, mb));
            let res = self.unplug_block(cx, st, mb, want);
            progress |= self.blocks.lock().plugged_bytes() < plugged;
            match res {
                Ok(()) => st.backoff.reset(),
                Err(StepError::Guest(Reason::Unmovable)) => busy = true,
                Err(e) => return Err(e),
            }
            cx.update_sizes(st);
        }
    }

    /// Unplugs up to `want` sub-blocks of block `mb`, highest first, and removes the block
    /// when nothing of it but its memmap stays plugged and that is wanted too. Sub-blocks of an
    /// online block whose pages cannot be moved are skipped (`Unmovable` if that left some of
    /// `want`).
    fn unplug_block(
        &self,
        cx: &Ctx<'_>,
        st: &mut RunState,
        mb: usize,
        want: usize,
    ) -> Result<(), StepError> {
        let mut left = want;
        // Sub-blocks from here up that could not be taken offline are skipped.
        let mut below = usize::MAX;
        let mut busy = false;
        let mut whole_failed = false;
        while left > 0 {
            let Some(p) = self.next_piece(mb, left, below, whole_failed) else {
                break;
            };
            match self.unplug_piece(cx, st, mb, &p)? {
                Outcome::Unplugged => left = left.saturating_sub(p.count),
                Outcome::InUse => {
                    // Some page cannot be moved: try smaller pieces, or below it.
                    if p.whole {
                        whole_failed = true;
                    } else {
                        below = p.sb;
                    }
                    busy = true;
                }
            }
        }
        self.remove_if_emptied(cx, st, mb, left)?;
        if busy && left > 0 {
            return Err(StepError::Guest(Reason::Unmovable));
        }
        Ok(())
    }

    /// The next piece of block `mb` to unplug, at most `left` sub-blocks, below sub-block
    /// `below`; `None` if there is none, or the block is being onlined or offlined (a later
    /// step sees it). Only steps (under the state lock) change plugged sub-blocks, and the
    /// region refuses blocks in a transition, so the plan holds after `blocks` is let go.
    fn next_piece(
        &self,
        mb: usize,
        left: usize,
        below: usize,
        whole_failed: bool,
    ) -> Option<Piece> {
        let b = self.blocks.lock();
        let state = b.state(mb);
        let online = matches!(state, BlockState::Online { .. });
        let added = state.is_added();
        if !online && state != BlockState::Offline && added {
            return None;
        }
        let nr = b.nr_plugged(mb);
        let memmap_sbs = if added { b.memmap_sbs() } else { 0 };
        // A fully plugged online block that is to go whole (but its memmap) is taken in one
        // piece, else sub-block by sub-block; offline and removed blocks a run at a time.
        let whole =
            online && !whole_failed && nr == b.sbs_per_mb().get() && left >= nr - memmap_sbs;
        let max = if online && !whole { 1 } else { left };
        let (sb, count) = b.last_plugged_run(mb, below, max)?;
        let sb_size = b.sb_size().get();
        Some(Piece {
            sb,
            count,
            addr: b.block_addr(mb) + sb as u64 * sb_size,
            size: count as u64 * sb_size,
            online,
            added,
            whole,
        })
    }

    /// Unplugs piece `p` of block `mb`. The region takes the pages (migrating what is in use)
    /// and keeps them offline, then the device unplugs them; if it refuses, the pages go back
    /// as they were.
    fn unplug_piece(
        &self,
        cx: &Ctx<'_>,
        st: &mut RunState,
        mb: usize,
        p: &Piece,
    ) -> Result<Outcome, StepError> {
        if p.online && !hotplug::above_margin(p.size) {
            return Err(StepError::Guest(Reason::Margin));
        }
        let req = cx.device.request(false, p.addr, p.size)?;
        let unplugged = || self.blocks.lock().set_plugged(mb, p.sb, p.count, false);
        if !p.added {
            // Plugged sub-blocks of a removed block (its memmap): nothing of it is in use.
            if let Err(f) = cx.device.send(&req) {
                if f.may_have_acted() {
                    unplugged();
                }
                return Err(f.into());
            }
            unplugged();
            return Ok(Outcome::Unplugged);
        }
        let region = &mut st.hotplug()?.region;
        // Only a definite refusal gives the pages back: after any other answer the device may
        // have unplugged them.
        let res = region.take_pages(p.addr, p.size, || match cx.device.send(&req) {
            Ok(_) => Ok(()),
            Err(f) if f.may_have_acted() => Err(Undo::Keep(f)),
            Err(f) => Err(Undo::GiveBack(f)),
        });
        match res {
            Ok(()) => {
                unplugged();
                Ok(Outcome::Unplugged)
            }
            Err(PagesError::Step(f)) => {
                if f.may_have_acted() {
                    // The device may have unplugged it: the pages stay offline for good, and a
                    // resync (after a timeout, or at the next binding after an answer the
                    // protocol does not define) makes the device agree that it is unplugged.
                    dev_warn!(
                        cx.device.dev(),
                        "no definite answer to the UNPLUG of [{:#x}-{:#x}] ({}): taking it as \
                         unplugged\n",
                        p.addr,
                        p.addr + p.size - 1,
                        f.reason
                    );
                    unplugged();
                }
                Err(f.into())
            }
            Err(PagesError::Region(e)) if e == EBUSY => {
                cx.device.count(Event::UnplugFailed);
                Ok(Outcome::InUse)
            }
            Err(PagesError::Region(e)) => Err(cx.region_error(p.addr, p.size, e)),
        }
    }

    /// Removes block `mb` if nothing but its memmap is left plugged and that is wanted too
    /// (`left` sub-blocks are still to go); its memmap sub-blocks are then unplugged as those
    /// of a removed block.
    fn remove_if_emptied(
        &self,
        cx: &Ctx<'_>,
        st: &mut RunState,
        mb: usize,
        left: usize,
    ) -> Result<(), StepError> {
        let (state, nr, memmap_sbs) = {
            let b = self.blocks.lock();
            (b.state(mb), b.nr_plugged(mb), b.memmap_sbs())
        };
        let emptied = matches!(state, BlockState::Offline | BlockState::Online { .. });
        if !emptied || nr > memmap_sbs || left < nr {
            return Ok(());
        }
        let delay = cx.remove_delay_ms.load(Relaxed);
        if delay > 0 {
            // Test knob: user space may try to online the emptied block meanwhile; the region
            // refuses, since nothing of it is backed.
            fsleep(Delta::from_millis(delay.into()));
        }
        if self.remove_block(cx, st, mb).is_err() {
            cx.device.count(Event::UnplugFailed);
            return Err(StepError::Guest(Reason::Unmovable));
        }
        Ok(())
    }

    /// Unplugs what is plugged in blocks that are not added (the memmap of a removed block,
    /// or blocks whose removal happened without their unplug).
    pub(super) fn unplug_not_added(&self, cx: &Ctx<'_>) -> Result<(), StepError> {
        loop {
            // Not `while let`: that would hold the lock over the loop body.
            let next = {
                let b = self.blocks.lock();
                b.next_plugged_not_added().and_then(|mb| {
                    let (sb, count) = b.last_plugged_run(mb, usize::MAX, usize::MAX)?;
                    let sb_size = b.sb_size().get();
                    Some((
                        mb,
                        sb,
                        count,
                        b.block_addr(mb) + sb as u64 * sb_size,
                        sb_size,
                    ))
                })
            };
            let Some((mb, sb, count, addr, sb_size)) = next else {
                return Ok(());
            };
            let req = cx.device.request(false, addr, count as u64 * sb_size)?;
            let res = cx.device.send(&req);
            if res.is_ok() || matches!(&res, Err(f) if f.may_have_acted()) {
                self.blocks.lock().set_plugged(mb, sb, count, false);
            }
            res?;
        }
    }
}
