//! Command-line parsing and the subcommands.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::framing::Object;
use crate::qmp::{self, Client};
use crate::size::parse_size;
use crate::transport::{self, PortStream, Transport};
use crate::vmem::{self, DeviceInfo};

/// Name of the virtio-serial port used when no transport is given.
pub const DEFAULT_PORT_NAME: &str = "org.qemu.qmp0";

/// Environment variable naming a QMP socket, used when no transport option
/// is given.
pub const SOCKET_ENV: &str = "VMCTL_SOCKET";

/// Default bound on `vmctl wait`.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The `--help` text.
pub const USAGE: &str = "\
vmctl - control virtio-mem-pci devices over QMP (QEMU Machine Protocol)

Usage:
  vmctl [OPTIONS] list                      one line per virtio-mem-pci device:
                                            ID size=N requested-size=N block-size=N node=N memaddr=N
  vmctl [OPTIONS] info ID                   key=value lines: id, size, requested-size,
                                            block-size, node, memaddr, region-size, memdev
  vmctl [OPTIONS] get ID PROP               qom-get PROP of device ID (or of a QOM path
                                            if ID starts with /)
  vmctl [OPTIONS] set-size ID SIZE          set requested-size; prints it in bytes
  vmctl [OPTIONS] wait ID SIZE              wait until size equals SIZE (read once, then
                                            followed in MEMORY_DEVICE_SIZE_CHANGE events);
                                            prints the final size
  vmctl [OPTIONS] resize ID SIZE            set-size, then wait
  vmctl [OPTIONS] raw JSON                  send a command object (an id is added),
                                            print the whole reply
  vmctl [OPTIONS] query-memory-devices      print the query-memory-devices result
  vmctl --help

SIZE is bytes, or a number with a binary suffix K, M, G or T, or a sum of
those: 1073741824, 4G, 130M, 4G+130M. All sizes are printed in bytes.

