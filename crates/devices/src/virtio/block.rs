//! virtio-blk: a disk backed by a raw image file (virtio 1.2 §5.2).
//!
//! One queue (`requestq`, index 0). Every chain is one request
//! ([`request`] parses it); the device serves it on the thread that
//! notified, with `pread`/`pwrite` on the image through a bounce buffer,
//! and writes the status byte before returning the chain as used.
//!
//! Features offered (§5.2.3): `VIRTIO_BLK_F_SEG_MAX`,
//! `VIRTIO_BLK_F_SIZE_MAX`, `VIRTIO_BLK_F_BLK_SIZE`, `VIRTIO_BLK_F_FLUSH`,
//! and either `VIRTIO_BLK_F_RO` (a read-only image) or
//! `VIRTIO_BLK_F_DISCARD` (holes punched in the image with
//! `fallocate(PUNCH_HOLE)`).
//!
//! `size_max` × `seg_max` (4 KiB × 254) bounds what a driver that follows
//! the configuration puts in one request, and [`MAX_DATA`] is what the
//! device accepts; a chain carrying more is refused with an I/O error.
//!
//! **Durability.** A completed OUT request is in the host's page cache; a
//! FLUSH request returns only after `fdatasync(2)` on the image. If the
//! driver does not accept `VIRTIO_BLK_F_FLUSH`, the device is
//! write-through: every write is followed by `fdatasync` (§5.2.6.3).
//!
//! Left out: `WRITE_ZEROES`, `SECURE_ERASE`, zoned devices, multiple
//! queues, geometry and topology, the writeback toggle (`CONFIG_WCE`),
//! `GET_LIFETIME`.

pub mod request;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use alcazar_core::DmaMemory;
use virtio_queue::QueueT;

use self::request::{
    parse, parse_discard, Limits, Request, RequestError, HEADER_LEN, ID_BYTES, SECTOR_SIZE,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
};
use super::chain::{pop_chain, Chain};
use super::{ActivateError, Activation, DeviceType, SingleQueue, VirtioDevice};

/// Feature bit: `size_max` holds the largest segment (§5.2.3).
pub const VIRTIO_BLK_F_SIZE_MAX: u64 = 1 << 1;
/// Feature bit: `seg_max` holds the most data segments of a request.
pub const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
/// Feature bit: the device is read-only.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
/// Feature bit: `blk_size` holds the block size.
pub const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
/// Feature bit: the FLUSH command is supported.
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
/// Feature bit: the DISCARD command is supported.
pub const VIRTIO_BLK_F_DISCARD: u64 = 1 << 13;

/// The size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// The largest data segment the driver may use (`size_max`).
pub const SIZE_MAX: u32 = 4096;
/// The most data segments in one request (`seg_max`): the queue minus
/// the header and status descriptors.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// The most data bytes the device takes in one IN or OUT request.
pub const MAX_DATA: u64 = 1 << 20;
/// The most bytes of one chain (data plus header, status and slack).
const MAX_CHAIN: u64 = MAX_DATA + 4096;
/// The most ranges in one DISCARD request (`max_discard_seg`).
pub const MAX_DISCARD_SEG: u32 = 32;
/// The most sectors in one discard range (`max_discard_sectors`, 2 GiB).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22;
/// Discard granularity in sectors (`discard_sector_alignment`, 4 KiB:
/// the host file system frees whole blocks).
pub const DISCARD_ALIGNMENT: u32 = 8;
/// Bytes of the configuration structure up to `secure_erase_sector_alignment`.
const CONFIG_LEN: usize = 72;

/// Why a disk could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image file could not be opened or measured.
    #[error("cannot open disk image {path}: {source}")]
    Open {
        /// The image path.
        path: PathBuf,
        /// What the host said.
        source: std::io::Error,
    },
    /// The image size is not a whole number of sectors.
    #[error("disk image {path} is {size} bytes, not a multiple of 512")]
    NotSectorMultiple {
        /// The image path.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The size rounded up to a sector.
        rounded: u64,
    },
    /// The image is empty.
    #[error("disk image {0} is empty")]
    Empty(PathBuf),
}

