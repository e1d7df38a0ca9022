// SPDX-License-Identifier: GPL-2.0

//! Sub-block or big-block mode: which one a device gets.
//!
//! The mode is picked at probe as the C driver picks it. What each mode does is
//! [`crate::manager::Manager`]'s business.

use kernel::prelude::*;

/// How the device's memory is managed, decided at probe (see the C driver's SBM and BBM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Sub-block mode: Linux memory blocks are added whole and plugged in sub-blocks.
    SubBlock {
        /// Size of a sub-block: the device block size, but at least a pageblock.
        sb_size: u64,
    },
    /// Big-block mode: device blocks span one or more Linux memory blocks.
    BigBlock {
        /// Size of a big block.
        bb_size: u64,
    },
}

/// The mode's inputs: the device, the kernel's block sizes and the module parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ModeInputs {
    pub(crate) device_block_size: u64,
    pub(crate) pageblock_size: u64,
    pub(crate) memory_block_size: u64,
    pub(crate) force_bbm: bool,
    pub(crate) bbm_block_size: u64,
}

impl Mode {
    /// Picks the mode as the C driver does: sub-blocks when at least two fit in a memory block
    /// (unless `force_bbm`); big blocks of at least a memory block and a device block otherwise,
    /// or of `bbm_block_size` if that is a bigger power of two. Returns why `bbm_block_size`
    /// was ignored, if it was.
    pub(crate) fn choose(i: ModeInputs) -> (Self, Option<&'static str>) {
        let sb_size = i.device_block_size.max(i.pageblock_size);
        if sb_size < i.memory_block_size && !i.force_bbm {
            return (Mode::SubBlock { sb_size }, None);
        }
        let bb_size = i.device_block_size.max(i.memory_block_size);
        match i.bbm_block_size {
            0 => (Mode::BigBlock { bb_size }, None),
            b if !b.is_power_of_two() => (
                Mode::BigBlock { bb_size },
                Some("bbm_block_size is not a power of 2"),
            ),
            b if b < bb_size => (
                Mode::BigBlock { bb_size },
                Some("bbm_block_size is too small"),
            ),
            b => (Mode::BigBlock { bb_size: b }, None),
        }
    }
}

impl Mode {
    /// The unit in which the device's memory is added, onlined and offlined: a memory block in
    /// sub-block mode, a big block otherwise.
    pub(crate) fn unit(&self, memory_block_size: u64) -> u64 {
        match *self {
            Mode::SubBlock { .. } => memory_block_size,
            Mode::BigBlock { bb_size } => bb_size,
        }
    }

    /// The mode's name, as sysfs shows it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Mode::SubBlock { .. } => "sub-block",
            Mode::BigBlock { .. } => "big-block",
        }
    }

    /// The size the mode plugs in: a sub-block or a big block.
    pub(crate) fn block_size(&self) -> u64 {
        match *self {
            Mode::SubBlock { sb_size } => sb_size,
            Mode::BigBlock { bb_size } => bb_size,
        }
    }
}

#[kunit_tests(virtio_mem_rust_mode)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn inputs(device_block_size: u64) -> ModeInputs {
        ModeInputs {
            device_block_size,
            pageblock_size: 4 * MIB,
            memory_block_size: 128 * MIB,
            force_bbm: false,
            bbm_block_size: 0,
        }
    }

    #[test]
    fn sub_blocks_when_two_fit_in_a_memory_block() {
        assert_eq!(
            Mode::choose(inputs(2 * MIB)).0,
            Mode::SubBlock { sb_size: 4 * MIB }
        );
        assert_eq!(
            Mode::choose(inputs(64 * MIB)).0,
            Mode::SubBlock { sb_size: 64 * MIB }
        );
        assert_eq!(
            Mode::choose(inputs(128 * MIB)).0,
            Mode::BigBlock { bb_size: 128 * MIB }
        );
        assert_eq!(Mode::choose(inputs(GIB)).0, Mode::BigBlock { bb_size: GIB });
    }

    #[test]
    fn module_parameters() {
        let forced = ModeInputs {
            force_bbm: true,
            ..inputs(2 * MIB)
        };
        assert_eq!(
            Mode::choose(forced),
            (Mode::BigBlock { bb_size: 128 * MIB }, None)
        );
        let big = ModeInputs {
            bbm_block_size: GIB,
            ..forced
        };
        assert_eq!(Mode::choose(big), (Mode::BigBlock { bb_size: GIB }, None));
        let odd = ModeInputs {
            bbm_block_size: 3 * GIB,
            ..forced
        };
        assert_eq!(
            Mode::choose(odd),
            (
                Mode::BigBlock { bb_size: 128 * MIB },
                Some("bbm_block_size is not a power of 2")
            )
        );
        let small = ModeInputs {
            bbm_block_size: 64 * MIB,
            ..forced
        };
        assert_eq!(
            Mode::choose(small),
            (
                Mode::BigBlock { bb_size: 128 * MIB },
                Some("bbm_block_size is too small")
            )
        );
    }
}
