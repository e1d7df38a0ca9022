// SPDX-License-Identifier: GPL-2.0

//! Abstractions for the virtio bus.
//!
//! C headers: [`include/linux/virtio.h`](srctree/include/linux/virtio.h),
//! [`include/linux/virtio_config.h`](srctree/include/linux/virtio_config.h).
//!
//! A virtio driver implements [`Driver`] and registers with
//! [`module_virtio_driver!`](crate::module_virtio_driver). It gets a
//! [`Device`] in `probe`, reads fields of its configuration space (the uapi struct of its device
//! type, see [`ConfigSpace`]) with [`Device::read_config`], checks the negotiated features with
//! [`Device::has_feature`] (only the features the driver offers can be asked about), and talks to
//! the device through a [`Virtqueue`]: [`Virtqueue::transact`] sends one request and waits,
//! bounded in time, for the device's answer.
//!
//! Teardown follows the virtio rules without the driver having to remember them: when a device is
//! unbound, [`Driver::unbind`] runs first (stop using the device there), then the adapter resets
//! the device and deletes its virtqueue. Handles to the virtqueue that are still around afterwards
//! answer every request with `ENODEV`.
//!
//! So does a sleep cycle (with `CONFIG_PM_SLEEP`; the virtio bus runs these callbacks for
//! suspend, including suspend-to-idle, and for hibernation): [`Driver::freeze`] runs first and
//! may refuse, then the adapter resets the device and deletes its virtqueue; handles answer
//! `EAGAIN` while the device sleeps. On resume the transport resets the device and negotiates
//! the features again, the adapter sets the virtqueue up again behind the same handles, and
//! [`Driver::restore`] runs. A driver that implements neither gets a virtqueue that works after
//! resume; without this, the device would be made ready again with no virtqueue behind the
//! driver's handles, and every request after a sleep would time out.

use crate::{
    bindings,
    device,
    device_id::RawDeviceId,
    driver,
    error::{
        from_err_ptr,
        from_result,
        to_result, //
    },
    new_mutex,
    prelude::*,
    sync::{
        aref::AlwaysRefCounted,
        Arc,
        Completion,
        Mutex, //
    },
    time::{
        Delta,
        Instant,
        Monotonic, //
    },
    types::Opaque,
    ThisModule, //
};
use core::{
    marker::PhantomData,
    mem::offset_of,
    ptr::{
        addr_of_mut,
        NonNull, //
    },
};

/// Device status bit: the driver has finished setting up the device (`VIRTIO_CONFIG_S_DRIVER_OK`).
const STATUS_DRIVER_OK: u8 = bindings::VIRTIO_CONFIG_S_DRIVER_OK as u8;

/// An adapter for the registration of virtio drivers.
pub struct Adapter<T: Driver>(T);

// SAFETY:
// - `bindings::virtio_driver` is a C type declared as `repr(C)`.
// - `T::Data` is the type of the driver's device private data.
// - `struct virtio_driver` embeds a `struct device_driver`.
// - `DEVICE_DRIVER_OFFSET` is the correct byte offset to the embedded `struct device_driver`.
unsafe impl<T: Driver> driver::DriverLayout for Adapter<T> {
    type DriverType = bindings::virtio_driver;
    type DriverData<'bound> = T::Data<'bound>;
    const DEVICE_DRIVER_OFFSET: usize = offset_of!(Self::DriverType, driver);
}

// SAFETY: A call to `unregister` for a given instance of `DriverType` is guaranteed to be valid if
// a preceding call to `register` has been successful.
unsafe impl<T: Driver + 'static> driver::RegistrationOps for Adapter<T> {
    unsafe fn register(
        vdrv: &Opaque<Self::DriverType>,
        name: &'static CStr,
        module: &'static ThisModule,
    ) -> Result {
        let nfeatures = u32::try_from(T::FEATURES.len()).map_err(|_| EINVAL)?;

        // SAFETY: It's safe to set the fields of `struct virtio_driver` on initialization; the id
        // and feature tables are `'static`.
        unsafe {
            let drv = vdrv.get();
            (*drv).driver.name = name.as_char_ptr();
            (*drv).id_table = T::ID_TABLE.as_ptr();
            (*drv).feature_table = T::FEATURES.as_ptr();
            (*drv).feature_table_size = nfeatures;
            (*drv).probe = Some(Self::probe_callback);
            (*drv).remove = Some(Self::remove_callback);
            (*drv).config_changed = Some(Self::config_changed_callback);
            #[cfg(CONFIG_PM_SLEEP)]
            {
                (*drv).freeze = Some(Self::freeze_callback);
                (*drv).restore = Some(Self::restore_callback);
            }
        }

        // SAFETY: `vdrv` is guaranteed to be a valid `DriverType`.
        to_result(unsafe { bindings::__register_virtio_driver(vdrv.get(), module.as_ptr()) })
    }

    unsafe fn unregister(vdrv: &Opaque<Self::DriverType>) {
        // SAFETY: `vdrv` is guaranteed to be a valid, registered `DriverType`.
        unsafe { bindings::unregister_virtio_driver(vdrv.get()) }
    }
}

