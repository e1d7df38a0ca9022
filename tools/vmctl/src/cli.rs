//! The command line (parsed with clap) and the subcommands.

use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
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

const AFTER_HELP: &str = "\
SIZE is bytes, or a number with a binary suffix K, M, G or T, or a sum of
those: 1073741824, 4G, 130M, 4G+130M. All sizes are printed in bytes.

Options may come anywhere on the line. Without --socket, --port or
--port-name: the socket in $VMCTL_SOCKET if set, else the port named
org.qemu.qmp0.

Exit status: 0 on success, 1 on failure (including a wait that timed out),
2 on a usage error.";

/// vmctl - control virtio-mem-pci devices over QMP (QEMU Machine Protocol)
#[derive(Debug, Parser)]
#[command(name = "vmctl", after_help = AFTER_HELP, args_override_self = true)]
pub struct Cli {
    /// QMP unix socket (host side)
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,

    /// Character device carrying QMP, e.g. /dev/vport2p1 (guest side, a
    /// virtio-serial port)
    #[arg(long, value_name = "PATH", global = true)]
    pub port: Option<PathBuf>,

    /// The virtio-serial port named NAME, found in
    /// /sys/class/virtio-ports/*/name
    #[arg(long, value_name = "NAME", global = true)]
    pub port_name: Option<String>,

    /// Bound on the wait for each QMP reply, in milliseconds
    // The defaults are qmp::DEFAULT_TIMEOUT and DEFAULT_WAIT_TIMEOUT, as the
    // tests check.
    #[arg(
        long = "timeout-ms",
        value_name = "N",
        global = true,
        default_value = "10000",
        value_parser = parse_millis
    )]
    pub timeout: Duration,

    /// Bound on wait and resize in seconds, may be fractional
    #[arg(
        long = "wait-timeout-s",
        value_name = "S",
        global = true,
        default_value = "60",
        value_parser = parse_seconds
    )]
    pub wait_timeout: Duration,

    /// Indent JSON output
    #[arg(long, global = true)]
    pub pretty: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum Command {
    /// One line per virtio-mem-pci device: ID size=N requested-size=N
    /// block-size=N node=N memaddr=N
    List,
    /// key=value lines: id, size, requested-size, block-size, node, memaddr,
    /// region-size, memdev
    Info {
        /// Device id
        id: String,
    },
    /// qom-get PROP of device ID (or of a QOM path if ID starts with /)
    Get {
        /// Device id or QOM path
        id: String,
        /// Property name, e.g. block-size
        prop: String,
    },
    /// Set requested-size; prints it in bytes
    SetSize {
        /// Device id
        id: String,
        /// Bytes, e.g. 4G+130M
        #[arg(value_parser = parse_size)]
        size: u64,
    },
    /// Wait until size equals SIZE (read once, then followed in
    /// MEMORY_DEVICE_SIZE_CHANGE events); prints the final size
    Wait {
        /// Device id
        id: String,
        /// Bytes, e.g. 4G+130M
        #[arg(value_parser = parse_size)]
        size: u64,
        /// Read size every N milliseconds instead of following the events
        /// (QEMU sends at most one a second per device and holds a later
        /// change back until that second is over: for timing a resize)
        #[arg(long = "poll-ms", value_name = "N", value_parser = parse_millis)]
        poll: Option<Duration>,
    },
    /// set-size, then wait
    Resize {
        /// Device id
        id: String,
        /// Bytes, e.g. 4G+130M
        #[arg(value_parser = parse_size)]
        size: u64,
    },
    /// Print "T_MS REQUESTED SIZE" every N ms (T_MS: since the start), with
    /// --meminfo also this system's MemTotal in KiB; a SIZE read from
    /// standard input sets requested-size before the next line. Ends at the
    /// end of the input. One connection for both: a guest's QMP port serves
    /// one vmctl at a time
    Record {
        /// Device id
        id: String,
        /// Milliseconds between two lines
        #[arg(long = "interval-ms", value_name = "N", default_value = "100", value_parser = parse_millis)]
        interval: Duration,
        /// Add MemTotal (KiB) from /proc/meminfo (of the guest, when run there)
        #[arg(long)]
        meminfo: bool,
    },
    /// Send a command object (an id is added), print the whole reply
    Raw {
        /// The command, e.g. {"execute":"query-status"}
        #[arg(value_name = "JSON", value_parser = parse_raw)]
        command: Object,
    },
    /// Print the query-memory-devices result
    QueryMemoryDevices,
}

