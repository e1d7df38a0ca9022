// SPDX-License-Identifier: GPL-2.0

//! Sub-block mode: Linux memory blocks are added whole and plugged in sub-blocks (see
//! [`blocks`] for the block states and bitmaps). Plugging fills partly plugged blocks first,
//! then adds new blocks (see [`plug`]); unplugging empties blocks in the C driver's order and
//! removes each block once nothing of it is plugged (see [`unplug`]).

mod blocks;
mod plug;
mod unplug;

use crate::{
    error::StepError,
    manager::{
        Ctx,
        Manager, //
    },
    state::RunState,
    status::Event, //
};
use blocks::{
    BlockState,
    SubBlocks,
    Transition, //
};
use core::{
    fmt::Write,
    num::NonZeroU64, //
};
use kernel::{
    fmt,
    memory_hotplug::{
        self,
        MemoryEvent,
        MemoryNotification, //
    },
    new_mutex,
    prelude::*,
    sync::Mutex, //
};

/// The fixed sizes of sub-block mode.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Size of a memory block.
    mb_size: u64,
    /// Size of a sub-block.
    sb_size: u64,
    /// Sub-blocks per memory block.
    per: usize,
    /// Sub-blocks at the start of each added block that hold its memmap.
    memmap_sbs: usize,
}

/// Sub-block mode's records.
#[pin_data]
pub(crate) struct SubBlockMode {
    /// The state of every memory block of the usable region and its plugged sub-blocks. Taken
    /// by the memory notifier (with `mem_hotplug_lock` held) and briefly by steps, never across
    /// a call of the region's methods.
    #[pin]
    blocks: Mutex<SubBlocks>,
}

impl SubBlockMode {
    /// The records of a region of memory blocks of `mb_size` from `first` (aligned) to `end`,
    /// with sub-blocks of `sb_size`; with memmap-on-memory the first sub-blocks of each block
    /// hold its memmap.
    pub(crate) fn new(
        first: u64,
        end: u64,
        mb_size: NonZeroU64,
        sb_size: NonZeroU64,
        memmap_on_memory: bool,
    ) -> Result<impl PinInit<Self, Error>> {
        let memmap_sbs = if memmap_on_memory {
            let memmap = memory_hotplug::memmap_size(mb_size.get());
            usize::try_from(memmap.div_ceil(sb_size.get())).map_err(|_| EINVAL)?
        } else {
            0
        };
        let blocks = SubBlocks::new(first, end, mb_size, sb_size, memmap_sbs);
        Ok(try_pin_init!(Self {
            blocks <- new_mutex!(blocks),
        }))
    }

    fn layout(&self) -> Layout {
        let b = self.blocks.lock();
        Layout {
            mb_size: b.mb_size().get(),
            sb_size: b.sb_size().get(),
            per: b.sbs_per_mb().get(),
            memmap_sbs: b.memmap_sbs(),
        }
    }

    /// Tracks every whole block below `usable_end`.
    fn grow(&self, cx: &Ctx<'_>, usable_end: u64) -> Result<(), StepError> {
        self.blocks.lock().grow(usable_end).map_err(|e| {
            dev_err!(
                cx.device.dev(),
                "tracking the usable region failed: {:?}\n",
                e
            );
            StepError::internal()
        })
    }

    /// Removes added block `mb` from the system (offlining it first if it is online) and marks
    /// it unused; its sub-blocks keep their plugged state. A failure is logged; the block stays
    /// added and a later step tries again.
    fn remove_block(&self, cx: &Ctx<'_>, st: &mut RunState, mb: usize) -> Result {
        let (state, addr, mb_size) = {
            let b = self.blocks.lock();
            (b.state(mb), b.block_addr(mb), b.mb_size().get())
        };
        let region = &mut st.hotplug.as_mut().ok_or(ENODEV)?.region;
        let res = if state == BlockState::Offline {
            region.remove_memory(addr, mb_size)
        } else {
            region.offline_and_remove_memory(addr, mb_size)
        };
        res.inspect_err(|e| {
            dev_warn!(
                cx.device.dev(),
                "removing the {:?} block [{:#x}-{:#x}] failed ({:?})\n",
                state,
                addr,
                addr + mb_size - 1,
                e
            )
        })?;
        cx.device.count(Event::BlockRemoved);
        // It counted as offline (an online block went offline on the way out).
        cx.offline.removed(mb_size);
        self.blocks.lock().set_state(mb, BlockState::Unused);
        Ok(())
    }

    /// Removes the blocks that are offline (at unbind). A failure is logged; the block stays
    /// added, and the region keeps its unplugged pages offline.
    fn remove_offline_blocks(&self, cx: &Ctx<'_>, st: &mut RunState) {
        let len = self.blocks.lock().len();
        for mb in 0..len {
            if self.blocks.lock().state(mb) == BlockState::Offline {
                let _ = self.remove_block(cx, st, mb);
            }
        }
    }

    /// Removes added blocks with nothing plugged: offline ones, and online ones after offlining
    /// them (their pages are all inaccessible, so offlining skips them).
    fn remove_empty_blocks(&self, cx: &Ctx<'_>, st: &mut RunState) {
        // Each pass removes a block (it becomes unused) or stops.
        loop {
            let Some(mb) = self.blocks.lock().next_empty_added() else {
                return;
            };
            if self.remove_block(cx, st, mb).is_err() {
                return;
            }
        }
    }

