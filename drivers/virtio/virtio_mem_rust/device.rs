// SPDX-License-Identifier: GPL-2.0

//! The driver's side of the device: what probe found out, config reads, requests over the
//! virtqueue with their counters and fault injection, and `STATE` queries that make the
//! device's plugged state agree with ours.

use crate::{
    config::{
        DeviceConfig,
        Raw, //
    },
    error::{
        Failed,
        StepError, //
    },
    fault::{
        self,
        Fault,
        Injector, //
    },
    mode::Mode,
    plug::Geometry,
    protocol::{
        self,
        BlockState,
        Refusal,
        Request,
        SendError,
        REQ_SIZE,
        RESP_SIZE, //
    },
    status::{
        Counters,
        Event,
        Reason, //
    }, //
};
use kernel::{
    bindings,
    device,
    memory_hotplug,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Full,
            Relaxed, //
        }, //
    },
    virtio, //
};

/// What probe found out about the device and the kernel; none of it changes while bound.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probed {
    /// The device's configuration as read at probe.
    pub(crate) config: DeviceConfig,
    /// Sub-block or big-block mode.
    pub(crate) mode: Mode,
    /// The NUMA node memory of this device is added to.
    pub(crate) nid: i32,
    /// The kernel's memory block size.
    pub(crate) memory_block_size: u64,
    /// Added memory holds its own memmap.
    pub(crate) memmap_on_memory: bool,
    /// The device keeps plugged memory plugged across suspend and wake-up
    /// (`VIRTIO_MEM_F_PERSISTENT_SUSPEND`).
    pub(crate) persistent_suspend: bool,
}

/// The answer `garble_answers` makes of the device's.
const GARBLED: u16 = 0xbad;

/// Takes one from a fault-injection counter if it is not 0; says whether it did.
fn take_one(counter: &Atomic<u32>) -> bool {
    let n = counter.load(Relaxed);
    n > 0 && counter.cmpxchg(n, n - 1, Full).is_ok()
}

/// The device as the run loop talks to it.
pub(crate) struct DeviceClient {
    dev: ARef<virtio::Device>,
    vq: virtio::Virtqueue,
    pub(crate) probed: Probed,
    pub(crate) geometry: Geometry,
    /// Request and event counters.
    pub(crate) counters: Counters,
    /// Fault injection (debugfs `lose_answers`): this many more answers of the device are
    /// dropped as if they had not come in time. The device acts on the request; the driver
    /// sees a timeout.
    pub(crate) lose_answers: Atomic<u32>,
    /// Fault injection (debugfs `garble_answers`): this many more answers of the device are
    /// replaced by a value the protocol does not define, which halts the device.
    pub(crate) garble_answers: Atomic<u32>,
    /// Fault injection (debugfs `inject`): faults armed per request kind.
    pub(crate) faults: Injector,
}

impl DeviceClient {
    /// Sets up the client of a probed device: the region's geometry and the virtqueue. Both
    /// bindings (hotplug and kdump mode) talk to the device through it.
    pub(crate) fn connect(dev: &virtio::Device<device::Core<'_>>, probed: Probed) -> Result<Self> {
        let config = &probed.config;
        let geometry = Geometry::new(
            config.addr,
            config.region_size,
            probed.mode.unit(probed.memory_block_size),
            config.block_size,
            *memory_hotplug::pluggable_range(true).start(),
        )
        .ok_or(EINVAL)?;
        let vq = dev.find_vq(c"guest-request", REQ_SIZE, RESP_SIZE)?;
        Ok(Self::new(dev, vq, probed, geometry))
    }

    fn new(
        dev: &virtio::Device<device::Bound>,
        vq: virtio::Virtqueue,
        probed: Probed,
        geometry: Geometry,
    ) -> Self {
        Self {
            dev: dev.into(),
            vq,
            probed,
            geometry,
            counters: Counters::new(),
            lose_answers: Atomic::new(0),
            garble_answers: Atomic::new(0),
            faults: Injector::new(),
        }
    }

    /// The device, for messages and sysfs.
    pub(crate) fn dev(&self) -> &device::Device {
        self.dev.as_ref()
    }

    /// Start of the device's region.
    pub(crate) fn addr(&self) -> u64 {
        self.probed.config.addr
    }

    /// Reads the requested and usable region sizes.
    pub(crate) fn read_sizes(&self) -> Result<(u64, u64)> {
        Ok((
            self.vq.read_config(|c: &Raw| &c.requested_size)?,
            self.vq.read_config(|c: &Raw| &c.usable_region_size)?,
        ))
    }

    /// Reads the device's plugged size.
    pub(crate) fn read_plugged(&self) -> Result<u64> {
        self.vq.read_config(|c: &Raw| &c.plugged_size)
    }

