//! Tests of the block device through a real split queue in guest memory:
//! the driver side (descriptor table, available ring) is written by hand,
//! the used ring read back.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use alcazar_core::memory::{MemoryMap, RegionKind};
use alcazar_core::GuestMemory;

use crate::virtio::VirtioInterrupt;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use super::request::*;
use super::*;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const RAM: u64 = 16 << 20;

#[derive(Default)]
struct Irq(AtomicU32);

impl VirtioInterrupt for Irq {
    fn signal_queue(&self, _queue: u16) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn signal_config(&self) {}
}

/// A temporary image file, removed on drop.
struct Image(PathBuf);

impl Image {
    fn new(name: &str, contents: &[u8]) -> Image {
        let path = std::env::temp_dir().join(format!(
            "alcazar-blk-{}-{name}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, contents).unwrap();
        Image(path)
    }
    fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The device on a real split queue in 16 MiB of guest RAM, with the
/// driver side written by hand.
struct Rig {
    dev: VirtioBlock,
    mem: DmaMemory,
    irq: Arc<Irq>,
    next_desc: u16,
    requests: u16,
    avail_addr: u64,
    used_addr: u64,
    desc_addr: u64,
}

impl Rig {
    fn new(image: &Image, readonly: bool) -> Rig {
        let mut map = MemoryMap::default();
        map.add(0, RAM, RegionKind::Ram).unwrap();
        let guest = GuestMemory::new(map).unwrap();
        let mem = guest.dma();
        let mut dev = VirtioBlock::new(&image.0, readonly).unwrap();
        let mock = MockSplitQueue::create(mem.mmap(), GuestAddress(0), QUEUE_SIZE);
        let queue: Queue = mock.create_queue().unwrap();
        let (desc_addr, avail_addr, used_addr) = (
            mock.desc_table_addr().0,
            mock.avail_addr().0,
            mock.used_addr().0,
        );
        let irq = Arc::new(Irq::default());
        let features = dev.device_features();
        dev.activate(Activation {
            features,
            queues: vec![queue],
            memory: mem.clone(),
            interrupt: irq.clone(),
        })
        .unwrap();
        Rig {
            dev,
            mem,
            irq,
            next_desc: 0,
            requests: 0,
            avail_addr,
            used_addr,
            desc_addr,
        }
    }

    /// Offers a chain of (address, length, device-writable) segments
    /// and notifies; returns the used length.
    fn submit(&mut self, segments: &[(u64, u32, bool)]) -> u32 {
        let head = self.next_desc;
        for (i, &(addr, len, write)) in segments.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % QUEUE_SIZE;
            let more = i + 1 < segments.len();
            let flags = if write { F_WRITE } else { 0 } | if more { F_NEXT } else { 0 };
            let desc = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, self.next_desc));
            self.mem
                .mmap()
                .write_obj(desc, GuestAddress(self.desc_addr + 16 * u64::from(index)))
                .unwrap();
        }
        let slot = self.avail_addr + 4 + 2 * u64::from(self.requests % QUEUE_SIZE);
        self.mem.mmap().write_obj(head, GuestAddress(slot)).unwrap();
        self.requests = self.requests.wrapping_add(1);
        self.mem
            .mmap()
            .write_obj(self.requests, GuestAddress(self.avail_addr + 2))
            .unwrap();
        self.dev.queue_notify(0);
        let used_idx: u16 = self
            .mem
            .mmap()
            .read_obj(GuestAddress(self.used_addr + 2))
            .unwrap();
        assert_eq!(
            used_idx, self.requests,
            "the request was not returned as used"
        );
        let elem = self.used_addr + 4 + 8 * u64::from((self.requests - 1) % QUEUE_SIZE);
        let id: u32 = self.mem.mmap().read_obj(GuestAddress(elem)).unwrap();
        assert_eq!(id, u32::from(head));
        self.mem.mmap().read_obj(GuestAddress(elem + 4)).unwrap()
    }

    fn header(&self, at: u64, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write(at, &h).unwrap();
    }

    fn byte(&self, at: u64) -> u8 {
        self.mem.mmap().read_obj(GuestAddress(at)).unwrap()
    }

    fn bytes(&self, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read(at, &mut v).unwrap();
        v
    }
}

const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

