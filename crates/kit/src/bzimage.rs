//! `bzimage-32`: a kernel-shaped kit program, a bzImage of boot protocol
//! 2.06 without a 64-bit entry, whose 32-bit entry checks the state the
//! boot protocol's "32-bit boot protocol" promises it.
//!
//! Unlike the registry's flat programs it is not copied to a load address
//! by the flat-boot contract: it is a file to boot as a Linux kernel
//! (`--kernel FILE`). The file is the real-mode part (the boot sector and
//! one setup sector, with the setup header at 0x1f1) followed by the
//! protected-mode part, which the loader copies to `code32_start`
//! (1 MiB). The setup sector after the 2.06 header holds 0xff bytes where
//! a newer header would have `init_size` and friends: a loader that read
//! fields the protocol version does not define would see a 4 GiB kernel.
//!
//! At the entry the program checks, in this order, and prints the first
//! failure: EBX = EBP = EDI = 0; IF = 0; CR0.PE set and CR0.PG clear;
//! CS = 0x10 and DS = ES = SS = 0x18; ESI points at a zero page whose
//! setup header matches the file's (HdrS, version 2.06, LOADED_HIGH) plus
//! what the loader fills (type_of_loader 0xff, code32_start 1 MiB, an
//! e820 map, a command line). It then reloads DS/ES/SS with `__BOOT_DS`
//! and CS with `__BOOT_CS` by a far jump (so the GDT really holds them),
//! prints its line and the command line read through `cmd_line_ptr`, and
//! exits through debug-exit with [`KIT_PASS`].
//!
//! Protected-mode layout: stage 1 at +0x000, stage 2 (after the far
//! jump) at +0x300, data at +0x400.

use iced_x86::code_asm::*;

use crate::image::{addr32, DataArea, Image};
use crate::uart::{exit, Uart};
use crate::{debug_exit_status, Expect, KitError, KIT_FAIL, KIT_PASS};

/// A kit program packaged as a Linux kernel file.
#[derive(Clone, Debug)]
pub struct KitKernel {
    /// The program's name.
    pub name: &'static str,
    /// One line saying what it checks.
    pub description: &'static str,
    /// The kernel file's bytes.
    pub image: Vec<u8>,
    /// The command line to boot it with (the program prints it back).
    pub cmdline: &'static str,
    /// What a test should see.
    pub expect: Expect,
}

/// The protocol version the image declares.
pub const BZIMAGE_32_PROTOCOL: u16 = 0x0206;
/// Where the protected-mode part runs (`code32_start`).
const CODE32_START: u32 = 0x10_0000;
/// `cmdline_size` in the header.
const CMDLINE_SIZE: u32 = 2047;
const HDRS: u32 = 0x5372_6448;
const BOOT_CS: u16 = 0x10;
const BOOT_DS: u32 = 0x18;
const STAGE1: usize = 0x000;
const STAGE2: usize = 0x300;
const DATA: usize = 0x400;
/// The command line the test boots with.
const CMDLINE: &str = "console=ttyS0 kit.bzimage=32";

struct Addrs {
    stage2: u32,
    ok: u32,
    newline: u32,
    /// Each failure's message, in [`CheckFailure::ALL`] order.
    fails: Vec<u32>,
}

/// The checks, each with its failure message (the discriminant indexes
/// [`CheckFailure::ALL`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum CheckFailure {
    Regs,
    Interrupts,
    Mode,
    Selectors,
    Header,
    Cmdline,
}

impl CheckFailure {
    const ALL: [CheckFailure; 6] = [
        CheckFailure::Regs,
        CheckFailure::Interrupts,
        CheckFailure::Mode,
        CheckFailure::Selectors,
        CheckFailure::Header,
        CheckFailure::Cmdline,
    ];

