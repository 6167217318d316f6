//! Naming a VM, placing its API socket, and `run --detach`.
//!
//! A detached VM is this same program run again in the background, with
//! the same arguments (less `--detach`, plus the chosen `--name` and
//! `--api-socket`), in a session of its own so the terminal's signals do
//! not reach it, its stdin and stdout on /dev/null and its stderr (the
//! VMM's messages) in `<runtime dir>/<name>.log`. The parent checks the
//! configuration first (so a bad flag is reported right there), waits
//! until the child's API answers, prints the VM's name and returns.

use std::os::fd::FromRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alcazar_control::api::{runtime, ApiError, ApiListener};
use alcazar_vmm::config::VmConfig;
use alcazar_vmm::ConfigError;

/// Why a VM could not be named or its API socket placed.
#[derive(Debug)]
pub enum LaunchError {
    /// A flag's value is wrong.
    Config(ConfigError),
    /// The API socket cannot be bound.
    Api(ApiError),
    /// The runtime directory is unusable.
    Runtime(runtime::RuntimeError),
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchError::Config(e) => write!(f, "config error: {e}"),
            LaunchError::Api(e) => e.fmt(f),
            LaunchError::Runtime(e) => e.fmt(f),
        }
    }
}

impl LaunchError {
    /// The exit status: 2 for what the user can fix by another flag.
    pub fn status(&self) -> u8 {
        match self {
            LaunchError::Config(_)
            | LaunchError::Api(
                ApiError::InUse(_) | ApiError::Occupied { .. } | ApiError::BadPath { .. },
            ) => 2,
            LaunchError::Runtime(runtime::RuntimeError::BadName(_)) => 2,
            _ => 1,
        }
    }
}

impl From<ConfigError> for LaunchError {
    fn from(e: ConfigError) -> Self {
        LaunchError::Config(e)
    }
}

impl From<ApiError> for LaunchError {
    fn from(e: ApiError) -> Self {
        LaunchError::Api(e)
    }
}

impl From<runtime::RuntimeError> for LaunchError {
    fn from(e: runtime::RuntimeError) -> Self {
        LaunchError::Runtime(e)
    }
}

/// Applies `--name` and resolves where the API socket goes (`None`: no
/// API, `--api-socket none`). An explicit `--name` that is taken is an
/// error; an automatic name another running VM has gets a `-2`, `-3`,
/// ... suffix when the socket is bound ([`bind_api`]).
pub fn api_socket(
    name: &Option<String>,
    api: Option<&str>,
    config: &mut VmConfig,
) -> Result<Option<PathBuf>, LaunchError> {
    if let Some(n) = name {
        runtime::check_name(n).map_err(|e| {
            ConfigError::new(
                "--name",
                format!("\"{n}\""),
                e.to_string(),
                "pick another name",
            )
        })?;
        config.name = n.clone();
    }
    match api {
        Some("none") => return Ok(None),
        Some(path) if !path.is_empty() => return Ok(Some(PathBuf::from(path))),
        Some(_) => {
            return Err(ConfigError::new(
                "--api-socket",
                "\"\"",
                "empty path",
                "give a socket path, or none",
            )
            .into())
        }
        None => {}
    }
    runtime::check_name(&config.name).map_err(|e| {
        ConfigError::new(
            "name",
            format!("\"{}\"", config.name),
            e.to_string(),
            "use --name",
        )
    })?;
    let dir = runtime::socket_dir();
    runtime::ensure_dir(&dir)?;
    if name.is_some() && runtime::is_live(&runtime::socket_path(&dir, &config.name)) {
        return Err(ConfigError::new(
            "--name",
            format!("\"{}\"", config.name),
            "a VM with that name is running",
            format!(
                "choose another --name, or stop it first: alcazar stop {}",
                config.name
            ),
        )
        .into());
    }
    // An automatic name is settled when the socket is bound (`bind_api`),
    // or by `detach`.
    Ok(Some(runtime::socket_path(&dir, &config.name)))
}

