// SPDX-License-Identifier: GPL-2.0

//! Memory events of the device's region: the driver follows what user space (or
//! auto-onlining) does with the memory it added.
//!
//! The region (`SystemRamRegion`) has its own notifier and online-page callback, which veto
//! what must not happen and keep unplugged pages offline; this notifier only follows: the mode
//! keeps its records of online state in step, the offline accounting resumes a plug that waits
//! for onlining, a step that waited for a block in a transition is queued, and the published
//! online size stays right.

use crate::run::Runtime;
use kernel::{
    memory_hotplug::{
        MemoryEvent,
        MemoryNotification,
        MemoryNotifierHandler, //
    },
    prelude::*,
    sync::Arc, //
};

impl MemoryNotifierHandler for Runtime {
    fn prepare(this: &Arc<Self>, n: &MemoryNotification) -> Result {
        if this.concerns(n) {
            this.mode.memory_event(&this.cx(), n);
        }
        // The region vetoes what must not happen; the driver only follows.
        Ok(())
    }

    fn complete(this: &Arc<Self>, n: &MemoryNotification) {
        if !this.concerns(n) {
            return;
        }
        this.mode.memory_event(&this.cx(), n);
        let size = this.whole_blocks(n);
        match n.event() {
            MemoryEvent::Online => {
                if this.offline.onlined(size) {
                    this.kick_if_running();
                }
            }
            MemoryEvent::Offline => {
                this.offline.offlined(size);
                // With unplug_online=0, memory user space just offlined may be what an unplug
                // waits for: try now, not at the end of the back-off (as the C driver).
                if !crate::module_parameters::unplug_online.value() {
                    this.kick_if_running();
                }
            }
            _ => {}
        }
        // A step waited for a block being onlined or offlined: that is over.
        if this.transition_ended() {
            this.kick_if_running();
        }
        if matches!(n.event(), MemoryEvent::Online | MemoryEvent::Offline) {
            // User space may online and offline memory at any time: keep `online_size` right.
            this.update_online();
        }
    }
}

impl Runtime {
    /// Whether a memory event is about the device's region.
    fn concerns(&self, n: &MemoryNotification) -> bool {
        let range = n.range();
        let g = &self.device.geometry;
        range.start + range.size > g.first && range.start < g.end
    }

    /// The bytes of the memory blocks an event covers: with memmap-on-memory its range leaves
    /// out the block's memmap, but the block was counted whole when it was added.
    fn whole_blocks(&self, n: &MemoryNotification) -> u64 {
        let range = n.range();
        let end = range.start + range.size;
        let mbs = self.device.probed.memory_block_size.max(1);
        let start = range.start - range.start % mbs;
        end.div_ceil(mbs) * mbs - start
    }
}
