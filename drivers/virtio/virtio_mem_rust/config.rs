// SPDX-License-Identifier: GPL-2.0

//! The device's configuration space: reading it and deciding whether it makes sense.

use core::ops::RangeInclusive;
pub(crate) use kernel::bindings::virtio_mem_config as Raw;
use kernel::{
    device::Bound,
    fmt,
    prelude::*,
    virtio, //
};

/// The device configuration, as read from the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeviceConfig {
    /// Size and alignment of a device block, the unit the device plugs and unplugs. Fixed.
    pub(crate) block_size: u64,
    /// The device's NUMA node (an ACPI proximity domain with `VIRTIO_MEM_F_ACPI_PXM`). Fixed.
    pub(crate) node_id: u16,
    /// Start of the device's memory region (guest physical). Fixed.
    pub(crate) addr: u64,
    /// Size of the device's memory region. Fixed.
    pub(crate) region_size: u64,
    /// The part of the region, from its start, that can currently be plugged.
    pub(crate) usable_region_size: u64,
    /// How much memory is currently plugged.
    pub(crate) plugged_size: u64,
    /// How much memory the host wants plugged.
    pub(crate) requested_size: u64,
}

impl DeviceConfig {
    /// Reads every field from the device.
    pub(crate) fn read(dev: &virtio::Device<Bound>) -> Result<Self> {
        Ok(Self {
            block_size: dev.read_config(|c: &Raw| &c.block_size)?,
            node_id: dev.read_config(|c: &Raw| &c.node_id)?,
            addr: dev.read_config(|c: &Raw| &c.addr)?,
            region_size: dev.read_config(|c: &Raw| &c.region_size)?,
            usable_region_size: dev.read_config(|c: &Raw| &c.usable_region_size)?,
            plugged_size: dev.read_config(|c: &Raw| &c.plugged_size)?,
            requested_size: dev.read_config(|c: &Raw| &c.requested_size)?,
        })
    }

    /// Checks that the configuration makes sense for a guest with pages of `page_size` bytes
    /// that can hotplug memory in `pluggable` (physical addresses, inclusive).
    pub(crate) fn validate(
        &self,
        page_size: u64,
        pluggable: &RangeInclusive<u64>,
    ) -> Result<(), ConfigError> {
        let bs = self.block_size;
        if !bs.is_power_of_two() {
            return Err(ConfigError::BlockSizeNotPowerOfTwo(bs));
        }
        if bs < page_size {
            return Err(ConfigError::BlockSizeBelowPage(bs, page_size));
        }
        if self.region_size == 0 {
            return Err(ConfigError::EmptyRegion);
        }
        let aligned = [
            ("addr", self.addr),
            ("region_size", self.region_size),
            ("usable_region_size", self.usable_region_size),
            ("plugged_size", self.plugged_size),
            ("requested_size", self.requested_size),
        ];
        if let Some(&(field, value)) = aligned.iter().find(|(_, v)| v & (bs - 1) != 0) {
            return Err(ConfigError::Misaligned(field, value, bs));
        }
        let last = self
            .addr
            .checked_add(self.region_size - 1)
            .ok_or(ConfigError::RegionWraps(self.addr, self.region_size))?;
        let bounded = [
            (
                "usable_region_size",
                self.usable_region_size,
                "region_size",
                self.region_size,
            ),
            (
                "plugged_size",
                self.plugged_size,
                "region_size",
                self.region_size,
            ),
            (
                "requested_size",
                self.requested_size,
                "usable_region_size",
                self.usable_region_size,
            ),
        ];
        if let Some(&(field, value, limit_field, limit)) =
            bounded.iter().find(|&&(_, value, _, limit)| value > limit)
        {
            return Err(ConfigError::Exceeds(field, value, limit_field, limit));
        }
        if self.addr < *pluggable.start() || last > *pluggable.end() {
            return Err(ConfigError::NotPluggable {
                addr: self.addr,
                last,
                start: *pluggable.start(),
                end: *pluggable.end(),
            });
        }
        Ok(())
    }
}

/// Why a device configuration was refused; the message names the offending field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConfigError {
    /// `block_size` is not a power of two.
    BlockSizeNotPowerOfTwo(u64),
    /// `block_size` is smaller than a page (block size, page size).
    BlockSizeBelowPage(u64, u64),
    /// A field is not a multiple of `block_size` (field, value, block size).
    Misaligned(&'static str, u64, u64),
    /// `region_size` is zero.
    EmptyRegion,
    /// The region runs past the end of the physical address space (addr, size).
    RegionWraps(u64, u64),
    /// A field is larger than the one it must fit in (field, value, limit field, limit).
    Exceeds(&'static str, u64, &'static str, u64),
    /// The region is not inside the range where this guest can hotplug memory.
    NotPluggable {
        /// First byte of the region.
        addr: u64,
        /// Last byte of the region.
        last: u64,
        /// First pluggable byte.
        start: u64,
        /// Last pluggable byte.
        end: u64,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BlockSizeNotPowerOfTwo(bs) => {
                write!(f, "block_size {bs:#x} is not a power of two")
            }
            Self::BlockSizeBelowPage(bs, page) => {
                write!(
                    f,
                    "block_size {bs:#x} is smaller than the page size {page:#x}"
                )
            }
            Self::Misaligned(field, value, bs) => {
                write!(f, "{field} {value:#x} is not aligned to block_size {bs:#x}")
            }
            Self::EmptyRegion => write!(f, "region_size is 0"),
            Self::RegionWraps(addr, size) => write!(
                f,
                "addr {addr:#x} + region_size {size:#x} overflows the physical address space"
            ),
            Self::Exceeds(field, value, limit_field, limit) => {
                write!(f, "{field} {value:#x} exceeds {limit_field} {limit:#x}")
            }
            Self::NotPluggable {
                addr,
                last,
                start,
                end,
            } => write!(
                f,
                "addr/region_size: region [{addr:#x}-{last:#x}] is outside the pluggable \
                 physical range [{start:#x}-{end:#x}]"
            ),
        }
    }
}

