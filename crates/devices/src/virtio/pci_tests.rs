//! Unit tests of the virtio PCI transport, driving it the way a driver
//! does: through BAR 0 and the configuration space.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use alcazar_core::irq::{InterruptMessage, IrqLine, MsiSink};
use alcazar_core::memory::{GuestMemory, MemoryMap};

use super::*;
use crate::virtio::rng::{self, VirtioRng};

#[derive(Default)]
pub(super) struct Line(pub(super) AtomicBool);
impl IrqLine for Line {
    fn set_level(&self, high: bool) {
        self.0.store(high, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Sink(Mutex<Vec<InterruptMessage>>);
impl MsiSink for Sink {
    fn deliver(&self, m: InterruptMessage) {
        self.0.lock().unwrap().push(m);
    }
}

pub(super) struct Rig {
    pub(super) dev: VirtioPci,
    pub(super) line: Arc<Line>,
    sink: Arc<Sink>,
    mem: GuestMemory,
}

pub(super) fn rig() -> Rig {
    let mem = GuestMemory::new(MemoryMap::pc(1 << 20).unwrap()).unwrap();
    let line = Arc::new(Line::default());
    let sink = Arc::new(Sink::default());
    let dev = VirtioPci::new(
        Box::new(VirtioRng::new().unwrap()),
        mem.dma(),
        0xc000_0000,
        line.clone(),
        17,
        sink.clone(),
    )
    .unwrap();
    Rig {
        dev,
        line,
        sink,
        mem,
    }
}

impl Rig {
    pub(super) fn w8(&mut self, off: u64, v: u8) {
        self.dev.write_bar(0, off, &[v]);
    }
    pub(super) fn w16(&mut self, off: u64, v: u16) {
        self.dev.write_bar(0, off, &v.to_le_bytes());
    }
    pub(super) fn w32(&mut self, off: u64, v: u32) {
        self.dev.write_bar(0, off, &v.to_le_bytes());
    }
    pub(super) fn r8(&mut self, off: u64) -> u8 {
        let mut b = [0u8; 1];
        self.dev.read_bar(0, off, &mut b);
        b[0]
    }
    fn r16(&mut self, off: u64) -> u16 {
        let mut b = [0u8; 2];
        self.dev.read_bar(0, off, &mut b);
        u16::from_le_bytes(b)
    }
    fn r32(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read_bar(0, off, &mut b);
        u32::from_le_bytes(b)
    }

    /// ACKNOWLEDGE | DRIVER, VERSION_1 accepted, FEATURES_OK.
    pub(super) fn negotiate(&mut self) -> u8 {
        self.w8(0x14, status::ACKNOWLEDGE | status::DRIVER);
        self.w32(0x08, 1);
        self.w32(0x0c, 1);
        self.w8(
            0x14,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        self.r8(0x14)
    }

    /// Queue 0 at 0x1000 (desc), 0x2000 (avail), 0x3000 (used), size 8.
    pub(super) fn setup_queue(&mut self) {
        self.w16(0x16, 0);
        self.w16(0x18, 8);
        for (reg, addr) in [(0x20, 0x1000u32), (0x28, 0x2000), (0x30, 0x3000)] {
            self.w32(reg, addr);
            self.w32(reg + 4, 0);
        }
        self.w16(0x1c, 1);
    }

    /// One 16-byte writable buffer at 0x4000 offered on queue 0.
    pub(super) fn offer_buffer(&mut self) {
        let m = &self.mem;
        m.write(0x1000, &0x4000u64.to_le_bytes()).unwrap();
        m.write(0x1008, &16u32.to_le_bytes()).unwrap();
        m.write(0x100c, &2u16.to_le_bytes()).unwrap(); // VIRTQ_DESC_F_WRITE
        m.write(0x2004, &0u16.to_le_bytes()).unwrap();
        m.write(0x2002, &1u16.to_le_bytes()).unwrap();
    }
}

#[test]
fn features_outside_the_offer_or_without_version_1_are_refused() {
    let mut r = rig();
    r.w8(0x14, status::ACKNOWLEDGE | status::DRIVER);
    // Only the low half: no VERSION_1.
    r.w32(0x08, 0);
    r.w32(0x0c, 0);
    r.w8(
        0x14,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(r.r8(0x14) & status::FEATURES_OK, 0);
    // A bit the device does not offer.
    r.w32(0x08, 1);
    r.w32(0x0c, 1 | 1 << 20);
    r.w8(
        0x14,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(r.r8(0x14) & status::FEATURES_OK, 0);
    r.w32(0x0c, 1);
    r.w8(
        0x14,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_ne!(r.r8(0x14) & status::FEATURES_OK, 0);
}

#[test]
fn device_features_read_through_the_select_register() {
    let mut r = rig();
    r.w32(0x00, 1);
    assert_eq!(r.r32(0x04) & 1, 1, "VERSION_1 is bit 32");
    r.w32(0x00, 7);
    assert_eq!(r.r32(0x04), 0, "no features beyond bit 63");
    assert_eq!(r.r16(0x12), 1, "one queue");
}

#[test]
fn queue_addresses_written_in_halves_read_back_whole() {
    let mut r = rig();
    r.w16(0x16, 0);
    r.w32(0x20, 0x1234_5000);
    r.w32(0x24, 0x1);
    let mut q = [0u8; 8];
    r.dev.read_bar(0, 0x20, &mut q);
    assert_eq!(u64::from_le_bytes(q), 0x1_1234_5000);
    // A queue index past the end reads as size 0 and takes no writes.
    r.w16(0x16, 9);
    r.w16(0x18, 8);
    assert_eq!(r.r16(0x18), 0);
}

#[test]
fn a_queue_outside_memory_makes_driver_ok_fail_with_needs_reset() {
    let mut r = rig();
    r.negotiate();
    r.w16(0x16, 0);
    r.w16(0x18, 8);
    r.w32(0x20, 0xfff0_0000); // beyond the 1 MiB of RAM
    r.w16(0x1c, 1);
    r.w8(0x14, 0x0f);
    assert_ne!(r.r8(0x14) & status::DEVICE_NEEDS_RESET, 0);
    // Without MSI-X the config change is signalled on INTx with ISR bit 1.
    assert!(r.line.0.load(Ordering::SeqCst));
    assert_eq!(r.r8(ISR_CFG), 2);
    assert!(
        !r.line.0.load(Ordering::SeqCst),
        "reading the ISR deasserts"
    );
    assert_eq!(r.r8(ISR_CFG), 0, "and clears it");
}

#[test]
fn an_available_idx_far_ahead_shows_needs_reset_until_the_driver_resets() {
    let mut r = rig();
    r.negotiate();
    r.setup_queue();
    r.w8(0x14, 0x0f);
    // idx 0x100 with an 8-entry queue: 256 entries "available" at once.
    r.mem.write(0x2002, &0x100u16.to_le_bytes()).unwrap();
    r.w16(NOTIFY_CFG, 0);
    assert_eq!(r.r8(0x14), 0x0f | status::DEVICE_NEEDS_RESET);
    let shown = r
        .dev
        .inspect()
        .into_iter()
        .find(|(k, _)| k == "device_status");
    assert_eq!(shown, Some(("device_status".into(), "0x4f".into())));
    let tree = r.dev.inspect_tree();
    assert_eq!(
        tree.get("device_status/device_needs_reset"),
        Some(alcazar_core::inspect::Node::Value("true".into()))
    );
    assert_eq!(r.r8(ISR_CFG), 2, "a configuration-change interrupt");
    r.w16(NOTIFY_CFG, 0);
    assert_eq!(r.r8(ISR_CFG), 0, "only one per error state");
    let used_idx = r.mem.read_u64(0x3000).unwrap() >> 16 & 0xffff;
    assert_eq!(used_idx, 0, "nothing was used");
    // A reset clears it and the device works again.
    r.w8(0x14, 0);
    assert_eq!(r.r8(0x14), 0);
    r.mem.write(0x2002, &0u16.to_le_bytes()).unwrap();
    r.negotiate();
    r.setup_queue();
    r.w8(0x14, 0x0f);
    r.offer_buffer();
    r.w16(NOTIFY_CFG, 0);
    let used_idx = r.mem.read_u64(0x3000).unwrap() >> 16 & 0xffff;
    assert_eq!(used_idx, 1);
    assert_eq!(r.r8(0x14), 0x0f);
}

#[test]
fn repeated_bad_driver_ok_is_counted_and_each_one_signalled() {
    let mut r = rig();
    for _ in 0..20 {
        r.w8(0x14, 0);
        r.w8(0x14, status::DRIVER_OK); // no FEATURES_OK: refused
        assert_ne!(r.r8(0x14) & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(r.r8(ISR_CFG), 2, "each one is a configuration change");
    }
    let count = r
        .dev
        .inspect()
        .into_iter()
        .find(|(k, _)| k == "needs_reset_count");
    assert_eq!(count, Some(("needs_reset_count".into(), "20".into())));
    const { assert!(NEEDS_RESET_WARNINGS < 20, "only the first few are warnings") };
}

#[test]
fn a_request_completes_on_intx_then_reset_forgets_everything() {
    let mut r = rig();
    assert_ne!(r.negotiate() & status::FEATURES_OK, 0);
    r.setup_queue();
    r.w8(0x14, 0x0f);
    assert_eq!(r.r8(0x14), 0x0f);
    r.offer_buffer();
    r.w16(NOTIFY_CFG, 0);
    let used_idx = r.mem.read_u64(0x3000).unwrap() >> 16 & 0xffff;
    assert_eq!(used_idx, 1);
    assert!(r.line.0.load(Ordering::SeqCst), "INTA# asserted");
    assert_eq!(r.r8(ISR_CFG), 1);
    r.w8(0x14, 0);
    assert_eq!(r.r8(0x14), 0);
    r.w16(0x16, 0);
    assert_eq!(r.r16(0x1c), 0, "queue disabled after reset");
    assert_eq!(r.r16(0x18), rng::QUEUE_SIZE, "size back to the maximum");
}

#[test]
fn msix_vectors_route_queue_interrupts_and_bad_vectors_read_no_vector() {
    let mut r = rig();
    // Enable MSI-X in the capability (message control bit 15).
    let cap = r.dev.msix_cap;
    r.dev.write_config(cap + 2, &0x8000u16.to_le_bytes());
    // Vector 1: address 0xfee00000, data vector 0x45, unmasked.
    r.w32(MSIX_TABLE + 16, 0xfee0_0000);
    r.w32(MSIX_TABLE + 16 + 8, 0x45);
    r.w32(MSIX_TABLE + 16 + 12, 0);
    r.negotiate();
    r.setup_queue();
    r.w16(0x1a, 1);
    assert_eq!(r.r16(0x1a), 1);
    r.w16(0x10, 77);
    assert_eq!(r.r16(0x10), NO_VECTOR, "the table has 2 vectors");
    r.w8(0x14, 0x0f);
    r.offer_buffer();
    r.w16(NOTIFY_CFG, 0);
    let got = r.sink.0.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].vector, 0x45);
    assert!(!r.line.0.load(Ordering::SeqCst), "no INTx with MSI-X");
}

#[test]
fn the_pci_cfg_window_reaches_bar_0() {
    let mut r = rig();
    let c = r.dev.pci_cfg_cap;
    // bar = 0, offset = 0x12 (num_queues), length = 2, then read the data.
    r.dev.write_config(c + 4, &[0]);
    r.dev.write_config(c + 8, &0x12u32.to_le_bytes());
    r.dev.write_config(c + 12, &2u32.to_le_bytes());
    let mut d = [0u8; 2];
    r.dev.read_config(c + 16, &mut d);
    assert_eq!(u16::from_le_bytes(d), 1);
    // A misaligned or oversized window does nothing.
    r.dev.write_config(c + 12, &3u32.to_le_bytes());
    r.dev.write_config(c + 16, &[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(r.r8(0x14), 0);
}

#[test]
fn odd_widths_and_offsets_never_panic() {
    let mut r = rig();
    for off in (0..BAR_SIZE + 16).step_by(3) {
        for len in [1usize, 2, 3, 4, 8] {
            let mut b = vec![0xa5u8; len];
            r.dev.write_bar(0, off, &b);
            r.dev.read_bar(0, off, &mut b);
            r.dev.read_bar(1, off, &mut b);
        }
    }
    for off in 0..300 {
        let mut b = [0u8; 4];
        r.dev.write_config(off, &[0xff; 4]);
        r.dev.read_config(off, &mut b);
    }
    let _ = r.dev.inspect_tree();
}
