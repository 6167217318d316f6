//! What an IDE drive reads and writes: a raw disk image (512-byte
//! sectors) or an ISO 9660 CD/DVD image (2048-byte blocks).
//!
//! A disk image is any file or block device whose size is a non-zero
//! multiple of 512 bytes; it may be opened read-only, and then every
//! write command is refused by the drive. A CD image must carry the ISO
//! 9660 primary volume descriptor signature: "CD001" at byte 0x8001
//! (ECMA-119 §8.1, the volume descriptor set starts at logical sector 16
//! and each descriptor has its standard identifier at byte 1). Its
//! capacity is its size in whole 2048-byte blocks; a trailing partial
//! block is never read. CD images are always read-only.
//!
//! **Durability.** A completed write is in the host's page cache;
//! `DiskImage::sync` (the drive's FLUSH CACHE, or every write while the
//! guest has the write cache turned off) is `fdatasync(2)`.
//!
//! Left out: image formats other than raw (qcow2, VHD), sparse-file
//! discard (the ATA drive offers no TRIM), CD images with other sector
//! sizes (raw 2352-byte BIN/CUE).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes in an ATA sector.
pub const SECTOR_SIZE: u64 = 512;
/// Bytes in a CD/DVD logical block.
pub const CD_BLOCK_SIZE: u64 = 2048;
/// Where an ISO 9660 image has its first volume descriptor's "CD001".
pub const ISO_MAGIC_OFFSET: u64 = 0x8001;
/// The ISO 9660 standard identifier.
pub const ISO_MAGIC: &[u8; 5] = b"CD001";

