//! User-mode networking: the passt process the VMM starts for a
//! `virtio-net` card with `user = true` (`--net user`), and connecting to
//! a passt socket (passt(1), "qemu mode").
//!
//! [`PasstProcess::start`] makes a private directory (mode 0700, under
//! `$XDG_RUNTIME_DIR` or the temporary directory), runs `passt
//! --foreground --quiet --socket DIR/passt.socket` with its standard error
//! in `DIR/passt.err` and a `-t`/`-u` option per port forward, in its own
//! process group,
//! and waits (at most [`START_TIMEOUT`]) for the socket to appear; a passt
//! that exits first is reported with the last line it logged. Dropping
//! the [`PasstProcess`] kills and reaps passt and removes the socket, the
//! logs and the directory, so neither a process nor a file is left behind
//! on any path that unwinds (a failed start, a VM that fails to build, the
//! end of the VM).
//!
//! passt started as root drops its capabilities and changes to user
//! `nobody` before it binds its socket (and would fail to bind in a
//! root-owned private directory): as root the VMM gives the directory to
//! `nobody` and says `--runas` so.
//!
//! passt serves one client at a time and takes a new one when the last
//! closes, so a rebooted VM connects again to the same passt.
//!
//! The guest sees passt's defaults: the host's address and default
//! gateway, by DHCP; DNS servers from the host's `/etc/resolv.conf`
//! (queries leave as ordinary UDP); TCP connections to the gateway's
//! address reach the host's loopback (passt maps them, see `--no-map-gw`).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::config::net::{HostFwd, NetBackendConfig};

/// The longest passt may take to create its socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a connection attempt retries while passt is not yet
/// listening.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why passt could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    /// No `passt` on `PATH`.
    #[error("passt is not installed (install it with `apt-get install passt`)")]
    NotInstalled,
    /// The private directory could not be made.
    #[error("cannot create the directory {path:?} for passt's socket: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The program could not be run.
    #[error("cannot run {program:?}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// passt ended before its socket appeared.
    #[error("passt exited ({status}): {detail}")]
    Exited {
        /// How it ended.
        status: std::process::ExitStatus,
        /// The last line it logged.
        detail: String,
    },
    /// No socket within [`START_TIMEOUT`].
    #[error("passt did not create its socket within {0:?}")]
    Timeout(Duration),
    /// Connecting to the socket failed.
    #[error("cannot connect to passt at {path:?}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A passt the VMM started; dropped, it is killed, reaped and its files
/// removed.
#[derive(Debug)]
pub struct PasstProcess {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
}

/// Where `passt` is: the first `passt` on `PATH` that is a file.
pub fn find_passt() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("passt"))
        .find(|p| p.is_file())
}

/// The uid and gid of user `nobody` (65534 if it has no entry).
fn nobody() -> (u32, u32) {
    let name = c"nobody";
    // SAFETY: `passwd` is plain data; all zeros is a valid value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: the name is a C
    // string, `pwd` and `out` are ours, `buf` has the length given.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if rc == 0 && !out.is_null() {
        (pwd.pw_uid, pwd.pw_gid)
    } else {
        (65534, 65534)
    }
}

/// A new private directory for passt's socket.
fn private_dir() -> Result<PathBuf, PasstError> {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let dir = base.join(format!("alcazar-passt-{}-{n}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| PasstError::Dir {
            path: dir.clone(),
            source,
        })?;
    Ok(dir)
}

impl PasstProcess {
    /// Starts passt with port forwards `hostfwd` and waits for its socket.
    pub fn start(hostfwd: &[HostFwd]) -> Result<PasstProcess, PasstError> {
        let program = find_passt().ok_or(PasstError::NotInstalled)?;
        let dir = private_dir()?;
        // From here on, dropping `process` cleans up.
        let mut process = PasstProcess {
            child: None,
            socket: dir.join("passt.socket"),
            dir,
        };
        let mut command = Command::new(&program);
        command
            .args(["--foreground", "--quiet", "--socket"])
            .arg(&process.socket);
        for f in hostfwd {
            command.args(f.passt_args());
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let (uid, gid) = nobody();
            std::os::unix::fs::chown(&process.dir, Some(uid), Some(gid)).map_err(|source| {
                PasstError::Dir {
                    path: process.dir.clone(),
                    source,
                }
            })?;
            command.arg("--runas").arg(format!("{uid}:{gid}"));
        }
        let stderr =
            File::create(process.dir.join("passt.err")).map_err(|source| PasstError::Dir {
                path: process.dir.clone(),
                source,
            })?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|source| PasstError::Spawn {
                program: program.clone(),
                source,
            })?;
        tracing::info!(pid = child.id(), socket = ?process.socket, "passt started");
        process.child = Some(child);
        process.wait_for_socket()?;
        Ok(process)
    }

    fn wait_for_socket(&mut self) -> Result<(), PasstError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(PasstError::Exited {
                        status,
                        detail: self.last_log_line(),
                    });
                }
            }
            let is_socket = std::fs::symlink_metadata(&self.socket)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            if is_socket {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PasstError::Timeout(START_TIMEOUT));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last line passt wrote to its standard error that says
    /// something (not its complaints that there is no syslog).
    fn last_log_line(&self) -> String {
        std::fs::read_to_string(self.dir.join("passt.err"))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && !l.starts_with("Failed to send"))
            .map(str::to_string)
            .unwrap_or_else(|| "it logged nothing".into())
    }

    /// passt's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// passt's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for PasstProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An unreaped child keeps its pid: the kill cannot hit
            // another process.
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
            }
            tracing::info!(pid = child.id(), "passt ended");
        }
        for f in ["passt.socket", "passt.err"] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::warn!("cannot remove passt's directory {:?}: {e}", self.dir);
        }
    }
}

