// SPDX-License-Identifier: GPL-2.0

//! The guest-request protocol: requests the driver puts on the virtqueue and the device's
//! answers (virtio spec 1.2, 5.15.6).

use kernel::{
    bindings,
    prelude::*,
    time::Delta,
    virtio, //
};

/// Size of an encoded request (`struct virtio_mem_req`).
pub(crate) const REQ_SIZE: usize = core::mem::size_of::<bindings::virtio_mem_req>();
/// Size of an encoded answer (`struct virtio_mem_resp`).
pub(crate) const RESP_SIZE: usize = core::mem::size_of::<bindings::virtio_mem_resp>();

/// How long the driver waits for the device to answer one request.
pub(crate) const ANSWER_TIMEOUT: Delta = Delta::from_secs(30);

/// A request to the device. Ranges are in device blocks: `addr` aligned to the block size and
/// `nb_blocks` blocks long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// Plug the blocks of a range.
    Plug { addr: u64, nb_blocks: u16 },
    /// Unplug the blocks of a range.
    Unplug { addr: u64, nb_blocks: u16 },
    /// Unplug all memory of the device (and shrink the usable region).
    UnplugAll,
    /// Ask whether the blocks of a range are plugged, unplugged or mixed.
    State { addr: u64, nb_blocks: u16 },
}

impl Request {
    /// The request's wire format (little endian, as for every virtio 1.0 device).
    pub(crate) fn encode(&self) -> [u8; REQ_SIZE] {
        let (ty, addr, nb_blocks) = match *self {
            Request::Plug { addr, nb_blocks } => (bindings::VIRTIO_MEM_REQ_PLUG, addr, nb_blocks),
            Request::Unplug { addr, nb_blocks } => {
                (bindings::VIRTIO_MEM_REQ_UNPLUG, addr, nb_blocks)
            }
            Request::UnplugAll => (bindings::VIRTIO_MEM_REQ_UNPLUG_ALL, 0, 0),
            Request::State { addr, nb_blocks } => (bindings::VIRTIO_MEM_REQ_STATE, addr, nb_blocks),
        };
        let mut buf = [0u8; REQ_SIZE];
        // `type`, then 3 padding words; the union starts at 8: `addr`, then `nb_blocks`.
        buf[0..2].copy_from_slice(&(ty as u16).to_le_bytes());
        buf[8..16].copy_from_slice(&addr.to_le_bytes());
        buf[16..18].copy_from_slice(&nb_blocks.to_le_bytes());
        buf
    }
}

impl kernel::fmt::Display for Request {
    fn fmt(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        match *self {
            Request::Plug { addr, nb_blocks } => {
                write!(f, "PLUG of {nb_blocks} blocks at {addr:#x}")
            }
            Request::Unplug { addr, nb_blocks } => {
                write!(f, "UNPLUG of {nb_blocks} blocks at {addr:#x}")
            }
            Request::UnplugAll => write!(f, "UNPLUG_ALL"),
            Request::State { addr, nb_blocks } => {
                write!(f, "STATE of {nb_blocks} blocks at {addr:#x}")
            }
        }
    }
}

/// The state of a range of device blocks, as a `STATE` request reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockState {
    /// Every block is plugged.
    Plugged,
    /// No block is plugged.
    Unplugged,
    /// Some are, some are not.
    Mixed,
}

/// Why the device did not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `NACK`: the request is valid but the device will not do it now (e.g. it is not allowed
    /// to plug more). Try again later.
    Nack,
    /// `BUSY`: the device cannot handle the request right now. Try again later.
    Busy,
    /// `ERROR`: the request was invalid (a driver or device bug).
    Error,
    /// The answer was not one the protocol defines; the value is what the device said.
    Nonsense(u16),
}

impl Refusal {
    /// The kernel error for a refusal, distinct per cause (as the C driver maps them).
    pub(crate) fn to_errno(self) -> Error {
        match self {
            Refusal::Nack => EAGAIN,
            Refusal::Busy => ETXTBSY,
            Refusal::Error => EINVAL,
            Refusal::Nonsense(_) => EPROTO,
        }
    }
}

/// Decodes the answer to `req`: `Ok` with the reported block state for `STATE` (`None` for
/// the others), or why the device refused.
pub(crate) fn decode(req: &Request, answer: &[u8]) -> Result<Option<BlockState>, Refusal> {
    let word = |at: usize| -> u16 {
        answer
            .get(at..at + 2)
            .map_or(u16::MAX, |b| u16::from_le_bytes([b[0], b[1]]))
    };
    let ty = word(0);
    match u32::from(ty) {
        bindings::VIRTIO_MEM_RESP_ACK => {}
        bindings::VIRTIO_MEM_RESP_NACK => return Err(Refusal::Nack),
        bindings::VIRTIO_MEM_RESP_BUSY => return Err(Refusal::Busy),
        bindings::VIRTIO_MEM_RESP_ERROR => return Err(Refusal::Error),
        _ => return Err(Refusal::Nonsense(ty)),
    }
    if !matches!(req, Request::State { .. }) {
        return Ok(None);
    }
    let state = word(8);
    match u32::from(state) {
        bindings::VIRTIO_MEM_STATE_PLUGGED => Ok(Some(BlockState::Plugged)),
        bindings::VIRTIO_MEM_STATE_UNPLUGGED => Ok(Some(BlockState::Unplugged)),
        bindings::VIRTIO_MEM_STATE_MIXED => Ok(Some(BlockState::Mixed)),
        _ => Err(Refusal::Nonsense(state)),
    }
}

