//! `hostile-virtio` and `hostile-virtio-blk`: a malicious virtio driver.
//! It drives the virtio entropy device (the same PCI function and modern
//! transport as `virtio-rng`), or the block device, with queues and
//! descriptor chains a correct driver never builds, and checks after each
//! abuse that the device refused it in a way the guest can see and still
//! serves a valid request afterwards.
//!
//! 1. **Set up.** Read the end of RAM from the CMOS memory-size bytes
//!    0x34/0x35 (64 KiB blocks above 16 MiB) into R13; find the
//!    `1af4:1044` function with configuration mechanism #1, read BAR 0
//!    into R12, enable memory decoding and bus mastering.
//! 2. **Each abuse** starts from a reset device brought up again (virtio
//!    1.2 §3.1.1: reset, ACKNOWLEDGE, DRIVER, VERSION_1, FEATURES_OK,
//!    queue 0 of size 4, DRIVER_OK), writes its descriptors, offers head
//!    0 (available ring entry 0, `idx` = 1) and notifies. Both devices
//!    answer a chain they refuse by returning it as used with length 0
//!    (`crates/devices/src/virtio/rng.rs`, `block.rs`), so the program
//!    waits for used `idx` = 1 and checks used element (id 0, length 0).
//!    The chains:
//!    - a buffer starting at the end of RAM;
//!    - a buffer straddling the end of RAM (the 16 bytes below the end
//!      must stay untouched);
//!    - a buffer whose address + length wraps past 2^64;
//!    - a buffer on the device's own BAR 0 (MMIO, not RAM);
//!    - a descriptor whose `next` is itself, and a two-descriptor cycle;
//!    - a chain longer than the queue: descriptors 0→1→2→3→4, where 4 is
//!      past the 4-entry table (§2.7.5.1: no chain longer than the queue);
//!    - an indirect table (§2.7.5.3) outside RAM, one whose descriptor
//!      loops on itself, and one holding a nested indirect descriptor
//!      (§2.7.5.3.1 forbids it). The device does not offer
//!      `VIRTIO_F_INDIRECT_DESC`, so a driver must not use indirect
//!      descriptors at all; the device still follows them and must refuse
//!      these tables like direct chains.
//! 3. **Available `idx` far ahead**: one valid descriptor, `idx` = 0x8000
//!    (more than the queue size ahead, §2.7.6). The device cannot make
//!    sense of the ring: it must set `DEVICE_NEEDS_RESET` (§2.1.2) and
//!    use nothing.
//! 4. **Rings outside RAM at DRIVER_OK**: the descriptor table at the end
//!    of RAM, the used ring straddling it, the available ring on the local
//!    APIC page. Each time `device_status` must show
//!    `DEVICE_NEEDS_RESET` after DRIVER_OK (§4.1.4.3.2 / §2.1.2), and a
//!    notification must not make the device touch anything.
//! 5. **After every abuse**, reset and one valid request: for rng a
//!    32-byte device-writable buffer comes back as used (id 0, length 32)
//!    and is no longer all zeros; for blk a read of sector 0 (header,
//!    512-byte buffer, status byte) comes back with length 513, status 0
//!    and the sector's bytes (the disk's first sector must not be zeros). Print one line per abuse, then the summary, and
//!    exit with KIT_PASS; the first check that fails prints why and exits
//!    with KIT_FAIL.
//!
//! The RAM end must be above 16 MiB (the kit VMs have 32 MiB).
//!
//! Image layout: a jump at +0, the exception machinery of [`crate::idt`],
//! data from +0xc00, main code at +0x2000.

use iced_x86::code_asm::*;

