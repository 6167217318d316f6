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
    let args = cli::Cli::parse();
    let status = cli::dispatch(args);
    ExitCode::from(status)
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