/// Binds the API socket at `path`, reserving the VM's name. When the
/// name was chosen automatically (`auto`) and another VMM starting at the
/// same moment took it, the next free name is tried.
pub fn bind_api(
    mut path: PathBuf,
    auto: bool,
    config: &mut VmConfig,
) -> Result<ApiListener, LaunchError> {
    let base = config.name.clone();
    let mut tries = 0;
    loop {
        match ApiListener::bind(&path) {
            Ok(l) => return Ok(l),
            Err(ApiError::InUse(_)) if auto && tries < 20 => {
                tries += 1;
                let dir = runtime::socket_dir();
                config.name = runtime::free_name(&dir, &base);
                path = runtime::socket_path(&dir, &config.name);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long `run --detach` waits for the VM's API to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment variable through which `run --detach` hands the API
/// socket it bound to the VMM it starts.
pub const API_FD_VAR: &str = "ALCAZAR_API_FD";

/// The API socket for `run`: the one `run --detach` bound and handed down
/// (`ALCAZAR_API_FD`), else `path` bound now ([`bind_api`]).
pub fn listen(
    path: PathBuf,
    auto: bool,
    config: &mut VmConfig,
) -> Result<ApiListener, LaunchError> {
    let inherited = std::env::var(API_FD_VAR).ok();
    // The variable is ours: it must not reach anything this VMM starts.
    std::env::remove_var(API_FD_VAR);
    match inherited.and_then(|v| v.parse::<std::os::fd::RawFd>().ok()) {
        Some(fd) if fd > 2 => {
            // SAFETY: the parent `run --detach` left this descriptor open
            // for us and nothing else in this process owns it; `adopt`
            // checks that it is the socket bound at `path`.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
            Ok(ApiListener::adopt(&path, fd)?)
        }
        _ => bind_api(path, auto, config),
    }
}

/// The log of a detached VM: `<runtime dir>/<name>.log`, in the private
/// runtime directory whatever `--api-socket` says, opened for appending
/// without following a link and without truncating (a log of an earlier
/// VM of the same name keeps its lines; this run's start is marked).
fn open_log(name: &str) -> Result<(PathBuf, std::fs::File), String> {
    let dir = runtime::socket_dir();
    runtime::ensure_dir(&dir).map_err(|e| e.to_string())?;
    let log = dir.join(format!("{name}.log"));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&log)
        .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if !meta.is_file() || std::os::unix::fs::MetadataExt::uid(&meta) != uid {
        return Err(format!(
            "{} is not a regular file of yours; remove it",
            log.display()
        ));
    }
    use std::io::Write;
    let _ = writeln!(
        file,
        "--- alcazar run --detach: VM \"{name}\", {} ---",
        humantime_now()
    );
    Ok((log, file))
}

/// Seconds since the epoch, for the log's start line.
fn humantime_now() -> String {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => format!("started at {} s since the epoch", d.as_secs()),
        Err(_) => "started".into(),
    }
}

/// The lines of `log` written since the last start marker, at most 20.
fn this_runs_log(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("--- alcazar run --detach"))
        .map_or(0, |i| i + 1);
    let run = &lines[start..];
    run[run.len().saturating_sub(20)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// Starts the VM in the background; returns the exit status of `run`.
///
/// The name is claimed first, by binding the API socket here: of several
/// `run --detach --name X` started at once, exactly one binds it and the
/// others fail at once, before touching any file. The bound socket is
/// handed to the VMM this command starts, so a VM answering on it can
/// only be that VMM; success is reported only when it answers, with its
/// pid.
pub fn detach(config: &mut VmConfig, socket: Option<PathBuf>, auto: bool) -> u8 {
    let Some(socket) = socket else {
        eprintln!(
            "alcazar: --detach: a detached VM is reached through its API; drop --api-socket none"
        );
        return 2;
    };
    let listener = match bind_api(socket, auto, config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("alcazar: {e}");
            return e.status();
        }
    };
    let name = config.name.clone();
    let socket = listener.path().to_path_buf();
    let (log, stderr) = match open_log(&name) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("alcazar: --detach: {e}");
            return 1;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("alcazar: --detach: cannot find this program: {e}");
            return 1;
        }
    };
    let Some(fd) = listener.into_fd() else {
        eprintln!("alcazar: --detach: the API socket was lost");
        return 1;
    };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let mut args: Vec<String> = child_args(std::env::args().skip(1));
    args.extend([
        "--name".into(),
        name.clone(),
        "--api-socket".into(),
        socket.display().to_string(),
    ]);
    let mut command = Command::new(exe);
    command
        .args(&args)
        .env(API_FD_VAR, raw.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: setsid and fcntl are async-signal-safe and touch no memory
    // of ours; they run in the child between fork and exec. Clearing
    // FD_CLOEXEC lets the listening socket survive the exec.
    unsafe {
        command.pre_exec(move || {
            libc::setsid();
            if libc::fcntl(raw, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = command.spawn();
    // The child has its copy; ours goes (without removing the file the
    // child now serves).
    drop(fd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            runtime::remove_if_stale(&socket);
            eprintln!("alcazar: --detach: cannot start the VMM: {e}");
            return 1;
        }
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if vm_runs(&socket, child.id()) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            runtime::remove_if_stale(&socket);
            eprintln!("alcazar: the VM \"{name}\" ended while starting ({status}); its log:");
            for line in this_runs_log(&log) {
                eprintln!("  | {line}");
            }
            return 1;
        }
        if Instant::now() > deadline {
            // Report failure only for a VM that is gone: one left running
            // would hold the name this command said it could not take.
            let _ = child.kill();
            let _ = child.wait();
            runtime::remove_if_stale(&socket);
            eprintln!(
                "alcazar: the VM \"{name}\" did not start within {} s and was stopped; see {}",
                START_TIMEOUT.as_secs(),
                log.display()
            );
            return 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The name the verbs reach it by: its name, or its socket's path when
    // the socket is not where names are looked up.
    let default = runtime::socket_path(&runtime::socket_dir(), &name);
    let handle = if socket == default {
        name.clone()
    } else if socket.is_absolute() || socket.starts_with(".") {
        socket.display().to_string()
    } else {
        format!("./{}", socket.display())
    };
    eprintln!(
        "alcazar: \"{name}\" runs in the background (pid {}, log {}); `alcazar console {handle}` attaches, `alcazar stop {handle}` stops it",
        child.id(),
        log.display()
    );
    println!("{handle}");
    0
}

/// Whether the VM behind `socket` answers, is served by process `pid`
/// and has started (the socket is bound before the VM is built, so a live
/// socket alone is not enough).
fn vm_runs(socket: &Path, pid: u32) -> bool {
    match alcazar_control::api::client::request(socket, "GET", "/v1/vm", None) {
        Ok(r) if r.status == 200 => serde_json::from_slice::<serde_json::Value>(&r.body)
            .map(|v| v["state"] != "created" && v["pid"] == pid)
            .unwrap_or(false),
        _ => false,
    }
}

/// `run`'s arguments without `--detach` and without the `--name` and
/// `--api-socket` the parent resolved (they are passed again).
fn child_args(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        match a.as_str() {
            "--detach" => {}
            "--name" | "--api-socket" => skip_value = true,
            _ if a.starts_with("--name=") || a.starts_with("--api-socket=") => {}
            _ => out.push(a),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_gets_the_arguments_less_what_the_parent_resolved() {
        let args = [
            "run",
            "--detach",
            "--name",
            "a",
            "--memory",
            "64M",
            "--api-socket=/x",
            "k.toml",
        ]
        .map(String::from);
        assert_eq!(
            child_args(args.into_iter()),
            ["run", "--memory", "64M", "k.toml"]
        );
    }
}
