//! `syscall-sysret`: a round trip between a 64-bit kernel (CPL 0) and user
//! code (CPL 3) through SYSCALL and SYSRET (SDM Vol. 3A §5.8.8; Vol. 2B,
//! SYSCALL and SYSRET).
//!
//! Setup, all done by the program:
//!
//! * own GDT: 0x08 kernel code64, 0x10 kernel data, 0x18 user data (DPL 3),
//!   0x20 user code64 (DPL 3), 0x28 a 64-bit TSS whose RSP0 is the kernel
//!   stack, so an exception in user mode has a stack to land on (§8.7);
//! * own page tables (see [`crate::paging`]) with U/S set on the links and
//!   on the two pages user mode touches: its code and its stack (§4.6.1);
//! * IA32_STAR = 0x0010_0008 << 32: SYSCALL loads CS = 0x08, SS = 0x10;
//!   64-bit SYSRET loads CS = 0x10 + 16 | 3 = 0x23, SS = 0x10 + 8 | 3 =
//!   0x1b; IA32_LSTAR = the kernel entry; IA32_FMASK clears TF, IF and DF;
//!   IA32_EFER.SCE = 1;
//! * an IDT whose handlers report any exception (see [`crate::idt`]).
//!
//! The kernel enters user mode with SYSRETQ (RCX = user RIP, R11 = user
//! RFLAGS with IF = 1). User code checks CS = 0x23 and SS = 0x1b, then
//! makes a SYSCALL with RAX = [`FIRST`] and RDX = the address after the
//! SYSCALL. The kernel entry checks CS = 0x08, SS = 0x10, RCX = RDX (SYSCALL
//! saved the return RIP), R11.IF = 1 (SYSCALL saved RFLAGS) and IF = 0 now
//! (FMASK), prints a line and returns with SYSRETQ. User code checks its
//! selectors again and makes a last SYSCALL with RAX = [`DONE`], on which
//! the kernel prints the success line and exits.
//!
//! Image layout: kernel code +0x000, exception handlers and data as in
//! [`crate::idt`], page tables +0x2000, user code +0x6000 (its own page).
//! User stack: the page at 0x30000.

use iced_x86::code_asm::*;

use super::{finish, Built, Info};
use crate::arch::{
    tss64_descriptor, CODE64, CODE64_USER, DATA_FLAT, DATA_USER, EFER_SCE, MSR_EFER, MSR_FMASK,
    MSR_LSTAR, MSR_STAR, NULL_DESCRIPTOR, PTE_RW, PTE_USER, RFLAGS_IF, TSS64_SIZE,
};
use crate::cpu::{load_data_segments, push_gdt64, set_stack, STACK_TOP};
use crate::idt::{emit_handlers, push_idt, Faults, Pieces, DATA};
use crate::image::{addr32, Asm, DataArea, Image};
use crate::paging::{low_identity_tables, TABLES_SIZE};
use crate::uart::{bsp_only, exit, Uart};
use crate::{debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_PASS};

/// Registry facts.
pub(crate) const INFO: Info = Info {
    name: "syscall-sysret",
    description: "64-bit SYSRETQ into CPL 3 and SYSCALL back: STAR/LSTAR/FMASK, selectors, RCX/R11",
    mode: FlatMode::Long,
};

const TABLES: usize = 0x2000;
const USER: usize = TABLES + TABLES_SIZE;
/// The user stack page and its top.
const USER_STACK: u64 = 0x30000;
const USER_STACK_TOP: u32 = 0x31000;
/// Where the kernel entry keeps the user RSP while it runs.
const SAVED_USER_RSP: u32 = 0x21000;

const KERNEL_DATA: u32 = 0x10;
const USER_SS: u32 = 0x1b;
const USER_CS: u32 = 0x23;
const TSS_SELECTOR: u32 = 0x28;
/// IA32_STAR bits 63:32: SYSRET base 0x10, SYSCALL CS 0x08.
const STAR_HIGH: u32 = 0x0010_0008;
/// IA32_FMASK: TF (bit 8), IF (bit 9), DF (bit 10).
const FMASK: u32 = 0x700;
/// The RFLAGS user mode starts with: IF and the always-one bit 1.
const USER_RFLAGS: u32 = RFLAGS_IF | 0x2;

/// System call numbers (RAX).
const FIRST: u32 = 0x5ca1_0001;
const DONE: u32 = 0x5ca1_0002;
const BAD_SELECTORS: u32 = 0x5ca1_0003;

const ENTERED: &str = "kit: syscall reached the kernel at CPL 0";
const OK: &str = "kit: syscall/sysret ok";

