//! Instruction execution: choosing a handler once per decoded instruction,
//! and the operand helpers every handler uses.
//!
//! A [`Handler`] executes one instruction. It is chosen at decode time by
//! [`handler_for`] (each module offers the mnemonics it implements), so the
//! hot loop is an indirect call per instruction, never a re-decode. Before
//! the call the run loop sets [`Cpu::next_rip`] to the following
//! instruction; branches overwrite it. A handler that faults returns
//! `Err(Fault)` and must not have changed architectural state (or must have
//! changed only what the SDM says a faulting instruction may change).
//!
//! Each module's `lookup` returns the handler together with its
//! [`LinkEffect`]: whether running it leaves the run loop's block links
//! valid. The effect is declared next to the handler, never inferred from
//! which module knows the instruction.

pub mod adx;
pub mod alu;
pub mod bits;
pub mod bmi1;
pub mod bmi2;
pub mod data;
pub mod fast;
pub mod flow;
pub mod fsgsbase;
pub mod io;
pub mod muldiv;
pub mod operand;
pub mod random;
pub mod shift;
pub mod string;
pub mod system;

use iced_x86::{Code, Instruction};

use crate::fault::Fault;
use crate::Cpu;

/// Executes one decoded instruction.
pub type Handler = fn(&mut Cpu, &Instruction) -> Result<(), Fault>;

/// What running an instruction's generic handler may do to the block
/// links ([`crate::code::Link`]).
///
/// The run loop goes from one decoded block to the next through links
/// without looking the next block up, as long as nothing changed how a RIP
/// maps to a decoded block: the code size (CS.L, CS.D, EFER.LMA), the CS
/// base, CPL (user or supervisor fetches), paging and the TLB, or the code
/// bytes themselves. An instruction that may change any of these, or IF,
/// TF, IOPL or the interrupt shadow (which the run loop must look at
/// before going on), must end the link epoch.
///
/// Every module's `lookup` declares the effect next to each handler, so
/// adding an instruction means choosing one; there is no default. When in
/// doubt, [`LinkEffect::DropsLinks`] is always correct (it only costs a
/// block lookup). Stores into code need no declaration: they invalidate
/// the code page ([`crate::code::CodePages`]), and faults drop links when
/// they are delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkEffect {
    /// The handler changes only general registers, arithmetic flags and
    /// DF/AC, memory, and the x87/MMX/SSE state: every block link stays
    /// valid ([`fast::generic_pure`] runs it).
    KeepsLinks,
    /// The handler may change CS, the CPU mode, CPL, paging, IF/TF/IOPL,
    /// the interrupt shadow, or the machine behind the CPU (a device): no
    /// link made before it may be followed ([`fast::generic`] runs it).
    DropsLinks,
}

/// What each module's `lookup` returns for an instruction it implements:
/// the generic handler and its declared [`LinkEffect`].
pub type HandlerEntry = (Handler, LinkEffect);

/// The handler for `insn` and its effect on block links; #UD (dropping
/// links) for anything not implemented.
pub fn lookup(insn: &Instruction) -> HandlerEntry {
    const UNDEFINED: HandlerEntry = (undefined, LinkEffect::DropsLinks);
    if insn.code() == Code::INVALID {
        return UNDEFINED;
    }
    let lookups: [fn(&Instruction) -> Option<HandlerEntry>; 15] = [
        crate::fpu::lookup,
        data::lookup,
        flow::lookup,
        alu::lookup,
        shift::lookup,
        muldiv::lookup,
        bits::lookup,
        bmi1::lookup,
        bmi2::lookup,
        adx::lookup,
        random::lookup,
        fsgsbase::lookup,
        string::lookup,
        io::lookup,
        system::lookup,
    ];
    lookups.iter().find_map(|l| l(insn)).unwrap_or(UNDEFINED)
}

/// The handler for `insn`; #UD for anything not implemented.
pub fn handler_for(insn: &Instruction) -> Handler {
    lookup(insn).0
}

