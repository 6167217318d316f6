//! Disk image locks: a VM that writes an image holds it exclusively, VMs
//! that only read it share it — the locks QEMU takes, so Alcazar and QEMU
//! also keep out of each other's images.
//!
//! Two writers of one file system image corrupt it silently: each caches
//! blocks the other changes, and `e2fsck` may still call the result clean.
//! So before a `virtio-blk` device is built, the image is locked with an
//! open file description lock (Linux `fcntl(F_OFD_SETLK)`, fcntl(2)):
//! `F_WRLCK` over the whole file for a read-write image, `F_RDLCK` for a
//! `readonly` one. OFD locks belong to the open file, not to the process,
//! so the same image given twice to one VM (`--disk d.img --disk d.img`)
//! conflicts as it would between two VMs; they vanish when the file is
//! closed, so a VMM that is killed leaves no stale lock. The lock is held
//! on a descriptor of its own and dropped when the VM stops (a reboot
//! builds the VM again and takes it again).
//!
//! A conflict names the other user when `/proc` shows it: the process
//! with the image open (this VMM itself for a second device on the same
//! image).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why an image cannot be locked.
#[derive(Debug, thiserror::Error)]
pub enum DiskLockError {
    /// The image cannot be opened to take the lock.
    #[error("cannot open disk image {path}: {source}")]
    Open {
        /// The image.
        path: PathBuf,
        /// What the host said.
        source: std::io::Error,
    },
    /// Another open of the image holds a conflicting lock.
    #[error("{path} is in use by {holder}")]
    InUse {
        /// The image.
        path: PathBuf,
        /// Who holds it, as far as `/proc` tells.
        holder: String,
    },
    /// The file system does not support the lock.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// The image.
        path: PathBuf,
        /// What the host said.
        source: std::io::Error,
    },
}

/// A held lock on a disk image; dropping it releases the lock.
#[derive(Debug)]
pub struct DiskLock {
    file: File,
}

impl DiskLock {
    /// Locks the image at `path`: shared when `readonly`, else exclusive.
    pub fn acquire(path: &Path, readonly: bool) -> Result<DiskLock, DiskLockError> {
        // A write lock needs a descriptor open for writing (fcntl(2)).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!readonly)
            .open(path)
            .map_err(|source| DiskLockError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        // SAFETY: an all-zero flock is a valid value; the fields are set
        // below.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = if readonly {
            libc::F_RDLCK
        } else {
            libc::F_WRLCK
        } as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = 0;
        fl.l_len = 0; // to the end of the file, however it grows
        fl.l_pid = 0; // required for OFD locks
                      // SAFETY: F_OFD_SETLK reads the flock we own; the descriptor is
                      // `file`'s, open for the call.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if r == 0 {
            return Ok(DiskLock { file });
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => Err(DiskLockError::InUse {
                path: path.to_path_buf(),
                holder: holder(&file),
            }),
            _ => Err(DiskLockError::Lock {
                path: path.to_path_buf(),
                source: err,
            }),
        }
    }

    /// The locked file (for tests).
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Who else has the file behind `ours` open, from `/proc/*/fd`: "this VM
/// (another disk on the same image)", "process 1234 (alcazar)", or
/// "another process" when `/proc` does not say.
fn holder(ours: &File) -> String {
    let Ok(meta) = ours.metadata() else {
        return "another process".into();
    };
    let (dev, ino) = (meta.dev(), meta.ino());
    let me = std::process::id();
    let my_fd = ours.as_raw_fd().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return "another process".into();
    };
    let mut others = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if pid == me && fd.file_name().to_str() == Some(my_fd.as_str()) {
                continue;
            }
            let same = std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
            if same {
                others.push(pid);
                break;
            }
        }
    }
    if others.contains(&me) {
        return "this VM (another disk on the same image)".into();
    }
    match others.first() {
        Some(pid) => {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("process {pid} ({})", comm.trim())
        }
        None => "another process".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("alcazar-lock-{}-{name}", std::process::id()));
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        p
    }

    #[test]
    fn writers_exclude_everyone_and_readers_share() {
        let p = image("rw");
        let w = DiskLock::acquire(&p, false).unwrap();
        for readonly in [false, true] {
            let e = DiskLock::acquire(&p, readonly).unwrap_err();
            assert!(
                e.to_string()
                    .contains("this VM (another disk on the same image)"),
                "{e}"
            );
        }
        drop(w);
        let r1 = DiskLock::acquire(&p, true).unwrap();
        let r2 = DiskLock::acquire(&p, true).unwrap();
        assert!(matches!(
            DiskLock::acquire(&p, false),
            Err(DiskLockError::InUse { .. })
        ));
        drop((r1, r2));
        DiskLock::acquire(&p, false).unwrap();
        std::fs::remove_file(&p).unwrap();
    }
}
