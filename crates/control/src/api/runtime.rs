//! Where running VMs' API sockets live, and how a name finds its VM.
//!
//! Each VM serves its API on `<dir>/<name>.sock`, where `<dir>` is
//! `$XDG_RUNTIME_DIR/alcazar` (the per-user runtime directory of the XDG
//! Base Directory specification), or `/tmp/alcazar-<uid>` without it. The
//! directory is created with mode 0700 and must belong to the user:
//! nobody else may reach the sockets. A socket nobody answers on is left
//! over from a VMM that was killed; it is removed when found.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Why the runtime directory or a socket name is unusable.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The directory cannot be created or is not safe.
    #[error("runtime directory {path}: {why}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A VM name that cannot be a socket file name.
    #[error(
        "VM name {0:?}: use letters, digits, '-', '_' and '.' (at most 64, not starting with '.')"
    )]
    BadName(String),
}

/// The directory API sockets go in (not created).
pub fn socket_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("alcazar"),
        None => {
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            std::env::temp_dir().join(format!("alcazar-{uid}"))
        }
    }
}

/// Creates `dir` (mode 0700) if needed and checks that it belongs to us
/// and nobody else can enter it.
pub fn ensure_dir(dir: &Path) -> Result<(), RuntimeError> {
    let err = |why: String| RuntimeError::Directory {
        path: dir.to_path_buf(),
        why,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(format!("cannot create it: {e}")))?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| err(e.to_string()))?;
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if !meta.is_dir() || meta.uid() != uid {
        return Err(err(format!(
            "not a directory owned by uid {uid}; remove it or set XDG_RUNTIME_DIR"
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(format!("cannot make it private: {e}")))?;
    }
    Ok(())
}

/// Checks that `name` can name a socket file.
pub fn check_name(name: &str) -> Result<(), RuntimeError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::BadName(name.to_string()))
    }
}

/// The socket of VM `name` in `dir`.
pub fn socket_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

/// What is at a socket path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupant {
    /// Nothing: the path is free.
    Nothing,
    /// A socket a server answers on.
    LiveSocket,
    /// A socket nobody answers on: left over from a VMM that was killed.
    StaleSocket,
    /// Something that is not a socket (a file, a directory, a FIFO, a
    /// device, a symbolic link — followed or not): never touched.
    Other(&'static str),
}

/// What is at `path`, without following a symbolic link there and without
/// changing anything.
pub fn occupant(path: &Path) -> Occupant {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Occupant::Nothing;
    };
    let t = meta.file_type();
    if t.is_symlink() {
        return Occupant::Other("a symbolic link");
    }
    if !t.is_socket() {
        return Occupant::Other(if t.is_dir() {
            "a directory"
        } else if t.is_file() {
            "a regular file"
        } else if t.is_fifo() {
            "a FIFO"
        } else {
            "a device"
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Occupant::LiveSocket,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Occupant::StaleSocket,
        // A full backlog or the like: someone is there.
        Err(_) => Occupant::LiveSocket,
    }
}

/// Removes the stale socket at `path`, only if it is still a socket (a
/// file put there meanwhile is left alone).
pub fn remove_stale(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let still_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if still_socket {
        let _ = std::fs::remove_file(path);
    }
}

/// Removes the socket at `path` if nobody answers on it any more (its VMM
/// ended), deciding under the directory's lock: a socket another VMM has
/// bound there meanwhile is left alone.
pub fn remove_if_stale(path: &Path) {
    let _deciding = DirectoryLock::take(path);
    if occupant(path) == Occupant::StaleSocket {
        remove_stale(path);
    }
}

/// Whether a server answers on `path`. A stale socket (one that refuses
/// the connection: left over from a VMM that was killed) is removed;
/// anything that is not a socket is left alone and is not live.
pub fn is_live(path: &Path) -> bool {
    let _deciding = DirectoryLock::take(path);
    match occupant(path) {
        Occupant::LiveSocket => true,
        Occupant::StaleSocket => {
            remove_stale(path);
            false
        }
        Occupant::Nothing | Occupant::Other(_) => false,
    }
}

/// `name`, or `name-2`, `name-3`, ... : the first whose socket in `dir`
/// is free.
pub fn free_name(dir: &Path, name: &str) -> String {
    if !is_live(&socket_path(dir, name)) {
        return name.to_string();
    }
    (2..)
        .map(|n| format!("{name}-{n}"))
        .find(|candidate| !is_live(&socket_path(dir, candidate)))
        .unwrap_or_else(|| name.to_string())
}

/// The names of the VMs with a live socket in `dir`, sorted.
pub fn running(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".sock").map(str::to_string)
        })
        .filter(|name| is_live(&socket_path(dir, name)))
        .collect();
    names.sort();
    names
}

/// An exclusive `flock(2)` on the directory of a socket path, held while
/// a VMM checks and binds its API socket there and while anyone decides
/// a socket there is stale and removes it, so that nobody takes a socket
/// between another VMM's bind() and listen() (where a connection is
/// refused as if it were stale) for a dead one. Advisory: it changes nothing in
/// the directory. Released when dropped; if the directory cannot be
/// opened or locked, binding goes on unlocked (the checks still run).
pub(crate) struct DirectoryLock(Option<std::fs::File>);

impl DirectoryLock {
    /// Locks the directory `path` is in (waits for other holders).
    pub(crate) fn take(path: &Path) -> DirectoryLock {
        use std::os::fd::AsRawFd;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let Ok(file) = std::fs::File::open(dir) else {
            return DirectoryLock(None);
        };
        loop {
            // SAFETY: flock(2) on a descriptor we own; it passes no memory.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return DirectoryLock(Some(file));
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return DirectoryLock(None);
            }
        }
    }
}

impl Drop for DirectoryLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        if let Some(file) = &self.0 {
            // SAFETY: flock(2) on a descriptor we own; it passes no memory.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

/// Checks that `path` can be bound: short enough, in an existing
/// directory, and free (a stale socket there is removed; anything else
/// is an error and stays as it is).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["linux", "web-1", "a.b_c"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stale_sockets_are_removed_and_free_names_found() {
        let dir = std::env::temp_dir().join(format!("alcazar-rt-test-{}", std::process::id()));
        ensure_dir(&dir).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        // A live one.
        let live = std::os::unix::net::UnixListener::bind(socket_path(&dir, "vm")).unwrap();
        // A stale one: bound, then the listener dropped (the file stays).
        drop(std::os::unix::net::UnixListener::bind(socket_path(&dir, "old")).unwrap());
        assert!(socket_path(&dir, "old").exists());
        assert_eq!(running(&dir), vec!["vm".to_string()]);
        assert!(!socket_path(&dir, "old").exists());
        assert_eq!(free_name(&dir, "vm"), "vm-2");
        assert_eq!(free_name(&dir, "other"), "other");
        drop(live);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