use super::virtio_rng::{
    config_address, find_device, ACKNOWLEDGE, DEVICE_STATUS, DRIVER, DRIVER_FEATURE,
    DRIVER_FEATURE_SELECT, DRIVER_OK, FEATURES_OK, NOTIFY_QUEUE_0, QUEUE_DESC, QUEUE_DEVICE,
    QUEUE_DRIVER, QUEUE_ENABLE, QUEUE_SELECT, QUEUE_SIZE,
};
use super::{finish, Built, Info};
use crate::cpu::set_stack;
use crate::idt::{emit_handlers, push_idt, Faults, Pieces, DATA};
use crate::image::{addr32, Asm, DataArea, Image};
use crate::uart::{bsp_only, exit, Uart};
use crate::{
    debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_FAIL, KIT_PASS,
};

/// The device a build attacks, and what a valid request to it is.
pub(crate) struct Target {
    /// Registry facts.
    pub(crate) info: Info,
    /// The vendor/device dword of its PCI function (virtio 1.2 §4.1.2).
    pub(crate) id: u32,
    /// A valid request: its descriptors from index 0.
    valid: &'static [Desc],
    /// The used length a valid request earns.
    valid_len: u32,
    /// Whether the request ends in a status byte at [`STATUS`] that the
    /// device must set to 0 (`VIRTIO_BLK_S_OK`).
    status_byte: bool,
    /// The failure prefix and the summary line.
    failed: &'static str,
    done: &'static str,
    /// Device classes the VMM must add (a disk needs a path: the caller
    /// gives `--disk`).
    devices: &'static [&'static str],
}

/// The virtio entropy device (virtio 1.2 §5.4): one 32-byte writable
/// buffer.
pub(crate) const RNG: Target = Target {
    info: Info {
        name: "hostile-virtio",
        description:
            "a malicious virtio driver: chains outside RAM, loops, bad indirect tables, bad rings",
        mode: FlatMode::Long,
    },
    id: 0x1044_1af4,
    valid: &[GOOD],
    valid_len: BUFFER_LEN,
    status_byte: false,
    failed: "kit: hostile-virtio FAILED: ",
    done: "kit: hostile-virtio: every abuse refused ok",
    devices: &["virtio-rng"],
};

/// The virtio block device (virtio 1.2 §5.2): a read of sector 0 (the
/// zeroed header is `VIRTIO_BLK_T_IN`, sector 0), 512 data bytes and the
/// status byte. Needs a disk (`--disk`) whose first sector is not all
/// zeros.
pub(crate) const BLK: Target = Target {
    info: Info {
        name: "hostile-virtio-blk",
        description:
            "hostile-virtio against virtio-blk (give it a --disk whose sector 0 is not zeros)",
        mode: FlatMode::Long,
    },
    id: 0x1042_1af4,
    valid: &[
        (At::Fixed(HEADER as u64), 16, F_NEXT, 1),
        (At::Fixed(BUFFER as u64), 512, F_WRITE | F_NEXT, 2),
        (At::Fixed(STATUS as u64), 1, F_WRITE, 0),
    ],
    valid_len: 513,
    status_byte: true,
    failed: "kit: hostile-virtio-blk FAILED: ",
    done: "kit: hostile-virtio-blk: every abuse refused ok",
    devices: &[],
};

/// Image offset of the main code.
const MAIN: usize = 0x2000;

/// `device_status` bit DEVICE_NEEDS_RESET (§2.1); the common
/// configuration offsets and the other status bits are `virtio_rng`'s.
const DEVICE_NEEDS_RESET: u32 = 0x40;

/// Descriptor flags (§2.7.5).
const F_NEXT: u32 = 1;
const F_WRITE: u32 = 2;
const F_INDIRECT: u32 = 4;

/// The queue in RAM: descriptor table, available ring, used ring, the
/// buffer and two indirect tables.
const DESC: u32 = 0x30000;
const AVAIL: u32 = 0x31000;
const USED: u32 = 0x32000;
const BUFFER: u32 = 0x33000;
const INDIRECT: u32 = 0x34000;
const INDIRECT_2: u32 = 0x34800;
const BUFFER_LEN: u32 = 32;
/// A block request's header and status byte (in the buffer's page).
const HEADER: u32 = 0x33800;
const STATUS: u32 = 0x33900;
/// Where `bring_up` takes the three ring addresses from (qwords).
const RING_DESC: u32 = 0x21000;
const RING_AVAIL: u32 = 0x21008;
const RING_USED: u32 = 0x21010;
/// Polls of the used ring (or `device_status`) before giving up.
const POLLS: u32 = 5_000_000;
/// The local APIC page: MMIO, never RAM.
const LAPIC: u64 = 0xfee0_0000;