#[test]
fn written_sectors_read_back_and_reach_the_file() {
    let image = Image::new("rw", &[0u8; 64 * 1024]);
    let mut rig = Rig::new(&image, false);
    let data = pattern(1024, 3);
    rig.mem.write(DATA, &data[..512]).unwrap();
    rig.mem.write(DATA + 0x1000, &data[512..]).unwrap();
    rig.header(HDR, VIRTIO_BLK_T_OUT, 5);
    rig.mem.write(STATUS, &[0xff]).unwrap();
    let used = rig.submit(&[
        (HDR, 16, false),
        (DATA, 512, false),
        (DATA + 0x1000, 512, false),
        (STATUS, 1, true),
    ]);
    assert_eq!(used, 1);
    assert_eq!(rig.byte(STATUS), VIRTIO_BLK_S_OK);
    assert_eq!(&image.contents()[5 * 512..7 * 512], &data[..]);

    // Read it back into one buffer whose tail is the status byte.
    rig.header(HDR, VIRTIO_BLK_T_IN, 5);
    let used = rig.submit(&[(HDR, 16, false), (DATA + 0x8000, 1025, true)]);
    assert_eq!(used, 1025);
    assert_eq!(rig.bytes(DATA + 0x8000, 1024), data);
    assert_eq!(rig.byte(DATA + 0x8000 + 1024), VIRTIO_BLK_S_OK);
    let s = rig.dev.stats();
    assert_eq!(
        (s.reads, s.writes, s.bytes_read, s.bytes_written),
        (1, 1, 1024, 1024)
    );
    assert!(rig.irq.0.load(Ordering::SeqCst) >= 2);
}

#[test]
fn a_header_split_across_descriptors_is_read_whole() {
    let image = Image::new("split", &pattern(8192, 1));
    let mut rig = Rig::new(&image, false);
    rig.header(HDR, VIRTIO_BLK_T_IN, 3);
    let used = rig.submit(&[
        (HDR, 8, false),
        (HDR + 8, 8, false),
        (DATA, 512, true),
        (STATUS, 1, true),
    ]);
    assert_eq!(used, 513);
    assert_eq!(rig.bytes(DATA, 512), &image.contents()[3 * 512..4 * 512]);
    assert_eq!(rig.byte(STATUS), VIRTIO_BLK_S_OK);
}

#[test]
fn flush_and_get_id_succeed() {
    let image = Image::new("flush", &[0u8; 4096]);
    let mut rig = Rig::new(&image, false);
    rig.dev.set_id("alcazar-disk-0");
    rig.header(HDR, VIRTIO_BLK_T_FLUSH, 0);
    rig.mem.write(STATUS, &[0xff]).unwrap();
    assert_eq!(rig.submit(&[(HDR, 16, false), (STATUS, 1, true)]), 1);
    assert_eq!(rig.byte(STATUS), VIRTIO_BLK_S_OK);
    assert_eq!(rig.dev.stats().flushes, 1);

    rig.header(HDR, VIRTIO_BLK_T_GET_ID, 0);
    let used = rig.submit(&[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]);
    assert_eq!(used, 21);
    assert_eq!(&rig.bytes(DATA, 20)[..14], b"alcazar-disk-0");
    assert_eq!(rig.bytes(DATA + 14, 6), [0; 6]);
    assert_eq!(rig.byte(STATUS), VIRTIO_BLK_S_OK);
}

#[test]
fn a_read_only_disk_refuses_writes_and_keeps_its_contents() {
    let before = pattern(4096, 9);
    let image = Image::new("ro", &before);
    let mut rig = Rig::new(&image, true);
    assert_ne!(rig.dev.device_features() & VIRTIO_BLK_F_RO, 0);
    rig.mem.write(DATA, &[0u8; 512]).unwrap();
    rig.header(HDR, VIRTIO_BLK_T_OUT, 0);
    let used = rig.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]);
    assert_eq!(used, 1);
    assert_eq!(rig.byte(STATUS), VIRTIO_BLK_S_IOERR);
    assert_eq!(image.contents(), before);
    // Reads still work.
    rig.header(HDR, VIRTIO_BLK_T_IN, 1);
    rig.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    assert_eq!(rig.byte(STATUS), VIRTIO_BLK_S_OK);
    assert_eq!(rig.bytes(DATA, 512), &before[512..1024]);
}

