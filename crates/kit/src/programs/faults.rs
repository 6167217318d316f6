//! `fault-gp`, `fault-ud` and `fault-de`: 64-bit programs that provoke
//! exceptions on purpose and check what the CPU delivered, plus the
//! skeleton they and `fault-pf` share.
//!
//! Each case arms a recovery label, runs the faulting instruction, and the
//! handler of [`crate::idt`] records vector, error code, CR2 and the saved
//! RIP and resumes at the label. Faults are precise: the saved RIP must be
//! the faulting instruction itself (SDM Vol. 3A §6.5), which every case
//! checks too.
//!
//! * `fault-gp` (SDM §6.15, interrupt 13): loading DS with a selector past
//!   the GDT limit gives #GP(selector) (SDM Vol. 2B, MOV); an access to a
//!   non-canonical address gives #GP(0) (SDM §3.3.7.1).
//! * `fault-ud` (interrupt 6): `ud2`; `push es` (0x06), which is invalid in
//!   64-bit mode; a `lock` prefix on a register destination (SDM Vol. 2A,
//!   LOCK). The last two are raw bytes outside the code parts so the
//!   decode tests do not trip over them, each followed by a `ud2` so that
//!   executing them without a fault shows up as a wrong RIP.
//! * `fault-de` (interrupt 0): `div` by zero, a `div` whose quotient does
//!   not fit, and `idiv` of INT_MIN by -1 (SDM Vol. 2A, DIV/IDIV).

use iced_x86::code_asm::*;

use super::{finish, Built, Info};
use crate::cpu::set_stack;
use crate::idt::{emit_handlers, push_idt, Case, Expected, Faults, Pieces, Rip, DATA, EXTRA};
use crate::image::{addr32, Asm, DataArea, Image};
use crate::uart::{bsp_only, exit, Uart};
use crate::{debug_exit_status, Expect, FlatMode, KitError, DEFAULT_LOAD_ADDRESS, KIT_PASS};

/// What a fault program's body gets to emit its `N` cases with.
pub(crate) struct Ctx<'a, const N: usize> {
    /// The print routines.
    pub(crate) uart: &'a Uart,
    /// Arming and checking.
    pub(crate) faults: &'a Faults,
    /// The cases, in the order of the program's [`Expected`] list.
    pub(crate) cases: &'a [Case; N],
}

/// Builds a single-CPU 64-bit fault program: IDT, handlers, the cases'
/// messages, then main code that sets up, runs `body` and, if every check
/// passed, prints `summary` and exits with KIT_PASS. `place` may add
/// pieces to the image (page tables, raw bytes) above [`EXTRA`].
pub(crate) fn build_fault_program<const N: usize>(
    info: &Info,
    expected: &[Expected; N],
    summary: &'static str,
    place: impl FnOnce(&mut Image) -> Asm,
    body: impl FnOnce(&mut CodeAssembler, &Ctx<N>) -> Asm,
) -> Result<Built, KitError> {
    let load = DEFAULT_LOAD_ADDRESS;
    let mut image = Image::new(load);
    let mut data = DataArea::new(DATA);
    let idtr = push_idt(&mut data, load, &[])?;
    let pieces = Pieces::new(&mut data, load)?;
    let cases = expected.each_ref().map(|e| Case::new(&mut data, load, e));
    let done = addr32(
        "summary",
        load + data.push_cstr(&format!("{summary}\n")) as u64,
    )?;
    data.place_into(&mut image)?;
    emit_handlers(&mut image)?;
    place(&mut image)?;

    image.code(info.name, 0, 64, |a| {
        a.cli()?;
        a.cld()?;
        bsp_only(a)?;
        set_stack(a)?;
        let mut uart = Uart::new(a);
        let mut faults = Faults::new(a, pieces);
        Uart::init(a)?;
        faults.install(a, idtr)?;
        let ctx = Ctx {
            uart: &uart,
            faults: &faults,
            cases: &cases,
        };
        body(a, &ctx)?;
        uart.print(a, done)?;
        exit(a, KIT_PASS)?;
        faults.emit_routines(a, &uart)?;
        uart.emit_routines(a)
    })?;

    let mut output: Vec<&'static str> = expected.iter().map(|e| e.line).collect();
    output.push(summary);
    let expect = Expect {
        output,
        status: debug_exit_status(KIT_PASS),
    };
    Ok(finish(image, info, expect))
}

/// Arms a recovery point, lets `fault` emit the faulting instruction (it
/// returns where that instruction is), then checks `case`.
pub(crate) fn provoke<const N: usize>(
    a: &mut CodeAssembler,
    ctx: &Ctx<N>,
    case: &Case,
    fault: impl FnOnce(&mut CodeAssembler) -> Result<Rip, KitError>,
) -> Asm {
    let mut recover = a.create_label();
    ctx.faults.arm(a, recover)?;
    let rip = fault(a)?;
    a.set_label(&mut recover)?;
    ctx.faults.check(a, ctx.uart, case, rip)
}