/// Where a descriptor's address comes from.
#[derive(Clone, Copy)]
enum At {
    /// A fixed address.
    Fixed(u64),
    /// The end of RAM (R13) plus an offset.
    RamEnd(i32),
    /// BAR 0 of the device (R12).
    Bar0,
}

/// An abuse's name and the line printed when the device refused it.
macro_rules! abuse {
    ($name:literal) => {
        (
            $name,
            concat!(
                "kit: hostile-virtio: ",
                $name,
                ": refused, device still works"
            ),
        )
    };
}

/// One descriptor: address, length, flags, next.
type Desc = (At, u32, u32, u32);

/// A valid device-writable buffer descriptor, ending the chain.
const GOOD: Desc = (At::Fixed(BUFFER as u64), BUFFER_LEN, F_WRITE, 0);

/// A chain the device must refuse: its name, the descriptor table and
/// the indirect table (both from index 0).
struct BadChain {
    name: (&'static str, &'static str),
    table: &'static [Desc],
    indirect: &'static [Desc],
}

const BAD_CHAINS: &[BadChain] = &[
    BadChain {
        name: abuse!("a buffer past the end of RAM"),
        table: &[(At::RamEnd(0), BUFFER_LEN, F_WRITE, 0)],
        indirect: &[],
    },
    BadChain {
        name: abuse!("a buffer straddling the end of RAM"),
        table: &[(At::RamEnd(-16), BUFFER_LEN, F_WRITE, 0)],
        indirect: &[],
    },
    BadChain {
        name: abuse!("a buffer whose address + length wraps"),
        table: &[(At::Fixed(0xffff_ffff_ffff_fff0), BUFFER_LEN, F_WRITE, 0)],
        indirect: &[],
    },
    BadChain {
        name: abuse!("a buffer on the device's own BAR"),
        table: &[(At::Bar0, BUFFER_LEN, F_WRITE, 0)],
        indirect: &[],
    },
    BadChain {
        name: abuse!("a descriptor whose next is itself"),
        table: &[(At::Fixed(BUFFER as u64), BUFFER_LEN, F_WRITE | F_NEXT, 0)],
        indirect: &[],
    },
    BadChain {
        name: abuse!("a two-descriptor cycle"),
        table: &[
            (At::Fixed(BUFFER as u64), 16, F_WRITE | F_NEXT, 1),
            (At::Fixed(BUFFER as u64 + 16), 16, F_WRITE | F_NEXT, 0),
        ],
        indirect: &[],
    },
    BadChain {
        name: abuse!("a chain longer than the queue"),
        table: &[
            (At::Fixed(BUFFER as u64), 4, F_WRITE | F_NEXT, 1),
            (At::Fixed(BUFFER as u64 + 4), 4, F_WRITE | F_NEXT, 2),
            (At::Fixed(BUFFER as u64 + 8), 4, F_WRITE | F_NEXT, 3),
            (At::Fixed(BUFFER as u64 + 12), 4, F_WRITE | F_NEXT, 4),
            GOOD,
        ],
        indirect: &[],
    },
    BadChain {
        name: abuse!("an indirect table past the end of RAM"),
        table: &[(At::RamEnd(0), 64, F_INDIRECT, 0)],
        indirect: &[],
    },
    BadChain {
        name: abuse!("an indirect table that loops"),
        table: &[(At::Fixed(INDIRECT as u64), 64, F_INDIRECT, 0)],
        indirect: &[(At::Fixed(BUFFER as u64), BUFFER_LEN, F_WRITE | F_NEXT, 0)],
    },
    BadChain {
        name: abuse!("a nested indirect table"),
        table: &[(At::Fixed(INDIRECT as u64), 16, F_INDIRECT, 0)],
        indirect: &[(At::Fixed(INDIRECT_2 as u64), 16, F_INDIRECT, 0)],
    },
];