    /// Sends `req` and waits (bounded) for the answer, with the fault `inject` armed for it.
    fn exchange(&self, req: &Request) -> Result<Option<BlockState>, SendError> {
        if self.faults.waiting_for_late_answer() {
            // What the virtqueue answers while the buffer of a request is still out.
            return Err(SendError::Transport(EBUSY));
        }
        let fault = self.faults.take(req);
        if let Some(f) = fault {
            dev_info!(
                self.dev(),
                "injecting {:?} for {} (debugfs inject)\n",
                f,
                req
            );
            if !f.reaches_device() {
                return match f.answer() {
                    Some(a) => protocol::answer_of(req, &a),
                    None => Err(SendError::Transport(ETIMEDOUT)),
                };
            }
        }
        let (mut answer, mut len) = protocol::exchange(&self.vq, req)?;
        match fault {
            Some(Fault::Undefined) => answer[0..2].copy_from_slice(&fault::UNDEFINED.to_le_bytes()),
            Some(Fault::Short) => len = len.min(1),
            Some(Fault::Lost) => return Err(SendError::Transport(ETIMEDOUT)),
            Some(Fault::Late) => {
                self.faults.answer_late();
                return Err(SendError::Transport(ETIMEDOUT));
            }
            _ => {}
        }
        protocol::answer_of(req, &answer[..len])
    }

    /// Sends `req`, waiting a bounded time for the answer, and counts it. The failure says why.
    pub(crate) fn send(&self, req: &Request) -> Result<Option<BlockState>, Failed> {
        let mut res = self.exchange(req);
        if res.is_ok() && take_one(&self.lose_answers) {
            dev_info!(
                self.dev(),
                "dropping the device's answer to {} (debugfs lose_answers)\n",
                req
            );
            res = Err(SendError::Transport(ETIMEDOUT));
        } else if res.is_ok() && take_one(&self.garble_answers) {
            dev_info!(
                self.dev(),
                "garbling the device's answer to {} (debugfs garble_answers)\n",
                req
            );
            res = Err(SendError::Refused(Refusal::Nonsense(GARBLED)));
        }
        self.counters.request(req, res.err());
        res.map_err(|e| Failed {
            reason: Reason::of(e),
            req: Some(*req),
        })
    }

    /// The number of device blocks of `size` bytes, which one request must be able to carry:
    /// requests are cut to fit, so a failure here is a bug, reported as one.
    pub(crate) fn nb_blocks(&self, size: u64) -> Result<u16, StepError> {
        self.geometry.nb_blocks(size).ok_or_else(|| {
            dev_err!(
                self.dev(),
                "internal error: a request for {:#x} bytes does not fit in one request\n",
                size
            );
            StepError::internal()
        })
    }

    /// Asks the device to plug (`plug`) or unplug `[addr, addr + size)`.
    pub(crate) fn request(&self, plug: bool, addr: u64, size: u64) -> Result<Request, StepError> {
        let nb_blocks = self.nb_blocks(size)?;
        Ok(if plug {
            Request::Plug { addr, nb_blocks }
        } else {
            Request::Unplug { addr, nb_blocks }
        })
    }

    /// Asks the device whether `[addr, addr + size)` is plugged.
    pub(crate) fn query(&self, addr: u64, size: u64) -> Result<BlockState, StepError> {
        let req = Request::State {
            addr,
            nb_blocks: self.nb_blocks(size)?,
        };
        match self.send(&req)? {
            Some(state) => Ok(state),
            None => Err(StepError::Halted(Failed {
                reason: Reason::Nonsense(u16::MAX),
                req: Some(req),
            })),
        }
    }

    /// Makes the device's plugged state of `[addr, addr + size)` match ours (`plugged`), with
    /// `STATE` requests and, where it differs, `PLUG` or `UNPLUG`: a mixed range is split in
    /// halves down to device blocks.
    pub(crate) fn resync_range(
        &self,
        addr: u64,
        size: u64,
        plugged: bool,
    ) -> Result<(), StepError> {
        let block = self.geometry.block_size.get();
        let fix = match (self.query(addr, size)?, plugged) {
            (BlockState::Plugged, true) | (BlockState::Unplugged, false) => return Ok(()),
            (BlockState::Unplugged, true) | (BlockState::Plugged, false) => {
                self.request(plugged, addr, size)?
            }
            (BlockState::Mixed, _) => {
                let blocks = size / block;
                if blocks < 2 {
                    // One device block cannot be partly plugged.
                    dev_err!(
                        self.dev(),
                        "the device says the one block at {:#x} is partly plugged; stopping \
                         until the device is bound again\n",
                        addr
                    );
                    return Err(StepError::Halted(Failed {
                        reason: Reason::Nonsense(bindings::VIRTIO_MEM_STATE_MIXED as u16),
                        req: None,
                    }));
                }
                let half = blocks / 2 * block;
                self.resync_range(addr, half, plugged)?;
                return self.resync_range(addr + half, size - half, plugged);
            }
        };
        dev_warn!(
            self.dev(),
            "the device's plugged state of [{:#x}-{:#x}] differs from the driver's; sending {}\n",
            addr,
            addr + size - 1,
            fix
        );
        self.send(&fix)?;
        Ok(())
    }

    /// Makes the device agree that `[from, usable_end)` (what the driver does not track) is
    /// unplugged, in requests of at most one batch; a partial unit at the end is left alone.
    pub(crate) fn resync_untracked(&self, from: u64, usable_end: u64) -> Result<(), StepError> {
        let unit = self.geometry.unit.get();
        let chunk = self.geometry.max_units() * unit;
        let end = usable_end - (usable_end - from.min(usable_end)) % unit;
        let mut at = from;
        while at < end {
            let size = chunk.min(end - at);
            self.resync_range(at, size, false)?;
            at += size;
        }
        Ok(())
    }

    /// Counts `event`.
    pub(crate) fn count(&self, event: Event) {
        self.counters.count(event);
    }
}