/// Connects to passt's socket at `path`, retrying for
/// [`CONNECT_TIMEOUT`] while it is not yet listening.
pub fn connect(path: &Path) -> Result<OwnedFd, PasstError> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(OwnedFd::from(s)),
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(source) => {
                return Err(PasstError::Connect {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// The config error for card `spec` whose passt failed.
pub fn config_error(spec: &crate::config::DeviceSpec, e: &PasstError) -> crate::ConfigError {
    let (key, value) = match &spec.config {
        crate::config::DeviceConfig::VirtioNet(c) => match &c.backend {
            NetBackendConfig::Passt { socket } => ("passt", format!("{socket:?}")),
            _ => ("user", "true".to_string()),
        },
        _ => ("class", format!("\"{}\"", spec.class())),
    };
    let fix = match e {
        PasstError::NotInstalled => "apt-get install passt",
        PasstError::Exited { .. } => "check the port forwards (a host port in use, or below 1024)",
        PasstError::Connect { .. } => "start passt first (passt -s SOCKET), or use --net user",
        _ => "check that the temporary directory is writable",
    };
    crate::ConfigError::new(spec.key(key), value, e.to_string(), fix)
}

/// Starts a passt for every card of `config` with user networking and
/// points the card at its socket (`Passt { socket }`), so that building
/// the VM — again after a reboot, when the process may no longer start
/// programs — only connects. The processes end when the returned list is
/// dropped.
pub fn start_user_networks(
    config: &mut crate::VmConfig,
) -> Result<Vec<PasstProcess>, crate::ConfigError> {
    let mut started = Vec::new();
    for spec in &mut config.devices {
        let crate::config::DeviceConfig::VirtioNet(c) = &spec.config else {
            continue;
        };
        let NetBackendConfig::User { hostfwd } = &c.backend else {
            continue;
        };
        let process = PasstProcess::start(hostfwd).map_err(|e| config_error(spec, &e))?;
        let socket = process.socket().to_path_buf();
        started.push(process);
        if let crate::config::DeviceConfig::VirtioNet(c) = &mut spec.config {
            c.backend = NetBackendConfig::Passt { socket };
        }
    }
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether passt is here; fails under `ALCAZAR_REQUIRE_PASST=1` (CI).
    fn passt_here(test: &str) -> bool {
        let here = find_passt().is_some();
        if !here {
            if std::env::var("ALCAZAR_REQUIRE_PASST").as_deref() == Ok("1") {
                panic!("{test}: passt required (ALCAZAR_REQUIRE_PASST=1) but not installed");
            }
            eprintln!("SKIPPED {test}: passt is not installed (apt-get install passt)");
        }
        here
    }

    #[test]
    fn a_started_passt_leaves_nothing_behind() {
        if !passt_here("a_started_passt_leaves_nothing_behind") {
            return;
        }
        let p = PasstProcess::start(&[]).expect("passt starts");
        let (dir, pid) = (p.dir.clone(), p.pid().expect("running"));
        assert!(p.socket().exists());
        let _fd = connect(p.socket()).expect("it accepts a client");
        drop(p);
        assert!(!dir.exists(), "the directory is gone");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        assert!(stat.is_err(), "the process is reaped: {stat:?}");
    }

    #[test]
    fn a_passt_that_fails_is_reported_with_its_last_line_and_cleaned_up() {
        if !passt_here("a_passt_that_fails_is_reported_with_its_last_line_and_cleaned_up") {
            return;
        }
        // 1.2.3.4 is no address of this host: passt cannot bind it.
        let bad = HostFwd::parse("tcp:1.2.3.4:9-:9").expect("parses");
        match PasstProcess::start(&[bad]) {
            Err(PasstError::Exited { detail, .. }) => {
                assert!(detail.contains("Failed to bind"), "{detail}")
            }
            other => panic!("unexpected: {other:?}"),
        }
        let pattern = format!("alcazar-passt-{}-", std::process::id());
        let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&pattern))
            .filter(|e| {
                std::fs::read_to_string(e.path().join("passt.err"))
                    .is_ok_and(|t| t.contains("1.2.3.4"))
            })
            .collect();
        assert!(left.is_empty(), "no directory left: {left:?}");
    }

    #[test]
    fn connecting_to_a_missing_socket_is_an_error() {
        let e = connect(Path::new("/nonexistent/passt.socket")).unwrap_err();
        assert!(matches!(e, PasstError::Connect { .. }), "{e}");
    }
}