/// Ring placements that must fail DRIVER_OK: (name, which ring address
/// slot, the address).
const BAD_RINGS: &[((&str, &str), u32, At)] = &[
    (
        abuse!("a descriptor table past the end of RAM"),
        RING_DESC,
        At::RamEnd(0),
    ),
    (
        abuse!("a used ring straddling the end of RAM"),
        RING_USED,
        At::RamEnd(-8),
    ),
    (
        abuse!("an available ring on the local APIC page"),
        RING_AVAIL,
        At::Fixed(LAPIC),
    ),
];

/// The available-index abuse.
const IDX_AHEAD: (&str, &str) = abuse!("an available idx 0x8000 ahead");

/// Prefix of each per-abuse line, and its end (as in `abuse!`).
const CASE_PREFIX: &str = "kit: hostile-virtio: ";
const CASE_OK: &str = ": refused, device still works";

/// Linear addresses of the strings the routines print.
struct Texts {
    prefix: u32,
    case_ok: u32,
    failed: u32,
    colon: u32,
    newline: u32,
    no_device: u32,
    no_memory: u32,
    refused: u32,
    timed_out: u32,
    bad_id: u32,
    wrote: u32,
    below_end: u32,
    no_reset_flag: u32,
    used_moved: u32,
    broken: u32,
    done: u32,
}

/// Labels of the routines `call`ed from the main line.
struct Routines {
    bring_up: CodeLabel,
    offer: CodeLabel,
    wait_used: CodeLabel,
    expect_refused: CodeLabel,
    expect_needs_reset: CodeLabel,
    valid_request: CodeLabel,
    case_ok: CodeLabel,
    fail: CodeLabel,
}

/// Assembles `hostile-virtio`.
pub(crate) fn build_rng() -> Result<Built, KitError> {
    build(&RNG)
}

/// Assembles `hostile-virtio-blk`.
pub(crate) fn build_blk() -> Result<Built, KitError> {
    build(&BLK)
}

