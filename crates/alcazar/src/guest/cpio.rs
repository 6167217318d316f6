//! A writer for the "newc" cpio format, the format of a Linux initramfs.
//!
//! The kernel unpacks the initramfs with its own small unpacker
//! (`init/initramfs.c`, described in the kernel's
//! `Documentation/driver-api/early-userspace/buffer-format.rst`), which
//! accepts only newc (magic `070701`) or its checksummed twin `070702`.
//! Each entry is a 110-byte ASCII header (the magic, then thirteen 8-digit
//! hexadecimal fields), the path name with a terminating NUL, padding to a
//! multiple of four bytes, the data, and again padding to four bytes. The
//! archive ends with an entry named `TRAILER!!!`.
//!
//! The unpacker does not create missing parent directories, so this writer
//! emits every parent directory before the first entry inside it. Names are
//! stored without a leading `/` (relative to the root, as `cpio -H newc`
//! writes them). Times are 0 and owners root, so the same inputs give the
//! same bytes.

use std::collections::BTreeSet;
use std::io::{self, Write};

/// The newc magic ("new ASCII" format, no checksum).
const MAGIC: &[u8; 6] = b"070701";
/// The name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode` (POSIX `<sys/stat.h>`), as cpio stores them.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// Character device.
pub const S_IFCHR: u32 = 0o020000;

/// Streams a newc archive into `W`.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            written: 0,
            next_ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    /// Adds a directory (and its missing parents) with permission bits `perm`.
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        let path = normalize(path)?;
        if self.dirs.contains(&path) {
            return Ok(());
        }
        self.parents(&path)?;
        self.dirs.insert(path.clone());
        self.entry(&path, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])
    }

    /// Adds a regular file with permission bits `perm`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.entry(&path, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.entry(&path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Adds a character device node (`major`, `minor`); the kernel's
    /// unpacker creates it with `mknod`, so no host privilege is needed.
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.entry(&path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 0, 1, (0, 0), 0)?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Emits the directories above `path` that are not in the archive yet.
    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            let parent = &path[..end];
            if !self.dirs.contains(parent) {
                self.dirs.insert(parent.to_string());
                self.entry(parent, S_IFDIR | 0o755, 2, (0, 0), &[])?;
            }
            end += 1;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: newc cannot hold a file of 4 GiB or more"),
            )
        })?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(name, ino, mode, nlink, rdev, size)?;
        self.put(data)?;
        self.pad()
    }

    /// The 110-byte header, the NUL-terminated name and the padding after it.
    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        size: u32,
    ) -> io::Result<()> {
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
        // ino mode uid gid nlink mtime filesize devmajor devminor
        // rdevmajor rdevminor namesize check
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut header = Vec::with_capacity(110 + name.len() + 4);
        header.extend_from_slice(MAGIC);
        for f in fields {
            header.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        self.put(&header)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }
}

