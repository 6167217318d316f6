//! RDRAND and RDSEED: random numbers for the guest (SDM Vol. 2 "RDRAND",
//! "RDSEED"; Vol. 1 §7.3.17; CPUID.01H:ECX.RDRAND[bit 30],
//! CPUID.(EAX=7,ECX=0):EBX.RDSEED[bit 18]).
//!
//! Both fill the destination from the host kernel's random generator
//! (`getrandom(2)`, never blocking) and set CF = 1, with OF, SF, ZF, AF
//! and PF cleared. The host's generator is cryptographically seeded, which
//! is what RDSEED promises too, so the two share one source. When the
//! host cannot answer at once (its pool not yet initialised, an
//! interrupted call), the destination is 0 and CF = 0: "no random value
//! available", which the SDM tells software to handle by retrying.
//! The 32-bit form zero-extends; the 16-bit form keeps bits 63:16.

use iced_x86::{Instruction, Mnemonic};

use super::operand::{op_size, write_op};
use super::HandlerEntry;
use super::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::flags::{ARITH, CF};
use crate::Cpu;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    Some(match insn.mnemonic() {
        Mnemonic::Rdrand | Mnemonic::Rdseed => (read_random, KeepsLinks),
        _ => return None,
    })
}

/// Eight random bytes from the host, or `None` if it has none to give
/// without waiting.
pub fn host_random() -> Option<u64> {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is a valid, writable 8-byte buffer for the duration of
    // the call; GRND_NONBLOCK makes the call return at once.
    let n = unsafe {
        libc::getrandom(
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
            libc::GRND_NONBLOCK,
        )
    };
    (n == buf.len() as isize).then(|| u64::from_le_bytes(buf))
}

/// RDRAND r and RDSEED r.
fn read_random(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let (value, cf) = match host_random() {
        Some(v) => (v, CF),
        None => (0, 0),
    };
    write_op(cpu, insn, 0, value & crate::flags::mask(size))?;
    cpu.s.flags.set_arith(ARITH, cf);
    Ok(())
}

#[cfg(test)]
mod tests {
    use iced_x86::code_asm::*;

    use crate::flags::{ARITH, CF};
    use crate::state::reg;
    use crate::testutil::run64;

    #[test]
    fn rdrand_sets_carry_and_two_reads_differ() {
        let cpu = run64(|a| {
            a.mov(al, 0x7fu32).unwrap();
            a.add(al, 1u32).unwrap(); // OF SF AF
            a.rdrand(rbx).unwrap();
            a.rdrand(rcx).unwrap();
        });
        assert_eq!(cpu.s.flags.get() & ARITH, CF);
        // Two 64-bit random values are equal with probability 2^-64.
        assert_ne!(cpu.s.gpr[reg::RBX], cpu.s.gpr[reg::RCX]);
    }

    #[test]
    fn rdseed_sizes_its_result_like_a_move() {
        let cpu = run64(|a| {
            a.mov(rbx, -1i64).unwrap();
            a.mov(rcx, -1i64).unwrap();
            a.rdseed(ebx).unwrap();
            a.rdseed(cx).unwrap();
            a.rdseed(rdx).unwrap();
        });
        assert_eq!(cpu.s.flags.get() & ARITH, CF);
        assert_eq!(cpu.s.gpr[reg::RBX] >> 32, 0, "zero-extended");
        assert_eq!(cpu.s.gpr[reg::RCX] >> 16, 0xffff_ffff_ffff, "16-bit form");
    }
}