fn build(target: &Target) -> Result<Built, KitError> {
    let load = DEFAULT_LOAD_ADDRESS;
    let mut image = Image::new(load);
    let mut data = DataArea::new(DATA);
    let idtr = push_idt(&mut data, load, &[])?;
    let pieces = Pieces::new(&mut data, load)?;
    let mut text = |s: &str| addr32("message", load + data.push_cstr(s) as u64);
    let texts = Texts {
        prefix: text(CASE_PREFIX)?,
        case_ok: text(&format!("{CASE_OK}\n"))?,
        failed: text(target.failed)?,
        colon: text(": ")?,
        newline: text("\n")?,
        no_device: text(&format!(
            "no {:04x}:{:04x} function on bus 0",
            target.id & 0xffff,
            target.id >> 16
        ))?,
        no_memory: text("CMOS says there is no RAM above 16 MiB")?,
        refused: text("FEATURES_OK did not stick")?,
        timed_out: text("the used ring never moved")?,
        bad_id: text("the used element's id is not 0")?,
        wrote: text("the device used the chain with a nonzero length")?,
        below_end: text("the device wrote below the end of RAM")?,
        no_reset_flag: text("device_status never showed DEVICE_NEEDS_RESET")?,
        used_moved: text("the device used a chain from a broken ring")?,
        broken: text("a valid request after the reset did not complete with data")?,
        done: text(&format!("{}\n", target.done))?,
    };
    let mut names = Vec::new();
    for bad in BAD_CHAINS {
        names.push(text(bad.name.0)?);
    }
    let idx_ahead = text(IDX_AHEAD.0)?;
    let mut ring_names = Vec::new();
    for (name, _, _) in BAD_RINGS {
        ring_names.push(text(name.0)?);
    }
    let setup = text("setting up")?;
    data.place_into(&mut image)?;
    emit_handlers(&mut image)?;
    let main = image.linear(MAIN);
    image.code("hostile-virtio entry", 0, 64, |a| {
        a.jmp(main)?;
        Ok(())
    })?;

    image.code(target.info.name, MAIN, 64, |a| {
        a.cli()?;
        a.cld()?;
        bsp_only(a)?;
        set_stack(a)?;
        let mut uart = Uart::new(a);
        let mut faults = Faults::new(a, pieces);
        let mut r = Routines {
            bring_up: a.create_label(),
            offer: a.create_label(),
            wait_used: a.create_label(),
            expect_refused: a.create_label(),
            expect_needs_reset: a.create_label(),
            valid_request: a.create_label(),
            case_ok: a.create_label(),
            fail: a.create_label(),
        };
        Uart::init(a)?;
        faults.install(a, idtr)?;
        a.mov(r14d, setup)?;
        ram_end(a, &r, &texts)?;
        find_device(a, target.id)?;
        a.cmp(ebx, 32)?;
        fail_if(a, &r, CodeAssembler::jae, texts.no_device)?;
        config_address(a, 0x10)?;
        a.mov(dx, 0xcfcu32)?;
        a.in_(eax, dx)?;
        a.and(eax, 0xffff_fff0u32)?;
        a.mov(r12d, eax)?;
        config_address(a, 0x04)?;
        a.mov(dx, 0xcfcu32)?;
        a.mov(eax, 0x6u32)?;
        a.out(dx, eax)?;

        for (bad, &name) in BAD_CHAINS.iter().zip(&names) {
            a.mov(r14d, name)?;
            normal_rings(a)?;
            a.call(r.bring_up)?;
            // The 16 bytes below the end of RAM start zeroed, to see any
            // partial write of the straddling buffer.
            a.xor(eax, eax)?;
            a.mov(qword_ptr(r13 - 16), rax)?;
            a.mov(qword_ptr(r13 - 8), rax)?;
            for (i, &d) in bad.table.iter().enumerate() {
                put_desc(a, DESC, i as u32, d)?;
            }
            for (i, &d) in bad.indirect.iter().enumerate() {
                put_desc(a, INDIRECT, i as u32, d)?;
            }
            a.call(r.expect_refused)?;
            a.mov(rax, qword_ptr(r13 - 16))?;
            a.or(rax, qword_ptr(r13 - 8))?;
            fail_if(a, &r, CodeAssembler::jnz, texts.below_end)?;
            a.call(r.valid_request)?;
            a.call(r.case_ok)?;
        }

        // The available idx far ahead: DEVICE_NEEDS_RESET, nothing used.
        a.mov(r14d, idx_ahead)?;
        normal_rings(a)?;
        a.call(r.bring_up)?;
        put_desc(a, DESC, 0, GOOD)?;
        a.mov(word_ptr(AVAIL + 4), 0u32)?;
        a.mov(word_ptr(AVAIL + 2), 0x8000u32)?;
        a.mov(word_ptr(r12 + NOTIFY_QUEUE_0), 0u32)?;
        a.call(r.expect_needs_reset)?;
        a.cmp(word_ptr(USED + 2), 0)?;
        fail_if(a, &r, CodeAssembler::jne, texts.used_moved)?;
        a.call(r.valid_request)?;
        a.call(r.case_ok)?;

        // Rings outside RAM at DRIVER_OK.
        for (&(_, slot, at), &name) in BAD_RINGS.iter().zip(&ring_names) {
            a.mov(r14d, name)?;
            normal_rings(a)?;
            address_into_rax(a, at)?;
            a.mov(qword_ptr(slot), rax)?;
            a.call(r.bring_up)?;
            a.call(r.expect_needs_reset)?;
            // A notification now must not make the inactive device move.
            put_desc(a, DESC, 0, GOOD)?;
            a.call(r.offer)?;
            a.cmp(word_ptr(USED + 2), 0)?;
            fail_if(a, &r, CodeAssembler::jne, texts.used_moved)?;
            a.call(r.valid_request)?;
            a.call(r.case_ok)?;
        }

        uart.print(a, texts.done)?;
        exit(a, KIT_PASS)?;

        emit_bring_up(a, &mut r, &texts)?;
        emit_offer(a, &mut r)?;
        emit_wait_used(a, &mut r, &texts)?;
        emit_expect_refused(a, &mut r, &texts)?;
        emit_expect_needs_reset(a, &mut r, &texts)?;
        emit_valid_request(a, &mut r, &texts, target)?;
        emit_case_ok(a, &mut r, &uart, &texts)?;
        emit_fail(a, &mut r, &uart, &texts)?;
        faults.emit_routines(a, &uart)?;
        uart.emit_routines(a)
    })?;

    let mut output: Vec<&'static str> = BAD_CHAINS.iter().map(|b| b.name.1).collect();
    output.push(IDX_AHEAD.1);
    output.extend(BAD_RINGS.iter().map(|(name, _, _)| name.1));
    output.push(target.done);
    let expect = Expect {
        output,
        status: debug_exit_status(KIT_PASS),
    };
    let mut built = finish(image, &target.info, expect);
    built.program.devices = target.devices.to_vec();
    Ok(built)
}