/// Failure reasons, in the order of [`Addrs::why`].
const WHY: [&str; 7] = [
    "CS is not 0x08 in the syscall entry",
    "SS is not 0x10 in the syscall entry",
    "RCX is not the address after the user's syscall",
    "R11 does not hold the user RFLAGS (IF=1)",
    "IF or DF survived IA32_FMASK",
    "user mode saw CS != 0x23 or SS != 0x1b after SYSRET",
    "unknown system call number in RAX",
];

/// Linear addresses the kernel code needs.
struct Addrs {
    gdtr: u32,
    idtr: u32,
    tables: u32,
    user: u32,
    entered: u32,
    ok: u32,
    why: [u32; WHY.len()],
}

/// Assembles `syscall-sysret`.
pub(crate) fn build() -> Result<Built, KitError> {
    let load = DEFAULT_LOAD_ADDRESS;
    let mut image = Image::new(load);
    let mut data = DataArea::new(DATA);
    let linear = |what, offset: usize| addr32(what, load + offset as u64);
    let idtr = push_idt(&mut data, load, &[])?;
    let pieces = Pieces::new(&mut data, load)?;
    data.align(16);
    let tss = data.push_bytes(&tss(u64::from(STACK_TOP)));
    let [tss_low, tss_high] = tss64_descriptor(load + tss as u64);
    let gdt = [
        NULL_DESCRIPTOR,
        CODE64,
        DATA_FLAT,
        DATA_USER,
        CODE64_USER,
        tss_low,
        tss_high,
    ];
    let gdtr = push_gdt64(&mut data, load, &gdt);
    let entered = data.push_cstr(&format!("{ENTERED}\n"));
    let ok = data.push_cstr(&format!("{OK}\n"));
    let mut why = [0u32; WHY.len()];
    for (slot, text) in why.iter_mut().zip(WHY) {
        *slot = linear(
            "failure",
            data.push_cstr(&format!("kit: syscall/sysret FAILED: {text}")),
        )?;
    }
    data.place_into(&mut image)?;
    emit_handlers(&mut image)?;
    let tables = load + TABLES as u64;
    let user_page = load + USER as u64;
    let page_flags = |at: u64| {
        if at == user_page || at == USER_STACK {
            PTE_RW | PTE_USER
        } else {
            PTE_RW
        }
    };
    image.place(
        "page tables",
        TABLES,
        &low_identity_tables(tables, PTE_USER, page_flags),
    )?;
    image.code("syscall-sysret user part", USER, 64, emit_user)?;

    let addrs = Addrs {
        gdtr: linear("GDTR", gdtr)?,
        idtr,
        tables: addr32("page tables", tables)?,
        user: addr32("user part", user_page)?,
        entered: linear("message", entered)?,
        ok: linear("message", ok)?,
        why,
    };
    image.code("syscall-sysret kernel part", 0, 64, |a| {
        emit_kernel(a, &addrs, pieces)
    })?;
    let expect = Expect {
        output: vec![ENTERED, OK],
        status: debug_exit_status(KIT_PASS),
    };
    Ok(finish(image, &INFO, expect))
}

/// A 64-bit TSS (SDM §8.7, figure 8-11) with RSP0 = `rsp0` and the I/O
/// map base at the limit (no permission bitmap: all ports denied at CPL 3).
fn tss(rsp0: u64) -> [u8; TSS64_SIZE as usize] {
    let mut tss = [0; TSS64_SIZE as usize];
    tss[4..12].copy_from_slice(&rsp0.to_le_bytes());
    tss[102..104].copy_from_slice(&(TSS64_SIZE as u16).to_le_bytes());
    tss
}