/// Counters for the inspector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// IN requests served.
    pub reads: u64,
    /// OUT requests served.
    pub writes: u64,
    /// FLUSH requests served.
    pub flushes: u64,
    /// GET_ID requests served.
    pub get_ids: u64,
    /// DISCARD requests served.
    pub discards: u64,
    /// Bytes read from the image into the guest.
    pub bytes_read: u64,
    /// Bytes written from the guest into the image.
    pub bytes_written: u64,
    /// Requests answered with `UNSUPP`.
    pub unsupported: u64,
    /// Requests answered with `IOERR`, or returned with no status.
    pub errors: u64,
}

/// The image and what serving a request needs, apart from the queue.
struct Backend {
    file: File,
    limits: Limits,
    id: [u8; ID_BYTES],
    write_through: bool,
    bounce: Vec<u8>,
    stats: BlockStats,
}

/// The virtio block device.
pub struct VirtioBlock {
    path: PathBuf,
    backend: Backend,
    active: Option<SingleQueue>,
}

impl std::fmt::Debug for VirtioBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioBlock")
            .field("path", &self.path)
            .field("capacity", &self.backend.limits.capacity)
            .field("readonly", &self.backend.limits.readonly)
            .finish_non_exhaustive()
    }
}

impl VirtioBlock {
    /// A disk backed by the raw image at `path`, opened read-write or
    /// read-only. Its size must be a non-zero multiple of 512 bytes. The
    /// GET_ID string is the last 20 bytes of the file name.
    pub fn new(path: &Path, readonly: bool) -> Result<Self, BlockError> {
        let open_err = |source| BlockError::Open {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(!readonly)
            .open(path)
            .map_err(open_err)?;
        // Seeking measures block devices as well as files.
        let size = file.seek(SeekFrom::End(0)).map_err(open_err)?;
        if size == 0 {
            return Err(BlockError::Empty(path.to_owned()));
        }
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(BlockError::NotSectorMultiple {
                path: path.to_owned(),
                size,
                rounded: size.div_ceil(SECTOR_SIZE) * SECTOR_SIZE,
            });
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut id = [0u8; ID_BYTES];
        let tail = &name.as_bytes()[name.len().saturating_sub(ID_BYTES)..];
        id[..tail.len()].copy_from_slice(tail);
        Ok(VirtioBlock {
            path: path.to_owned(),
            backend: Backend {
                file,
                limits: Limits {
                    capacity: size / SECTOR_SIZE,
                    readonly,
                    max_data: MAX_DATA,
                    discard: false,
                    max_discard_seg: MAX_DISCARD_SEG,
                    max_discard_sectors: MAX_DISCARD_SECTORS,
                },
                id,
                write_through: false,
                bounce: Vec::new(),
                stats: BlockStats::default(),
            },
            active: None,
        })
    }

    /// Sets the GET_ID string (truncated to 20 bytes, zero-padded).
    pub fn set_id(&mut self, id: &str) {
        let bytes = &id.as_bytes()[..id.len().min(ID_BYTES)];
        self.backend.id = [0; ID_BYTES];
        self.backend.id[..bytes.len()].copy_from_slice(bytes);
    }

    /// The disk size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.backend.limits.capacity
    }

    /// The request counters.
    pub fn stats(&self) -> BlockStats {
        self.backend.stats
    }

    /// The configuration structure (§5.2.4), little-endian.
    fn config_image(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        let mut put = |at: usize, bytes: &[u8]| c[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &self.backend.limits.capacity.to_le_bytes());
        put(8, &SIZE_MAX.to_le_bytes());
        put(12, &SEG_MAX.to_le_bytes());
        // 16..20 geometry: not offered.
        put(20, &(SECTOR_SIZE as u32).to_le_bytes());
        // 24..32 topology, 32 writeback, 34 num_queues: not offered.
        put(36, &MAX_DISCARD_SECTORS.to_le_bytes());
        put(40, &MAX_DISCARD_SEG.to_le_bytes());
        put(44, &DISCARD_ALIGNMENT.to_le_bytes());
        c
    }

