//! BMI1, the first VEX-encoded general-register bit manipulations: ANDN,
//! BEXTR, BLSI, BLSMSK, BLSR (SDM Vol. 2 instruction pages; Vol. 2A §2.5.1
//! for VEX-encoded GPR instructions; CPUID.(EAX=7,ECX=0):EBX.BMI1[bit 3]).
//! TZCNT, also BMI1, is in [`super::bits`].
//!
//! The rules every VEX-encoded GPR instruction (BMI1 and BMI2) follows:
//! - VEX.L = 1, a VEX prefix after 66/F2/F3/REX or LOCK, and a non-1111b
//!   VEX.vvvv where it names no operand are #UD; iced-x86 decodes all of
//!   those as invalid, so they never reach these handlers.
//! - VEX is not recognised in real-address and virtual-8086 mode (#UD;
//!   [`check_vex_gpr`]); CR4.OSXSAVE and XCR0 do not matter (these are
//!   not vector instructions).
//! - VEX.W selects 64-bit operands in 64-bit mode and is ignored
//!   elsewhere; a 32-bit destination is zero-extended into its 64-bit
//!   register.
//!
//! Flags the SDM leaves undefined are set as this project's AMD hosts do
//! (the differential tester's oracle, and what the translator computes
//! when it runs these instructions natively): AF = 0 and PF from the
//! result's low byte for ANDN, BLSI, BLSMSK and BLSR (and BZHI); BEXTR
//! sets AF = 1, SF = 0 and PF from the result.

use iced_x86::{Instruction, Mnemonic};

use super::alu::szp;
use super::operand::{op_size, read_op, write_op};
use super::HandlerEntry;
use super::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{mask, AF, ARITH, CF, PF, ZF};
use crate::Cpu;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    Some(match insn.mnemonic() {
        Mnemonic::Andn => (andn, KeepsLinks),
        Mnemonic::Bextr => (bextr, KeepsLinks),
        Mnemonic::Blsi => (blsi, KeepsLinks),
        Mnemonic::Blsmsk => (blsmsk, KeepsLinks),
        Mnemonic::Blsr => (blsr, KeepsLinks),
        _ => return None,
    })
}

/// The check every VEX-encoded GPR instruction makes first: #UD in
/// real-address and virtual-8086 mode, where VEX is not recognised.
#[inline]
pub(super) fn check_vex_gpr(cpu: &Cpu) -> Result<(), Fault> {
    if !cpu.s.protected_mode() || cpu.s.v86_mode() {
        return Err(Fault::InvalidOpcode);
    }
    Ok(())
}

/// BEXTR's result: `LEN` (`control` bits 15:8) bits of `src` starting at
/// bit `START` (bits 7:0), bits beyond the operand reading as 0.
pub fn bit_field_extract(src: u64, control: u64, size: u8) -> u64 {
    let start = control & 0xff;
    let len = (control >> 8) & 0xff;
    let shifted = if start < 64 {
        (src & mask(size)) >> start
    } else {
        0
    };
    if len < 64 {
        shifted & ((1u64 << len) - 1)
    } else {
        shifted
    }
}

/// Writes operand 0 and sets the flags of ANDN, BLSI, BLSMSK and BLSR:
/// SF, ZF (and PF) from the result, CF as given, OF = AF = 0.
fn write_with_flags(
    cpu: &mut Cpu,
    insn: &Instruction,
    size: u8,
    res: u64,
    cf: bool,
) -> Result<(), Fault> {
    write_op(cpu, insn, 0, res)?;
    let f = szp(res, size) | if cf { CF } else { 0 };
    cpu.s.flags.set_arith(ARITH, f);
    Ok(())
}

/// ANDN r, vvvv, r/m: `!src1 & src2`.
fn andn(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_vex_gpr(cpu)?;
    let size = op_size(insn, 0);
    let src1 = read_op(cpu, insn, 1)?;
    let src2 = read_op(cpu, insn, 2)?;
    write_with_flags(cpu, insn, size, !src1 & src2 & mask(size), false)
}