/// Kernel: set up, SYSRETQ to user mode; the SYSCALL entry follows.
fn emit_kernel(a: &mut CodeAssembler, addrs: &Addrs, pieces: Pieces) -> Asm {
    let mut uart = Uart::new(a);
    let mut faults = Faults::new(a, pieces);
    let mut entry = a.create_label();
    a.cli()?;
    a.cld()?;
    bsp_only(a)?;
    set_stack(a)?;
    Uart::init(a)?;
    // The own GDT has the same kernel code at 0x08, so CS stays valid.
    a.lgdt(ptr(addrs.gdtr))?;
    load_data_segments(a, KERNEL_DATA)?;
    a.mov(ax, TSS_SELECTOR)?;
    a.ltr(ax)?;
    faults.install(a, addrs.idtr)?;
    a.mov(eax, addrs.tables)?;
    a.mov(cr3, rax)?;

    // WRMSR writes EDX:EAX to the MSR ECX names.
    write_msr(a, MSR_STAR, |a| {
        a.xor(eax, eax)?;
        a.mov(edx, STAR_HIGH)
    })?;
    write_msr(a, MSR_LSTAR, |a| {
        a.lea(rax, ptr(entry))?;
        a.xor(edx, edx)
    })?;
    write_msr(a, MSR_FMASK, |a| {
        a.mov(eax, FMASK)?;
        a.xor(edx, edx)
    })?;
    a.mov(ecx, MSR_EFER)?;
    a.rdmsr()?;
    a.or(eax, EFER_SCE)?;
    a.wrmsr()?;

    // SYSRETQ: RIP = RCX, RFLAGS = R11, CPL 3; RSP is left alone.
    a.mov(ecx, addrs.user)?;
    a.mov(r11d, USER_RFLAGS)?;
    a.mov(esp, USER_STACK_TOP)?;
    a.sysretq()?;

    a.set_label(&mut entry)?;
    emit_entry(a, addrs, &uart, &faults)?;
    faults.emit_routines(a, &uart)?;
    uart.emit_routines(a)
}

/// `wrmsr` of the value `value` leaves in EDX:EAX to MSR `msr`.
fn write_msr(
    a: &mut CodeAssembler,
    msr: u32,
    value: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Asm {
    a.mov(ecx, msr)?;
    value(a)?;
    a.wrmsr()?;
    Ok(())
}

/// The SYSCALL entry (IA32_LSTAR). SYSCALL saved RIP in RCX and RFLAGS in
/// R11 and did not switch stacks, so switch to the kernel stack first.
fn emit_entry(a: &mut CodeAssembler, addrs: &Addrs, uart: &Uart, faults: &Faults) -> Asm {
    let mut first = a.create_label();
    let mut done = a.create_label();
    let why = &addrs.why;
    a.mov(qword_ptr(SAVED_USER_RSP), rsp)?;
    a.mov(esp, STACK_TOP)?;
    a.mov(r14, rax)?;
    a.mov(ax, cs)?;
    a.cmp(ax, 0x08)?;
    faults.fail_if(a, CodeAssembler::jne, why[0])?;
    a.mov(ax, ss)?;
    a.cmp(ax, KERNEL_DATA)?;
    faults.fail_if(a, CodeAssembler::jne, why[1])?;
    a.cmp(r14d, BAD_SELECTORS)?;
    faults.fail_if(a, CodeAssembler::je, why[5])?;
    a.cmp(rcx, rdx)?;
    faults.fail_if(a, CodeAssembler::jne, why[2])?;
    a.test(r11d, RFLAGS_IF)?;
    faults.fail_if(a, CodeAssembler::jz, why[3])?;
    a.pushfq()?;
    a.pop(rax)?;
    a.test(eax, FMASK)?;
    faults.fail_if(a, CodeAssembler::jnz, why[4])?;
    a.cmp(r14d, FIRST)?;
    a.je(first)?;
    a.cmp(r14d, DONE)?;
    a.je(done)?;
    faults.fail_if(a, CodeAssembler::jmp, why[6])?;

    // The print clobbers RAX, RDX and RSI only; RCX and R11 survive for
    // SYSRETQ.
    a.set_label(&mut first)?;
    uart.print(a, addrs.entered)?;
    a.mov(rsp, qword_ptr(SAVED_USER_RSP))?;
    a.sysretq()?;

    a.set_label(&mut done)?;
    uart.print(a, addrs.ok)?;
    exit(a, KIT_PASS)
}

/// User code: check the selectors SYSRET loaded, SYSCALL twice. RDX
/// carries the address after each SYSCALL for the kernel to compare RCX
/// with.
fn emit_user(a: &mut CodeAssembler) -> Asm {
    let mut bad = a.create_label();
    for number in [FIRST, DONE] {
        let mut after = a.create_label();
        a.mov(ax, cs)?;
        a.cmp(ax, USER_CS)?;
        a.jne(bad)?;
        a.mov(ax, ss)?;
        a.cmp(ax, USER_SS)?;
        a.jne(bad)?;
        a.lea(rdx, ptr(after))?;
        a.mov(eax, number)?;
        a.syscall()?;
        a.set_label(&mut after)?;
    }
    // The kernel exits on DONE; should it return, fault into the report.
    a.ud2()?;
    a.set_label(&mut bad)?;
    a.mov(eax, BAD_SELECTORS)?;
    a.syscall()?;
    a.ud2()?;
    Ok(())
}
