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
    driver,
    error::{
        from_result,
        to_result, //
    },
    prelude::*,
    sync::aref::AlwaysRefCounted,
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

mod config;
mod id;
mod virtqueue;

pub use self::config::{
    offers,
    ConfigField,
    ConfigSpace, //
};
pub use self::id::{
    DeviceId,
    IdTable, //
};
pub use self::virtqueue::Virtqueue;

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

    /// Resets the device and deletes its virtqueue: the device stops using the driver's buffers
    /// and forgets its features, and every [`Virtqueue`] handle answers `ENODEV` from then on.
    /// The device stays unusable until it is bound again; the adapter does the same when the
    /// device is unbound.
    pub fn reset(&self) {
        // SAFETY: `self.as_raw()` is a valid `struct virtio_device` bound to our driver.
        unsafe { bindings::virtio_reset_device(self.as_raw()) };
        self.teardown();
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

#[macros::kunit_tests(rust_kernel_virtio)]
mod tests {
    use super::config::config_offset;
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