/// BEXTR r, r/m, vvvv: a bit field of the source; ZF from the result,
/// CF = OF = 0.
fn bextr(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_vex_gpr(cpu)?;
    let size = op_size(insn, 0);
    let src = read_op(cpu, insn, 1)?;
    let control = read_op(cpu, insn, 2)?;
    let res = bit_field_extract(src, control, size);
    write_op(cpu, insn, 0, res)?;
    let f = (szp(res, size) & (ZF | PF)) | AF;
    cpu.s.flags.set_arith(ARITH, f);
    Ok(())
}

/// BLSI vvvv, r/m: the lowest set bit (`-src & src`); CF = (src != 0).
fn blsi(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_vex_gpr(cpu)?;
    let size = op_size(insn, 0);
    let src = read_op(cpu, insn, 1)?;
    let res = src.wrapping_neg() & src & mask(size);
    write_with_flags(cpu, insn, size, res, src != 0)
}

/// BLSMSK vvvv, r/m: a mask up to the lowest set bit (`(src - 1) ^ src`);
/// CF = (src == 0), ZF = 0 (the result is never 0).
fn blsmsk(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_vex_gpr(cpu)?;
    let size = op_size(insn, 0);
    let src = read_op(cpu, insn, 1)?;
    let res = (src.wrapping_sub(1) ^ src) & mask(size);
    write_with_flags(cpu, insn, size, res, src == 0)
}

/// BLSR vvvv, r/m: the lowest set bit cleared (`(src - 1) & src`);
/// CF = (src == 0).
fn blsr(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    check_vex_gpr(cpu)?;
    let size = op_size(insn, 0);
    let src = read_op(cpu, insn, 1)?;
    let res = src.wrapping_sub(1) & src & mask(size);
    write_with_flags(cpu, insn, size, res, src == 0)
}

#[cfg(test)]
mod tests {
    use iced_x86::code_asm::*;

    use super::bit_field_extract;
    use crate::fault::Fault;
    use crate::flags::{AF, ARITH, CF, OF, PF, SF, ZF};
    use crate::state::reg;
    use crate::testutil::{assemble, cpu16, cpu32, run64, DATA};
    use crate::Cpu;

    fn arith(cpu: &Cpu) -> u64 {
        cpu.s.flags.get() & ARITH
    }