/// Whether `insn`'s generic handler keeps every block link valid (its
/// declared [`LinkEffect`] is [`LinkEffect::KeepsLinks`]).
pub fn is_pure(insn: &Instruction) -> bool {
    lookup(insn).1 == LinkEffect::KeepsLinks
}

/// Raises #UD: invalid or unimplemented opcodes.
pub fn undefined(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    tracing::trace!(rip = cpu.s.rip, code = ?insn.code(), "#UD");
    Err(Fault::InvalidOpcode)
}

#[cfg(test)]
mod tests {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    use super::{lookup, LinkEffect};

    /// Decodes the one instruction in `bytes` and checks it is `m`.
    fn decode(bitness: u32, bytes: &[u8], m: Mnemonic) -> iced_x86::Instruction {
        let insn = Decoder::with_ip(bitness, bytes, 0, DecoderOptions::NONE).decode();
        assert_eq!(insn.mnemonic(), m, "{bytes:02x?} decodes as {insn}");
        assert_eq!(insn.len(), bytes.len(), "{insn}");
        insn
    }

    /// Instructions that may change CS, the mode, CPL, paging, the TLB,
    /// IF/TF/IOPL, the interrupt shadow or the machine behind the CPU must
    /// be declared to drop block links, whichever module implements them.
    #[test]
    fn mode_changing_instructions_drop_block_links() {
        use Mnemonic as M;
        let cases: &[(u32, &[u8], Mnemonic)] = &[
            // Control registers, MSRs, descriptor tables.
            (64, &[0x0f, 0x22, 0xc0], M::Mov),       // mov cr0, rax
            (64, &[0x0f, 0x22, 0xd8], M::Mov),       // mov cr3, rax
            (64, &[0x0f, 0x22, 0xe0], M::Mov),       // mov cr4, rax
            (64, &[0x44, 0x0f, 0x22, 0xc0], M::Mov), // mov cr8, rax
            (32, &[0x0f, 0x22, 0xc0], M::Mov),       // mov cr0, eax
            (64, &[0x0f, 0x23, 0xf8], M::Mov),       // mov dr7, rax
            (64, &[0x0f, 0x30], M::Wrmsr),
            (64, &[0x0f, 0x01, 0x10], M::Lgdt),
            (64, &[0x0f, 0x01, 0x18], M::Lidt),
            (64, &[0x0f, 0x00, 0x10], M::Lldt),
            (64, &[0x0f, 0x00, 0x18], M::Ltr),
            (64, &[0x0f, 0x01, 0x30], M::Lmsw),
            (16, &[0x0f, 0x01, 0xf0], M::Lmsw),
            (64, &[0x0f, 0x06], M::Clts),
            (64, &[0x0f, 0x01, 0x38], M::Invlpg),
            (64, &[0x0f, 0x01, 0xd1], M::Xsetbv),
            (64, &[0x0f, 0x01, 0xf8], M::Swapgs),
            (64, &[0xf3, 0x48, 0x0f, 0xae, 0xd0], M::Wrfsbase), // the JIT's base copy
            (64, &[0xf3, 0x0f, 0xae, 0xd8], M::Wrgsbase),
            (64, &[0x0f, 0xaa], M::Rsm),
            // Far transfers.
            (32, &[0xea, 0, 0, 0, 0, 0x08, 0], M::Jmp), // jmp 8:0
            (32, &[0x9a, 0, 0, 0, 0, 0x08, 0], M::Call), // call 8:0
            (64, &[0xff, 0x28], M::Jmp),                // jmp far [rax]
            (64, &[0xff, 0x18], M::Call),               // call far [rax]
            (64, &[0xcb], M::Retf),
            (64, &[0x48, 0xcb], M::Retf),
            (32, &[0xca, 0x08, 0x00], M::Retf),
            (16, &[0xcf], M::Iret),
            (32, &[0xcf], M::Iretd),
            (64, &[0x48, 0xcf], M::Iretq),
            // Fast system calls.
            (64, &[0x0f, 0x05], M::Syscall),
            (64, &[0x0f, 0x07], M::Sysret),
            (64, &[0x48, 0x0f, 0x07], M::Sysretq),
            (32, &[0x0f, 0x34], M::Sysenter),
            (32, &[0x0f, 0x35], M::Sysexit),
            (64, &[0x48, 0x0f, 0x35], M::Sysexitq),
            // Segment-register loads.
            (64, &[0x8e, 0xd0], M::Mov), // mov ss, eax
            (64, &[0x8e, 0xd8], M::Mov), // mov ds, eax
            (32, &[0x8e, 0xc0], M::Mov), // mov es, eax
            (64, &[0x8e, 0xe0], M::Mov), // mov fs, eax
            (64, &[0x8e, 0xe8], M::Mov), // mov gs, eax
            (32, &[0x17], M::Pop),       // pop ss
            (32, &[0x1f], M::Pop),       // pop ds
            (32, &[0x07], M::Pop),       // pop es
            (64, &[0x0f, 0xa1], M::Pop), // pop fs
            (64, &[0x0f, 0xa9], M::Pop), // pop gs
            (32, &[0xc5, 0x00], M::Lds),
            (32, &[0xc4, 0x00], M::Les),
            (64, &[0x0f, 0xb2, 0x00], M::Lss),
            (64, &[0x0f, 0xb4, 0x00], M::Lfs),
            (64, &[0x0f, 0xb5, 0x00], M::Lgs),
            // Software interrupts.
            (64, &[0xcd, 0x80], M::Int),
            (64, &[0xcc], M::Int3),
            (32, &[0xce], M::Into),
            (64, &[0xf1], M::Int1),
            // IF, TF, IOPL, the interrupt shadow, sleeping.
            (64, &[0xfa], M::Cli),
            (64, &[0xfb], M::Sti),
            (64, &[0x9d], M::Popfq),
            (32, &[0x9d], M::Popfd),
            (64, &[0xf4], M::Hlt),
            // Devices (the A20 gate, ROM shadowing, stop requests).
            (64, &[0xe6, 0x92], M::Out),
            (64, &[0xec], M::In),
            (32, &[0x6e], M::Outsb),
            // Hypercalls.
            (64, &[0x0f, 0x01, 0xc1], M::Vmcall),
        ];
        for &(bitness, bytes, m) in cases {
            let insn = decode(bitness, bytes, m);
            assert_eq!(
                lookup(&insn).1,
                LinkEffect::DropsLinks,
                "{insn} ({bitness}-bit) must drop block links"
            );
        }
    }

