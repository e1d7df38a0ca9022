// SPDX-License-Identifier: GPL-2.0

//! Regions parked with memory still added, for the next driver of their device
//! ([`SystemRamRegion::park`], [`SystemRamRegion::take_over`]).

use super::SystemRamRegion;
use crate::{
    device,
    memory_hotplug::MemoryGroup,
    new_mutex,
    prelude::*,
    sync::{
        aref::ARef,
        Mutex,
        SetOnce, //
    }, //
};

/// A region left with memory added, and its memory group, waiting for the next driver of its
/// device.
pub(super) struct Parked {
    pub(super) dev: ARef<device::Device>,
    pub(super) region: SystemRamRegion,
    pub(super) group: MemoryGroup,
}

/// The parked regions, created on first use.
static PARKED: SetOnce<Pin<KBox<Mutex<KVec<Parked>>>>> = SetOnce::new();

/// The parked regions.
pub(super) fn parked() -> Result<&'static Mutex<KVec<Parked>>> {
    loop {
        if let Some(list) = PARKED.as_ref() {
            return Ok(list);
        }
        // The first caller's list wins; a racing one drops its own.
        let list = KBox::pin_init(new_mutex!(KVec::new()), GFP_KERNEL)?;
        PARKED.populate(list);
    }
}