fn parse_millis(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err("needs a positive integer".to_owned()),
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| "needs a number of seconds, e.g. 60 or 0.5".to_owned())
}

fn parse_raw(text: &str) -> Result<Object, String> {
    match serde_json::from_str(text).map_err(|e| e.to_string())? {
        Value::Object(command)
            if command.contains_key("execute") || command.contains_key("exec-oob") =>
        {
            Ok(command)
        }
        _ => Err(
            "expected a JSON object with \"execute\", e.g. {\"execute\":\"query-status\"}"
                .to_owned(),
        ),
    }
}

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

impl Cli {
    /// The options, given `socket_env`, the value of `$VMCTL_SOCKET` if set.
    /// More than one of --socket, --port and --port-name is a usage error.
    pub fn options(&self, socket_env: Option<String>) -> Result<Options, clap::Error> {
        // Checked here rather than with clap's conflicts_with, which does
        // not see a global option given before the subcommand and another
        // after it.
        let mut given = [
            self.socket.clone().map(Target::Socket),
            self.port.clone().map(Target::Port),
            self.port_name.clone().map(Target::PortName),
        ]
        .into_iter()
        .flatten();
        let target = given.next();
        if given.next().is_some() {
            return Err(<Cli as clap::CommandFactory>::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "only one of --socket, --port and --port-name may be given",
            ));
        }
        let target = target.unwrap_or_else(|| match socket_env.filter(|s| !s.is_empty()) {
            Some(path) => Target::Socket(path.into()),
            None => Target::PortName(DEFAULT_PORT_NAME.to_owned()),
        });
        Ok(Options {
            target,
            timeout: self.timeout,
            wait_timeout: self.wait_timeout,
            pretty: self.pretty,
        })
    }
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
    /// `record` read a line that is not a size, or no MemTotal.
    Input(String),
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
            RunError::Input(e) => f.write_str(e),
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
        Command::Wait { id, size, poll } => {
            let size = match poll {
                Some(interval) => {
                    vmem::poll_for_size(client, id, *size, options.wait_timeout, *interval)?
                }
                None => vmem::wait_for_size(client, id, *size, options.wait_timeout)?,
            };
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
        Command::Record {
            id,
            interval,
            meminfo,
        } => record(
            client,
            id,
            *interval,
            *meminfo,
            io::BufReader::new(io::stdin()),
            out,
        )?,
    }
    out.flush()?;
    Ok(())
}