    #[test]
    fn andn_clears_the_bits_of_the_first_source() {
        let cpu = run64(|a| {
            a.stc().unwrap();
            a.mov(rcx, 0xff00_ff00_ff00_ff00u64).unwrap();
            a.mov(rdx, 0xffff_0000_ffff_0000u64).unwrap();
            a.andn(rax, rcx, rdx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x00ff_0000_00ff_0000);
        assert_eq!(arith(&cpu), PF, "CF and OF cleared");
        let cpu = run64(|a| {
            a.mov(rax, -1i64).unwrap();
            a.mov(ecx, 0x0000_00ffu32).unwrap();
            a.mov(dword_ptr(DATA), 0x8000_00ffu32).unwrap();
            a.andn(eax, ecx, dword_ptr(DATA)).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0x8000_0000, "zero-extended");
        assert_eq!(arith(&cpu), SF | PF);
        let cpu = run64(|a| {
            a.mov(rcx, -1i64).unwrap();
            a.andn(rbx, rcx, rcx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RBX], 0);
        assert_eq!(arith(&cpu), ZF | PF);
    }

    #[test]
    fn bextr_extracts_a_bit_field() {
        // Start 4, length 12 (SDM: DEST := SRC1[START+LEN-1:START]).
        assert_eq!(bit_field_extract(0x1234_5678_9abc_def0, 0x0c04, 8), 0xdef);
        // A field running past the operand reads zeros there.
        assert_eq!(bit_field_extract(0x8000_0000, 0x201f, 4), 1);
        assert_eq!(bit_field_extract(u64::MAX, 0xff00, 8), u64::MAX);
        assert_eq!(bit_field_extract(u64::MAX, 0xff00, 4), 0xffff_ffff);
        assert_eq!(bit_field_extract(u64::MAX, 0x0140, 8), 0, "start 64");
        assert_eq!(bit_field_extract(u64::MAX, 0x0000, 8), 0, "length 0");
        let cpu = run64(|a| {
            a.mov(rcx, 0x1234_5678_9abc_def0u64).unwrap();
            a.mov(edx, 0xffff_0c04u32).unwrap(); // bits 63:16 are ignored
            a.bextr(rax, rcx, rdx).unwrap();
            a.mov(rsi, -1i64).unwrap();
            a.mov(edi, 0x0140u32).unwrap();
            a.bextr(esi, esi, edi).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0xdef);
        assert_eq!(cpu.s.gpr[reg::RSI], 0);
        assert_eq!(arith(&cpu) & (ZF | CF | OF), ZF);
    }

    #[test]
    fn blsi_blsmsk_and_blsr_work_on_the_lowest_set_bit() {
        let cpu = run64(|a| {
            a.mov(rcx, 0b1011_0100u64).unwrap();
            a.blsi(rax, rcx).unwrap();
            a.blsmsk(rbx, rcx).unwrap();
            a.blsr(rdx, rcx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0b100);
        assert_eq!(cpu.s.gpr[reg::RBX], 0b111);
        assert_eq!(cpu.s.gpr[reg::RDX], 0b1011_0000);
        assert_eq!(arith(&cpu), 0, "BLSR of a non-zero source: CF = 0");
        let cpu = run64(|a| {
            a.xor(ecx, ecx).unwrap();
            a.blsi(rax, rcx).unwrap();
        });
        assert_eq!(arith(&cpu), ZF | PF, "BLSI of 0: CF = 0");
        let cpu = run64(|a| {
            a.mov(rax, -1i64).unwrap();
            a.mov(dword_ptr(DATA), 0).unwrap();
            a.blsmsk(eax, dword_ptr(DATA)).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0xffff_ffff);
        assert_eq!(arith(&cpu), CF | SF | PF, "BLSMSK of 0");
        let cpu = run64(|a| {
            a.mov(rcx, 1u64 << 63).unwrap();
            a.blsr(rax, rcx).unwrap();
            a.blsi(rdx, rcx).unwrap();
        });
        assert_eq!(cpu.s.gpr[reg::RAX], 0);
        assert_eq!(cpu.s.gpr[reg::RDX], 1 << 63);
        assert_eq!(arith(&cpu), CF | SF | PF);
        assert_eq!(arith(&cpu) & AF, 0);
    }

    #[test]
    fn vex_is_not_recognised_in_real_mode() {
        let code = assemble(16, |a| {
            a.andn(eax, ecx, edx).unwrap();
        });
        let mut cpu = cpu16(&code);
        let insn =
            iced_x86::Decoder::with_ip(16, &code, 0, iced_x86::DecoderOptions::NONE).decode();
        assert_eq!(
            (super::lookup(&insn).unwrap().0)(&mut cpu, &insn),
            Err(Fault::InvalidOpcode)
        );
        // In protected mode the 32-bit form runs (VEX.W is ignored there).
        let code = assemble(32, |a| {
            a.andn(eax, ecx, edx).unwrap();
        });
        let mut cpu = cpu32(&code);
        cpu.s.gpr[reg::RCX] = 0xf0;
        cpu.s.gpr[reg::RDX] = 0xff;
        let insn =
            iced_x86::Decoder::with_ip(32, &code, 0, iced_x86::DecoderOptions::NONE).decode();
        (super::lookup(&insn).unwrap().0)(&mut cpu, &insn).unwrap();
        assert_eq!(cpu.s.gpr[reg::RAX], 0x0f);
    }
}
