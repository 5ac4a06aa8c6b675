//! The `dfget` binary: parse arguments, then either run the daemon (`dfget daemon`) or ask one for a
//! download (`dfget -u URL -O OUT`). Errors are printed once, as a chain, and mapped to exit codes.
//! The one place that knows both sides: `client` and `daemon` never import each other.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dfget::client::{self, DownloadArgs, TasksArgs};
use dfget::daemon::{self, DaemonArgs};

const AFTER_HELP: &str = "\
Exit codes: 0 success; 1 download failed (origin, digest, disk); 2 bad arguments or request;
3 no daemon reachable or the daemon failed to start; 4 --timeout elapsed.

Examples:
  dfget daemon                                   run the daemon (config /etc/dragonfly/dfget.yaml)
  dfget -u https://example.com/f.iso -O f.iso    download through the daemon";

#[derive(Debug, Parser)]
#[command(name = "dfget", version, about = "Dragonfly-compatible downloader: dfget and its daemon", after_help = AFTER_HELP)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    download: DownloadArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the download daemon in the foreground.
    Daemon(DaemonArgs),
    /// Inspect and manage the daemon's task cache.
    Tasks(TasksArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Daemon(args)) => match daemon::run_with_args(args) {
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