impl<T: Driver + 'static> Adapter<T> {
    extern "C" fn probe_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: The virtio bus only ever calls the probe callback with a valid pointer to a
        // `struct virtio_device`.
        //
        // INVARIANT: `vdev` is valid for the duration of `probe_callback()`.
        let dev = unsafe { &*vdev.cast::<Device<device::CoreInternal<'_>>>() };

        // `priv` is for the bound driver's use (this abstraction keeps the virtqueue there); a
        // C driver bound before may have left its own pointer behind.
        // SAFETY: `vdev` is valid and no driver is bound to it while it is being probed.
        unsafe { (*vdev).priv_ = core::ptr::null_mut() };

        let ret = from_result(|| {
            let data = T::probe(dev);
            dev.as_ref().set_drvdata(data)?;
            Ok(0)
        });
        if ret != 0 {
            // The driver's data is gone already; make sure the device is quiet and its
            // virtqueue gone before the virtio core marks the device as failed.
            dev.teardown();
        }
        ret
    }

    extern "C" fn remove_callback(vdev: *mut bindings::virtio_device) {
        // SAFETY: The virtio bus only ever calls the remove callback with a valid pointer to a
        // `struct virtio_device`.
        //
        // INVARIANT: `vdev` is valid for the duration of `remove_callback()`.
        let dev = unsafe { &*vdev.cast::<Device<device::CoreInternal<'_>>>() };

        // SAFETY: `remove_callback` is only ever called after a successful call to
        // `probe_callback`, hence it's guaranteed that `Device::set_drvdata()` has been called
        // and stored a `Pin<KBox<T::Data<'_>>>`.
        let data = unsafe { dev.as_ref().drvdata_borrow::<T::Data<'_>>() };

        T::unbind(dev, data);

        // The virtio core requires the device to be reset when `remove` returns.
        dev.teardown();
    }

    extern "C" fn config_changed_callback(vdev: *mut bindings::virtio_device) {
        // SAFETY: The virtio core only calls `config_changed` with a valid pointer to a
        // `struct virtio_device`, and only while the device is bound: config change
        // notifications are enabled after `probe` succeeded and disabled before `remove`.
        let dev = unsafe { &*vdev.cast::<Device<device::BoundInternal>>() };

        // SAFETY: See above: `probe_callback` has stored a `Pin<KBox<T::Data<'_>>>` and
        // `remove_callback` has not run yet.
        let data = unsafe { dev.as_ref().drvdata_borrow::<T::Data<'_>>() };

        T::config_changed(dev, data);
    }

    #[cfg(CONFIG_PM_SLEEP)]
    extern "C" fn freeze_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: The virtio core calls `freeze` from the bus's PM callbacks with a valid
        // pointer to a bound `struct virtio_device`, with the device lock held.
        //
        // INVARIANT: `vdev` is valid for the duration of `freeze_callback()`.
        let dev = unsafe { &*vdev.cast::<Device<device::CoreInternal<'_>>>() };

        // SAFETY: The PM core only runs the callbacks of a bound device: `probe_callback` has
        // stored a `Pin<KBox<T::Data<'_>>>` and `remove_callback` has not run.
        let data = unsafe { dev.as_ref().drvdata_borrow::<T::Data<'_>>() };

        from_result(|| {
            T::freeze(dev, data)?;
            dev.freeze_vq();
            Ok(0)
        })
    }

    #[cfg(CONFIG_PM_SLEEP)]
    extern "C" fn restore_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: As in `freeze_callback`: the virtio core calls `restore` with a valid pointer
        // to a bound device, after a `freeze` that succeeded.
        let dev = unsafe { &*vdev.cast::<Device<device::CoreInternal<'_>>>() };

        // SAFETY: As in `freeze_callback`.
        let data = unsafe { dev.as_ref().drvdata_borrow::<T::Data<'_>>() };

        // The transport reset the device and negotiated the features again; the virtio core
        // sets `DRIVER_OK` after this returns if the driver did not.
        from_result(|| {
            dev.restore_vq()?;
            T::restore(dev, data)?;
            Ok(0)
        })
    }
}

/// Declares a kernel module that exposes a single virtio driver.
///
/// # Examples
///
/// ```ignore
/// kernel::module_virtio_driver! {
///     type: MyDriver,
///     name: "my_virtio_driver",
///     authors: ["Me"],
///     description: "My virtio driver",
///     license: "GPL",
/// }
/// ```
#[macro_export]
macro_rules! module_virtio_driver {
    ($($f:tt)*) => {
        $crate::module_driver!(<T>, $crate::virtio::Adapter<T>, { $($f)* });
    };
}

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

/// The virtio driver trait.
///
/// Drivers must implement this trait in order to get a virtio driver registered.
pub trait Driver {
    /// The type of the driver's bus device private data.
    ///
    /// It is shared with [`Driver::config_changed`], which may run on any CPU at any time while
    /// the device is bound, hence `Sync`.
    type Data<'bound>: Send + Sync + 'bound;

    /// The table of device ids supported by the driver.
    const ID_TABLE: IdTable;

    /// The feature bits the driver understands; the virtio core negotiates the intersection with
    /// what the device offers before `probe`. Check the result with [`Device::has_feature`],
    /// which refuses bits that are not in this table; [`offers`] checks it at compile time.
    const FEATURES: &'static [u32] = &[];

    /// Virtio driver probe.
    ///
    /// Called when a device matches the driver's id table, after feature negotiation. If the
    /// driver does not call [`Device::ready`] itself, the virtio core does once `probe` returns.
    fn probe<'bound>(
        dev: &'bound Device<device::Core<'_>>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound;

    /// Virtio driver unbind.
    ///
    /// Called when a [`Device`] is unbound from its bound [`Driver`]: stop every use of the
    /// device here (work items, timers, requests in flight). When it returns, the adapter resets
    /// the device and deletes its virtqueue. Implementing this callback is optional.
    fn unbind<'bound>(dev: &'bound Device<device::Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        let _ = (dev, this);
    }

    /// The device's configuration space changed.
    ///
    /// Runs in atomic context (from the device's interrupt, with a spinlock held): it must not
    /// sleep. Typically it queues work that re-reads the configuration.
    fn config_changed<'bound>(dev: &'bound Device<device::Bound>, this: Pin<&Self::Data<'bound>>) {
        let _ = (dev, this);
    }

    /// The system is going to sleep: suspend (also to idle, see [`crate::power::suspend_target`]
    /// for which) or hibernation. Runs after the PM core froze user space and the freezable
    /// workqueues, with config change notifications off. An error refuses the sleep: the PM
    /// core resumes what it suspended already, and the device goes on as before.
    ///
    /// When it succeeds, the adapter resets the device and deletes its virtqueue; the
    /// [`Virtqueue`] handles answer `EAGAIN` until [`Driver::restore`]. Implementing this
    /// callback is optional.
    fn freeze<'bound>(
        dev: &'bound Device<device::Core<'_>>,
        this: Pin<&Self::Data<'bound>>,
    ) -> Result {
        let _ = (dev, this);
        Ok(())
    }

    /// The system woke up: the device was reset and its features negotiated again, and the
    /// adapter set up the virtqueue behind the same handles. The device's configuration may
    /// have changed while it slept (no config change notification tells of it): read it again
    /// here. If the driver does not call [`Device::ready`], the virtio core does when this
    /// returns. An error marks the device as failed. Implementing this callback is optional.
    fn restore<'bound>(
        dev: &'bound Device<device::Core<'_>>,
        this: Pin<&Self::Data<'bound>>,
    ) -> Result {
        let _ = (dev, this);
        Ok(())
    }
}