#[test]
fn bad_chains_are_returned_empty_and_the_device_goes_on() {
    let image = Image::new("bad", &[0u8; 4096]);
    let mut rig = Rig::new(&image, false);
    rig.header(HDR, VIRTIO_BLK_T_IN, 0);
    rig.mem.write(STATUS, &[0xee]).unwrap();
    // Readable after writable.
    let used = rig.submit(&[(HDR, 16, false), (STATUS, 1, true), (DATA, 512, false)]);
    assert_eq!(used, 0);
    assert_eq!(rig.byte(STATUS), 0xee);
    // A buffer past the end of guest RAM.
    assert_eq!(rig.submit(&[(HDR, 16, false), (RAM - 256, 513, true)]), 0);
    // An address that wraps around.
    assert_eq!(
        rig.submit(&[(HDR, 16, false), (u64::MAX - 8, 513, true)]),
        0
    );
    // No status byte: nothing to write.
    rig.header(HDR, VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(rig.submit(&[(HDR, 16, false)]), 0);
    // A chain longer than the device takes.
    rig.header(HDR, VIRTIO_BLK_T_IN, 0);
    assert_eq!(rig.submit(&[(HDR, 16, false), (DATA, 2 << 20, true)]), 0);
    assert_eq!(rig.dev.stats().errors, 5);
    // And a good request still works.
    rig.header(HDR, VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(rig.submit(&[(HDR, 16, false), (STATUS, 1, true)]), 1);
    assert_eq!(rig.byte(STATUS), VIRTIO_BLK_S_OK);
}

#[test]
fn bad_requests_get_an_error_status() {
    let before = pattern(4096, 5);
    let image = Image::new("status", &before);
    let mut rig = Rig::new(&image, false);
    let cases: [(u32, u64, u32, u8); 5] = [
        (VIRTIO_BLK_T_IN, 7, 1024, VIRTIO_BLK_S_IOERR), // past the end (8 sectors)
        (VIRTIO_BLK_T_IN, u64::MAX, 512, VIRTIO_BLK_S_IOERR),
        (VIRTIO_BLK_T_IN, 0, 100, VIRTIO_BLK_S_IOERR), // not whole sectors
        (VIRTIO_BLK_T_OUT, 8, 512, VIRTIO_BLK_S_IOERR),
        (99, 0, 512, VIRTIO_BLK_S_UNSUPP),
    ];
    for (kind, sector, len, want) in cases {
        rig.header(HDR, kind, sector);
        rig.mem.write(STATUS, &[0xff]).unwrap();
        let write = kind != VIRTIO_BLK_T_OUT;
        let used = rig.submit(&[(HDR, 16, false), (DATA, len, write), (STATUS, 1, true)]);
        assert_eq!(used, 1, "type {kind} sector {sector}");
        assert_eq!(rig.byte(STATUS), want, "type {kind} sector {sector}");
    }
    // A header cut short.
    assert_eq!(rig.submit(&[(HDR, 8, false), (STATUS, 1, true)]), 1);
    assert_eq!(rig.byte(STATUS), VIRTIO_BLK_S_IOERR);
    assert_eq!(image.contents(), before);
}

#[test]
fn discard_punches_a_hole_that_reads_as_zeros() {
    let image = Image::new("discard", &pattern(64 * 1024, 2));
    let mut rig = Rig::new(&image, false);
    let mut range = 8u64.to_le_bytes().to_vec();
    range.extend_from_slice(&16u32.to_le_bytes());
    range.extend_from_slice(&0u32.to_le_bytes());
    rig.mem.write(DATA, &range).unwrap();
    rig.header(HDR, VIRTIO_BLK_T_DISCARD, 0);
    let used = rig.submit(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)]);
    assert_eq!(used, 1);
    assert_eq!(rig.byte(STATUS), VIRTIO_BLK_S_OK);
    let after = image.contents();
    assert_eq!(after.len(), 64 * 1024);
    assert!(after[4096..12288].iter().all(|&b| b == 0));
    assert_eq!(&after[..4096], &pattern(64 * 1024, 2)[..4096]);
    assert_eq!(&after[12288..], &pattern(64 * 1024, 2)[12288..]);
}

#[test]
fn config_space_reads_at_any_offset_and_width() {
    let image = Image::new("cfg", &[0u8; 3 * 512]);
    let dev = VirtioBlock::new(&image.0, false).unwrap();
    let mut b = [0u8; 8];
    dev.read_config(0, &mut b);
    assert_eq!(u64::from_le_bytes(b), 3);
    let mut w = [0u8; 4];
    dev.read_config(20, &mut w);
    assert_eq!(u32::from_le_bytes(w), 512);
    dev.read_config(12, &mut w);
    assert_eq!(u32::from_le_bytes(w), SEG_MAX);
    let mut one = [0xffu8; 1];
    dev.read_config(0, &mut one);
    assert_eq!(one[0], 3);
    dev.read_config(70, &mut w);
    assert_eq!(w, [0; 4]);
    dev.read_config(u64::MAX, &mut w);
    assert_eq!(w, [0; 4]);
}

#[test]
fn images_must_exist_and_be_whole_sectors() {
    let odd = Image::new("odd", &[0u8; 1000]);
    let e = VirtioBlock::new(&odd.0, false).unwrap_err();
    assert!(matches!(
        e,
        BlockError::NotSectorMultiple {
            size: 1000,
            rounded: 1024,
            ..
        }
    ));
    assert!(e.to_string().contains("not a multiple of 512"), "{e}");
    let empty = Image::new("empty", &[]);
    assert!(matches!(
        VirtioBlock::new(&empty.0, true),
        Err(BlockError::Empty(_))
    ));
    let e = VirtioBlock::new(Path::new("/nonexistent/disk.img"), true).unwrap_err();
    assert!(matches!(e, BlockError::Open { .. }));
    assert!(e.to_string().contains("/nonexistent/disk.img"), "{e}");
}

#[test]
fn a_bogus_available_index_does_not_hold_the_vcpu() {
    let image = Image::new("avail", &[0u8; 4096]);
    let mut rig = Rig::new(&image, false);
    // 1000 chains "available" in a queue of 256: virtio-queue refuses to
    // iterate, but the index still differs from the device's position.
    rig.mem
        .mmap()
        .write_obj(1000u16, GuestAddress(rig.avail_addr + 2))
        .unwrap();
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        rig.dev.queue_notify(0);
        let _ = done.send(rig.dev.stats());
    });
    let stats = wait
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("queue_notify returned");
    assert_eq!(stats, BlockStats::default());
}
