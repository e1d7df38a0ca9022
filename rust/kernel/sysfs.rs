// SPDX-License-Identifier: GPL-2.0

//! Read-only sysfs attributes of a device, `poll()` on them, and uevents.
//!
//! A [`DeviceAttributes`] puts a named group of read-only attributes into a bound device's sysfs
//! directory (as the subdirectory `<device>/<group>/`) and removes it when dropped, or when the
//! driver is unbound, whichever comes first: it exists only inside a [`Devres`], so that it
//! cannot outlive the device's registration (removing a group from a device that `device_del()`
//! took out of sysfs dereferences its NULL directory). Reading an
//! attribute calls [`AttributeSource::show`] on the data the group was created with. A driver
//! tells pollers that a value changed with [`notify`] (`sysfs_notify()`:
//! `poll()` on the file reports `POLLPRI | POLLERR`), and user space at large with
//! [`uevent_change`].
//!
//! C headers: [`include/linux/sysfs.h`](srctree/include/linux/sysfs.h),
//! [`include/linux/kobject.h`](srctree/include/linux/kobject.h)

use crate::{
    bindings,
    device::{
        Bound,
        Device, //
    },
    devres::Devres,
    error::to_result,
    fmt,
    page::PAGE_SIZE,
    prelude::*,
    str::{CStr, RawFormatter},
    sync::{aref::ARef, Arc},
    types::Opaque,
};
use core::{marker::PhantomPinned, ptr};

/// The values of a group of read-only attributes.
pub trait AttributeSource: Send + Sync + 'static {
    /// Writes the value of attribute `index` (an index into the names the group was created
    /// with), followed by a newline. What does not fit in a page is cut off.
    fn show(&self, index: usize, f: &mut RawFormatter) -> fmt::Result;
}

/// One attribute: the C attribute and what its `show` needs to find the data.
#[repr(C)]
struct Attribute<T: AttributeSource> {
    /// First, so that a pointer to it is a pointer to `Attribute` too.
    attr: Opaque<bindings::device_attribute>,
    index: usize,
    group: *const Inner<T>,
}

/// The pinned part of a [`DeviceAttributes`]: sysfs keeps pointers into it.
struct Inner<T: AttributeSource> {
    data: Arc<T>,
    attrs: KVec<Attribute<T>>,
    /// `attrs`' C attributes, NULL-terminated, as `struct attribute_group` wants them.
    ptrs: KVec<*mut bindings::attribute>,
    group: Opaque<bindings::attribute_group>,
    _pin: PhantomPinned,
}

/// A group of read-only attributes in a device's sysfs directory, removed when dropped: made
/// only by [`DeviceAttributes::new`], inside a [`Devres`] that drops it at unbind at the latest.
///
/// Only a bound device gets attributes:
///
/// ```ignore,compile_fail,E0308
/// # use kernel::{device::Device, str::RawFormatter, sync::Arc};
/// # use kernel::sysfs::{AttributeSource, DeviceAttributes};
/// # struct S;
/// # impl AttributeSource for S {
/// #     fn show(&self, _: usize, _: &mut RawFormatter) -> kernel::fmt::Result { Ok(()) }
/// # }
/// fn attrs(dev: &Device, s: Arc<S>) -> Result {
///     let _attrs = DeviceAttributes::new(dev, c"group", &[c"value"], s)?;
///     Ok(())
/// }
/// ```
///
/// and only inside a [`Devres`], which removes them before the device leaves sysfs:
///
/// ```ignore,compile_fail,E0624
/// # use kernel::{device::{Bound, Device}, str::RawFormatter, sync::Arc};
/// # use kernel::sysfs::{AttributeSource, DeviceAttributes};
/// # struct S;
/// # impl AttributeSource for S {
/// #     fn show(&self, _: usize, _: &mut RawFormatter) -> kernel::fmt::Result { Ok(()) }
/// # }
/// fn attrs(dev: &Device<Bound>, s: Arc<S>) -> Result<DeviceAttributes<S>> {
///     DeviceAttributes::create(dev, c"group", &[c"value"], s)
/// }
/// ```
///
/// # Invariants
///
/// `inner.group` is registered with `dev`'s kobject until drop, and its attributes point into
/// `inner`, which does not move and is not freed before the group is removed.
pub struct DeviceAttributes<T: AttributeSource> {
    dev: ARef<Device>,
    inner: Pin<KBox<Inner<T>>>,
}

// SAFETY: The raw pointers in `Inner` point into `Inner` itself or at static names; `T` is
// `Send + Sync` and is only read through shared references.
unsafe impl<T: AttributeSource> Send for DeviceAttributes<T> {}
// SAFETY: See above; `DeviceAttributes` has no methods that take `&self`.
unsafe impl<T: AttributeSource> Sync for DeviceAttributes<T> {}