    fn message(self) -> &'static str {
        match self {
            CheckFailure::Regs => "kit: bzImage FAILED: EBX, EBP or EDI is not 0\n",
            CheckFailure::Interrupts => "kit: bzImage FAILED: interrupts are on\n",
            CheckFailure::Mode => "kit: bzImage FAILED: not protected mode with paging off\n",
            CheckFailure::Selectors => "kit: bzImage FAILED: CS is not 0x10 or DS/ES/SS not 0x18\n",
            CheckFailure::Header => "kit: bzImage FAILED: the zero page at ESI does not match\n",
            CheckFailure::Cmdline => "kit: bzImage FAILED: no command line\n",
        }
    }
}

/// Builds the `bzimage-32` kernel file.
pub fn bzimage_32bit_entry() -> Result<KitKernel, KitError> {
    let mut image = Image::new(u64::from(CODE32_START));
    let mut data = DataArea::new(DATA);
    let ok = data.push_cstr("kit: bzImage 32-bit entry ok, cmdline: ");
    let newline = data.push_cstr("\n");
    let fails: Vec<usize> = CheckFailure::ALL
        .iter()
        .map(|&f| data.push_cstr(f.message()))
        .collect();
    data.place_into(&mut image)?;
    let addrs = Addrs {
        stage2: addr32("stage 2", image.linear(STAGE2))?,
        ok: addr32("ok message", image.linear(ok))?,
        newline: addr32("newline", image.linear(newline))?,
        fails: fails
            .iter()
            .map(|&at| addr32("failure message", image.linear(at)))
            .collect::<Result<_, KitError>>()?,
    };
    image.code("bzimage-32 stage 1", STAGE1, 32, |a| stage1(a, &addrs))?;
    image.code("bzimage-32 stage 2", STAGE2, 32, |a| stage2(a, &addrs))?;
    let (payload, _) = image.finish();
    Ok(KitKernel {
        name: "bzimage-32",
        description: "a boot protocol 2.06 bzImage without a 64-bit entry: checks the 32-bit boot protocol's entry state",
        image: bzimage(&payload),
        cmdline: CMDLINE,
        expect: Expect {
            output: vec!["kit: bzImage 32-bit entry ok, cmdline: ", CMDLINE],
            status: debug_exit_status(KIT_PASS),
        },
    })
}

/// Wraps `payload` (the protected-mode part) in a boot sector and one
/// setup sector carrying a protocol-2.06 setup header.
fn bzimage(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 2 * 512];
    let mut put = |at: usize, bytes: &[u8]| f[at..at + bytes.len()].copy_from_slice(bytes);
    put(0x1f1, &[1]); // setup_sects
    let syssize = payload.len().div_ceil(16) as u32;
    put(0x1f4, &syssize.to_le_bytes());
    put(0x1fe, &0xaa55u16.to_le_bytes()); // boot_flag
                                          // jump: a short jmp over the header, which ends after cmdline_size.
    put(0x200, &[0xeb, (0x23c - 0x202) as u8]);
    put(0x202, &HDRS.to_le_bytes());
    put(0x206, &BZIMAGE_32_PROTOCOL.to_le_bytes());
    put(0x211, &[1]); // loadflags: LOADED_HIGH
    put(0x214, &CODE32_START.to_le_bytes());
    put(0x22c, &0x37ff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(0x230, &0x10_0000u32.to_le_bytes()); // kernel_alignment
    put(0x238, &CMDLINE_SIZE.to_le_bytes());
    // "Setup code": a real-mode park loop (cli; hlt; jmp $-1), then 0xff
    // where later protocols put init_size, pref_address and the rest.
    put(0x23c, &[0xfa, 0xf4, 0xeb, 0xfd]);
    put(0x240, &[0xff; 0x30]);
    f.extend_from_slice(payload);
    f.resize(2 * 512 + syssize as usize * 16, 0);
    f
}

