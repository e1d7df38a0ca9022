//! `vmctl`: control virtio-mem-pci devices over QMP, the QEMU Machine
//! Protocol, with nothing but the standard library.
//!
//! QMP can be reached through a unix socket on the host, or from inside a
//! guest through a virtio-serial port whose host end is connected to a QMP
//! server socket. The modules:
//!
//! * [`json`]: JSON values, parser and serializer (exact 64-bit integers);
//! * [`transport`]: unix sockets and character devices with read timeouts;
//! * [`qmp`]: the QMP client, robust against stale data on shared streams;
//! * [`size`]: sizes such as `4G+130M`;
//! * [`vmem`]: virtio-mem-pci operations (list, info, resize, wait);
//! * [`cli`]: argument parsing and the subcommands.

pub mod cli;
pub mod json;
pub mod qmp;
pub mod size;
pub mod transport;
pub mod vmem;