/// R13 = the end of RAM: CMOS 0x35:0x34 counts 64 KiB blocks above
/// 16 MiB. Fails when it is 0. Clobbers RAX.
fn ram_end(a: &mut CodeAssembler, r: &Routines, texts: &Texts) -> Asm {
    a.mov(al, 0x35u32)?;
    a.out(0x70u32, al)?;
    a.in_(al, 0x71u32)?;
    a.movzx(r13d, al)?;
    a.shl(r13d, 8)?;
    a.mov(al, 0x34u32)?;
    a.out(0x70u32, al)?;
    a.in_(al, 0x71u32)?;
    a.movzx(eax, al)?;
    a.or(r13d, eax)?;
    fail_if(a, r, CodeAssembler::jz, texts.no_memory)?;
    a.shl(r13, 16)?;
    a.add(r13, 0x100_0000)?;
    Ok(())
}

/// The three ring-address slots back at the queue in RAM.
fn normal_rings(a: &mut CodeAssembler) -> Asm {
    for (slot, at) in [(RING_DESC, DESC), (RING_AVAIL, AVAIL), (RING_USED, USED)] {
        a.mov(qword_ptr(slot), at as i32)?;
    }
    Ok(())
}

/// RAX = the address `at` names.
fn address_into_rax(a: &mut CodeAssembler, at: At) -> Asm {
    match at {
        At::Fixed(v) => a.mov(rax, v)?,
        At::RamEnd(off) => a.lea(rax, ptr(r13 + off))?,
        At::Bar0 => a.mov(rax, r12)?,
    }
    Ok(())
}

/// Writes descriptor `index` of the table at `table`. Clobbers RAX.
fn put_desc(a: &mut CodeAssembler, table: u32, index: u32, (at, len, flags, next): Desc) -> Asm {
    let base = table + 16 * index;
    address_into_rax(a, at)?;
    a.mov(qword_ptr(base), rax)?;
    a.mov(dword_ptr(base + 8), len)?;
    a.mov(word_ptr(base + 12), flags)?;
    a.mov(word_ptr(base + 14), next)?;
    Ok(())
}

/// `jump` to the failure routine with reason `why` in R15 (the `mov`
/// keeps the flags).
fn fail_if(
    a: &mut CodeAssembler,
    r: &Routines,
    jump: fn(&mut CodeAssembler, CodeLabel) -> Result<(), IcedError>,
    why: u32,
) -> Asm {
    a.mov(r15d, why)?;
    jump(a, r.fail)?;
    Ok(())
}

