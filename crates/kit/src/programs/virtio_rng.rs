//! `virtio-rng`: a minimal virtio driver in 64-bit mode: find the
//! virtio entropy device on PCI bus 0, bring it up through the modern
//! PCI transport and get 32 random bytes through one virtqueue.
//!
//! 1. **Find it** with configuration mechanism #1 (ports 0xCF8/0xCFC, PCI
//!    3.0 §3.2.2.3.2): the first slot whose vendor/device dword reads
//!    `1af4:1044` (virtio 1.2 §4.1.2: device ID 0x1040 + 4). Read BAR 0
//!    (where the firmware put it) and enable memory decoding and bus
//!    mastering in the command register.
//! 2. **Initialize** (virtio 1.2 §3.1.1) through the common configuration
//!    at BAR 0 + 0 (the layout the transport's capabilities describe; a
//!    full driver would walk the capability list): reset, ACKNOWLEDGE,
//!    DRIVER, check and accept VIRTIO_F_VERSION_1, FEATURES_OK (and read
//!    it back), then queue 0: size 4, the descriptor table, available and
//!    used rings at fixed addresses, enable, DRIVER_OK.
//! 3. **Request**: descriptor 0 = a 32-byte device-writable buffer;
//!    available ring entry 0 = descriptor 0, `idx` = 1; notify queue 0 at
//!    BAR 0 + 0x3000. No interrupts: the program polls the used ring's
//!    `idx` (with a bound) and checks the used element (id 0, length 32)
//!    and that the buffer is no longer all zeros.
//!
//! Under the kvm engine the notification is an ioeventfd: the write does
//! not leave KVM, and the VMM's I/O thread serves the queue while the
//! program polls.
//!
//! Image layout: code at +0, data from +0xc00; the queue at 0x30000.

use iced_x86::code_asm::*;

use super::{finish, Built, Info};
use crate::cpu::set_stack;
use crate::idt::{push_idt, Faults, Pieces, DATA};
use crate::image::{addr32, Asm, DataArea, Image};
use crate::uart::{bsp_only, exit, Uart};
use crate::{debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_PASS};

/// Registry facts.
pub(crate) const INFO: Info = Info {
    name: "virtio-rng",
    description: "a polled virtio driver: PCI config, virtio-pci init, one request to virtio-rng",
    mode: FlatMode::Long,
};

/// The vendor/device dword of a modern virtio entropy device.
const VIRTIO_RNG_ID: u32 = 0x1044_1af4;

/// Common configuration offsets (virtio 1.2 §4.1.4.3).
const DEVICE_FEATURE_SELECT: i32 = 0x00;
const DEVICE_FEATURE: i32 = 0x04;
pub(crate) const DRIVER_FEATURE_SELECT: i32 = 0x08;
pub(crate) const DRIVER_FEATURE: i32 = 0x0c;
pub(crate) const DEVICE_STATUS: i32 = 0x14;
pub(crate) const QUEUE_SELECT: i32 = 0x16;
pub(crate) const QUEUE_SIZE: i32 = 0x18;
pub(crate) const QUEUE_ENABLE: i32 = 0x1c;
pub(crate) const QUEUE_DESC: i32 = 0x20;
pub(crate) const QUEUE_DRIVER: i32 = 0x28;
pub(crate) const QUEUE_DEVICE: i32 = 0x30;
/// Queue 0's notification address: the notify capability's offset (the
/// transport's layout) + queue_notify_off 0 * multiplier.
pub(crate) const NOTIFY_QUEUE_0: i32 = 0x3000;

/// `device_status` bits (§2.1).
pub(crate) const ACKNOWLEDGE: u32 = 1;
pub(crate) const DRIVER: u32 = 2;
pub(crate) const DRIVER_OK: u32 = 4;
pub(crate) const FEATURES_OK: u32 = 8;

/// The queue: descriptor table, available ring, used ring, buffer.
const DESC: u32 = 0x30000;
const AVAIL: u32 = 0x31000;
const USED: u32 = 0x32000;
const BUFFER: u32 = 0x33000;
const BUFFER_LEN: u32 = 32;
/// `VIRTQ_DESC_F_WRITE`.
const DESC_F_WRITE: u32 = 2;
/// Polls of the used ring before giving up.
const POLLS: u32 = 5_000_000;

