//! The `dfget` binary: parse arguments, then either run the daemon (`dfget daemon`) or ask one for a
//! download (`dfget -u URL -O OUT`, a list with `-i`, `dfget prefetch`). Errors are printed once, as
//! a chain, and mapped to exit codes.
//! The one place that knows both sides: `client` and `daemon` never import each other.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dfget::client::{self, DownloadArgs, PrefetchArgs, TasksArgs};
use dfget::daemon::{self, DaemonArgs};

const AFTER_HELP: &str = "\
URLs: http://, https://, and oras://[registry/]repo[:tag|@sha256:HEX] for SIF images in an OCI
registry (ORAS, as Apptainer/Singularity pull them).

Exit codes: 0 success; 1 download failed (origin, digest, disk), or with -i: an entry failed;
2 bad arguments or request, or the list cannot be read; 3 no daemon reachable or the daemon failed
to start; 4 --timeout elapsed.

Examples:
  dfget daemon                                   run the daemon (config /etc/dragonfly/dfget.yaml)
  dfget -u https://example.com/f.iso -O f.iso    download through the daemon
  dfget -u oras://registry.example/lab/img:v1 -O img.sif        a SIF image via ORAS
  dfget -i list.txt -O downloads/                every entry of an aria2c-style list
  printf 'https://h/a.bin\\n  out=b.bin\\n' | dfget -i - -O .   a list from standard input
  dfget prefetch -i list.txt                     warm the cache only, no output files
  dfget completions bash > /etc/bash_completion.d/dfget";

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
    /// Fetch URLs (or a list's entries) into the daemon's cache only, writing no output files:
    /// a later `dfget -u URL -O OUT` is a cache hit.
    Prefetch(PrefetchArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
        Some(Command::Prefetch(args)) => client::run_prefetch(args),
        Some(Command::Completions { shell }) => {
            client::run_completions(&mut <Cli as clap::CommandFactory>::command(), shell)
        }
        None => client::run_download(cli.download),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