    /// Serves every chain the driver has made available, then interrupts
    /// it once if it wants that.
    fn serve(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.memory;
        let mut used_any = false;
        loop {
            if let Err(e) = active.queue.disable_notification(mem.mmap()) {
                tracing::debug!("virtio-blk: disable_notification failed: {e}");
            }
            let mut popped = false;
            while let Some((head, parsed)) =
                pop_chain(&mut active.queue, mem, MAX_CHAIN, active.interrupt.as_ref())
            {
                popped = true;
                let used_len = match parsed {
                    Ok(chain) => self.backend.handle(&chain, mem),
                    Err(e) => {
                        tracing::debug!("virtio-blk: bad chain: {e}");
                        self.backend.stats.errors += 1;
                        0
                    }
                };
                if let Err(e) = active.queue.add_used(mem.mmap(), head, used_len) {
                    tracing::debug!("virtio-blk: add_used failed: {e}");
                }
                used_any = true;
            }
            // Returns true if the driver made more buffers available
            // while notifications were off. It also says true for an
            // available index the queue refuses (more than the queue
            // size ahead): go round again only if this pass got chains,
            // or a guest could keep the vCPU here for ever.
            match active.queue.enable_notification(mem.mmap()) {
                Ok(true) if popped => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!("virtio-blk: enable_notification failed: {e}");
                    break;
                }
            }
        }
        if used_any {
            match active.queue.needs_notification(mem.mmap()) {
                Ok(true) => active.interrupt.signal_queue(0),
                Ok(false) => {}
                Err(e) => tracing::debug!("virtio-blk: needs_notification failed: {e}"),
            }
        }
    }
}

impl Backend {
    /// Serves one request; returns the bytes written into the chain (the
    /// used length).
    fn handle(&mut self, chain: &Chain, mem: &DmaMemory) -> u32 {
        let mut header = [0u8; HEADER_LEN as usize];
        let n = chain.read_at(mem, 0, &mut header);
        let parsed = parse(
            &header[..n],
            chain.readable_len(),
            chain.writable_len(),
            &self.limits,
        );
        let (status, written) = match parsed {
            Ok(request) => self.execute(request, chain, mem),
            Err(e) => {
                tracing::debug!("virtio-blk: refused request: {e}");
                match e {
                    RequestError::Unsupported(_) | RequestError::DiscardUnsupported => {
                        self.stats.unsupported += 1
                    }
                    _ => self.stats.errors += 1,
                }
                match e.status() {
                    Some(status) => (status, 0),
                    None => return 0,
                }
            }
        };
        // parse() checked that a writable byte exists.
        let status_at = chain.writable_len().saturating_sub(1);
        if chain.write_at(mem, status_at, &[status]) != 1 {
            return 0;
        }
        written.saturating_add(1)
    }

    /// Performs a parsed request: the status and the data bytes written
    /// into the chain.
    fn execute(&mut self, request: Request, chain: &Chain, mem: &DmaMemory) -> (u8, u32) {
        let result = match request {
            Request::Read { sector, len } => self.read(sector, len, chain, mem).map(|()| len),
            Request::Write { sector, len } => self.write(sector, len, chain, mem).map(|()| 0),
            Request::Flush => {
                self.stats.flushes += 1;
                self.file.sync_data().map(|()| 0)
            }
            Request::GetId { len } => {
                self.stats.get_ids += 1;
                let len = len as usize;
                if chain.write_at(mem, 0, &self.id[..len]) == len {
                    Ok(len as u32)
                } else {
                    Err(std::io::ErrorKind::InvalidInput.into())
                }
            }
            Request::Discard { len } => self.discard(len, chain, mem).map(|()| 0),
        };
        match result {
            Ok(written) => (VIRTIO_BLK_S_OK, written),
            Err(e) => {
                tracing::debug!("virtio-blk: {request:?} failed: {e}");
                self.stats.errors += 1;
                (VIRTIO_BLK_S_IOERR, 0)
            }
        }
    }

