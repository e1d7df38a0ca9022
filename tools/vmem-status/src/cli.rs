//! The command line, parsed with clap.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

use crate::show::Format;
use crate::size::parse_size;
use crate::sysfs::parse_seconds_ms;
use crate::wait::{Target, Until};

/// `wait --timeout` when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

const AFTER_HELP: &str = "\
Activity: idle, pending (a new request not picked up yet), plugging,
unplugging, waiting (transient; retried at retry_at), stalled (a reason in
the guest, e.g. free memory; retried at retry_at), stopped (the device
answered nonsense; nothing more until the driver is bound again), unbinding.

SIZE is bytes, or a number with a binary suffix K, M, G or T, or a sum of
those: 1073741824, 4G, 130M, 4G+130M.

Options may come anywhere after the command they belong to; --sysfs anywhere.

Exit status:
  0  done
  1  usage error, no such device, or reading sysfs failed
  2  wait timed out (the last state and reason are printed to stderr)
  3  wait --until reached: the device is stopped (the reason is printed to
     stderr)";

/// vmem-status - state of the virtio-mem devices driven by virtio_mem_rust, from sysfs
///
/// Devices are the entries of DIR/bus/virtio/devices/ (e.g. virtio0) that
/// have a virtio_mem directory, where the driver shows its attributes.
/// Without a command: show.
#[derive(Debug, Parser)]
#[command(name = "vmem-status", after_help = AFTER_HELP, args_override_self = true)]
struct Cli {
    /// The sysfs root
    #[arg(long, value_name = "DIR", default_value = "/sys", global = true)]
    sysfs: PathBuf,

    /// How show prints
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: Option<Format>,

    #[command(subcommand)]
    command: Option<CliCommand>,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// The state of every device, or of DEV (the default command)
    Show {
        /// How to print
        #[arg(long, value_enum, value_name = "FORMAT")]
        format: Option<Format>,
        /// A device, e.g. virtio0
        dev: Option<String>,
    },
    /// Block until DEV is done
    ///
    /// Sleeps in poll(2) on DEV's activity attribute, and re-reads the state
    /// at least once a second. When done, prints: DEV: ACTIVITY
    /// plugged=BYTES requested=BYTES
    Wait {
        /// A device, e.g. virtio0
        dev: String,
        /// Also require requested_size to be SIZE
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        size: Option<u64>,
        /// Give up after SECS seconds (default 300, decimals allowed)
        #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
        timeout: Option<Duration>,
        /// When DEV is done
        #[arg(long, value_enum, value_name = "WHEN", default_value = "reached")]
        until: Until,
    },
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    parse_seconds_ms(text)
        .map(Duration::from_millis)
        .ok_or_else(|| "takes seconds, e.g. 300 or 0.5".to_owned())
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub sysfs: PathBuf,
    pub command: Command,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
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

/// Parses `args`, the program name first. Asking for help is an error of
/// kind [`ErrorKind::DisplayHelp`], which carries the text.
pub fn parse_args<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    let command = match cli.command {
        None => Command::Show {
            device: None,
            format: cli.format.unwrap_or(Format::Human),
        },
        Some(CliCommand::Show { format, dev }) => Command::Show {
            device: dev,
            format: format.or(cli.format).unwrap_or(Format::Human),
        },
        Some(CliCommand::Wait {
            dev,
            size,
            timeout,
            until,
        }) => {
            // `--format` before `wait` parses as the default command's.
            if cli.format.is_some() {
                return Err(
                    Cli::command().error(ErrorKind::ArgumentConflict, "--format is for show")
                );
            }
            Command::Wait {
                device: dev,
                target: Target { until, size },
                timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
            }
        }
    };
    Ok(Invocation {
        sysfs: cli.sysfs,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Invocation, clap::Error> {
        parse_args(std::iter::once("vmem-status").chain(line.split_whitespace()))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_commands() {
        let show_all = Command::Show {
            device: None,
            format: Format::Human,
        };
        assert_eq!(parse("").unwrap().command, show_all);
        assert_eq!(parse("show").unwrap().command, show_all);
        assert_eq!(
            parse("show --format kv virtio3").unwrap(),
            Invocation {
                sysfs: PathBuf::from("/sys"),
                command: Command::Show {
                    device: Some("virtio3".to_owned()),
                    format: Format::Kv,
                },
            }
        );
        for line in [
            "--format kv",
            "--format=kv show",
            "show virtio3 --format=kv",
        ] {
            assert!(
                matches!(
                    parse(line).unwrap().command,
                    Command::Show {
                        format: Format::Kv,
                        ..
                    }
                ),
                "{line}"
            );
        }
        assert_eq!(
            parse("--sysfs=/tmp/s wait virtio0 --size 4G+130M --timeout 2.5 --until settled")
                .unwrap(),
            Invocation {
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
            parse("wait virtio0").unwrap().command,
            Command::Wait {
                device: "virtio0".to_owned(),
                target: Target {
                    until: Until::Reached,
                    size: None,
                },
                timeout: DEFAULT_TIMEOUT,
            }
        );
        // --sysfs after the command, as the tests' with_scaled_timeouts
        // leaves options where they were.
        assert_eq!(
            parse("wait virtio7 --timeout 300 --sysfs /x")
                .unwrap()
                .sysfs,
            PathBuf::from("/x")
        );
    }

    #[test]
    fn help_is_not_an_error() {
        for line in [
            "--help",
            "-h",
            "help",
            "wait --help",
            "show -h",
            "help wait",
        ] {
            let err = parse(line).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::DisplayHelp, "{line}");
            assert!(!err.use_stderr(), "{line}");
        }
    }

    #[test]
    fn rejects_bad_command_lines() {
        for line in [
            "wait",
            "frobnicate",
            "virtio0",
            "show virtio0 virtio1",
            "show --size 4G",
            "show --timeout 3",
            "wait virtio0 --format kv",
            "--format kv wait virtio0",
            "wait virtio0 --size 4Q",
            "wait virtio0 --timeout -1",
            "wait virtio0 --timeout soon",
            "wait virtio0 --timeout 1.2345",
            "wait virtio0 --until done",
            "show --format json",
            "show --sysfs",
            "--verbose",
        ] {
            let err = parse(line).expect_err(&format!("{line:?} should be rejected"));
            assert!(err.use_stderr(), "{line:?}");
        }
    }
}
