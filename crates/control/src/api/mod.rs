//! The control API: HTTP/JSON on a Unix socket, one per running VM.
//!
//! * [`runtime`] — where the sockets live and how a name finds its VM;
//! * [`http`] — the small HTTP/1.1 reader and writer both sides use;
//! * [`server`] — the accept loop and the connection threads;
//! * [`routes`] — the endpoints (described by `docs/api/openapi.json`);
//! * [`attach`] — the upgraded console stream (`alcazar console`);
//! * [`client`] — what the `alcazar` CLI verbs call.

pub mod attach;
pub mod client;
pub mod http;
pub mod routes;
pub mod runtime;
pub mod server;

pub use server::{ApiError, ApiListener, ApiServer, ApiVm};