Options (anywhere on the line):
  --socket PATH          QMP unix socket (host side)
  --port PATH            character device carrying QMP, e.g. /dev/vport2p1
                         (guest side, a virtio-serial port)
  --port-name NAME       the virtio-serial port named NAME, found in
                         /sys/class/virtio-ports/*/name
  --timeout-ms N         bound on the wait for each QMP reply (default 10000)
  --wait-timeout-s S     bound on wait/resize, may be fractional (default 60)
  --pretty               indent JSON output
  -h, --help             this text

Without --socket, --port or --port-name: the socket in $VMCTL_SOCKET if set,
else the port named org.qemu.qmp0.

Exit status: 0 on success, 1 on failure (including a wait that timed out),
2 on a usage error.
";

/// How to reach QMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A unix socket path.
    Socket(PathBuf),
    /// A character device path.
    Port(PathBuf),
    /// A virtio-serial port name, looked up in sysfs.
    PortName(String),
}

/// Options shared by all subcommands.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Where QMP is.
    pub target: Target,
    /// Bound on each reply.
    pub timeout: Duration,
    /// Bound on `wait` and `resize`.
    pub wait_timeout: Duration,
    /// Indent JSON output.
    pub pretty: bool,
}

/// A parsed subcommand.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `--help`
    Help,
    /// `list`
    List,
    /// `info ID`
    Info {
        /// Device id.
        id: String,
    },
    /// `get ID PROP`
    Get {
        /// Device id or QOM path.
        id: String,
        /// Property name.
        prop: String,
    },
    /// `set-size ID SIZE`
    SetSize {
        /// Device id.
        id: String,
        /// Bytes.
        size: u64,
    },
    /// `wait ID SIZE`
    Wait {
        /// Device id.
        id: String,
        /// Bytes.
        size: u64,
    },
    /// `resize ID SIZE`
    Resize {
        /// Device id.
        id: String,
        /// Bytes.
        size: u64,
    },
    /// `raw JSON`
    Raw {
        /// The command object.
        command: Object,
    },
    /// `query-memory-devices`
    QueryMemoryDevices,
}

/// A bad command line; the message is meant for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (see vmctl --help)", self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// Parses the arguments after the program name. `socket_env` is the value
/// of `$VMCTL_SOCKET`, if set.
pub fn parse_args<I>(args: I, socket_env: Option<String>) -> Result<(Options, Command), UsageError>
where
    I: IntoIterator<Item = String>,
{
    let mut target = None;
    let mut timeout = qmp::DEFAULT_TIMEOUT;
    let mut wait_timeout = DEFAULT_WAIT_TIMEOUT;
    let mut pretty = false;
    let mut help = false;
    let mut positional = Vec::new();

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            positional.extend(args.by_ref());
            break;
        }
        if arg == "-h" {
            help = true;
            continue;
        }
        let Some(opt) = arg.strip_prefix("--") else {
            positional.push(arg);
            continue;
        };
        let (name, inline_value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (opt, None),
        };
        let takes_value = !matches!(name, "help" | "pretty");
        let value = if takes_value {
            match inline_value {
                Some(v) => v,
                None => args
                    .next()
                    .ok_or_else(|| usage(format!("--{name} needs a value")))?,
            }
        } else if inline_value.is_some() {
            return Err(usage(format!("--{name} takes no value")));
        } else {
            String::new()
        };
        let mut set_target = |t: Target| match &target {
            Some(old) if *old != t => Err(usage(
                "only one of --socket, --port and --port-name may be given",
            )),
            _ => {
                target = Some(t);
                Ok(())
            }
        };
        match name {
            "help" => help = true,
            "pretty" => pretty = true,
            "socket" => set_target(Target::Socket(value.into()))?,
            "port" => set_target(Target::Port(value.into()))?,
            "port-name" => set_target(Target::PortName(value))?,
            "timeout-ms" => {
                let ms: u64 = value.parse().ok().filter(|&ms| ms > 0).ok_or_else(|| {
                    usage(format!(
                        "--timeout-ms needs a positive integer, not {value:?}"
                    ))
                })?;
                timeout = Duration::from_millis(ms);
            }
            "wait-timeout-s" => {
                wait_timeout = value
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| {
                        usage(format!(
                            "--wait-timeout-s needs a number of seconds, not {value:?}"
                        ))
                    })?;
            }
            _ => return Err(usage(format!("unknown option --{name}"))),
        }
    }

    let target = target.unwrap_or_else(|| match socket_env.filter(|s| !s.is_empty()) {
        Some(path) => Target::Socket(path.into()),
        None => Target::PortName(DEFAULT_PORT_NAME.to_owned()),
    });
    let options = Options {
        target,
        timeout,
        wait_timeout,
        pretty,
    };
    if help || positional.first().is_some_and(|c| c == "help") {
        return Ok((options, Command::Help));
    }
    Ok((options, parse_command(&positional)?))
}

fn parse_command(words: &[String]) -> Result<Command, UsageError> {
    let Some((name, rest)) = words.split_first() else {
        return Err(usage("no subcommand given"));
    };
    let args: Vec<&str> = rest.iter().map(String::as_str).collect();
    let size = |s: &str| parse_size(s).map_err(|e| usage(e.to_string()));
    let command = match (name.as_str(), args.as_slice()) {
        ("list", []) => Command::List,
        ("info", [id]) => Command::Info { id: id.to_string() },
        ("get", [id, prop]) => Command::Get {
            id: id.to_string(),
            prop: prop.to_string(),
        },
        ("set-size", [id, s]) => Command::SetSize {
            id: id.to_string(),
            size: size(s)?,
        },
        ("wait", [id, s]) => Command::Wait {
            id: id.to_string(),
            size: size(s)?,
        },
        ("resize", [id, s]) => Command::Resize {
            id: id.to_string(),
            size: size(s)?,
        },
        ("raw", [text]) => {
            let command: Value =
                serde_json::from_str(text).map_err(|e| usage(format!("raw: {e}")))?;
            match command {
                Value::Object(command)
                    if command.contains_key("execute") || command.contains_key("exec-oob") =>
                {
                    Command::Raw { command }
                }
                _ => {
                    return Err(usage(
                        "raw: expected a JSON object with \"execute\", e.g. {\"execute\":\"query-status\"}",
                    ))
                }
            }
        }
        ("query-memory-devices", []) => Command::QueryMemoryDevices,
        (
            "list"
            | "info"
            | "get"
            | "set-size"
            | "wait"
            | "resize"
            | "raw"
            | "query-memory-devices",
            _,
        ) => return Err(usage(format!("wrong number of arguments for {name}"))),
        _ => return Err(usage(format!("unknown subcommand {name:?}"))),
    };
    Ok(command)
}

/// A failure while running a subcommand.
#[derive(Debug)]
pub enum RunError {
    /// Opening the transport failed.
    Connect(io::Error),
    /// QMP failed or QEMU reported an error.
    Qmp(qmp::Error),
    /// `wait` timed out, or failed.
    Wait(vmem::WaitError),
    /// `raw` got an error reply (already printed).
    ErrorReply,
    /// Writing the output failed.
    Output(io::Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Connect(e) => e.fmt(f),
            RunError::Qmp(e) => e.fmt(f),
            RunError::Wait(e) => e.fmt(f),
            RunError::ErrorReply => f.write_str("QEMU answered with an error"),
            RunError::Output(e) => write!(f, "cannot write output: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<qmp::Error> for RunError {
    fn from(e: qmp::Error) -> RunError {
        RunError::Qmp(e)
    }
}

impl From<vmem::WaitError> for RunError {
    fn from(e: vmem::WaitError) -> RunError {
        match e {
            vmem::WaitError::Qmp(e) => RunError::Qmp(e),
            e => RunError::Wait(e),
        }
    }
}

impl From<io::Error> for RunError {
    fn from(e: io::Error) -> RunError {
        RunError::Output(e)
    }
}

/// Opens the transport chosen in `options` and negotiates QMP capabilities.
pub fn connect(options: &Options) -> Result<Client<Box<dyn Transport>>, RunError> {
    let (stream, shared): (Box<dyn Transport>, bool) = match &options.target {
        Target::Socket(path) => (
            Box::new(transport::connect_socket(path).map_err(RunError::Connect)?),
            false,
        ),
        Target::Port(path) => (Box::new(open_port(path)?), true),
        Target::PortName(name) => {
            let path = transport::find_port_by_name(Path::new(transport::VIRTIO_PORTS_SYSFS), name)
                .map_err(RunError::Connect)?;
            (Box::new(open_port(&path)?), true)
        }
    };
    let mut client = Client::new(stream, options.timeout);
    if shared {
        client.resync()?;
    }
    client.negotiate()?;
    Ok(client)
}

fn open_port(path: &Path) -> Result<PortStream, RunError> {
    PortStream::open(path).map_err(RunError::Connect)
}

/// Runs `command` over `client`, writing results to `out`.
pub fn run<S: Transport>(
    client: &mut Client<S>,
    options: &Options,
    command: &Command,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    // Compact is QMP's own form minus the spaces; pretty is two-space
    // indented, one member per line (serde_json's `{:#}`).
    let json_text = |v: &Value| {
        if options.pretty {
            format!("{v:#}")
        } else {
            v.to_string()
        }
    };
    match command {
        Command::Help => write!(out, "{USAGE}")?,
        Command::List => {
            for id in vmem::list_devices(client)? {
                writeln!(out, "{}", DeviceInfo::fetch(client, &id)?)?;
            }
        }
        Command::Info { id } => {
            for (key, value) in DeviceInfo::fetch(client, id)?.fields() {
                writeln!(out, "{key}={value}")?;
            }
        }
        Command::Get { id, prop } => {
            let v: Value = vmem::qom_get(client, &vmem::device_path(id), prop)?;
            match &v {
                Value::String(s) => writeln!(out, "{s}")?,
                other => writeln!(out, "{}", json_text(other))?,
            }
        }
        Command::SetSize { id, size } => {
            vmem::set_requested_size(client, id, *size)?;
            writeln!(out, "{size}")?;
        }
        Command::Wait { id, size } => {
            let size = vmem::wait_for_size(client, id, *size, options.wait_timeout)?;
            writeln!(out, "{size}")?;
        }
        Command::Resize { id, size } => {
            vmem::set_requested_size(client, id, *size)?;
            let size = vmem::wait_for_size(client, id, *size, options.wait_timeout)?;
            writeln!(out, "{size}")?;
        }
        Command::Raw { command } => {
            let reply = Value::Object(client.execute_raw(command.clone())?);
            writeln!(out, "{}", json_text(&reply))?;
            if reply.get("error").is_some() {
                return Err(RunError::ErrorReply);
            }
        }
        Command::QueryMemoryDevices => {
            let v: Value = client.execute("query-memory-devices")?;
            writeln!(out, "{}", json_text(&v))?;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(Options, Command), UsageError> {
        parse_args(args.iter().map(|s| s.to_string()), None)
    }

    #[test]
    fn defaults() {
        let (o, c) = parse(&["list"]).unwrap();
        assert_eq!(o.target, Target::PortName("org.qemu.qmp0".into()));
        assert_eq!(o.timeout, Duration::from_secs(10));
        assert_eq!(o.wait_timeout, Duration::from_secs(60));
        assert!(!o.pretty);
        assert_eq!(c, Command::List);
        let (o, _) = parse_args(["list".to_string()], Some("/tmp/q.sock".into())).unwrap();
        assert_eq!(o.target, Target::Socket("/tmp/q.sock".into()));
        let (o, _) = parse_args(["list".to_string()], Some(String::new())).unwrap();
        assert_eq!(o.target, Target::PortName("org.qemu.qmp0".into()));
    }

    #[test]
    fn options_anywhere_and_inline_values() {
        let (o, c) = parse(&[
            "resize",
            "--socket",
            "/s",
            "vm0",
            "--timeout-ms=250",
            "4G+130M",
            "--wait-timeout-s",
            "0.5",
            "--pretty",
        ])
        .unwrap();
        assert_eq!(o.target, Target::Socket("/s".into()));
        assert_eq!(o.timeout, Duration::from_millis(250));
        assert_eq!(o.wait_timeout, Duration::from_millis(500));
        assert!(o.pretty);
        assert_eq!(
            c,
            Command::Resize {
                id: "vm0".into(),
                size: 4226 << 20
            }
        );
        let (o, _) = parse(&["--port-name", "x", "list"]).unwrap();
        assert_eq!(o.target, Target::PortName("x".into()));
        let (o, _) = parse(&["--port=/dev/vport2p1", "list"]).unwrap();
        assert_eq!(o.target, Target::Port("/dev/vport2p1".into()));
    }

    #[test]
    fn subcommands() {
        assert_eq!(
            parse(&["get", "vm0", "block-size"]).unwrap().1,
            Command::Get {
                id: "vm0".into(),
                prop: "block-size".into()
            }
        );
        assert_eq!(
            parse(&["set-size", "vm0", "1G"]).unwrap().1,
            Command::SetSize {
                id: "vm0".into(),
                size: 1 << 30
            }
        );
        assert_eq!(
            parse(&["wait", "vm0", "0"]).unwrap().1,
            Command::Wait {
                id: "vm0".into(),
                size: 0
            }
        );
        assert_eq!(
            parse(&["info", "vm0"]).unwrap().1,
            Command::Info { id: "vm0".into() }
        );
        assert_eq!(
            parse(&["query-memory-devices"]).unwrap().1,
            Command::QueryMemoryDevices
        );
        match parse(&["raw", r#"{"execute":"query-status"}"#]).unwrap().1 {
            Command::Raw { command } => {
                assert_eq!(
                    Value::Object(command).to_string(),
                    r#"{"execute":"query-status"}"#
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(&["--help"]).unwrap().1, Command::Help);
        assert_eq!(parse(&["list", "-h"]).unwrap().1, Command::Help);
        assert_eq!(parse(&["help"]).unwrap().1, Command::Help);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &[][..],
            &["frobnicate"],
            &["list", "extra"],
            &["info"],
            &["get", "vm0"],
            &["set-size", "vm0", "4X"],
            &["set-size", "vm0", "99999999999T"],
            &["raw", "{"],
            &["raw", "[1]"],
            &["--socket"],
            &["--bogus", "list"],
            &["--timeout-ms", "0", "list"],
            &["--timeout-ms", "x", "list"],
            &["--wait-timeout-s", "-1", "list"],
            &["--wait-timeout-s", "nan", "list"],
            &["--pretty=yes", "list"],
            &["--socket", "/a", "--port", "/b", "list"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be a usage error");
        }
        let err = parse(&["set-size", "vm0", "4X"]).unwrap_err().to_string();
        assert!(err.contains("\"4X\""), "{err}");
    }
}
