//! `vmem-status`: the state of virtio-mem devices driven by `virtio_mem_rust`, read from
//! sysfs inside the guest, and a wait for a resize to finish. See `vmem-status --help`.

mod poll;
mod show;
mod size;
mod sysfs;
#[cfg(test)]
mod testutil;
mod wait;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use show::Format;
use sysfs::{parse_seconds_ms, Status, Sysfs};
use wait::{Outcome, Target, Until};

/// Success.
const EXIT_OK: u8 = 0;
/// Usage error, device not found, reading sysfs failed.
const EXIT_ERROR: u8 = 1;
/// `wait` timed out.
const EXIT_TIMEOUT: u8 = 2;
/// `wait --until reached` found the device stopped.
const EXIT_FAILED: u8 = 3;

const DEFAULT_SYSFS: &str = "/sys";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest `wait` sleeps between two reads of the state, notification or not.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

const USAGE: &str = "\
vmem-status - state of the virtio-mem devices driven by virtio_mem_rust, from sysfs

Usage:
  vmem-status [--sysfs DIR] [show] [--format human|kv] [DEV]
  vmem-status [--sysfs DIR] wait DEV [--size SIZE] [--timeout SECS]
                                     [--until reached|settled]
  vmem-status --help

Devices are the entries of DIR/bus/virtio/devices/ (e.g. virtio0) that have a
virtio_mem directory, where the driver shows its attributes.

show [DEV]   the state of every device, or of DEV (the default command).
  --format human   (default) a block per device: mode, block sizes, node,
                   region, requested/plugged/online/added sizes (in bytes and
                   binary units), activity, reason, and when the next retry
                   runs (with the delay until then, from DIR/../proc/uptime)
  --format kv      DEV.ATTRIBUTE=VALUE lines, one per attribute file; the
                   lines of stats become DEV.stats.NAME=VALUE

wait DEV     block until DEV is done; sleeps in poll(2) on its activity
             attribute, and re-reads the state at least once a second.
  --until reached  (default) activity is idle and plugged_size is
                   requested_size rounded down to block_size. Fails (exit 3)
                   if the device is stopped; a stalled or waiting device is
                   retrying, so it is waited for until the timeout.
  --until settled  activity is idle, waiting, stalled or stopped: the driver got
                   there or stopped short (the uevents' reached and stalled).
  --size SIZE      also require requested_size to be SIZE.
  --timeout SECS   give up after SECS seconds (default 300, decimals allowed).
  When done, prints: DEV: ACTIVITY plugged=BYTES requested=BYTES

Activity: idle, pending (a new request not picked up yet), plugging,
unplugging, waiting (transient; retried at retry_at), stalled (a reason in
the guest, e.g. free memory; retried at retry_at), stopped (the device
answered nonsense; nothing more until the driver is bound again), unbinding.

SIZE is bytes, or a number with a binary suffix K, M, G or T, or a sum of
those: 1073741824, 4G, 130M, 4G+130M.

Options (anywhere on the line):
  --sysfs DIR      the sysfs root (default /sys)
  -h, --help       this text

Exit status:
  0  done
  1  usage error, no such device, or reading sysfs failed
  2  wait timed out (the last state and reason are printed to stderr)
  3  wait --until reached: the device is stopped (the reason is printed to
     stderr)
";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
struct Cli {
    sysfs: PathBuf,
    command: Command,
}

#[derive(Debug, Clone, PartialEq)]
enum Command {
    Help,
    Show {
        device: Option<String>,
        format: Format,
    },
    Wait {
        device: String,
        target: Target,
        timeout: Duration,
    },
}

/// Parses the arguments after the program name.
fn parse_args(args: &[String]) -> Result<Cli, String> {
    let mut sysfs = PathBuf::from(DEFAULT_SYSFS);
    let mut format = None;
    let mut size = None;
    let mut timeout = None;
    let mut until = None;
    let mut positional = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if !arg.starts_with('-') || arg == "-" {
            positional.push(arg.clone());
            continue;
        }
        if arg == "--" {
            positional.extend(args.by_ref().cloned());
            break;
        }
        if arg == "-h" || arg == "--help" {
            return Ok(Cli {
                sysfs,
                command: Command::Help,
            });
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        if !["--sysfs", "--format", "--size", "--timeout", "--until"].contains(&name) {
            return Err(format!("unknown option {arg}"));
        }
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))?,
        };
        match name {
            "--sysfs" => sysfs = PathBuf::from(value),
            "--format" => format = Some(parse_format(&value)?),
            "--size" => size = Some(size::parse_size(&value).map_err(|e| e.to_string())?),
            "--timeout" => {
                let ms = parse_seconds_ms(&value).ok_or_else(|| {
                    format!("--timeout takes seconds (e.g. 300 or 0.5), not {value:?}")
                })?;
                timeout = Some(Duration::from_millis(ms));
            }
            _ => until = Some(parse_until(&value)?),
        }
    }

    let mut positional = positional.into_iter();
    let command = match positional.next().as_deref() {
        None | Some("show") => {
            let device = positional.next();
            Command::Show {
                device,
                format: format.unwrap_or(Format::Human),
            }
        }
        Some("wait") => {
            let device = positional
                .next()
                .ok_or("wait needs a device, e.g. virtio0")?;
            Command::Wait {
                device,
                target: Target {
                    until: until.unwrap_or(Until::Reached),
                    size,
                },
                timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
            }
        }
        Some("help") => Command::Help,
        Some(other) => return Err(format!("unknown command {other:?}")),
    };
    if let Some(extra) = positional.next() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    let is_wait = matches!(command, Command::Wait { .. });
    if !is_wait && (size.is_some() || timeout.is_some() || until.is_some()) {
        return Err("--size, --timeout and --until are for wait".to_owned());
    }
    if is_wait && format.is_some() {
        return Err("--format is for show".to_owned());
    }
    Ok(Cli { sysfs, command })
}