/// Strips a leading `/` and rejects names the kernel would misread.
fn normalize(path: &str) -> io::Result<String> {
    let p = path.trim_start_matches('/').trim_end_matches('/');
    let bad = p.is_empty()
        || p == TRAILER
        || p.contains('\0')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path:?} is not a usable archive path"),
        ));
    }
    Ok(p.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One entry read back from an archive.
    #[derive(Debug, PartialEq)]
    pub(crate) struct Entry {
        pub name: String,
        pub mode: u32,
        pub rdev: (u32, u32),
        pub data: Vec<u8>,
    }

    fn hex(field: &[u8]) -> u32 {
        u32::from_str_radix(std::str::from_utf8(field).unwrap(), 16).unwrap()
    }

    /// An independent reader, written from the format description, that
    /// also checks the alignment rules.
    pub(crate) fn read(archive: &[u8]) -> Vec<Entry> {
        let mut at = 0;
        let mut entries = Vec::new();
        loop {
            assert_eq!(at % 4, 0, "header at {at} is not 4-aligned");
            let h = &archive[at..at + 110];
            assert_eq!(&h[..6], MAGIC, "bad magic at {at}");
            let field = |i: usize| hex(&h[6 + 8 * i..14 + 8 * i]);
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name_end = at + 110 + namesize;
            assert_eq!(archive[name_end - 1], 0, "name not NUL-terminated");
            let name = String::from_utf8(archive[at + 110..name_end - 1].to_vec()).unwrap();
            let data_at = name_end.next_multiple_of(4);
            let data = archive[data_at..data_at + size].to_vec();
            at = (data_at + size).next_multiple_of(4);
            if name == TRAILER {
                assert_eq!(at, archive.len(), "bytes after the trailer");
                return entries;
            }
            entries.push(Entry {
                name,
                mode,
                rdev: (field(9), field(10)),
                data,
            });
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.file("/bin/busybox", 0o755, b"\x7fELF pretend").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        w.dir("proc", 0o555).unwrap();
        w.file("init", 0o755, b"#!/bin/busybox sh\n").unwrap();
        w.file("empty", 0o644, b"").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn entries_read_back_with_parents_first() {
        let entries = read(&sample());
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "proc",
                "init",
                "empty"
            ]
        );
        assert_eq!(entries[0].mode, S_IFDIR | 0o755);
        assert_eq!(entries[1].mode, S_IFREG | 0o755);
        assert_eq!(entries[1].data, b"\x7fELF pretend");
        assert_eq!(entries[2].mode, S_IFLNK | 0o777);
        assert_eq!(entries[2].data, b"busybox");
        assert_eq!(entries[4].mode, S_IFCHR | 0o600);
        assert_eq!(entries[4].rdev, (5, 1));
        assert_eq!(entries[5].mode, S_IFDIR | 0o555);
    }

    #[test]
    fn header_fields_are_eight_hex_digits() {
        let a = sample();
        // First entry: "bin", ino 1, a directory.
        assert_eq!(&a[..14], b"07070100000001");
        assert_eq!(&a[14..22], b"000041ed");
        // namesize of "bin" is 4 (with the NUL).
        assert_eq!(&a[94..102], b"00000004");
    }

    #[test]
    fn bad_names_are_refused() {
        let mut w = CpioWriter::new(Vec::new());
        for bad in ["", "/", "a/../b", "./x", "TRAILER!!!", "a//b"] {
            assert!(w.file(bad, 0o644, b"").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn host_cpio_lists_the_archive() {
        // Cross-check with an independent implementation when one is here:
        // GNU cpio, bsdtar, or busybox (ALCAZAR_BUSYBOX or on PATH).
        let dir = std::env::temp_dir().join(format!("alcazar-cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.cpio");
        std::fs::write(&path, sample()).unwrap();
        let busybox = std::env::var("ALCAZAR_BUSYBOX").unwrap_or_else(|_| "busybox".into());
        let tools: [(&str, &[&str]); 3] = [
            ("cpio", &["-t", "-F"]),
            ("bsdtar", &["-t", "-f"]),
            (busybox.as_str(), &["cpio", "-t", "-F"]),
        ];
        let mut checked = false;
        for (tool, args) in tools {
            let Ok(out) = std::process::Command::new(tool)
                .args(args)
                .arg(&path)
                .output()
            else {
                continue;
            };
            if !out.status.success() {
                continue;
            }
            let listed = String::from_utf8_lossy(&out.stdout);
            let names: Vec<&str> = listed.lines().collect();
            assert!(names.contains(&"bin/busybox"), "{tool}: {listed}");
            assert!(names.contains(&"dev/console"), "{tool}: {listed}");
            assert_eq!(names.len(), 8, "{tool}: {listed}");
            checked = true;
        }
        let _ = std::fs::remove_dir_all(&dir);
        if !checked {
            eprintln!("NOTE host_cpio_lists_the_archive: no cpio, bsdtar or busybox on this host");
        }
    }
}