    fn read(
        &mut self,
        sector: u64,
        len: u32,
        chain: &Chain,
        mem: &DmaMemory,
    ) -> std::io::Result<()> {
        let len = len as usize;
        let buf = bounce(&mut self.bounce, len);
        // parse() checked sector + len/512 <= capacity, so no overflow.
        self.file.read_exact_at(buf, sector * SECTOR_SIZE)?;
        if chain.write_at(mem, 0, buf) != len {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        self.stats.reads += 1;
        self.stats.bytes_read += len as u64;
        Ok(())
    }

    fn write(
        &mut self,
        sector: u64,
        len: u32,
        chain: &Chain,
        mem: &DmaMemory,
    ) -> std::io::Result<()> {
        let len = len as usize;
        let buf = bounce(&mut self.bounce, len);
        if chain.read_at(mem, HEADER_LEN, buf) != len {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        self.file.write_all_at(buf, sector * SECTOR_SIZE)?;
        if self.write_through {
            self.file.sync_data()?;
        }
        self.stats.writes += 1;
        self.stats.bytes_written += len as u64;
        Ok(())
    }

    fn discard(&mut self, len: u32, chain: &Chain, mem: &DmaMemory) -> std::io::Result<()> {
        let mut bytes = vec![0u8; len as usize];
        if chain.read_at(mem, HEADER_LEN, &mut bytes) != bytes.len() {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        let ranges = parse_discard(&bytes, &self.limits)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        for r in ranges {
            punch_hole(&self.file, r.offset, r.len)?;
        }
        self.stats.discards += 1;
        Ok(())
    }
}

/// The first `len` bytes of the bounce buffer, grown on first use (at
/// most [`MAX_DATA`]: `parse` bounds `len`).
fn bounce(buffer: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buffer.len() < len {
        buffer.resize(len, 0);
    }
    &mut buffer[..len]
}

/// Deallocates `len` bytes at `offset` of `file`, keeping its size; the
/// range then reads as zeros. A host file system without hole punching
/// makes it a no-op (discard is only a hint, §5.2.6.2).
fn punch_hole(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let (Ok(off), Ok(l)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::ErrorKind::InvalidInput.into());
    };
    // SAFETY: fallocate on a file descriptor we own, with integer
    // arguments only; it touches no memory of ours.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            l,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        return Ok(());
    }
    Err(err)
}

impl VirtioDevice for VirtioBlock {
    fn device_type(&self) -> DeviceType {
        DeviceType::Block
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        let mut f = super::VIRTIO_F_VERSION_1
            | VIRTIO_BLK_F_SIZE_MAX
            | VIRTIO_BLK_F_SEG_MAX
            | VIRTIO_BLK_F_BLK_SIZE
            | VIRTIO_BLK_F_FLUSH;
        if self.backend.limits.readonly {
            f |= VIRTIO_BLK_F_RO;
        } else {
            f |= VIRTIO_BLK_F_DISCARD;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let img = self.config_image();
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|at| usize::try_from(at).ok())
                .and_then(|at| img.get(at).copied())
                .unwrap_or(0);
        }
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let features = activation.features;
        let single = activation.into_single_queue()?;
        self.backend.limits.discard = features & VIRTIO_BLK_F_DISCARD != 0;
        self.backend.write_through = features & VIRTIO_BLK_F_FLUSH == 0;
        self.active = Some(single);
        self.serve();
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) {
        if queue == 0 {
            self.serve();
        }
    }

    fn reset(&mut self) {
        self.active = None;
        self.backend.limits.discard = false;
        self.backend.write_through = false;
    }

    fn inspect(&self) -> Vec<(String, String)> {
        let s = &self.backend.stats;
        let mut values = vec![
            ("path".into(), self.path.display().to_string()),
            (
                "capacity_sectors".into(),
                self.backend.limits.capacity.to_string(),
            ),
            ("readonly".into(), self.backend.limits.readonly.to_string()),
            ("reads".into(), s.reads.to_string()),
            ("writes".into(), s.writes.to_string()),
            ("flushes".into(), s.flushes.to_string()),
            ("get_ids".into(), s.get_ids.to_string()),
            ("discards".into(), s.discards.to_string()),
            ("bytes_read".into(), s.bytes_read.to_string()),
            ("bytes_written".into(), s.bytes_written.to_string()),
            ("unsupported".into(), s.unsupported.to_string()),
            ("errors".into(), s.errors.to_string()),
        ];
        if let Some(a) = &self.active {
            values.push(("next_avail".into(), a.queue.next_avail().to_string()));
            values.push(("next_used".into(), a.queue.next_used().to_string()));
        }
        values
    }
}

#[cfg(test)]
mod tests;