fn parse_format(value: &str) -> Result<Format, String> {
    match value {
        "human" => Ok(Format::Human),
        "kv" => Ok(Format::Kv),
        _ => Err(format!("--format must be human or kv, not {value:?}")),
    }
}

fn parse_until(value: &str) -> Result<Until, String> {
    match value {
        "reached" => Ok(Until::Reached),
        "settled" => Ok(Until::Settled),
        _ => Err(format!("--until must be reached or settled, not {value:?}")),
    }
}

/// `12`, or `0.5` for fractions.
fn format_secs(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}", ms / 1000)
    } else {
        format!("{}.{:03}", ms / 1000, ms % 1000)
            .trim_end_matches('0')
            .to_owned()
    }
}

/// `activity=..., plugged=..., requested=..., reason=...`
fn describe(status: &Status) -> String {
    format!(
        "activity={}, plugged={}, requested={}, reason={}",
        status.activity,
        status.plugged,
        status.requested,
        status.reason.as_deref().unwrap_or("none")
    )
}

fn show(
    sysfs: &Sysfs,
    device: Option<&str>,
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<u8> {
    let devices = match device {
        Some(name) => sysfs.device(name).map(|d| vec![d]),
        None => sysfs.devices(),
    };
    let devices = match devices {
        Ok(devices) => devices,
        Err(e) => {
            writeln!(err, "vmem-status: {e}")?;
            return Ok(EXIT_ERROR);
        }
    };
    let uptime_ms = match format {
        Format::Human => sysfs.uptime_ms(),
        Format::Kv => None,
    };
    let mut code = EXIT_OK;
    let mut first = true;
    for dev in &devices {
        // A device that cannot be read (e.g. one unbinding) does not hide the others.
        let snap = match dev.snapshot() {
            Ok(snap) => snap,
            Err(e) => {
                writeln!(err, "vmem-status: {}: {e}", dev.name())?;
                code = EXIT_ERROR;
                continue;
            }
        };
        match format {
            Format::Kv => show::write_kv(out, dev.name(), &snap)?,
            Format::Human => {
                if !first {
                    writeln!(out)?;
                }
                show::write_human(out, dev.name(), &snap, uptime_ms)?;
            }
        }
        first = false;
    }
    Ok(code)
}

fn wait_for(
    sysfs: &Sysfs,
    device: &str,
    target: &Target,
    timeout: Duration,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<u8> {
    let outcome = sysfs
        .device(device)
        .and_then(|dev| wait::wait(&dev, target, timeout, POLL_INTERVAL));
    match outcome {
        Ok(Outcome::Done(s)) => {
            writeln!(
                out,
                "{device}: {} plugged={} requested={}",
                s.activity, s.plugged, s.requested
            )?;
            Ok(EXIT_OK)
        }
        Ok(Outcome::Failed(s)) => {
            writeln!(
                err,
                "vmem-status: {device}: {}: {} (plugged={}, requested={})",
                s.activity,
                s.reason.as_deref().unwrap_or("no reason given"),
                s.plugged,
                s.requested
            )?;
            Ok(EXIT_FAILED)
        }
        Ok(Outcome::TimedOut(s)) => {
            writeln!(
                err,
                "vmem-status: {device}: timeout after {} s: {}",
                format_secs(timeout),
                describe(&s)
            )?;
            Ok(EXIT_TIMEOUT)
        }
        Err(e) => {
            writeln!(err, "vmem-status: {e}")?;
            Ok(EXIT_ERROR)
        }
    }
}

/// Runs the command line `args` (without the program name); returns the exit status.
fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let cli = match parse_args(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = writeln!(err, "vmem-status: {e}\nTry 'vmem-status --help'.");
            return EXIT_ERROR;
        }
    };
    let sysfs = Sysfs::new(&cli.sysfs);
    let result = match &cli.command {
        Command::Help => out.write_all(USAGE.as_bytes()).map(|()| EXIT_OK),
        Command::Show { device, format } => show(&sysfs, device.as_deref(), *format, out, err),
        Command::Wait {
            device,
            target,
            timeout,
        } => wait_for(&sysfs, device, target, *timeout, out, err),
    };
    let result = result.and_then(|code| out.flush().map(|()| code));
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "vmem-status: writing output: {e}");
            EXIT_ERROR
        }
    }
}