/// `bring_up`: reset the device and start it again (§3.1.1) with queue 0
/// of size 4 at the addresses in the ring slots; the queue memory in RAM
/// is zeroed. Clobbers RAX, RCX, RDI.
fn emit_bring_up(a: &mut CodeAssembler, r: &mut Routines, texts: &Texts) -> Asm {
    a.set_label(&mut r.bring_up)?;
    for value in [0, ACKNOWLEDGE, ACKNOWLEDGE | DRIVER] {
        a.mov(byte_ptr(r12 + DEVICE_STATUS), value)?;
    }
    a.mov(dword_ptr(r12 + DRIVER_FEATURE_SELECT), 1u32)?;
    a.mov(dword_ptr(r12 + DRIVER_FEATURE), 1u32)?;
    a.mov(dword_ptr(r12 + DRIVER_FEATURE_SELECT), 0u32)?;
    a.mov(dword_ptr(r12 + DRIVER_FEATURE), 0u32)?;
    a.mov(
        byte_ptr(r12 + DEVICE_STATUS),
        ACKNOWLEDGE | DRIVER | FEATURES_OK,
    )?;
    a.test(byte_ptr(r12 + DEVICE_STATUS), FEATURES_OK)?;
    fail_if(a, r, CodeAssembler::jz, texts.refused)?;
    // Zero the table, rings, buffer and indirect tables (5 pages).
    a.mov(edi, DESC)?;
    a.xor(eax, eax)?;
    a.mov(ecx, 5 * 4096 / 4)?;
    a.rep().stosd()?;
    a.mov(word_ptr(r12 + QUEUE_SELECT), 0u32)?;
    a.mov(word_ptr(r12 + QUEUE_SIZE), 4u32)?;
    for (reg, slot) in [
        (QUEUE_DESC, RING_DESC),
        (QUEUE_DRIVER, RING_AVAIL),
        (QUEUE_DEVICE, RING_USED),
    ] {
        a.mov(rax, qword_ptr(slot))?;
        a.mov(dword_ptr(r12 + reg), eax)?;
        a.shr(rax, 32)?;
        a.mov(dword_ptr(r12 + reg + 4), eax)?;
    }
    a.mov(word_ptr(r12 + QUEUE_ENABLE), 1u32)?;
    a.mov(
        byte_ptr(r12 + DEVICE_STATUS),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    )?;
    a.ret()?;
    Ok(())
}

/// `offer`: head 0 in available ring entry 0, `idx` = 1, notify queue 0.
fn emit_offer(a: &mut CodeAssembler, r: &mut Routines) -> Asm {
    a.set_label(&mut r.offer)?;
    a.mov(word_ptr(AVAIL + 4), 0u32)?;
    a.mov(word_ptr(AVAIL + 2), 1u32)?;
    a.mov(word_ptr(r12 + NOTIFY_QUEUE_0), 0u32)?;
    a.ret()?;
    Ok(())
}

/// `wait_used`: poll the used `idx` until it is 1 (bounded), then check
/// the element's id is 0. Clobbers ECX.
fn emit_wait_used(a: &mut CodeAssembler, r: &mut Routines, texts: &Texts) -> Asm {
    let mut poll = a.create_label();
    let mut arrived = a.create_label();
    a.set_label(&mut r.wait_used)?;
    a.mov(ecx, POLLS)?;
    a.set_label(&mut poll)?;
    a.cmp(word_ptr(USED + 2), 1u32)?;
    a.je(arrived)?;
    a.pause()?;
    a.dec(ecx)?;
    a.jnz(poll)?;
    fail_if(a, r, CodeAssembler::jmp, texts.timed_out)?;
    a.set_label(&mut arrived)?;
    a.cmp(dword_ptr(USED + 4), 0u32)?;
    fail_if(a, r, CodeAssembler::jne, texts.bad_id)?;
    a.ret()?;
    Ok(())
}