/// The virtio device representation.
///
/// This structure represents the Rust abstraction for a C `struct virtio_device`. The
/// implementation abstracts the usage of an already existing C `struct virtio_device` within Rust
/// code that we get passed from the C side.
///
/// # Invariants
///
/// A [`Device`] instance represents a valid `struct virtio_device` created by the C portion of
/// the kernel.
#[repr(transparent)]
pub struct Device<Ctx: device::DeviceContext = device::Normal>(
    Opaque<bindings::virtio_device>,
    PhantomData<Ctx>,
);

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
fn config_offset<C: ConfigSpace, F: ConfigField>(field: impl FnOnce(&C) -> &F) -> Result<usize> {
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

impl<Ctx: device::DeviceContext> Device<Ctx> {
    fn as_raw(&self) -> *mut bindings::virtio_device {
        self.0.get()
    }

    /// The device type (a `VIRTIO_ID_*` value).
    pub fn device_id(&self) -> u32 {
        // SAFETY: By the type invariant `self.as_raw()` is a valid `struct virtio_device`; its
        // id does not change after registration.
        unsafe { (*self.as_raw()).id.device }
    }

    /// The device's vendor id.
    pub fn vendor_id(&self) -> u32 {
        // SAFETY: As in `device_id`.
        unsafe { (*self.as_raw()).id.vendor }
    }

    /// The device's index on the virtio bus (the `N` in `virtioN`).
    pub fn index(&self) -> i32 {
        // SAFETY: As in `device_id`.
        unsafe { (*self.as_raw()).index }
    }

    /// The device status byte (`VIRTIO_CONFIG_S_*` bits).
    fn status(&self) -> u8 {
        // SAFETY: `self.as_raw()` is a valid `struct virtio_device` with a transport attached.
        unsafe { bindings::virtio_get_status(self.as_raw()) }
    }
}

impl Device<device::Bound> {
    /// Whether feature bit `fbit` was negotiated with the device. Only device-specific bits that
    /// the bound driver offers (its [`Driver::FEATURES`]) and transport bits can be asked about:
    /// for any other bit the C accessor would `BUG()`, so this fails with `EINVAL`.
    pub fn has_feature(&self, fbit: u32) -> Result<bool> {
        if fbit >= bindings::VIRTIO_FEATURES_BITS
            || (fbit < bindings::VIRTIO_TRANSPORT_F_START && !self.driver_offers(fbit))
        {
            return Err(EINVAL);
        }
        // SAFETY: `self.as_raw()` is a valid, bound `struct virtio_device`; `fbit` is a
        // transport bit or one the driver offers (checked above), so the C accessor's
        // `virtio_check_driver_offered_feature` finds it.
        Ok(unsafe { bindings::virtio_has_feature(self.as_raw(), fbit) })
    }

    /// Whether the bound driver's feature tables (as `virtio_check_driver_offered_feature`
    /// reads them) hold `fbit`.
    fn driver_offers(&self, fbit: u32) -> bool {
        // SAFETY: The device is bound, so `dev.driver` is the `struct device_driver` embedded in
        // the bound `struct virtio_driver`, whose tables have the sizes it states and live as
        // long as the driver is registered (at least while it is bound).
        unsafe {
            let drv = (*self.as_raw()).dev.driver;
            if drv.is_null() {
                return false;
            }
            let vdrv = crate::container_of!(drv, bindings::virtio_driver, driver);
            let table = |ptr: *const c_uint, len: c_uint| {
                if ptr.is_null() {
                    &[][..]
                } else {
                    core::slice::from_raw_parts(ptr, len as usize)
                }
            };
            offers(
                table((*vdrv).feature_table, (*vdrv).feature_table_size),
                fbit,
            ) || offers(
                table(
                    (*vdrv).feature_table_legacy,
                    (*vdrv).feature_table_size_legacy,
                ),
                fbit,
            )
        }
    }

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
unsafe fn read_config_raw<F: ConfigField>(
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

impl<'a> Device<device::Core<'a>> {
    /// Tells the device the driver is ready (`VIRTIO_CONFIG_S_DRIVER_OK`), so that its
    /// virtqueues can be used during probe. Calling it more than once is harmless.
    pub fn ready(&self) {
        if self.status() & STATUS_DRIVER_OK == 0 {
            // SAFETY: `self.as_raw()` is a valid `struct virtio_device` in probe.
            unsafe { bindings::virtio_device_ready(self.as_raw()) };
        }
    }

    /// Finds the device's virtqueue 0 and sets it up for [`Virtqueue::transact`], with bounce
    /// buffers of `max_out` bytes for requests and `max_in` bytes for answers (both at least
    /// one byte: `EINVAL` otherwise).
    ///
    /// A device has at most one such virtqueue; it lives until the device is unbound.
    pub fn find_vq(&self, name: &'static CStr, max_out: usize, max_in: usize) -> Result<Virtqueue> {
        let raw = self.as_raw();
        if max_out == 0 || max_in == 0 {
            return Err(EINVAL);
        }
        // SAFETY: `priv` of a `struct virtio_device` is for the driver's use: this abstraction
        // uses it to track the virtqueue, and nothing else touches it while we are bound.
        if unsafe { !(*raw).priv_.is_null() } {
            return Err(EBUSY);
        }

        let out = KVec::from_elem(0u8, max_out, GFP_KERNEL)?;
        let inp = KVec::from_elem(0u8, max_in, GFP_KERNEL)?;
        let inner = Arc::pin_init(
            try_pin_init!(VqInner {
                done <- Completion::new(),
                state <- new_mutex!(VqState {
                    vq: core::ptr::null_mut(),
                    vdev: raw,
                    name,
                    asleep: false,
                    out,
                    inp,
                    busy: false,
                }),
            }),
            GFP_KERNEL,
        )?;

        // Keep one reference for the adapter and the virtqueue callback, published before the
        // virtqueue exists, so that the callback (which cannot run before a buffer is added)
        // always finds it: `teardown` deletes the virtqueue first and releases it after.
        let keep = Arc::into_raw(inner.clone());
        // SAFETY: `priv` is ours (see above) and was NULL.
        unsafe { (*raw).priv_ = keep.cast_mut().cast() };

        // SAFETY: `raw` is a valid `struct virtio_device` in probe; `vq_callback` matches
        // `vq_callback_t` and `name` is a static string.
        let vq = from_err_ptr(unsafe {
            bindings::virtio_find_single_vq(raw, Some(vq_callback), name.as_char_ptr())
        });
        let vq = match vq {
            Ok(vq) if !vq.is_null() => vq,
            res => {
                // SAFETY: No virtqueue exists, so no callback can see `priv`; the reference
                // came from `Arc::into_raw` just above.
                unsafe {
                    (*raw).priv_ = core::ptr::null_mut();
                    drop(Arc::from_raw(keep));
                }
                return Err(res.err().unwrap_or(ENOMEM));
            }
        };
        inner.state.lock().vq = vq;
        Ok(Virtqueue { inner })
    }

    /// Resets the device and deletes its virtqueue: the device stops using the driver's buffers
    /// and forgets its features, and every [`Virtqueue`] handle answers `ENODEV` from then on.
    /// The device stays unusable until it is bound again; the adapter does the same when the
    /// device is unbound.
    pub fn reset(&self) {
        // SAFETY: `self.as_raw()` is a valid `struct virtio_device` bound to our driver.
        unsafe { bindings::virtio_reset_device(self.as_raw()) };
        self.teardown();
    }

    /// Quiets the device and revokes its virtqueue: reset if the driver got as far as
    /// `DRIVER_OK` or set up a virtqueue, take back the buffers the device still has (a request
    /// that timed out), then delete the virtqueue, so no buffer of ours is used by the device
    /// and no callback runs afterwards. Without the reset a probe that failed after `find_vq`
    /// left the queue enabled in the device, and the next probe's `find_vq` failed (`ENOENT`
    /// from virtio-pci's `setup_vq`): the device could not be bound again.
    fn teardown(&self) {
        let raw = self.as_raw();
        if self.status() & STATUS_DRIVER_OK != 0 || self.vq_inner().is_some() {
            // SAFETY: `raw` is a valid `struct virtio_device` in probe or remove.
            unsafe { bindings::virtio_reset_device(raw) };
        }
        let Some(inner) = self.vq_inner() else {
            return;
        };
        {
            let mut state = inner.state.lock();
            state.delete();
            state.asleep = false;
        }
        // SAFETY: No virtqueue, hence no callback, is left to read `priv`; the reference came
        // from `Arc::into_raw` in `find_vq` and is released once, here (`priv` is cleared).
        unsafe {
            (*raw).priv_ = core::ptr::null_mut();
            drop(Arc::from_raw(core::ptr::from_ref(inner)));
        }
    }

    /// The state `find_vq` published in `priv`, if the driver set up a virtqueue.
    fn vq_inner(&self) -> Option<&VqInner> {
        // SAFETY: `priv_` is only ever set by `find_vq`, to a pointer from `Arc::into_raw`, and
        // only written by this device's driver callbacks (probe, remove), which the driver core
        // serializes with the PM callbacks we are called from.
        let keep = unsafe { (*self.as_raw()).priv_ }
            .cast::<VqInner>()
            .cast_const();
        // SAFETY: A non-NULL `priv` is the reference `find_vq` published, released only by
        // `teardown` (which clears `priv`), at the end of remove or of a failed probe: not while
        // `self` is borrowed by a callback of the bound driver.
        unsafe { keep.as_ref() }
    }

    /// At freeze: resets the device and deletes its virtqueue; handles answer `EAGAIN` until
    /// [`Device::restore_vq`].
    #[cfg(CONFIG_PM_SLEEP)]
    fn freeze_vq(&self) {
        // SAFETY: `self.as_raw()` is a valid `struct virtio_device` bound to our driver; reset
        // is what the virtio core expects of a driver's freeze (the transport resets it again
        // on resume).
        unsafe { bindings::virtio_reset_device(self.as_raw()) };
        if let Some(inner) = self.vq_inner() {
            let mut state = inner.state.lock();
            state.delete();
            state.asleep = true;
        }
    }

    /// At restore: sets the virtqueue up again, behind the handles the driver holds.
    #[cfg(CONFIG_PM_SLEEP)]
    fn restore_vq(&self) -> Result {
        let Some(inner) = self.vq_inner() else {
            return Ok(());
        };
        let raw = self.as_raw();
        let mut state = inner.state.lock();
        // Whatever happens below, the device is awake: if the virtqueue cannot be set up again,
        // the virtio core marks the device failed and the handles answer `ENODEV`.
        state.asleep = false;
        // SAFETY: `raw` is a valid `struct virtio_device` being restored, with no virtqueue
        // (`freeze_vq` deleted it); `priv` still points at `inner`, so the callback finds it;
        // `vq_callback` matches `vq_callback_t` and `name` is a static string.
        let vq = from_err_ptr(unsafe {
            bindings::virtio_find_single_vq(raw, Some(vq_callback), state.name.as_char_ptr())
        })?;
        if vq.is_null() {
            return Err(ENOMEM);
        }
        state.vq = vq;
        Ok(())
    }
}

// SAFETY: `virtio::Device` is a transparent wrapper of `struct virtio_device`.
// The offset is guaranteed to point to a valid device field inside `virtio::Device`.
unsafe impl<Ctx: device::DeviceContext> device::AsBusDevice<Ctx> for Device<Ctx> {
    const OFFSET: usize = offset_of!(bindings::virtio_device, dev);
}

// SAFETY: `Device` is a transparent wrapper of a type that doesn't depend on `Device`'s generic
// argument.
kernel::impl_device_context_deref!(unsafe { Device });
kernel::impl_device_context_into_aref!(Device);

// SAFETY: Instances of `Device` are always reference-counted.
unsafe impl AlwaysRefCounted for Device {
    fn inc_ref(&self) {
        // SAFETY: The existence of a shared reference guarantees that the refcount is non-zero.
        unsafe { bindings::get_device(self.as_ref().as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // CAST: `Self` is a transparent wrapper of `bindings::virtio_device`.
        let vdev: *mut bindings::virtio_device = obj.cast().as_ptr();

        // SAFETY: By the type invariant of `Self`, `vdev` is a pointer to a valid
        // `struct virtio_device`.
        let dev = unsafe { addr_of_mut!((*vdev).dev) };

        // SAFETY: The safety requirements guarantee that the refcount is non-zero.
        unsafe { bindings::put_device(dev) }
    }
}

impl<Ctx: device::DeviceContext> AsRef<device::Device<Ctx>> for Device<Ctx> {
    fn as_ref(&self) -> &device::Device<Ctx> {
        // SAFETY: By the type invariant of `Self`, `self.as_raw()` is a pointer to a valid
        // `struct virtio_device`.
        let dev = unsafe { addr_of_mut!((*self.as_raw()).dev) };

        // SAFETY: `dev` points to a valid `struct device`.
        unsafe { device::Device::from_raw(dev) }
    }
}

// SAFETY: A `Device` is always reference-counted and can be released from any thread.
unsafe impl Send for Device {}

// SAFETY: `Device` can be shared among threads because all methods of `Device`
// (i.e. `Device<Normal>) are thread safe.
unsafe impl Sync for Device {}

// SAFETY: Same as `Device<Normal>`; `Bound` is a zero-sized type-state marker that does not
// affect thread safety, and the config accessors of the C side are thread safe.
unsafe impl Sync for Device<device::Bound> {}

/// The virtqueue callback: the device has used a buffer. Runs in interrupt context.
///
/// `vq->priv` belongs to the transport (virtio-pci keeps the queue's notify address there), so
/// the callback finds our state through the device's `priv`, which `find_vq` points at the
/// `VqInner` that owns the virtqueue.
extern "C" fn vq_callback(vq: *mut bindings::virtqueue) {
    // SAFETY: The virtio core passes the valid virtqueue this callback was registered for, whose
    // device is valid too. `find_vq` published `priv` before it created the virtqueue, and
    // `teardown` clears it only after deleting it: read it once, as the C side would with
    // `READ_ONCE()`.
    let inner = unsafe { core::ptr::read_volatile(&raw const (*(*vq).vdev).priv_) }
        .cast::<VqInner>()
        .cast_const();
    if !inner.is_null() {
        // SAFETY: A non-NULL `priv` is the `Arc<VqInner>` reference that `find_vq` stored and
        // `teardown` releases only after the virtqueue is deleted, i.e. after every callback
        // has returned.
        unsafe { (*inner).done.complete() };
    }
}

/// State shared by a [`Virtqueue`]'s handles, its callback and the adapter.
#[pin_data]
struct VqInner {
    /// Completed by the virtqueue callback whenever the device used a buffer.
    #[pin]
    done: Completion,
    /// One request at a time: the bounce buffers and the virtqueue belong to the lock holder.
    #[pin]
    state: Mutex<VqState>,
}

// SAFETY: The raw pointers in `VqState` are only used under its mutex, and only while the device
// is bound (`vq` not NULL); `Completion` is `Send + Sync`.
unsafe impl Send for VqInner {}
// SAFETY: See above.
unsafe impl Sync for VqInner {}

struct VqState {
    /// The virtqueue, or NULL once the device was unbound or put to sleep and the virtqueue
    /// deleted.
    vq: *mut bindings::virtqueue,
    /// The device; only used while `vq` is not NULL, i.e. while the device is bound and awake.
    vdev: *mut bindings::virtio_device,
    /// The virtqueue's name, to set it up again on resume.
    name: &'static CStr,
    /// The device sleeps (frozen by a suspend or hibernation): `vq` is NULL until restore.
    asleep: bool,
    /// Bounce buffer for requests (kmalloc memory, so the device can reach it).
    out: KVec<u8>,
    /// Bounce buffer for answers.
    inp: KVec<u8>,
    /// A request timed out: the device still owns the buffers until it uses them.
    busy: bool,
}

impl VqState {
    /// Why there is no virtqueue: the device sleeps (`EAGAIN`) or is gone (`ENODEV`).
    fn gone(&self) -> Error {
        if self.asleep {
            EAGAIN
        } else {
            ENODEV
        }
    }

    /// Takes back the buffers the device still has and deletes the virtqueue, if there is one.
    /// The device must be reset (or never made ready): then it uses none of the buffers.
    fn delete(&mut self) {
        if self.vq.is_null() {
            return;
        }
        // SAFETY: The device is reset (or was never made ready), so it uses none of the
        // buffers; detaching them frees what the virtqueue allocated for them (an indirect
        // table). We hold the lock serializing all virtqueue operations.
        while !unsafe { bindings::virtqueue_detach_unused_buf(self.vq) }.is_null() {}
        self.busy = false;
        self.vq = core::ptr::null_mut();
        // SAFETY: `vdev` is valid and its virtqueue was created by `find_vq` or `restore_vq`;
        // deleting it waits for a running callback.
        unsafe { bindings::virtio_del_vqs(self.vdev) };
    }

    /// Takes back the buffers the device has used; returns whether it used ours.
    fn reclaim(&mut self) -> Option<usize> {
        let mut len: c_uint = 0;
        // SAFETY: `self.vq` is a live virtqueue (checked by the callers) and we hold the lock
        // that serializes all operations on it.
        let token = unsafe { bindings::virtqueue_get_buf(self.vq, &mut len) };
        if token.is_null() {
            None
        } else {
            self.busy = false;
            Some(len as usize)
        }
    }
}

/// A virtqueue for request/answer exchanges with a device: the driver puts a request in an
/// out-buffer and the device writes its answer into an in-buffer. It also reads the device's
/// configuration space, so that work items, which hold no bound device, can do both.
///
/// Handles are cheap to clone; all of them stop working (`ENODEV`) once the device is unbound,
/// and pause (`EAGAIN`) while it sleeps.
#[derive(Clone)]
pub struct Virtqueue {
    inner: Arc<VqInner>,
}

impl Virtqueue {
    /// Reads a config field as [`Device::read_config`] does, while the device is bound
    /// (`ENODEV` afterwards) and awake (`EAGAIN` while it sleeps). May sleep.
    pub fn read_config<C: ConfigSpace, F: ConfigField>(
        &self,
        field: impl FnOnce(&C) -> &F,
    ) -> Result<F> {
        let st = self.inner.state.lock();
        if st.vq.is_null() {
            return Err(st.gone());
        }
        // SAFETY: `vq` is not NULL, so the device is still bound: `teardown` clears `vq` under
        // this lock before the device is unbound.
        if unsafe { (*st.vdev).id.device } != C::DEVICE_ID {
            return Err(EINVAL);
        }
        let offset = config_offset(field)?;
        // SAFETY: The device is bound (see above) and of `C`'s type, and the field lies within
        // `C`.
        unsafe { read_config_raw::<F>(st.vdev, offset) }
    }

    /// Sends `request` to the device and waits up to `timeout` for its answer, which is copied
    /// into `answer`. Returns the number of bytes the device wrote.
    ///
    /// Errors: `EINVAL` if a buffer is empty or larger than the bounce buffers given to
    /// [`Device::find_vq`], `ETIMEDOUT` if the device did not answer in time (the next request
    /// first waits for that answer and returns `EBUSY` while it has not come), `ENODEV` once the
    /// device is unbound, `EAGAIN` while it sleeps (see [`Driver::freeze`]), and what
    /// `virtqueue_add_sgs` returns (`EIO` for a broken device).
    /// May sleep; one request is in flight at a time, other callers wait for the lock.
    pub fn transact(&self, request: &[u8], answer: &mut [u8], timeout: Delta) -> Result<usize> {
        let mut st = self.inner.state.lock();
        if st.vq.is_null() {
            return Err(st.gone());
        }
        if request.len() > st.out.len()
            || answer.len() > st.inp.len()
            || request.is_empty()
            || answer.is_empty()
        {
            return Err(EINVAL);
        }
        if st.busy && st.reclaim().is_none() {
            return Err(EBUSY);
        }
        let out_len = c_uint::try_from(request.len())?;
        let in_len = c_uint::try_from(answer.len())?;
        st.out[..request.len()].copy_from_slice(request);
        st.inp[..answer.len()].fill(0);

        let sg_out = Opaque::<bindings::scatterlist>::uninit();
        let sg_in = Opaque::<bindings::scatterlist>::uninit();
        // SAFETY: The scatterlists are initialized here and describe kmalloc'ed bounce buffers
        // that stay valid (and untouched by us) until the device gave them back, because they
        // belong to `VqInner`, which outlives the virtqueue. The scatterlists themselves are
        // only read while adding the buffers.
        unsafe {
            bindings::sg_init_one(sg_out.get(), st.out.as_ptr().cast(), out_len);
            bindings::sg_init_one(sg_in.get(), st.inp.as_mut_ptr().cast(), in_len);
        }
        let mut sgs = [sg_out.get(), sg_in.get()];
        let token = st.out.as_mut_ptr().cast::<c_void>();

        // Re-armed before the buffer is added: a completion seen later belongs to this request
        // (or a later spurious interrupt, after which the loop below looks again).
        self.inner.done.reinit();
        // SAFETY: `st.vq` is live and we hold the lock serializing all operations on it; `sgs`
        // holds one readable and one writable scatterlist, as announced by `1, 1`.
        to_result(unsafe {
            bindings::virtqueue_add_sgs(st.vq, sgs.as_mut_ptr(), 1, 1, token, GFP_KERNEL.as_raw())
        })?;
        // SAFETY: As above.
        unsafe { bindings::virtqueue_kick(st.vq) };

        let start = Instant::<Monotonic>::now();
        loop {
            if let Some(len) = st.reclaim() {
                let len = len.min(answer.len());
                answer[..len].copy_from_slice(&st.inp[..len]);
                return Ok(len);
            }
            let left = timeout.as_millis() - start.elapsed().as_millis();
            if left <= 0 {
                st.busy = true;
                return Err(ETIMEDOUT);
            }
            self.inner
                .done
                .wait_for_completion_timeout(Delta::from_millis(left));
        }
    }
}

#[macros::kunit_tests(rust_kernel_virtio)]
mod tests {
    use super::*;
    use crate::device_id::IdArray;

    #[test]
    fn device_id_any_vendor() {
        let id = DeviceId::new(bindings::VIRTIO_ID_MEM);
        assert_eq!(id.device(), 24);
        assert_eq!(id.vendor(), u32::MAX);
        let id = DeviceId::with_vendor(bindings::VIRTIO_ID_MEM, 0x1af4);
        assert_eq!(id.vendor(), 0x1af4);
    }

    #[test]
    fn id_table_is_zero_terminated() {
        static TABLE: IdArray<DeviceId, (), 2> = IdArray::new_without_index([
            DeviceId::new(bindings::VIRTIO_ID_MEM),
            DeviceId::new(bindings::VIRTIO_ID_BALLOON),
        ]);
        let raw = kernel::device_id::IdTable::as_ptr(&TABLE);
        // SAFETY: An `IdArray` of N entries is followed by a zeroed sentinel entry.
        let entries = unsafe { core::slice::from_raw_parts(raw, 3) };
        assert_eq!(entries[0].device, bindings::VIRTIO_ID_MEM);
        assert_eq!(entries[1].device, bindings::VIRTIO_ID_BALLOON);
        assert_eq!((entries[2].device, entries[2].vendor), (0, 0));
    }

    #[test]
    fn config_fields_are_little_endian() {
        let bytes = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
        assert_eq!(<u8 as ConfigField>::from_le(&bytes), 0x01);
        assert_eq!(<u16 as ConfigField>::from_le(&bytes), 0x0201);
        assert_eq!(<u32 as ConfigField>::from_le(&bytes), 0x0403_0201);
        assert_eq!(<u64 as ConfigField>::from_le(&bytes), 0x0807_0605_0403_0201);
        assert_eq!(<u64 as ConfigField>::SIZE, 8);
    }

    #[test]
    fn config_reads_name_a_field_of_the_struct() {
        type C = bindings::virtio_mem_config;
        assert_eq!(config_offset(|c: &C| &c.requested_size), Ok(48));
        assert_eq!(config_offset(|c: &C| &c.node_id), Ok(8));
        assert_eq!(config_offset(|c: &C| &c.padding[5]), Ok(15));
        // A projection to anything but a field of the struct is refused.
        static OUTSIDE: u64 = 0;
        assert_eq!(config_offset(|_: &C| &OUTSIDE), Err(EINVAL));
    }

    #[test]
    fn only_offered_features_are_asked_about() {
        const TABLE: &[u32] = &[bindings::VIRTIO_MEM_F_ACPI_PXM, 1];
        const OFFERED: bool = offers(TABLE, 1);
        assert!(OFFERED);
        assert!(offers(TABLE, bindings::VIRTIO_MEM_F_ACPI_PXM));
        assert!(!offers(TABLE, bindings::VIRTIO_MEM_F_PERSISTENT_SUSPEND));
        assert!(!offers(&[], 0));
    }
}