    /// The other side: plain data instructions keep the links.
    #[test]
    fn data_instructions_keep_block_links() {
        use Mnemonic as M;
        let cases: &[(u32, &[u8], Mnemonic)] = &[
            (64, &[0x48, 0x01, 0xd8], M::Add),     // add rax, rbx
            (64, &[0x48, 0x89, 0xd8], M::Mov),     // mov rax, rbx
            (64, &[0x88, 0xe0], M::Mov),           // mov al, ah
            (64, &[0x50], M::Push),                // push rax
            (64, &[0xf3, 0x48, 0xa5], M::Movsq),   // rep movsq
            (64, &[0x48, 0xf7, 0xf1], M::Div),     // div rcx
            (64, &[0x0f, 0x28, 0xc1], M::Movaps),  // movaps xmm0, xmm1
            (64, &[0xd9, 0x00], M::Fld),           // fld dword [rax]
            (64, &[0x0f, 0xae, 0x08], M::Fxrstor), // fxrstor [rax]
            (64, &[0x48, 0x0f, 0xc7, 0x08], M::Cmpxchg16b),
        ];
        for &(bitness, bytes, m) in cases {
            let insn = decode(bitness, bytes, m);
            assert_eq!(lookup(&insn).1, LinkEffect::KeepsLinks, "{insn}");
        }
    }

    /// What no module implements raises #UD, and drops links like any
    /// fault delivery.
    #[test]
    fn unimplemented_instructions_drop_block_links() {
        let insn = decode(64, &[0x0f, 0x01, 0xc2], Mnemonic::Vmlaunch);
        assert_eq!(lookup(&insn).1, LinkEffect::DropsLinks);
    }
}