/// `expect_refused`: offer head 0, wait for it to be used, and check the
/// device wrote nothing (used length 0).
fn emit_expect_refused(a: &mut CodeAssembler, r: &mut Routines, texts: &Texts) -> Asm {
    a.set_label(&mut r.expect_refused)?;
    a.call(r.offer)?;
    a.call(r.wait_used)?;
    a.cmp(dword_ptr(USED + 8), 0u32)?;
    fail_if(a, r, CodeAssembler::jne, texts.wrote)?;
    a.ret()?;
    Ok(())
}

/// `expect_needs_reset`: poll `device_status` until it shows
/// DEVICE_NEEDS_RESET (bounded). Clobbers ECX.
fn emit_expect_needs_reset(a: &mut CodeAssembler, r: &mut Routines, texts: &Texts) -> Asm {
    let mut poll = a.create_label();
    let mut seen = a.create_label();
    a.set_label(&mut r.expect_needs_reset)?;
    a.mov(ecx, POLLS)?;
    a.set_label(&mut poll)?;
    a.test(byte_ptr(r12 + DEVICE_STATUS), DEVICE_NEEDS_RESET)?;
    a.jnz(seen)?;
    a.pause()?;
    a.dec(ecx)?;
    a.jnz(poll)?;
    fail_if(a, r, CodeAssembler::jmp, texts.no_reset_flag)?;
    a.set_label(&mut seen)?;
    a.ret()?;
    Ok(())
}

/// `valid_request`: reset and bring the device up with the queue in RAM,
/// offer the target's valid request, and check it comes back with the
/// expected used length, a status byte of 0 if it has one, and a buffer
/// no longer all zeros. Clobbers RAX, RCX, RDI.
fn emit_valid_request(
    a: &mut CodeAssembler,
    r: &mut Routines,
    texts: &Texts,
    target: &Target,
) -> Asm {
    a.set_label(&mut r.valid_request)?;
    normal_rings(a)?;
    a.call(r.bring_up)?;
    a.test(byte_ptr(r12 + DEVICE_STATUS), DEVICE_NEEDS_RESET)?;
    fail_if(a, r, CodeAssembler::jnz, texts.broken)?;
    for (i, &d) in target.valid.iter().enumerate() {
        put_desc(a, DESC, i as u32, d)?;
    }
    a.mov(byte_ptr(STATUS), 0xffu32)?;
    a.call(r.offer)?;
    a.call(r.wait_used)?;
    a.cmp(dword_ptr(USED + 8), target.valid_len)?;
    fail_if(a, r, CodeAssembler::jne, texts.broken)?;
    if target.status_byte {
        a.cmp(byte_ptr(STATUS), 0)?;
        fail_if(a, r, CodeAssembler::jne, texts.broken)?;
    }
    a.mov(rax, qword_ptr(BUFFER))?;
    for i in 1..4 {
        a.or(rax, qword_ptr(BUFFER + 8 * i))?;
    }
    a.test(rax, rax)?;
    fail_if(a, r, CodeAssembler::jz, texts.broken)?;
    a.ret()?;
    Ok(())
}

/// `case_ok`: prints the prefix, the abuse R14 names and the ok ending.
fn emit_case_ok(a: &mut CodeAssembler, r: &mut Routines, uart: &Uart, texts: &Texts) -> Asm {
    a.set_label(&mut r.case_ok)?;
    uart.print(a, texts.prefix)?;
    a.mov(rsi, r14)?;
    uart.print_si(a)?;
    uart.print(a, texts.case_ok)?;
    a.ret()?;
    Ok(())
}

/// The failure routine: prints the abuse R14 names and the reason R15
/// points at, then exits with KIT_FAIL.
fn emit_fail(a: &mut CodeAssembler, r: &mut Routines, uart: &Uart, texts: &Texts) -> Asm {
    a.set_label(&mut r.fail)?;
    uart.print(a, texts.failed)?;
    a.mov(rsi, r14)?;
    uart.print_si(a)?;
    uart.print(a, texts.colon)?;
    a.mov(rsi, r15)?;
    uart.print_si(a)?;
    uart.print(a, texts.newline)?;
    exit(a, KIT_FAIL)
}
