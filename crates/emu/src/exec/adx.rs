//! ADX: ADCX and ADOX, unsigned additions with a carry in and out that
//! touch one flag each, so two carry chains can interleave (SDM Vol. 2
//! "ADCX", "ADOX"; CPUID.(EAX=7,ECX=0):EBX.ADX[bit 19]).
//!
//! ADCX r, r/m adds CF and writes the carry out to CF; ADOX uses OF the
//! same way. No other flag changes. A 32-bit destination is
//! zero-extended; LOCK is #UD (iced-x86 decodes it as invalid).

use iced_x86::{Instruction, Mnemonic};

use super::operand::{op_size, read_op, write_op};
use super::HandlerEntry;
use super::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{mask, CF, OF};
use crate::Cpu;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    Some(match insn.mnemonic() {
        Mnemonic::Adcx => (add_with_carry_flag::<CF>, KeepsLinks),
        Mnemonic::Adox => (add_with_carry_flag::<OF>, KeepsLinks),
        _ => return None,
    })
}

/// `dst + src + carry` in `size` bytes: the sum and the carry out.
pub fn add_carry(dst: u64, src: u64, carry: bool, size: u8) -> (u64, bool) {
    let m = mask(size);
    let wide = u128::from(dst & m) + u128::from(src & m) + u128::from(carry);
    (wide as u64 & m, wide > u128::from(m))
}

/// ADCX (`FLAG` = CF) and ADOX (`FLAG` = OF): the flag is the carry in
/// and receives the carry out.
fn add_with_carry_flag<const FLAG: u64>(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let dst = read_op(cpu, insn, 0)?;
    let src = read_op(cpu, insn, 1)?;
    let carry_in = if FLAG == CF {
        cpu.s.flags.cf()
    } else {
        cpu.s.flags.of()
    };
    let (sum, carry_out) = add_carry(dst, src, carry_in, size);
    write_op(cpu, insn, 0, sum)?;
    cpu.s.flags.set_flag(FLAG, carry_out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use iced_x86::code_asm::*;

    use super::add_carry;
    use crate::flags::{AF, ARITH, CF, OF, PF, SF, ZF};
    use crate::state::reg;
    use crate::testutil::{run64, DATA};

    #[test]
    fn the_sum_wraps_and_reports_the_carry() {
        assert_eq!(add_carry(u64::MAX, 0, true, 8), (0, true));
        assert_eq!(add_carry(u64::MAX, u64::MAX, true, 8), (u64::MAX, true));
        assert_eq!(add_carry(0xffff_ffff, 1, false, 4), (0, true));
        assert_eq!(add_carry(0x7fff_ffff, 0, true, 4), (0x8000_0000, false));
    }

    #[test]
    fn adcx_changes_only_carry_and_adox_only_overflow() {
        let cpu = run64(|a| {
            // ZF PF set, CF OF clear.
            a.xor(eax, eax).unwrap();
            a.stc().unwrap();
            a.mov(rbx, -1i64).unwrap();
            a.adcx(rbx, rax).unwrap(); // -1 + 0 + 1: CF = 1
            a.mov(rcx, 0x7fff_ffff_ffff_ffffu64).unwrap();
            a.mov(rdx, 1u64).unwrap();
            a.adox(rcx, rdx).unwrap(); // no unsigned carry: OF = 0
        });
        assert_eq!(cpu.s.gpr[reg::RBX], 0);
        assert_eq!(cpu.s.gpr[reg::RCX], 1 << 63);
        assert_eq!(cpu.s.flags.get() & ARITH, CF | ZF | PF);
        let cpu = run64(|a| {
            a.mov(al, 0x7fu32).unwrap();
            a.add(al, 1u32).unwrap(); // OF SF AF, CF = 0
            a.mov(rbx, -1i64).unwrap();
            a.mov(dword_ptr(DATA), 1u32).unwrap();
            a.adox(ebx, dword_ptr(DATA)).unwrap(); // 0xffffffff + 1 + 1
            a.mov(rsi, -1i64).unwrap();
            a.adcx(esi, ebx).unwrap(); // 0xffffffff + 1 + 0
        });
        assert_eq!(cpu.s.gpr[reg::RBX], 1, "zero-extended");
        assert_eq!(cpu.s.gpr[reg::RSI], 0);
        assert_eq!(cpu.s.flags.get() & ARITH, OF | CF | SF | AF);
    }
}
