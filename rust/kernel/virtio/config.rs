// SPDX-License-Identifier: GPL-2.0

//! The configuration space of virtio devices: the fields that can be read from it, the
//! device types that describe it, and the feature bits a driver offers.

use super::Device;
use crate::{
    bindings,
    device,
    prelude::*, //
};

/// A value that can be read from a virtio configuration space, stored little endian as the virtio
/// 1.0 specification requires.
pub trait ConfigField: Copy + private::Sealed {
    /// The size of the field in bytes.
    const SIZE: usize;

    /// Decodes the field from the first `Self::SIZE` bytes of `bytes`, little endian.
    fn from_le(bytes: &[u8; 8]) -> Self;
}

mod private {
    pub trait Sealed {}
}

macro_rules! impl_config_field {
    ($($t:ty),*) => {$(
        impl private::Sealed for $t {}
        impl ConfigField for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            fn from_le(bytes: &[u8; 8]) -> Self {
                let mut raw = [0u8; core::mem::size_of::<$t>()];
                raw.copy_from_slice(&bytes[..core::mem::size_of::<$t>()]);
                <$t>::from_le_bytes(raw)
            }
        }
    )*};
}
impl_config_field!(u8, u16, u32, u64);

/// The device-specific configuration space of a virtio device type: its uapi struct.
///
/// Reads name a field of the struct ([`Device::read_config`]), so their offset and size come
/// from the struct's layout, and they are refused for a device of another type: a read can
/// never run past the configuration space the device type defines (the transports `BUG()` on
/// that).
///
/// Only fields of the four integer types a configuration space holds can be read:
///
/// ```ignore,compile_fail,E0277
/// # use kernel::{bindings::virtio_mem_config, device::Bound, prelude::*, virtio::Device};
/// fn padding(dev: &Device<Bound>) -> Result<[u8; 6]> {
///     dev.read_config(|c: &virtio_mem_config| &c.padding)
/// }
/// ```
///
/// and declaring a configuration space takes an `unsafe impl`, which vouches for its layout:
///
/// ```ignore,compile_fail,E0200
/// # use kernel::virtio::ConfigSpace;
/// #[derive(Default, Clone, Copy)]
/// struct Bigger([u64; 512]);
/// impl ConfigSpace for Bigger {
///     const DEVICE_ID: u32 = kernel::bindings::VIRTIO_ID_MEM;
/// }
/// ```
///
/// # Safety
///
/// `Self` is the `struct virtio_*_config` of devices of type [`Self::DEVICE_ID`] (`VIRTIO_ID_*`),
/// laid out as the virtio specification (and the device) present it.
pub unsafe trait ConfigSpace: Default + Copy {
    /// The device type whose configuration space this is.
    const DEVICE_ID: u32;
}

// SAFETY: `struct virtio_mem_config` is the configuration space of virtio-mem devices (virtio
// 1.2, 5.15.4), as the uapi header defines it.
unsafe impl ConfigSpace for bindings::virtio_mem_config {
    const DEVICE_ID: u32 = bindings::VIRTIO_ID_MEM;
}

/// The offset of the field `field` projects a `C` to, checked to lie within `C` (a projection
/// that returns a reference to anything else is refused with `EINVAL`).
pub(super) fn config_offset<C: ConfigSpace, F: ConfigField>(
    field: impl FnOnce(&C) -> &F,
) -> Result<usize> {
    let config = C::default();
    let base = core::ptr::from_ref(&config) as usize;
    let at = core::ptr::from_ref(field(&config)) as usize;
    let offset = at.checked_sub(base).ok_or(EINVAL)?;
    if offset + F::SIZE > core::mem::size_of::<C>() {
        return Err(EINVAL);
    }
    Ok(offset)
}

/// Whether `fbit` is in `features`, a driver's feature table: usable at compile time, e.g.
/// `const _: () = assert!(virtio::offers(<MyDriver as virtio::Driver>::FEATURES, BIT));`.
pub const fn offers(features: &[u32], fbit: u32) -> bool {
    let mut i = 0;
    while i < features.len() {
        if features[i] == fbit {
            return true;
        }
        i += 1;
    }
    false
}

impl Device<device::Bound> {
    /// Reads a field of the device's configuration space `C` (the uapi struct of its type),
    /// named by `field` (`|c: &C| &c.requested_size`), little endian, as one consistent
    /// snapshot (retried if the device changes its configuration during the read). Fails with
    /// `EINVAL` if the device is of another type than `C` describes. May sleep.
    pub fn read_config<C: ConfigSpace, F: ConfigField>(
        &self,
        field: impl FnOnce(&C) -> &F,
    ) -> Result<F> {
        if self.device_id() != C::DEVICE_ID {
            return Err(EINVAL);
        }
        let offset = config_offset(field)?;
        // SAFETY: `self.as_raw()` is a valid `struct virtio_device` bound to a driver; the field
        // lies within its type's configuration space.
        unsafe { read_config_raw::<F>(self.as_raw(), offset) }
    }
}

#[cfg(CONFIG_RUST_MEMORY_HOTPLUG_ABSTRACTIONS)]
impl Device<device::Bound> {
    /// The memory a virtio-mem device provides: its region, `[addr, addr + region_size)` of its
    /// configuration. `EINVAL` for a device of another type.
    pub fn device_memory(&self) -> Result<crate::memory_hotplug::DeviceMemory> {
        let start = self.read_config(|c: &bindings::virtio_mem_config| &c.addr)?;
        let size = self.read_config(|c: &bindings::virtio_mem_config| &c.region_size)?;
        // SAFETY: `read_config` checked that this is a virtio-mem device, which provides its
        // region as memory: what it reports plugged is RAM it backs (virtio 1.2, 5.15), at
        // addresses it was given outside the machine's other RAM and devices.
        Ok(unsafe { crate::memory_hotplug::DeviceMemory::new(start, size) })
    }
}

/// Reads a little-endian config field of type `F` at `offset`.
///
/// # Safety
///
/// `vdev` must be a valid `struct virtio_device` bound to a driver (so that its transport's
/// config ops are set up), and `[offset, offset + F::SIZE)` must lie within its device type's
/// configuration space.
pub(super) unsafe fn read_config_raw<F: ConfigField>(
    vdev: *mut bindings::virtio_device,
    offset: usize,
) -> Result<F> {
    let offset = u32::try_from(offset).map_err(|_| EINVAL)?;
    let mut buf = [0u8; 8];
    // SAFETY: `vdev` is valid and bound and the field within the config space (function safety
    // requirements); `buf` has room for `F::SIZE <= 8` bytes.
    unsafe { bindings::virtio_cread_le(vdev, offset, buf.as_mut_ptr().cast(), F::SIZE) };
    Ok(F::from_le(&buf))
}
