//! The API server: one thread accepting connections on the VM's Unix
//! socket, one short-lived thread per connection.
//!
//! The socket is created inside the private runtime directory (mode 0700,
//! see [`super::runtime`]) and is itself made owner-only (0600) before
//! the server accepts anything. At most [`MAX_CONNECTIONS`] connections
//! are served at once (a console stream is one); more get 503. A
//! connection that sends nothing for [`READ_TIMEOUT`] is dropped.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http::{read_request, HttpError, Response};
use super::routes::{self, Routed};
use alcazar_vmm::vm::VmHandle;

use crate::hub::ConsoleHub;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a connection may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Binding or securing the socket failed.
    #[error("API socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another live VMM serves this socket.
    #[error("API socket {0}: another VM is serving it; pick another --name or --api-socket")]
    InUse(PathBuf),
    /// Something that is not a socket is at the path: it is left alone.
    #[error(
        "API socket {path}: {what} is there (Alcazar removes only stale sockets); give a path where nothing is"
    )]
    Occupied {
        /// The socket path.
        path: PathBuf,
        /// What is there.
        what: &'static str,
    },
    /// The path cannot hold a socket.
    #[error("API socket {path}: {problem}; {fix}")]
    BadPath {
        /// The socket path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: &'static str,
    },
}

/// Most bytes of a Unix socket path (`sun_path` is 108 bytes, one for the
/// terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