/// Emits `emit` with a label on its first instruction and returns it.
pub(crate) fn labelled(
    a: &mut CodeAssembler,
    emit: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Result<Rip, KitError> {
    let mut label = a.create_label();
    a.set_label(&mut label)?;
    emit(a)?;
    Ok(Rip::Label(label))
}

/// Registry facts for `fault-gp`.
pub(crate) const GP: Info = Info {
    name: "fault-gp",
    description:
        "64-bit #GP: selector past the GDT limit (err = selector), non-canonical access (err 0)",
    mode: FlatMode::Long,
};

/// A selector whose index (0x247) lies far beyond the VMM's 3-entry GDT.
const BAD_SELECTOR: u32 = 0x1238;
/// The lowest non-canonical address with 48-bit linear addresses.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

const GP_CASES: [Expected; 2] = [
    Expected {
        line: "kit: #GP selector beyond GDT limit ok (vector=0xd, err=0x1238)",
        vector: 13,
        error: BAD_SELECTOR,
        cr2: None,
    },
    Expected {
        line: "kit: #GP non-canonical address ok (vector=0xd, err=0x0)",
        vector: 13,
        error: 0,
        cr2: None,
    },
];

/// Assembles `fault-gp`.
pub(crate) fn build_gp() -> Result<Built, KitError> {
    build_fault_program(
        &GP,
        &GP_CASES,
        "kit: #GP ok",
        |_| Ok(()),
        |a, ctx| {
            provoke(a, ctx, &ctx.cases[0], |a| {
                a.mov(ax, BAD_SELECTOR)?;
                labelled(a, |a| a.mov(ds, ax))
            })?;
            provoke(a, ctx, &ctx.cases[1], |a| {
                a.mov(rax, NON_CANONICAL)?;
                labelled(a, |a| a.mov(rax, qword_ptr(rax)))
            })
        },
    )
}

/// Registry facts for `fault-ud`.
pub(crate) const UD: Info = Info {
    name: "fault-ud",
    description: "64-bit #UD: ud2, push es (invalid in 64-bit mode), lock on a register operand",
    mode: FlatMode::Long,
};

/// Raw bytes: `push es`, then `ud2` as a tripwire.
const PUSH_ES: [u8; 3] = [0x06, 0x0f, 0x0b];
/// Raw bytes: `lock add eax, ebx`, then `ud2`.
const LOCK_ADD: [u8; 5] = [0xf0, 0x01, 0xd8, 0x0f, 0x0b];
/// Image offsets of the raw byte pieces.
const PUSH_ES_AT: usize = EXTRA;
const LOCK_ADD_AT: usize = EXTRA + 0x10;

const UD_CASES: [Expected; 3] = [
    Expected {
        line: "kit: #UD ud2 ok (vector=0x6, err=0x0)",
        vector: 6,
        error: 0,
        cr2: None,
    },
    Expected {
        line: "kit: #UD push es in 64-bit mode ok (vector=0x6, err=0x0)",
        vector: 6,
        error: 0,
        cr2: None,
    },
    Expected {
        line: "kit: #UD lock with a register destination ok (vector=0x6, err=0x0)",
        vector: 6,
        error: 0,
        cr2: None,
    },
];

/// Assembles `fault-ud`.
pub(crate) fn build_ud() -> Result<Built, KitError> {
    let load = DEFAULT_LOAD_ADDRESS;
    let push_es = addr32("push es bytes", load + PUSH_ES_AT as u64)?;
    let lock_add = addr32("lock add bytes", load + LOCK_ADD_AT as u64)?;
    let place = |image: &mut Image| {
        image.place("push es bytes", PUSH_ES_AT, &PUSH_ES)?;
        image.place("lock add bytes", LOCK_ADD_AT, &LOCK_ADD)
    };
    build_fault_program(&UD, &UD_CASES, "kit: #UD ok", place, |a, ctx| {
        provoke(a, ctx, &ctx.cases[0], |a| labelled(a, |a| a.ud2()))?;
        for (case, at) in [(&ctx.cases[1], push_es), (&ctx.cases[2], lock_add)] {
            provoke(a, ctx, case, |a| {
                a.jmp(u64::from(at))?;
                Ok(Rip::At(at))
            })?;
        }
        Ok(())
    })
}

/// Registry facts for `fault-de`.
pub(crate) const DE: Info = Info {
    name: "fault-de",
    description: "64-bit #DE: div by zero, div quotient overflow, idiv INT_MIN / -1",
    mode: FlatMode::Long,
};

const DE_CASES: [Expected; 3] = [
    Expected {
        line: "kit: #DE divide by zero ok (vector=0x0, err=0x0)",
        vector: 0,
        error: 0,
        cr2: None,
    },
    Expected {
        line: "kit: #DE div quotient overflow ok (vector=0x0, err=0x0)",
        vector: 0,
        error: 0,
        cr2: None,
    },
    Expected {
        line: "kit: #DE idiv INT_MIN / -1 ok (vector=0x0, err=0x0)",
        vector: 0,
        error: 0,
        cr2: None,
    },
];

/// Assembles `fault-de`.
pub(crate) fn build_de() -> Result<Built, KitError> {
    build_fault_program(
        &DE,
        &DE_CASES,
        "kit: #DE ok",
        |_| Ok(()),
        |a, ctx| {
            // EDX:EAX = 1, divisor 0.
            provoke(a, ctx, &ctx.cases[0], |a| {
                a.xor(edx, edx)?;
                a.mov(eax, 1u32)?;
                a.xor(ecx, ecx)?;
                labelled(a, |a| a.div(ecx))
            })?;
            // EDX:EAX = 2^32 divided by 1: the quotient needs 33 bits.
            provoke(a, ctx, &ctx.cases[1], |a| {
                a.mov(edx, 1u32)?;
                a.xor(eax, eax)?;
                a.mov(ecx, 1u32)?;
                labelled(a, |a| a.div(ecx))
            })?;
            // -2^31 / -1 = 2^31, one more than the largest positive int32.
            provoke(a, ctx, &ctx.cases[2], |a| {
                a.mov(eax, 0x8000_0000u32)?;
                a.cdq()?;
                a.mov(ecx, u32::MAX)?;
                labelled(a, |a| a.idiv(ecx))
            })
        },
    )
}