/// Stage 1, on the loader's state: check everything, then far-jump
/// through `__BOOT_CS`.
fn stage1(a: &mut CodeAssembler, addrs: &Addrs) -> Result<(), KitError> {
    let labels: Vec<CodeLabel> = CheckFailure::ALL.iter().map(|_| a.create_label()).collect();
    let to = |f: CheckFailure| labels[f as usize];
    // EBX, EBP and EDI must be zero (before anything clobbers them).
    a.mov(eax, ebx)?;
    a.or(eax, ebp)?;
    a.or(eax, edi)?;
    let l = to(CheckFailure::Regs);
    a.jnz(l)?;
    // Our own stack: the protocol promises none.
    a.mov(esp, 0x9_f000u32)?;
    a.pushfd()?;
    a.pop(eax)?;
    a.test(eax, 1 << 9)?;
    let l = to(CheckFailure::Interrupts);
    a.jnz(l)?;
    a.cld()?;
    a.mov(eax, cr0)?;
    a.and(eax, 0x8000_0001u32)?;
    a.cmp(eax, 1)?;
    let l = to(CheckFailure::Mode);
    a.jne(l)?;
    let l = to(CheckFailure::Selectors);
    a.mov(ax, cs)?;
    a.cmp(ax, u32::from(BOOT_CS))?;
    a.jne(l)?;
    for seg in [ds, es, ss] {
        a.mov(ax, seg)?;
        a.cmp(ax, BOOT_DS)?;
        a.jne(l)?;
    }
    let l = to(CheckFailure::Header);
    a.cmp(dword_ptr(esi + 0x202), HDRS)?;
    a.jne(l)?;
    a.cmp(word_ptr(esi + 0x206), u32::from(BZIMAGE_32_PROTOCOL))?;
    a.jne(l)?;
    a.test(byte_ptr(esi + 0x211), 1)?; // LOADED_HIGH
    a.jz(l)?;
    a.cmp(byte_ptr(esi + 0x210), 0xff)?; // type_of_loader
    a.jne(l)?;
    a.cmp(dword_ptr(esi + 0x214), CODE32_START)?;
    a.jne(l)?;
    a.cmp(dword_ptr(esi + 0x238), CMDLINE_SIZE)?;
    a.jne(l)?;
    a.cmp(byte_ptr(esi + 0x1e8), 0)?; // e820_entries
    a.je(l)?;
    let l = to(CheckFailure::Cmdline);
    a.mov(ebx, dword_ptr(esi + 0x228))?; // cmd_line_ptr
    a.test(ebx, ebx)?;
    a.jz(l)?;
    // Reload the data segments and CS from the loader's GDT.
    a.mov(eax, BOOT_DS)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(ss, ax)?;
    a.jmp_far(BOOT_CS, addrs.stage2)?;

    let mut uart = Uart::new(a);
    for (mut label, &at) in labels.into_iter().zip(&addrs.fails) {
        a.set_label(&mut label)?;
        Uart::init(a)?;
        uart.print(a, at)?;
        exit(a, KIT_FAIL)?;
    }
    uart.emit_routines(a)
}

/// Stage 2, on the reloaded `__BOOT_CS`: print the line and the command
/// line (its address is in EBX).
fn stage2(a: &mut CodeAssembler, addrs: &Addrs) -> Result<(), KitError> {
    let mut uart = Uart::new(a);
    Uart::init(a)?;
    uart.print(a, addrs.ok)?;
    a.mov(esi, ebx)?;
    uart.print_si(a)?;
    uart.print(a, addrs.newline)?;
    exit(a, KIT_PASS)?;
    uart.emit_routines(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_a_protocol_2_06_bzimage_without_a_64_bit_entry() {
        let k = bzimage_32bit_entry().unwrap();
        let f = &k.image;
        assert_eq!(&f[0x202..0x206], b"HdrS");
        assert_eq!(u16::from_le_bytes([f[0x206], f[0x207]]), 0x0206);
        assert_eq!(f[0x211] & 1, 1, "LOADED_HIGH");
        let syssize = u32::from_le_bytes([f[0x1f4], f[0x1f5], f[0x1f6], f[0x1f7]]) as usize;
        assert_eq!(f.len(), 1024 + syssize * 16);
        // The protected-mode part starts with code, not padding.
        assert_ne!(f[1024], 0);
    }
}