fn check_path(path: &Path) -> Result<(), ApiError> {
    use std::os::unix::ffi::OsStrExt;
    let bad = |problem: String, fix| ApiError::BadPath {
        path: path.to_path_buf(),
        problem,
        fix,
    };
    let len = path.as_os_str().as_bytes().len();
    if len > MAX_SOCKET_PATH {
        return Err(bad(
            format!("{len} bytes, more than the {MAX_SOCKET_PATH} a Unix socket path may have"),
            "use a shorter path",
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(bad(
            format!("directory {} does not exist", dir.display()),
            "create it, or give a path in an existing directory",
        ));
    }
    match super::runtime::occupant(path) {
        super::runtime::Occupant::Nothing => Ok(()),
        super::runtime::Occupant::LiveSocket => Err(ApiError::InUse(path.to_path_buf())),
        super::runtime::Occupant::StaleSocket => {
            super::runtime::remove_stale(path);
            Ok(())
        }
        super::runtime::Occupant::Other(what) => Err(ApiError::Occupied {
            path: path.to_path_buf(),
            what,
        }),
    }
}

/// The VM the API serves. A reboot builds a new VM; the runner swaps it
/// in with [`ApiVm::set`] and clients keep the same socket.
#[derive(Debug)]
pub struct ApiVm {
    vm: RwLock<VmHandle>,
    hub: Arc<ConsoleHub>,
    pid: u32,
}

impl ApiVm {
    /// Serves `vm`, whose terminal output goes into `hub` (through a
    /// [`crate::hub::HubTerminal`]).
    pub fn new(vm: VmHandle, hub: Arc<ConsoleHub>) -> Arc<Self> {
        Arc::new(ApiVm {
            vm: RwLock::new(vm),
            hub,
            pid: std::process::id(),
        })
    }

    /// The console output kept for attach clients.
    pub fn hub(&self) -> &Arc<ConsoleHub> {
        &self.hub
    }

    /// The VM now.
    pub fn get(&self) -> VmHandle {
        self.vm.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Serves `vm` from now on (after a reboot).
    pub fn set(&self, vm: VmHandle) {
        *self.vm.write().unwrap_or_else(|p| p.into_inner()) = vm;
    }

    /// The serving process.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// A bound API socket, not yet served: binding first reserves the VM's
/// name before the VM is built (two VMMs starting at once cannot both
/// take it). Dropping it unserved removes the socket.
#[derive(Debug)]
pub struct ApiListener {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl ApiListener {
    /// Binds `path` and makes it owner-only (0600). A live socket there
    /// is [`ApiError::InUse`]; a stale one is replaced; anything else
    /// there (a file, a directory, a link) is [`ApiError::Occupied`] and
    /// stays untouched.
    pub fn bind(path: &Path) -> Result<ApiListener, ApiError> {
        let socket_err = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                ApiError::InUse(path.to_path_buf())
            } else {
                ApiError::Socket {
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        // Deciding that a socket is stale and binding a new one must be
        // one step for every VMM: between bind() and listen() another
        // process's socket refuses connections and would look stale.
        let _binding = super::runtime::DirectoryLock::take(path);
        check_path(path)?;
        let listener = UnixListener::bind(path).map_err(socket_err)?;
        let bound = ApiListener {
            path: path.to_path_buf(),
            listener: Some(listener),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(socket_err)?;
        Ok(bound)
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives up the listening socket without removing its file: for a
    /// process that hands the bound socket to another (`run --detach`
    /// binds the name, then passes the descriptor to the VMM it starts).
    pub fn into_fd(mut self) -> Option<std::os::fd::OwnedFd> {
        self.listener.take().map(std::os::fd::OwnedFd::from)
    }

    /// Takes over a socket another process bound at `path` and handed
    /// down as descriptor `fd` (see [`ApiListener::into_fd`]): it must be
    /// a listening Unix socket bound to exactly that path.
    pub fn adopt(path: &Path, fd: std::os::fd::OwnedFd) -> Result<ApiListener, ApiError> {
        let listener = UnixListener::from(fd);
        let bound_here = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            .is_some_and(|p| p == path);
        if !bound_here {
            return Err(ApiError::BadPath {
                path: path.to_path_buf(),
                problem: "the inherited descriptor is not a socket bound there".into(),
                fix: "start detached VMs with `alcazar run --detach`",
            });
        }
        Ok(ApiListener {
            path: path.to_path_buf(),
            listener: Some(listener),
        })
    }

    /// Serves `vm` on a background thread.
    pub fn serve(mut self, vm: Arc<ApiVm>) -> Result<ApiServer, ApiError> {
        let path = self.path.clone();
        let socket_err = |source| ApiError::Socket {
            path: path.clone(),
            source,
        };
        let Some(listener) = self.listener.take() else {
            return Err(socket_err(std::io::Error::other("already served")));
        };
        // A second descriptor for the same listening socket: shutdown(2)
        // on it wakes the accept loop (see [`ApiServer::shutdown`]).
        let waker = listener.try_clone().map_err(socket_err)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let (s, a) = (stopping.clone(), active.clone());
        let accept = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || accept_loop(&listener, &vm, &s, &a));
        let accept = match accept {
            Ok(t) => t,
            Err(e) => {
                super::runtime::remove_stale(&path);
                return Err(socket_err(e));
            }
        };
        Ok(ApiServer {
            path: path.clone(),
            waker,
            stopping,
            active,
            accept: Some(accept),
        })
    }
}

impl Drop for ApiListener {
    fn drop(&mut self) {
        if self.listener.is_some() {
            super::runtime::remove_stale(&self.path);
        }
    }
}

/// A running API server; dropping it (or [`ApiServer::shutdown`]) stops
/// accepting, lets requests in flight finish, and removes the socket.
#[derive(Debug)]
pub struct ApiServer {
    path: PathBuf,
    /// The listening socket, shut down to end the accept loop.
    waker: UnixListener,
    stopping: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Binds `path` (mode 0600) and serves `vm` on a background thread.
    pub fn start(path: &Path, vm: Arc<ApiVm>) -> Result<ApiServer, ApiError> {
        ApiListener::bind(path)?.serve(vm)
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the server: no new connections; waits up to 2 s for the
    /// requests in flight (a `stop` request is answered before the VMM
    /// exits); removes the socket.
    pub fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop: shutting a listening Unix socket down
        // makes a blocked accept(2) fail with EINVAL. (Connecting to our
        // own socket would also wake it, but would need `connect` in the
        // seccomp filter, which cannot be narrowed to one address.)
        // SAFETY: shutdown(2) on a descriptor we own; no memory involved.
        unsafe { libc::shutdown(self.waker.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = accept.join();
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        super::runtime::remove_stale(&self.path);
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(
    listener: &UnixListener,
    vm: &Arc<ApiVm>,
    stopping: &AtomicBool,
    active: &Arc<AtomicUsize>,
) {
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = conn else {
            // Out of descriptors (EMFILE) and the like: do not spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = Response::error(503, format!("more than {MAX_CONNECTIONS} connections"))
                .write_to(&mut stream);
            continue;
        }
        let (vm, count) = (vm.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("api-conn".into())
            .spawn(move || {
                serve(stream, &vm);
                count.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Answers one connection.
fn serve(mut stream: UnixStream, vm: &Arc<ApiVm>) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let request = match read_request(&mut stream) {
        Ok(r) => r,
        Err(e) => {
            let status = match e {
                HttpError::TooLarge(_) => 413,
                _ => 400,
            };
            let _ = Response::error(status, e.to_string()).write_to(&mut stream);
            return;
        }
    };
    tracing::debug!(method = %request.method, path = %request.path, "API request");
    match routes::route(vm, &request) {
        Routed::Reply(response) => {
            let _ = response.write_to(&mut stream);
        }
        Routed::Console { from } => {
            let _ = stream.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: alcazar-console\r\nConnection: Upgrade\r\n\r\n",
            );
            let _ = stream.set_read_timeout(None);
            super::attach::stream(stream, vm, from);
        }
    }
}