/// The line printed on success.
const OK: &str = "kit: virtio-rng gave 32 bytes through a virtqueue ok";

/// Assembles `virtio-rng`.
pub(crate) fn build() -> Result<Built, KitError> {
    let load = DEFAULT_LOAD_ADDRESS;
    let mut image = Image::new(load);
    let mut data = DataArea::new(DATA);
    let idtr = push_idt(&mut data, load, &[])?;
    let pieces = Pieces::new(&mut data, load)?;
    let mut text = |s: &str| addr32("message", load + data.push_cstr(s) as u64);
    let ok = text(&format!("{OK}\n"))?;
    let no_device = text("kit: virtio-rng FAILED: no 1af4:1044 function on bus 0")?;
    let no_version_1 = text("kit: virtio-rng FAILED: VIRTIO_F_VERSION_1 not offered")?;
    let refused = text("kit: virtio-rng FAILED: FEATURES_OK did not stick")?;
    let timed_out = text("kit: virtio-rng FAILED: the used ring never moved")?;
    let bad_used = text("kit: virtio-rng FAILED: used element is not (id 0, len 32)")?;
    let zeros = text("kit: virtio-rng FAILED: the buffer is still all zeros")?;
    data.place_into(&mut image)?;

    image.code(INFO.name, 0, 64, |a| {
        a.cli()?;
        a.cld()?;
        bsp_only(a)?;
        set_stack(a)?;
        let mut uart = Uart::new(a);
        let mut faults = Faults::new(a, pieces);
        Uart::init(a)?;
        faults.install(a, idtr)?;

        find_device(a, VIRTIO_RNG_ID)?;
        a.cmp(ebx, 32)?;
        faults.fail_if(a, CodeAssembler::jae, no_device)?;
        // R12 = BAR 0 (memory BAR: bits 3:0 are flags).
        config_address(a, 0x10)?;
        a.mov(dx, 0xcfcu32)?;
        a.in_(eax, dx)?;
        a.and(eax, 0xffff_fff0u32)?;
        a.mov(r12d, eax)?;
        // Command: memory space + bus master.
        config_address(a, 0x04)?;
        a.mov(dx, 0xcfcu32)?;
        a.mov(eax, 0x6u32)?;
        a.out(dx, eax)?;

        status(a, 0)?;
        status(a, ACKNOWLEDGE)?;
        status(a, ACKNOWLEDGE | DRIVER)?;
        a.mov(dword_ptr(r12 + DEVICE_FEATURE_SELECT), 1u32)?;
        a.test(dword_ptr(r12 + DEVICE_FEATURE), 1u32)?;
        faults.fail_if(a, CodeAssembler::jz, no_version_1)?;
        a.mov(dword_ptr(r12 + DRIVER_FEATURE_SELECT), 1u32)?;
        a.mov(dword_ptr(r12 + DRIVER_FEATURE), 1u32)?;
        a.mov(dword_ptr(r12 + DRIVER_FEATURE_SELECT), 0u32)?;
        a.mov(dword_ptr(r12 + DRIVER_FEATURE), 0u32)?;
        status(a, ACKNOWLEDGE | DRIVER | FEATURES_OK)?;
        a.test(byte_ptr(r12 + DEVICE_STATUS), FEATURES_OK)?;
        faults.fail_if(a, CodeAssembler::jz, refused)?;

        clear_queue_memory(a)?;
        a.mov(word_ptr(r12 + QUEUE_SELECT), 0u32)?;
        a.mov(word_ptr(r12 + QUEUE_SIZE), 4u32)?;
        for (reg, at) in [
            (QUEUE_DESC, DESC),
            (QUEUE_DRIVER, AVAIL),
            (QUEUE_DEVICE, USED),
        ] {
            a.mov(dword_ptr(r12 + reg), at)?;
            a.mov(dword_ptr(r12 + reg + 4), 0u32)?;
        }
        a.mov(word_ptr(r12 + QUEUE_ENABLE), 1u32)?;
        status(a, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)?;

        // Descriptor 0: the buffer, device-writable; offer it.
        a.mov(dword_ptr(DESC), BUFFER)?;
        a.mov(dword_ptr(DESC + 4), 0u32)?;
        a.mov(dword_ptr(DESC + 8), BUFFER_LEN)?;
        a.mov(word_ptr(DESC + 12), DESC_F_WRITE)?;
        a.mov(word_ptr(AVAIL + 4), 0u32)?;
        a.mov(word_ptr(AVAIL + 2), 1u32)?;
        a.mov(word_ptr(r12 + NOTIFY_QUEUE_0), 0u32)?;

        // Poll the used ring's idx.
        let mut poll = a.create_label();
        let mut arrived = a.create_label();
        a.mov(ecx, POLLS)?;
        a.set_label(&mut poll)?;
        a.cmp(word_ptr(USED + 2), 1u32)?;
        a.je(arrived)?;
        a.pause()?;
        a.dec(ecx)?;
        a.jnz(poll)?;
        faults.fail_if(a, CodeAssembler::jmp, timed_out)?;
        a.set_label(&mut arrived)?;
        a.cmp(dword_ptr(USED + 4), 0u32)?;
        faults.fail_if(a, CodeAssembler::jne, bad_used)?;
        a.cmp(dword_ptr(USED + 8), BUFFER_LEN)?;
        faults.fail_if(a, CodeAssembler::jne, bad_used)?;
        a.mov(rax, qword_ptr(BUFFER))?;
        for i in 1..4 {
            a.or(rax, qword_ptr(BUFFER + 8 * i))?;
        }
        a.test(rax, rax)?;
        faults.fail_if(a, CodeAssembler::jz, zeros)?;

        uart.print(a, ok)?;
        exit(a, KIT_PASS)?;
        faults.emit_routines(a, &uart)?;
        uart.emit_routines(a)
    })?;
    let expect = Expect {
        output: vec![OK],
        status: debug_exit_status(KIT_PASS),
    };
    let mut built = finish(image, &INFO, expect);
    built.program.devices = vec!["virtio-rng"];
    Ok(built)
}

