// SPDX-License-Identifier: GPL-2.0

//! [`DeviceMemory`], the token for a physical range that a device backs as memory: the only
//! range a region can be requested for.

/// A physical address range that a device provides as memory: every page of it that the device
/// reports plugged is RAM the device backs. The only range [`SystemRamRegion::request`] takes,
/// so that safe code cannot add memory that nothing backs (a hole in the physical address
/// space, or a device's registers) and let the page allocator hand it out. A bus abstraction
/// that knows what its devices provide makes it (as [`crate::virtio::Device::device_memory`]
/// for a virtio-mem device's region); otherwise [`DeviceMemory::new`], which is `unsafe`.
///
/// Nothing else makes one:
///
/// ```ignore,compile_fail,E0451
/// # use kernel::memory_hotplug::DeviceMemory;
/// fn any_range() -> DeviceMemory {
///     DeviceMemory { start: 1 << 40, size: 1 << 30 }
/// }
/// ```
///
/// ```ignore,compile_fail,E0133
/// # use kernel::memory_hotplug::DeviceMemory;
/// fn any_range() -> DeviceMemory {
///     DeviceMemory::new(1 << 40, 1 << 30)
/// }
/// ```
///
/// [`SystemRamRegion::request`]: super::SystemRamRegion::request
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    start: u64,
    size: u64,
}

impl DeviceMemory {
    /// The range `[start, start + size)`.
    ///
    /// # Safety
    ///
    /// A device backs the range as memory: every page of it that the device reports plugged
    /// (through its own protocol) is RAM, backed for as long as the device reports it plugged,
    /// and nothing else of the machine (RAM of the kernel's, other devices) lies in the range.
    pub unsafe fn new(start: u64, size: u64) -> Self {
        Self { start, size }
    }

    /// The first byte of the range.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The size of the range in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}