impl<T: AttributeSource> DeviceAttributes<T> {
    /// Creates the group `group` with one read-only attribute per name in `names` in `dev`'s
    /// sysfs directory, for as long as the returned [`Devres`] lives and `dev` stays bound to
    /// the driver. Reading attribute `i` calls `data.show(i, ..)`.
    pub fn new(
        dev: &Device<Bound>,
        group: &'static CStr,
        names: &'static [&'static CStr],
        data: Arc<T>,
    ) -> Result<Devres<Self>> {
        let attrs = Self::create(dev, group, names, data)?;
        Devres::new(dev, attrs)
    }

    /// The group, outside a `Devres`: only [`Self::new`] may call it.
    fn create(
        dev: &Device,
        group: &'static CStr,
        names: &'static [&'static CStr],
        data: Arc<T>,
    ) -> Result<Self> {
        let mut attrs = KVec::with_capacity(names.len(), GFP_KERNEL)?;
        let mut ptrs = KVec::with_capacity(names.len() + 1, GFP_KERNEL)?;
        let mut inner = KBox::pin(
            Inner {
                data,
                attrs: KVec::new(),
                ptrs: KVec::new(),
                group: Opaque::zeroed(),
                _pin: PhantomPinned,
            },
            GFP_KERNEL,
        )?;
        let inner_ptr: *const Inner<T> = &*inner;
        for index in 0..names.len() {
            attrs.push(
                Attribute {
                    attr: Opaque::zeroed(),
                    index,
                    group: inner_ptr,
                },
                GFP_KERNEL,
            )?;
        }
        // The vectors have their final size now: their elements do not move any more.
        for (a, name) in attrs.iter().zip(names) {
            // SAFETY: `a.attr` is a valid, zeroed `struct device_attribute`, and `name` is a
            // static NUL-terminated string.
            unsafe {
                bindings::sysfs_init_device_attr(
                    a.attr.get(),
                    name.as_char_ptr(),
                    Some(show_callback::<T>),
                )
            };
            // SAFETY: `a.attr.get()` is valid; `attr` is its first field.
            ptrs.push(unsafe { &raw mut (*a.attr.get()).attr }, GFP_KERNEL)?;
        }
        ptrs.push(ptr::null_mut(), GFP_KERNEL)?;
        // SAFETY: Nothing is moved out of `inner`; the fields are set before sysfs sees them.
        let pinned = unsafe { inner.as_mut().get_unchecked_mut() };
        pinned.attrs = attrs;
        pinned.ptrs = ptrs;
        // SAFETY: `group` is a zeroed `struct attribute_group` that nobody else uses yet;
        // `name` is static and `ptrs` is NULL-terminated and lives as long as the group.
        unsafe {
            bindings::sysfs_init_group(
                pinned.group.get(),
                group.as_char_ptr(),
                pinned.ptrs.as_mut_ptr(),
            )
        };
        // SAFETY: `dev.as_raw()` is a valid device and `group` a valid attribute group that
        // stays valid (pinned in `inner`) until it is removed in `drop`.
        to_result(unsafe {
            bindings::sysfs_create_group(&raw mut (*dev.as_raw()).kobj, inner.group.get())
        })?;
        // INVARIANT: The group is registered now and `inner` is pinned.
        Ok(Self {
            dev: dev.into(),
            inner,
        })
    }
}

impl<T: AttributeSource> Drop for DeviceAttributes<T> {
    fn drop(&mut self) {
        // SAFETY: The group was registered with this device's kobject (invariant), which is
        // still in sysfs: the `Devres` the group lives in drops it at unbind at the latest, and
        // `device_del()` unbinds before it removes the device's directory. Removal waits until
        // no `show` runs any more, so `inner` may be freed afterwards.
        unsafe {
            bindings::sysfs_remove_group(&raw mut (*self.dev.as_raw()).kobj, self.inner.group.get())
        };
    }
}

/// The `show` of every attribute of a [`DeviceAttributes<T>`].
///
/// # Safety
///
/// Called by sysfs with `attr` pointing at the `attr` field of an `Attribute<T>` of a
/// registered group and `buf` at a page.
unsafe extern "C" fn show_callback<T: AttributeSource>(
    _dev: *mut bindings::device,
    attr: *mut bindings::device_attribute,
    buf: *mut c_char,
) -> isize {
    // SAFETY: `attr` is the first field of a `#[repr(C)]` `Attribute<T>` (safety
    // requirements), which lives as long as its group is registered, and so does the `Inner`
    // it points at.
    let (index, inner) = unsafe {
        let a = attr.cast::<Attribute<T>>();
        ((*a).index, &*(*a).group)
    };
    // SAFETY: sysfs hands `show` a buffer of one page.
    let mut f = unsafe { RawFormatter::from_buffer(buf.cast(), PAGE_SIZE) };
    match inner.data.show(index, &mut f) {
        Ok(()) => f.bytes_written().min(PAGE_SIZE) as isize,
        Err(_) => EINVAL.to_errno() as isize,
    }
}

/// Wakes whoever polls attribute `attr` in group `group` of `dev`'s sysfs directory. Does
/// nothing if there is no such attribute (e.g. the group was removed already). Sleeps.
pub fn notify(dev: &Device, group: &CStr, attr: &CStr) {
    // SAFETY: The device is valid (the caller holds a reference); both names are valid
    // NUL-terminated strings; `sysfs_notify` looks the attribute up and ignores a missing one.
    unsafe {
        bindings::sysfs_notify(
            &raw mut (*dev.as_raw()).kobj,
            group.as_char_ptr(),
            attr.as_char_ptr(),
        )
    };
}

/// Sends a `KOBJ_CHANGE` uevent for `dev` with the extra environment `env` (`KEY=value`
/// strings).
pub fn uevent_change(dev: &Device, env: &[&CStr]) -> Result {
    let mut envp = KVec::with_capacity(env.len() + 1, GFP_KERNEL)?;
    for e in env {
        envp.push(e.as_char_ptr().cast_mut(), GFP_KERNEL)?;
    }
    envp.push(ptr::null_mut(), GFP_KERNEL)?;
    // SAFETY: The device is valid, and `envp` is a NULL-terminated array of valid strings that
    // the call only reads (it copies them into the event).
    to_result(unsafe {
        bindings::kobject_uevent_env(
            &raw mut (*dev.as_raw()).kobj,
            bindings::kobject_action_KOBJ_CHANGE,
            envp.as_mut_ptr(),
        )
    })
}