/// `vmctl record`: a line per `interval` until `input` ends; each size read
/// from `input` is requested before the next line.
pub fn record<S: Transport>(
    client: &mut Client<S>,
    id: &str,
    interval: Duration,
    meminfo: bool,
    input: impl BufRead + Send + 'static,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    // Input is read on its own thread, so that a line takes effect at the next tick.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in input.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let path = vmem::device_path(id);
    let start = Instant::now();
    let mut next = start;
    loop {
        let ended = loop {
            match rx.try_recv() {
                Ok(line) if line.trim().is_empty() => {}
                Ok(line) => {
                    let size =
                        parse_size(line.trim()).map_err(|e| RunError::Input(e.to_string()))?;
                    vmem::set_requested_size(client, id, size)?;
                }
                Err(mpsc::TryRecvError::Empty) => break false,
                Err(mpsc::TryRecvError::Disconnected) => break true,
            }
        };
        let t = start.elapsed().as_millis();
        let requested: u64 = vmem::qom_get(client, &path, "requested-size")?;
        let size: u64 = vmem::qom_get(client, &path, "size")?;
        if meminfo {
            writeln!(out, "{t} {requested} {size} {}", mem_total_kib()?)?;
        } else {
            writeln!(out, "{t} {requested} {size}")?;
        }
        out.flush()?;
        if ended {
            return Ok(());
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// MemTotal of /proc/meminfo, in KiB.
fn mem_total_kib() -> Result<u64, RunError> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| RunError::Input(format!("cannot read /proc/meminfo: {e}")))?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| RunError::Input("no MemTotal in /proc/meminfo".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse_env(args: &[&str], env: Option<&str>) -> Result<(Options, Command), clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("vmctl").chain(args.iter().copied()))?;
        Ok((cli.options(env.map(str::to_owned))?, cli.command))
    }

    fn parse(args: &[&str]) -> Result<(Options, Command), clap::Error> {
        parse_env(args, None)
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let (o, c) = parse(&["list"]).unwrap();
        assert_eq!(o.target, Target::PortName("org.qemu.qmp0".into()));
        assert_eq!(o.timeout, qmp::DEFAULT_TIMEOUT);
        assert_eq!(o.wait_timeout, DEFAULT_WAIT_TIMEOUT);
        assert_eq!(o.wait_timeout, Duration::from_secs(60));
        assert!(!o.pretty);
        assert_eq!(c, Command::List);
        let (o, _) = parse_env(&["list"], Some("/tmp/q.sock")).unwrap();
        assert_eq!(o.target, Target::Socket("/tmp/q.sock".into()));
        let (o, _) = parse_env(&["list"], Some("")).unwrap();
        assert_eq!(o.target, Target::PortName("org.qemu.qmp0".into()));
        let (o, _) = parse_env(&["--port-name", "x", "list"], Some("/tmp/q.sock")).unwrap();
        assert_eq!(o.target, Target::PortName("x".into()));
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
        // As the test scripts call it.
        let (o, c) = parse(&[
            "--port-name",
            "org.qemu.qmp0",
            "wait",
            "vm0",
            "4G+130M",
            "--wait-timeout-s",
            "120",
        ])
        .unwrap();
        assert_eq!(o.wait_timeout, Duration::from_secs(120));
        assert_eq!(
            c,
            Command::Wait {
                id: "vm0".into(),
                size: 4226 << 20,
                poll: None
            }
        );
        // A later value wins.
        let (o, _) = parse(&["--timeout-ms", "5", "list", "--timeout-ms", "7"]).unwrap();
        assert_eq!(o.timeout, Duration::from_millis(7));
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
                size: 0,
                poll: None
            }
        );
        assert_eq!(
            parse(&["wait", "vm0", "1G", "--poll-ms", "100"]).unwrap().1,
            Command::Wait {
                id: "vm0".into(),
                size: 1 << 30,
                poll: Some(Duration::from_millis(100))
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
    }

    #[test]
    fn help_is_not_an_error() {
        for args in [
            &["--help"][..],
            &["-h"],
            &["help"],
            &["list", "-h"],
            &["help", "wait"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(err.exit_code(), 0, "{args:?}");
        }
        let help = Cli::command().render_help().to_string();
        for word in [
            "list",
            "info",
            "get",
            "set-size",
            "wait",
            "resize",
            "raw",
            "query-memory-devices",
            "--socket",
            "--port",
            "--port-name",
            "--timeout-ms",
            "--wait-timeout-s",
            "--pretty",
            "VMCTL_SOCKET",
            "4G+130M",
            "Exit status",
        ] {
            assert!(help.contains(word), "{word} missing from\n{help}");
        }
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
            &["raw", r#"{"arguments": {}}"#],
            &["--socket"],
            &["--bogus", "list"],
            &["--timeout-ms", "0", "list"],
            &["--timeout-ms", "x", "list"],
            &["--wait-timeout-s", "-1", "list"],
            &["--wait-timeout-s", "nan", "list"],
            &["--pretty=yes", "list"],
            &["--socket", "/a", "--port", "/b", "list"],
            &["--socket", "/a", "list", "--port-name", "b"],
        ] {
            let err = parse(bad).expect_err(&format!("{bad:?} should be a usage error"));
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
        }
        let err = parse(&["set-size", "vm0", "4X"]).unwrap_err().to_string();
        assert!(err.contains("\"4X\""), "{err}");
    }
}