    /// Keeps the block states in step with a memory event. Events the states do not expect are
    /// logged, except a cancel of a change we never saw (another notifier vetoed it before ours
    /// was called).
    fn track(&self, cx: &Ctx<'_>, n: &MemoryNotification) {
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
        let mut b = self.blocks.lock();
        let mb_size = b.mb_size().get();
        let mut addr = range.start - range.start % mb_size;
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
                            cx.device.dev(),
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

/// How the kernel's state of a memory block reads in sub-block mode.
fn block_state(state: memory_hotplug::BlockState) -> BlockState {
    match state {
        memory_hotplug::BlockState::Offline => BlockState::Offline,
        memory_hotplug::BlockState::GoingOnline => BlockState::GoingOnline,
        memory_hotplug::BlockState::Online { movable } => BlockState::Online { movable },
        memory_hotplug::BlockState::GoingOffline { movable } => {
            BlockState::GoingOffline { movable }
        }
    }
}

impl Manager for SubBlockMode {
    fn plugged(&self) -> u64 {
        self.blocks.lock().plugged_bytes()
    }

    fn online(&self, _cx: &Ctx<'_>, _added: u64) -> (u64, u64) {
        let b = self.blocks.lock();
        let sb = b.sb_size().get();
        (0..b.len())
            .filter(|&mb| b.state(mb).is_online())
            .fold((0, 0), |(bytes, n), mb| {
                (bytes + b.nr_plugged(mb) as u64 * sb, n + 1)
            })
    }

    fn take_over(&self, cx: &Ctx<'_>, st: &mut RunState, usable_end: u64) -> Result<(), StepError> {
        self.grow(cx, usable_end)?;
        let region = &st.hotplug()?.region;
        let mut b = self.blocks.lock();
        let (sb_size, per, mb_size) = (b.sb_size().get(), b.sbs_per_mb().get(), b.mb_size().get());
        for mb in 0..b.len() {
            let addr = b.block_addr(mb);
            let Some(state) = region.block_state(addr) else {
                continue;
            };
            let state = block_state(state);
            if state == BlockState::Offline {
                cx.offline.added(mb_size);
            }
            b.set_state(mb, state);
            for sb in 0..per {
                if region.is_accessible(addr + sb as u64 * sb_size, sb_size) {
                    b.set_plugged(mb, sb, 1, true);
                }
            }
        }
        Ok(())
    }

    fn resync(&self, cx: &Ctx<'_>, _usable_end: u64) -> Result<u64, StepError> {
        let l = self.layout();
        let mut tracked_end = cx.device.geometry.first;
        let len = self.blocks.lock().len();
        for mb in 0..len {
            let (addr, nr) = {
                let b = self.blocks.lock();
                (b.block_addr(mb), b.nr_plugged(mb))
            };
            if nr == 0 || nr == l.per {
                cx.device.resync_range(addr, l.mb_size, nr == l.per)?;
            } else {
                for sb in 0..l.per {
                    let plugged = self.blocks.lock().is_plugged(mb, sb);
                    cx.device
                        .resync_range(addr + sb as u64 * l.sb_size, l.sb_size, plugged)?;
                }
            }
            tracked_end = addr + l.mb_size;
        }
        Ok(tracked_end)
    }

    /// Blocks whose sub-blocks are all unplugged go first (an unplug that could not remove its
    /// block right away, or one left by a failed step), then what is plugged but not added.
    fn tidy(&self, cx: &Ctx<'_>, st: &mut RunState) -> Result<(), StepError> {
        self.remove_empty_blocks(cx, st);
        self.unplug_not_added(cx)
    }

    fn plug(&self, cx: &Ctx<'_>, st: &mut RunState, usable_end: u64) -> Result<(), StepError> {
        self.plug_toward(cx, st, usable_end)
    }

    fn unplug(&self, cx: &Ctx<'_>, st: &mut RunState, requested: u64) -> Result<(), StepError> {
        self.unplug_toward(cx, st, requested)
    }

    fn give_back(&self, cx: &Ctx<'_>, st: &mut RunState) -> Result<(), StepError> {
        self.remove_offline_blocks(cx, st);
        let unplugged = self.unplug_toward(cx, st, 0);
        let not_added = self.unplug_not_added(cx);
        unplugged.and(not_added)
    }

    fn forget_plugged(&self) {
        let mut b = self.blocks.lock();
        let per = b.sbs_per_mb().get();
        for mb in 0..b.len() {
            b.set_plugged(mb, 0, per, false);
        }
    }

    fn memory_event(&self, cx: &Ctx<'_>, n: &MemoryNotification) {
        self.track(cx, n);
    }

    fn dump(&self, _state: &Mutex<RunState>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.blocks.lock();
        writeln!(
            f,
            "# address state plugged/sub-blocks bitmap ('#' plugged, '.' unplugged; sub-block \
             {:#x}, memmap sub-blocks {})",
            b.sb_size(),
            b.memmap_sbs()
        )?;
        let per = b.sbs_per_mb().get();
        for mb in 0..b.len() {
            let state = match b.state(mb) {
                BlockState::Unused => "unused",
                BlockState::Offline => "offline",
                BlockState::GoingOnline => "going-online",
                BlockState::Online { movable: true } => "online-movable",
                BlockState::Online { movable: false } => "online-kernel",
                BlockState::GoingOffline { .. } => "going-offline",
            };
            write!(
                f,
                "{:#x} {state} {}/{per} ",
                b.block_addr(mb),
                b.nr_plugged(mb)
            )?;
            for sb in 0..per {
                f.write_char(if b.is_plugged(mb, sb) { '#' } else { '.' })?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