/// Why an image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The file could not be opened, measured or read.
    #[error("cannot open image {path}: {source}")]
    Open {
        /// The image path.
        path: PathBuf,
        /// What the host said.
        source: std::io::Error,
    },
    /// A disk image's size is not a whole number of sectors.
    #[error("disk image {path} is {size} bytes, not a multiple of 512")]
    NotSectorMultiple {
        /// The image path.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// A disk image is empty.
    #[error("disk image {0} is empty")]
    Empty(PathBuf),
    /// A CD image is not an ISO 9660 image.
    #[error("{path} is not an ISO 9660 image: {problem}")]
    NotIso {
        /// The image path.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// Opens `path` and measures it (seeking measures block devices too).
fn open(path: &Path, readonly: bool) -> Result<(File, u64), MediaError> {
    let err = |source| MediaError::Open {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(!readonly)
        .open(path)
        .map_err(err)?;
    let size = file.seek(SeekFrom::End(0)).map_err(err)?;
    Ok((file, size))
}

/// The size of an already open file.
fn measure(file: &mut File, path: &Path) -> Result<u64, MediaError> {
    file.seek(SeekFrom::End(0))
        .map_err(|source| MediaError::Open {
            path: path.to_owned(),
            source,
        })
}

/// A best-effort name for an open file (`/proc/self/fd/N`'s target).
pub(crate) fn name_of(file: &File) -> PathBuf {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .unwrap_or_else(|_| PathBuf::from("<unnamed file>"))
}

/// A raw disk image.
#[derive(Debug)]
pub struct DiskImage {
    file: File,
    path: PathBuf,
    sectors: u64,
    readonly: bool,
}

impl DiskImage {
    /// Opens the raw image at `path`, read-write or read-only. Its size
    /// must be a non-zero multiple of 512 bytes.
    pub fn open(path: &Path, readonly: bool) -> Result<Self, MediaError> {
        let (file, size) = open(path, readonly)?;
        Self::checked(file, path.to_owned(), size, readonly)
    }

    /// Uses an already open file (opened for writing unless `readonly`);
    /// `path` only names it in messages.
    pub fn from_file(mut file: File, path: PathBuf, readonly: bool) -> Result<Self, MediaError> {
        let size = measure(&mut file, &path)?;
        Self::checked(file, path, size, readonly)
    }

    fn checked(file: File, path: PathBuf, size: u64, readonly: bool) -> Result<Self, MediaError> {
        if size == 0 {
            return Err(MediaError::Empty(path));
        }
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(MediaError::NotSectorMultiple { path, size });
        }
        Ok(DiskImage {
            file,
            path,
            sectors: size / SECTOR_SIZE,
            readonly,
        })
    }

    /// The capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Whether writes are refused.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// The path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads `buf.len()` bytes at byte `offset`.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Writes `buf` at byte `offset`.
    pub(crate) fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if self.readonly {
            return Err(std::io::ErrorKind::PermissionDenied.into());
        }
        self.file.write_all_at(buf, offset)
    }

    /// `fdatasync(2)`: what the drive has acknowledged is on stable
    /// storage.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

/// An ISO 9660 CD or DVD image.
#[derive(Debug)]
pub struct CdImage {
    file: File,
    path: PathBuf,
    blocks: u64,
}

impl CdImage {
    /// Opens the ISO image at `path` (read-only) and checks its volume
    /// descriptor signature.
    pub fn open(path: &Path) -> Result<Self, MediaError> {
        let (file, size) = open(path, true)?;
        Self::checked(file, path.to_owned(), size)
    }

    /// Uses an already open file; `path` only names it in messages.
    pub fn from_file(mut file: File, path: PathBuf) -> Result<Self, MediaError> {
        let size = measure(&mut file, &path)?;
        Self::checked(file, path, size)
    }

    fn checked(file: File, path: PathBuf, size: u64) -> Result<Self, MediaError> {
        if size < ISO_MAGIC_OFFSET + ISO_MAGIC.len() as u64 {
            return Err(MediaError::NotIso {
                path,
                problem: format!("{size} bytes is too small to hold a volume descriptor"),
            });
        }
        let mut magic = [0u8; 5];
        if let Err(e) = file.read_exact_at(&mut magic, ISO_MAGIC_OFFSET) {
            return Err(MediaError::Open { path, source: e });
        }
        if &magic != ISO_MAGIC {
            return Err(MediaError::NotIso {
                path,
                problem: format!("no \"CD001\" at byte 0x8001 (found {magic:02x?})"),
            });
        }
        Ok(CdImage {
            file,
            path,
            blocks: size / CD_BLOCK_SIZE,
        })
    }

    /// The capacity in 2048-byte blocks.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// The path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads `buf.len()` bytes at byte `offset`.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A file in the temporary directory, deleted when dropped.
    pub(crate) struct TempImage(pub PathBuf);

    impl TempImage {
        /// A new file holding `bytes`.
        pub(crate) fn new(tag: &str, bytes: &[u8]) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("alcazar-ide-{}-{tag}-{n}.img", std::process::id()));
            std::fs::write(&path, bytes).expect("temp image");
            TempImage(path)
        }

        /// An ISO-like image of `blocks` 2048-byte blocks: "CD001" at
        /// 0x8001 and block `i` filled with `i as u8` elsewhere.
        pub(crate) fn iso(tag: &str, blocks: u64) -> Self {
            let mut data = vec![0u8; (blocks * CD_BLOCK_SIZE) as usize];
            for (i, block) in data.chunks_mut(CD_BLOCK_SIZE as usize).enumerate() {
                block.fill(i as u8);
            }
            data[0x8001..0x8006].copy_from_slice(ISO_MAGIC);
            Self::new(tag, &data)
        }
    }

    impl Drop for TempImage {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn disk_sizes_must_be_whole_sectors() {
        let odd = TempImage::new("odd", &[0u8; 1000]);
        let err = DiskImage::open(&odd.0, false).unwrap_err();
        assert!(matches!(
            err,
            MediaError::NotSectorMultiple { size: 1000, .. }
        ));
        assert!(err.to_string().contains(&*odd.0.to_string_lossy()));
        let empty = TempImage::new("empty", &[]);
        assert!(matches!(
            DiskImage::open(&empty.0, false),
            Err(MediaError::Empty(_))
        ));
        let ok = TempImage::new("ok", &[0u8; 4096]);
        let d = DiskImage::open(&ok.0, true).unwrap();
        assert_eq!((d.sectors(), d.readonly()), (8, true));
        assert!(d.write_at(&[1], 0).is_err());
    }

    #[test]
    fn cd_images_must_be_iso9660() {
        let iso = TempImage::iso("iso", 20);
        assert_eq!(CdImage::open(&iso.0).unwrap().blocks(), 20);
        let plain = TempImage::new("plain", &[0u8; 40960]);
        let err = CdImage::open(&plain.0).unwrap_err();
        assert!(matches!(err, MediaError::NotIso { .. }));
        let text = err.to_string();
        assert!(text.contains("CD001") && text.contains(&*plain.0.to_string_lossy()));
        let tiny = TempImage::new("tiny", &[0u8; 512]);
        assert!(matches!(
            CdImage::open(&tiny.0),
            Err(MediaError::NotIso { .. })
        ));
        let missing = std::env::temp_dir().join("alcazar-ide-no-such-file.iso");
        assert!(matches!(
            CdImage::open(&missing),
            Err(MediaError::Open { .. })
        ));
    }
}
