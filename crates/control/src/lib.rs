//! # alcazar-control
//!
//! The control plane around a running VM: what a VMM *process* adds to the
//! embeddable library ([`alcazar_vmm`]). An embedder that only wants a VM
//! never needs this crate; the `alcazar` command uses all of it.
//!
//! * [`api`] — the per-VM HTTP/JSON API on a Unix socket (server, routes,
//!   the console attach stream, the client the CLI verbs call), described
//!   by `docs/api/openapi.json`;
//! * [`hub`] — the [`hub::ConsoleHub`]: the guest console's recent output,
//!   kept for clients that attach and detach, and the terminal tee that
//!   feeds it (a [`alcazar_vmm::console::HostTerminal`]);
//! * [`prometheus`] — telemetry in the Prometheus text format;
//! * [`sandbox`] — the seccomp filter the VMM process runs under.

pub mod api;
pub mod hub;
pub mod prometheus;
pub mod sandbox;
