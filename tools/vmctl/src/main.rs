//! The `vmctl` command; see `vmctl --help` and the library documentation.

use std::io::{self, Write};
use std::process::ExitCode;

use vmctl::cli::{self, Command};

fn main() -> ExitCode {
    let socket_env = std::env::var(cli::SOCKET_ENV).ok();
    let (options, command) = match cli::parse_args(std::env::args().skip(1), socket_env) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("vmctl: {e}");
            return ExitCode::from(2);
        }
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if command == Command::Help {
        return match out.write_all(cli::USAGE.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let result = cli::connect(&options)
        .and_then(|mut client| cli::run(&mut client, &options, &command, &mut out));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmctl: {e}");
            ExitCode::FAILURE
        }
    }
}
