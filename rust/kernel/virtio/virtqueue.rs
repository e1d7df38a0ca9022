// SPDX-License-Identifier: GPL-2.0

//! Virtqueues: request/answer exchanges with a device, and the set-up and teardown of its
//! virtqueue that the adapter does on probe, unbind, freeze and restore.

use super::{
    config::{
        config_offset,
        read_config_raw,
        ConfigField,
        ConfigSpace, //
    },
    Device,
    STATUS_DRIVER_OK, //
};
use crate::{
    bindings,
    device,
    error::{
        from_err_ptr,
        to_result, //
    },
    new_mutex,
    prelude::*,
    sync::{
        Arc,
        Completion,
        Mutex, //
    },
    time::{
        Delta,
        Instant,
        Monotonic, //
    },
    types::Opaque, //
};

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
    ///
    /// [`Driver::freeze`]: super::Driver::freeze
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

impl<'a> Device<device::Core<'a>> {
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

    /// Quiets the device and revokes its virtqueue: reset if the driver got as far as
    /// `DRIVER_OK` or set up a virtqueue, take back the buffers the device still has (a request
    /// that timed out), then delete the virtqueue, so no buffer of ours is used by the device
    /// and no callback runs afterwards. Without the reset a probe that failed after `find_vq`
    /// left the queue enabled in the device, and the next probe's `find_vq` failed (`ENOENT`
    /// from virtio-pci's `setup_vq`): the device could not be bound again.
    pub(super) fn teardown(&self) {
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
    pub(super) fn freeze_vq(&self) {
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
    pub(super) fn restore_vq(&self) -> Result {
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