fn main() -> ExitCode {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(arg) => args.push(arg),
            Err(arg) => {
                eprintln!("vmem-status: argument {arg:?} is not valid UTF-8");
                return ExitCode::from(EXIT_ERROR);
            }
        }
    }
    let code = run(&args, &mut io::stdout().lock(), &mut io::stderr().lock());
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakeTree;
    use std::thread;
    use std::time::Instant;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    /// Runs `line` against `tree`: (exit status, stdout, stderr).
    fn run_on(tree: &FakeTree, line: &str) -> (u8, String, String) {
        let mut argv = vec!["--sysfs".to_owned(), tree.sysfs().display().to_string()];
        argv.extend(args(line));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&argv, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn parses_commands() {
        let show_all = Command::Show {
            device: None,
            format: Format::Human,
        };
        assert_eq!(parse_args(&[]).unwrap().command, show_all);
        assert_eq!(parse_args(&args("show")).unwrap().command, show_all);
        assert_eq!(
            parse_args(&args("show --format kv virtio3")).unwrap(),
            Cli {
                sysfs: PathBuf::from("/sys"),
                command: Command::Show {
                    device: Some("virtio3".to_owned()),
                    format: Format::Kv,
                },
            }
        );
        assert_eq!(
            parse_args(&args(
                "--sysfs=/tmp/s wait virtio0 --size 4G+130M --timeout 2.5 --until settled"
            ))
            .unwrap(),
            Cli {
                sysfs: PathBuf::from("/tmp/s"),
                command: Command::Wait {
                    device: "virtio0".to_owned(),
                    target: Target {
                        until: Until::Settled,
                        size: Some((4 << 30) + (130 << 20)),
                    },
                    timeout: Duration::from_millis(2500),
                },
            }
        );
        assert_eq!(
            parse_args(&args("wait virtio0")).unwrap().command,
            Command::Wait {
                device: "virtio0".to_owned(),
                target: Target {
                    until: Until::Reached,
                    size: None,
                },
                timeout: DEFAULT_TIMEOUT,
            }
        );
        assert_eq!(
            parse_args(&args("wait --help")).unwrap().command,
            Command::Help
        );
        assert_eq!(parse_args(&args("help")).unwrap().command, Command::Help);
    }

    #[test]
    fn rejects_bad_command_lines() {
        for line in [
            "wait",
            "frobnicate",
            "show virtio0 virtio1",
            "show --size 4G",
            "show --timeout 3",
            "wait virtio0 --format kv",
            "wait virtio0 --size 4Q",
            "wait virtio0 --timeout -1",
            "wait virtio0 --timeout soon",
            "wait virtio0 --until done",
            "show --format json",
            "show --sysfs",
            "--verbose",
        ] {
            assert!(
                parse_args(&args(line)).is_err(),
                "{line:?} should be rejected"
            );
        }
    }

    #[test]
    fn help_describes_commands_and_exit_codes() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(&args("--help"), &mut out, &mut err), EXIT_OK);
        let out = String::from_utf8(out).unwrap();
        for word in [
            "show",
            "wait",
            "--format",
            "--until",
            "--size",
            "--timeout",
            "--sysfs",
        ] {
            assert!(out.contains(word), "{word}");
        }
        assert!(err.is_empty());
    }

    #[test]
    fn usage_errors_exit_1() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(&args("wait"), &mut out, &mut err), EXIT_ERROR);
        assert!(String::from_utf8(err).unwrap().contains("--help"));
    }

    #[test]
    fn show_kv_lists_all_devices() {
        let tree = FakeTree::new("clikv");
        tree.add_device("virtio0", &[]);
        tree.add_device("virtio1", &[("activity", "plugging\n")]);
        tree.add_other_device("virtio2");
        let (code, out, err) = run_on(&tree, "show --format kv");
        assert_eq!(code, EXIT_OK, "{err}");
        assert!(out.contains("virtio0.activity=idle\n"), "{out}");
        assert!(out.contains("virtio1.activity=plugging\n"), "{out}");
        assert!(out.contains("virtio1.stats.plug_ack=12\n"), "{out}");
        assert!(!out.contains("virtio2"), "{out}");
        // One device.
        let (code, out, _) = run_on(&tree, "show --format=kv virtio1");
        assert_eq!(code, EXIT_OK);
        assert!(out.lines().all(|l| l.starts_with("virtio1.")), "{out}");
    }

    #[test]
    fn show_human_is_the_default() {
        let tree = FakeTree::new("clihuman");
        tree.add_device("virtio0", &[]);
        tree.add_device("virtio1", &[]);
        let (code, out, _) = run_on(&tree, "");
        assert_eq!(code, EXIT_OK);
        assert!(out.starts_with("virtio0:\n"), "{out}");
        assert!(out.contains("\n\nvirtio1:\n"), "{out}");
        assert!(
            out.contains("  requested:         4294967296 (4 GiB)\n"),
            "{out}"
        );
    }

    #[test]
    fn show_unknown_device_exits_1() {
        let tree = FakeTree::new("cliunknown");
        tree.add_device("virtio0", &[]);
        tree.add_other_device("virtio1");
        let (code, out, err) = run_on(&tree, "show virtio9");
        assert_eq!(code, EXIT_ERROR);
        assert!(out.is_empty());
        assert!(err.contains("no device virtio9"), "{err}");
        let (code, _, err) = run_on(&tree, "show virtio1");
        assert_eq!(code, EXIT_ERROR);
        assert!(err.contains("not a virtio-mem device"), "{err}");
        let (code, _, err) = run_on(&tree, "wait virtio9 --timeout 0");
        assert_eq!(code, EXIT_ERROR);
        assert!(err.contains("no device virtio9"), "{err}");
    }

    #[test]
    fn show_without_devices_exits_1() {
        let tree = FakeTree::new("clinone");
        let (code, _, err) = run_on(&tree, "show");
        assert_eq!(code, EXIT_ERROR);
        assert!(err.contains("no virtio-mem device"), "{err}");
    }

    #[test]
    fn wait_succeeds_once_plugged() {
        let tree = FakeTree::new("cliwait");
        tree.add_device(
            "virtio0",
            &[
                ("requested_size", "4433379328\n"), // 4228M = 4G+132M
                ("plugged_size", "2147483648\n"),
                ("activity", "plugging\n"),
            ],
        );
        let (code, out, err) = thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(300));
                tree.set("virtio0", "plugged_size", "4433379328\n");
                tree.set("virtio0", "activity", "idle\n");
            });
            run_on(&tree, "wait virtio0 --size 4228M --timeout 10")
        });
        assert_eq!(code, EXIT_OK, "{err}");
        assert_eq!(
            out,
            "virtio0: idle plugged=4433379328 requested=4433379328\n"
        );
        assert!(err.is_empty(), "{err}");
    }

    #[test]
    fn wait_times_out_on_a_busy_device() {
        let tree = FakeTree::new("clitimeout");
        tree.add_device(
            "virtio0",
            &[
                ("plugged_size", "1073741824\n"),
                ("activity", "stalled\n"),
                ("reason", "free memory below the safety margin\n"),
            ],
        );
        let start = Instant::now();
        let (code, out, err) = run_on(&tree, "wait virtio0 --timeout 1");
        let elapsed = start.elapsed();
        assert_eq!(code, EXIT_TIMEOUT, "{err}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(
            err,
            "vmem-status: virtio0: timeout after 1 s: activity=stalled, plugged=1073741824, \
             requested=4294967296, reason=free memory below the safety margin\n"
        );
        assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }

    #[test]
    fn wait_reached_fails_when_stopped_but_settled_succeeds() {
        let tree = FakeTree::new("clistopped");
        tree.add_device(
            "virtio0",
            &[
                ("plugged_size", "0\n"),
                ("activity", "stopped\n"),
                ("reason", "device answered with undefined value 7\n"),
            ],
        );
        let (code, _, err) = run_on(&tree, "wait virtio0 --timeout 5");
        assert_eq!(code, EXIT_FAILED);
        assert!(
            err.contains("device answered with undefined value 7"),
            "{err}"
        );
        let (code, out, _) = run_on(&tree, "wait virtio0 --until settled --timeout 5");
        assert_eq!(code, EXIT_OK);
        assert_eq!(out, "virtio0: stopped plugged=0 requested=4294967296\n");
    }

    #[test]
    fn formats_seconds() {
        assert_eq!(format_secs(Duration::from_secs(300)), "300");
        assert_eq!(format_secs(Duration::from_millis(2500)), "2.5");
        assert_eq!(format_secs(Duration::from_millis(1)), "0.001");
    }
}
