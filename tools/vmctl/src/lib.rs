//! `vmctl`: control virtio-mem-pci devices over QMP, the QEMU Machine
//! Protocol. JSON is serde_json's; no crate needs a C library, so the binary
//! cross-builds and can be copied into a guest.
//!
//! QMP can be reached through a unix socket on the host, or from inside a
//! guest through a virtio-serial port whose host end is connected to a QMP
//! server socket. The modules:
//!
//! * [`framing`]: the byte stream cut into JSON objects, robust against
//!   partial and stale data;
//! * [`transport`]: unix sockets and character devices with read timeouts;
//! * [`qmp`]: the QMP client, robust against stale data on shared streams;
//! * [`size`]: sizes such as `4G+130M`;
//! * [`vmem`]: virtio-mem-pci operations (list, info, resize, wait);
//! * [`cli`]: the command line (clap's derive) and the subcommands.

pub mod cli;
pub mod framing;
pub mod qmp;
pub mod size;
pub mod transport;
pub mod vmem;