/// An error sending a request: the device refused it, or the transport failed (timeout, device
/// gone, broken virtqueue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The device answered, but not with `ACK`.
    Refused(Refusal),
    /// No (usable) answer: the error the virtqueue reported.
    Transport(Error),
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Error {
        match e {
            SendError::Refused(r) => r.to_errno(),
            SendError::Transport(e) => e,
        }
    }
}

/// Sends `req` over `vq` and waits (bounded) for the answer: the answer's bytes and how many
/// the device wrote.
pub(crate) fn exchange(
    vq: &virtio::Virtqueue,
    req: &Request,
) -> Result<([u8; RESP_SIZE], usize), SendError> {
    let mut answer = [0u8; RESP_SIZE];
    let len = vq
        .transact(&req.encode(), &mut answer, ANSWER_TIMEOUT)
        .map_err(SendError::Transport)?;
    Ok((answer, len.min(RESP_SIZE)))
}

/// What the answer `answer` (the bytes the device wrote) says about `req`. One too short to
/// hold a type is as undefined as a type the protocol does not define.
pub(crate) fn answer_of(req: &Request, answer: &[u8]) -> Result<Option<BlockState>, SendError> {
    if answer.len() < 2 {
        return Err(SendError::Refused(Refusal::Nonsense(u16::MAX)));
    }
    decode(req, answer).map_err(SendError::Refused)
}

#[kunit_tests(virtio_mem_rust_protocol)]
mod tests {
    use super::*;

    /// An answer as the device encodes it: type `ty`, and `state` for `STATE` requests.
    fn answer(ty: u16, state: u16) -> [u8; RESP_SIZE] {
        let mut b = [0u8; RESP_SIZE];
        b[0..2].copy_from_slice(&ty.to_le_bytes());
        b[8..10].copy_from_slice(&state.to_le_bytes());
        b
    }

    #[test]
    fn sizes_match_the_spec() {
        assert_eq!(REQ_SIZE, 24);
        assert_eq!(RESP_SIZE, 10);
    }

    #[test]
    fn plug_request_layout() {
        let b = Request::Plug {
            addr: 0x1_2345_6000_0000,
            nb_blocks: 0x0203,
        }
        .encode();
        assert_eq!(&b[0..8], &[0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[8..16], &[0, 0, 0, 0x60, 0x45, 0x23, 0x01, 0]);
        assert_eq!(&b[16..24], &[0x03, 0x02, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn request_types() {
        assert_eq!(
            Request::Unplug {
                addr: 0,
                nb_blocks: 1
            }
            .encode()[0],
            1
        );
        assert_eq!(Request::UnplugAll.encode(), {
            let mut b = [0u8; REQ_SIZE];
            b[0] = 2;
            b
        });
        assert_eq!(
            Request::State {
                addr: 0,
                nb_blocks: 1
            }
            .encode()[0],
            3
        );
    }

    #[test]
    fn answers_map_to_distinct_results() {
        let plug = Request::Plug {
            addr: 0,
            nb_blocks: 1,
        };
        let ans = |ty| answer(ty, 0);
        assert_eq!(decode(&plug, &ans(0)), Ok(None));
        assert_eq!(decode(&plug, &ans(1)), Err(Refusal::Nack));
        assert_eq!(decode(&plug, &ans(2)), Err(Refusal::Busy));
        assert_eq!(decode(&plug, &ans(3)), Err(Refusal::Error));
        assert_eq!(decode(&plug, &ans(7)), Err(Refusal::Nonsense(7)));
        let errnos = [
            Refusal::Nack,
            Refusal::Busy,
            Refusal::Error,
            Refusal::Nonsense(7),
        ]
        .map(|r| r.to_errno().to_errno());
        for i in 0..errnos.len() {
            for j in i + 1..errnos.len() {
                assert_ne!(errnos[i], errnos[j]);
            }
        }
    }

    #[test]
    fn state_answers() {
        let req = Request::State {
            addr: 0,
            nb_blocks: 4,
        };
        let ans = |state| answer(0, state);
        assert_eq!(decode(&req, &ans(0)), Ok(Some(BlockState::Plugged)));
        assert_eq!(decode(&req, &ans(1)), Ok(Some(BlockState::Unplugged)));
        assert_eq!(decode(&req, &ans(2)), Ok(Some(BlockState::Mixed)));
        assert_eq!(decode(&req, &ans(9)), Err(Refusal::Nonsense(9)));
        assert_eq!(decode(&req, &ans(0)[..2]), Err(Refusal::Nonsense(u16::MAX)));
    }

    /// An answer too short to hold a type is undefined, for every request: the fault matrix's
    /// `short` fault reaches the same `Failed::Nonsense` paths as `undefined` from here.
    #[test]
    fn short_answers_are_undefined() {
        let requests = [
            Request::Plug {
                addr: 0,
                nb_blocks: 1,
            },
            Request::Unplug {
                addr: 0,
                nb_blocks: 1,
            },
            Request::UnplugAll,
            Request::State {
                addr: 0,
                nb_blocks: 1,
            },
        ];
        let nonsense = Err(SendError::Refused(Refusal::Nonsense(u16::MAX)));
        for req in &requests {
            assert_eq!(answer_of(req, &[]), nonsense);
            assert_eq!(answer_of(req, &answer(0, 0)[..1]), nonsense);
        }
        assert_eq!(answer_of(&requests[0], &answer(0, 0)[..2]), Ok(None));
    }
}