/// Scans slots 0-31 of bus 0 for the vendor/device dword `id`; leaves
/// the slot in EBX (32 if none). Clobbers EAX, DX.
pub(crate) fn find_device(a: &mut CodeAssembler, id: u32) -> Asm {
    let mut next = a.create_label();
    let mut found = a.create_label();
    a.xor(ebx, ebx)?;
    a.set_label(&mut next)?;
    config_address(a, 0)?;
    a.mov(dx, 0xcfcu32)?;
    a.in_(eax, dx)?;
    a.cmp(eax, id)?;
    a.je(found)?;
    a.inc(ebx)?;
    a.cmp(ebx, 32)?;
    a.jb(next)?;
    a.set_label(&mut found)?;
    Ok(())
}

/// CONFIG_ADDRESS = enable | slot EBX << 11 | `register` (function 0,
/// bus 0). Clobbers EAX and DX.
pub(crate) fn config_address(a: &mut CodeAssembler, register: u32) -> Asm {
    a.mov(eax, ebx)?;
    a.shl(eax, 11)?;
    a.or(eax, 0x8000_0000u32 | register)?;
    a.mov(dx, 0xcf8u32)?;
    a.out(dx, eax)?;
    Ok(())
}

/// `device_status` = `value` (a byte register in the common config).
fn status(a: &mut CodeAssembler, value: u32) -> Asm {
    a.mov(byte_ptr(r12 + DEVICE_STATUS), value)?;
    Ok(())
}

/// Zeroes the descriptor table, the two rings and the buffer (4 pages).
fn clear_queue_memory(a: &mut CodeAssembler) -> Asm {
    a.mov(edi, DESC)?;
    a.xor(eax, eax)?;
    a.mov(ecx, 4 * 4096 / 4)?;
    a.rep().stosd()?;
    Ok(())
}
