// SPDX-License-Identifier: GPL-2.0

//! Virtio device ids: the id table of a virtio driver.

use crate::{
    bindings,
    device_id::RawDeviceId, //
};

/// Abstraction for `bindings::virtio_device_id`: a virtio device type, optionally with a vendor.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct DeviceId(bindings::virtio_device_id);

impl DeviceId {
    /// Matches every device of type `device` (a `VIRTIO_ID_*` value), whatever its vendor.
    pub const fn new(device: u32) -> Self {
        Self::with_vendor(device, bindings::VIRTIO_DEV_ANY_ID)
    }

    /// Matches devices of type `device` from vendor `vendor` only.
    pub const fn with_vendor(device: u32, vendor: u32) -> Self {
        Self(bindings::virtio_device_id { device, vendor })
    }

    /// The device type this id matches.
    pub const fn device(&self) -> u32 {
        self.0.device
    }

    /// The vendor this id matches (`VIRTIO_DEV_ANY_ID` for any).
    pub const fn vendor(&self) -> u32 {
        self.0.vendor
    }
}

// SAFETY: `DeviceId` is a `#[repr(transparent)]` wrapper of `virtio_device_id` and does not add
// additional invariants, so it's safe to transmute to `RawType`.
unsafe impl RawDeviceId for DeviceId {
    type RawType = bindings::virtio_device_id;
}

/// The id table of a virtio driver: virtio ids carry no per-entry driver data.
pub type IdTable = &'static dyn kernel::device_id::IdTable<DeviceId, ()>;

/// Creates a virtio id table, with its alias for modpost (`virtio:dNvN`, so that udev loads the
/// module for a matching device).
///
/// # Examples
///
/// ```ignore
/// kernel::virtio_device_table!(ID_TABLE, [virtio::DeviceId::new(bindings::VIRTIO_ID_MEM)]);
/// ```
#[macro_export]
macro_rules! virtio_device_table {
    ($table_name:ident, [$($id:expr),* $(,)?]) => {
        $crate::module_device_table!("virtio", $crate::virtio::DeviceId, $table_name, @none,
                                     [$($id),*]);
    };
}
