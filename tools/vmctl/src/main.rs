//! The `vmctl` command; see `vmctl --help` and the library documentation.

use std::io;
use std::process::ExitCode;

use clap::Parser;
use vmctl::cli::{self, Cli};

fn main() -> ExitCode {
    // A usage error ends the process here with status 2, --help with 0.
    let cli = Cli::parse();
    let options = cli
        .options(std::env::var(cli::SOCKET_ENV).ok())
        .unwrap_or_else(|e| e.exit());
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = cli::connect(&options)
        .and_then(|mut client| cli::run(&mut client, &options, &cli.command, &mut out));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmctl: {e}");
            ExitCode::FAILURE
        }
    }
}
