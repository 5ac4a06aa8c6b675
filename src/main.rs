//! The `dfget` binary: parse arguments, then either run the daemon (`dfget daemon`) or ask one for a
//! download (`dfget -u URL -O OUT`). Errors are printed once, as a chain, and mapped to exit codes.

use std::process::ExitCode;

use clap::Parser;
use dfget::client::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Daemon(args)) => match client::run_daemon(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dfget daemon: {e:#}");
                ExitCode::from(client::EXIT_DAEMON)
            }
        },
        Some(Command::Tasks(args)) => client::run_tasks(args),
        None => client::run_download(cli.download),
    }
}