#[kunit_tests(virtio_mem_rust_config)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    const PAGE: u64 = 4096;
    const PLUGGABLE: RangeInclusive<u64> = 0..=(1 << 46) - 1;

    fn good() -> DeviceConfig {
        DeviceConfig {
            block_size: 2 * MIB,
            node_id: 0,
            addr: 4 * GIB,
            region_size: 16 * GIB,
            usable_region_size: 8 * GIB,
            plugged_size: 0,
            requested_size: 4 * GIB + 130 * MIB,
        }
    }

    fn check(c: DeviceConfig) -> Result<(), ConfigError> {
        c.validate(PAGE, &PLUGGABLE)
    }

    #[test]
    fn accepts_a_sane_config() {
        assert_eq!(check(good()), Ok(()));
        assert_eq!(
            check(DeviceConfig {
                block_size: GIB,
                addr: 8 * GIB,
                requested_size: 0,
                ..good()
            }),
            Ok(())
        );
    }

    #[test]
    fn refuses_bad_block_sizes() {
        assert_eq!(
            check(DeviceConfig {
                block_size: 3 * MIB,
                ..good()
            }),
            Err(ConfigError::BlockSizeNotPowerOfTwo(3 * MIB))
        );
        assert_eq!(
            check(DeviceConfig {
                block_size: 0,
                ..good()
            }),
            Err(ConfigError::BlockSizeNotPowerOfTwo(0))
        );
        assert_eq!(
            check(DeviceConfig {
                block_size: 1024,
                ..good()
            }),
            Err(ConfigError::BlockSizeBelowPage(1024, PAGE))
        );
    }

    #[test]
    fn refuses_misaligned_fields() {
        assert_eq!(
            check(DeviceConfig {
                addr: 4 * GIB + MIB,
                ..good()
            }),
            Err(ConfigError::Misaligned("addr", 4 * GIB + MIB, 2 * MIB))
        );
        assert_eq!(
            check(DeviceConfig {
                region_size: 16 * GIB + PAGE,
                ..good()
            }),
            Err(ConfigError::Misaligned(
                "region_size",
                16 * GIB + PAGE,
                2 * MIB
            ))
        );
        assert_eq!(
            check(DeviceConfig {
                requested_size: MIB,
                ..good()
            }),
            Err(ConfigError::Misaligned("requested_size", MIB, 2 * MIB))
        );
    }

    #[test]
    fn refuses_sizes_that_do_not_fit() {
        assert_eq!(
            check(DeviceConfig {
                region_size: 0,
                ..good()
            }),
            Err(ConfigError::EmptyRegion)
        );
        assert_eq!(
            check(DeviceConfig {
                usable_region_size: 32 * GIB,
                ..good()
            }),
            Err(ConfigError::Exceeds(
                "usable_region_size",
                32 * GIB,
                "region_size",
                16 * GIB
            ))
        );
        assert_eq!(
            check(DeviceConfig {
                requested_size: 10 * GIB,
                ..good()
            }),
            Err(ConfigError::Exceeds(
                "requested_size",
                10 * GIB,
                "usable_region_size",
                8 * GIB
            ))
        );
        assert_eq!(
            check(DeviceConfig {
                plugged_size: 18 * GIB,
                ..good()
            }),
            Err(ConfigError::Exceeds(
                "plugged_size",
                18 * GIB,
                "region_size",
                16 * GIB
            ))
        );
    }

    #[test]
    fn refuses_regions_outside_the_pluggable_range() {
        let top = u64::MAX - 2 * MIB + 1;
        assert_eq!(
            check(DeviceConfig {
                addr: top,
                region_size: 4 * MIB,
                usable_region_size: 0,
                requested_size: 0,
                ..good()
            }),
            Err(ConfigError::RegionWraps(top, 4 * MIB))
        );
        let c = DeviceConfig {
            addr: 1 << 46,
            ..good()
        };
        assert!(matches!(check(c), Err(ConfigError::NotPluggable { .. })));
        assert!(matches!(
            DeviceConfig { addr: 0, ..good() }.validate(PAGE, &(GIB..=(1 << 46) - 1)),
            Err(ConfigError::NotPluggable { .. })
        ));
    }

    #[test]
    fn config_offsets_match_the_virtio_mem_spec() {
        // virtio spec 1.2, 5.15.4: the layout every virtio-mem device presents.
        assert_eq!(offset_of!(Raw, block_size), 0);
        assert_eq!(offset_of!(Raw, node_id), 8);
        assert_eq!(offset_of!(Raw, addr), 16);
        assert_eq!(offset_of!(Raw, region_size), 24);
        assert_eq!(offset_of!(Raw, usable_region_size), 32);
        assert_eq!(offset_of!(Raw, plugged_size), 40);
        assert_eq!(offset_of!(Raw, requested_size), 48);
    }
}
