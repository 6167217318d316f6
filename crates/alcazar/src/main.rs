//! `alcazar`: the command-line front end of the Alcazar VMM.
//!
//! Exit status: the guest's debug-exit status `(v << 1) | 1`, 0 on a clean
//! power-off, 1 on a VMM or guest failure, 2 on a usage or config error.

#[cfg(feature = "kit")]
mod bench;
mod cli;
mod control;
mod guest;
#[cfg(feature = "kit")]
mod kit;
mod launch;
mod signals;
mod terminal;
mod virtio_flags;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    init_logging();
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => return usage_error(&e),
    };
    let status = cli::dispatch(args);
    ExitCode::from(status)
}

/// A command line clap refused, as one line with its hint (status 2);
/// `--help` and `--version` print as clap renders them (status 0).
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                2
            } else {
                0
            },
        );
    }
    let text = e.render().to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let what = lines
        .first()
        .map_or("bad arguments", |l| l.trim_start_matches("error: "));
    let tip = lines
        .iter()
        .find_map(|l| l.strip_prefix("tip: "))
        .map(|t| format!(" ({t})"))
        .unwrap_or_default();
    eprintln!("alcazar: {what}{tip}; see `alcazar --help` or `alcazar COMMAND --help`");
    ExitCode::from(2)
}

/// Logs go to stderr, filtered by `ALCAZAR_LOG` (default: warnings), so
/// that the guest console on stdout never mixes with them.
///
/// The default leaves out the virtio-queue crate's messages: it logs at
/// error level whenever the guest writes an invalid queue size or places
/// a ring outside its RAM, so a guest could fill the log (a detached VM's
/// is a file) at will. The transport reports those itself, rate-limited.
const DEFAULT_LOG_FILTER: &str = "warn,virtio_queue=off";

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALCAZAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colours only for a terminal: a detached VM's log is a file.
    // SAFETY: isatty only inspects the descriptor.
    let ansi = unsafe { libc::isatty(libc::STDERR_FILENO) } == 1;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
