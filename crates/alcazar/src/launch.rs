//! Naming a VM, placing its API socket, and `run --detach`.
//!
//! A detached VM is this same program run again in the background, with
//! the same arguments (less `--detach`, plus the chosen `--name` and
//! `--api-socket`), in a session of its own so the terminal's signals do
//! not reach it, its stdin and stdout on /dev/null and its stderr (the
//! VMM's messages) in `<runtime dir>/<name>.log`. The parent checks the
//! configuration first (so a bad flag is reported right there), waits
//! until the child's API answers, prints the VM's name and returns.

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
            LaunchError::Config(_) | LaunchError::Api(ApiError::InUse(_)) => 2,
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

/// Starts the VM in the background; returns the exit status of `run`.
pub fn detach(name: &str, socket: Option<&Path>, auto: bool) -> u8 {
    let Some(socket) = socket else {
        eprintln!(
            "alcazar: --detach: a detached VM is reached through its API; drop --api-socket none"
        );
        return 2;
    };
    let (name, socket) = if auto {
        let dir = runtime::socket_dir();
        let free = runtime::free_name(&dir, name);
        let path = runtime::socket_path(&dir, &free);
        (free, path)
    } else {
        (name.to_string(), socket.to_path_buf())
    };
    let (name, socket) = (name.as_str(), socket.as_path());
    let log = socket.with_extension("log");
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("alcazar: --detach: cannot find this program: {e}");
            return 1;
        }
    };
    let stderr = match std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&log)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("alcazar: --detach: cannot create {}: {e}", log.display());
            return 1;
        }
    };
    let mut args: Vec<String> = child_args(std::env::args().skip(1));
    args.extend([
        "--name".into(),
        name.into(),
        "--api-socket".into(),
        socket.display().to_string(),
    ]);
    let mut command = Command::new(exe);
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: setsid is async-signal-safe and touches no memory of ours;
    // it runs in the child between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("alcazar: --detach: cannot start the VMM: {e}");
            return 1;
        }
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if vm_runs(socket) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("alcazar: the VM \"{name}\" ended while starting ({status}); its log:");
            for line in std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                eprintln!("  | {line}");
            }
            return 1;
        }
        if Instant::now() > deadline {
            eprintln!(
                "alcazar: the VM \"{name}\" did not open its API within {} s; see {}",
                START_TIMEOUT.as_secs(),
                log.display()
            );
            return 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "alcazar: \"{name}\" runs in the background (pid {}, log {}); `alcazar console {name}` attaches, `alcazar stop {name}` stops it",
        child.id(),
        log.display()
    );
    println!("{name}");
    0
}

/// Whether the VM behind `socket` answers and has started (the socket is
/// bound before the VM is built, so a live socket alone is not enough).
fn vm_runs(socket: &Path) -> bool {
    if !socket.exists() {
        return false;
    }
    match alcazar_control::api::client::request(socket, "GET", "/v1/vm", None) {
        Ok(r) if r.status == 200 => serde_json::from_slice::<serde_json::Value>(&r.body)
            .map(|v| v["state"] != "created")
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
