//! `vmem-status`: the state of virtio-mem devices driven by `virtio_mem_rust`, read from
//! sysfs inside the guest, and a wait for a resize to finish. See `vmem-status --help`.

mod cli;
mod poll;
mod show;
mod size;
mod sysfs;
#[cfg(test)]
mod testutil;
mod wait;

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use cli::{Command, Invocation};
use show::Format;
use sysfs::{Status, Sysfs};
use wait::{Outcome, Target};

/// Success.
const EXIT_OK: u8 = 0;
/// Usage error (not clap's 2, which is the timeout here), device not found, reading sysfs
/// failed.
const EXIT_ERROR: u8 = 1;
/// `wait` timed out.
const EXIT_TIMEOUT: u8 = 2;
/// `wait --until reached` found the device stopped.
const EXIT_FAILED: u8 = 3;

/// The longest `wait` sleeps between two reads of the state, notification or not.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

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
fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv =
        std::iter::once(OsString::from("vmem-status")).chain(args.into_iter().map(Into::into));
    let Invocation { sysfs, command } = match cli::parse_args(argv) {
        Ok(invocation) => invocation,
        // Help goes to stdout and succeeds; a usage error goes to stderr.
        Err(e) if !e.use_stderr() => {
            return match out.write_all(e.render().to_string().as_bytes()) {
                Ok(()) => EXIT_OK,
                Err(_) => EXIT_ERROR,
            };
        }
        Err(e) => {
            let _ = err.write_all(e.render().to_string().as_bytes());
            return EXIT_ERROR;
        }
    };
    let sysfs = Sysfs::new(&sysfs);
    let result = match &command {
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
    let code = run(
        std::env::args_os().skip(1),
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    );
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
    fn help_describes_commands_and_exit_codes() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(args("--help"), &mut out, &mut err), EXIT_OK);
        let out = String::from_utf8(out).unwrap();
        for word in [
            "show",
            "wait",
            "--format",
            "--sysfs",
            "Exit status",
            "stopped",
        ] {
            assert!(out.contains(word), "{word}");
        }
        assert!(err.is_empty());
        // A command's help, with its options and their values.
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(args("wait --help"), &mut out, &mut err), EXIT_OK);
        let out = String::from_utf8(out).unwrap();
        for word in [
            "--until",
            "reached",
            "settled",
            "--size",
            "--timeout",
            "poll(2)",
        ] {
            assert!(out.contains(word), "{word}");
        }
        assert!(err.is_empty());
    }

    #[test]
    fn usage_errors_exit_1() {
        for line in ["wait", "wait virtio0 --until done", "virtio0"] {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            assert_eq!(run(args(line), &mut out, &mut err), EXIT_ERROR, "{line}");
            assert!(out.is_empty(), "{line}");
            assert!(String::from_utf8(err).unwrap().contains("--help"), "{line}");
        }
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
