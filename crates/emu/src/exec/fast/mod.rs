//! Specialized handlers for the hottest instruction forms: emulator
//! machinery, not architecture (each file names the SDM pages of the
//! instructions it specializes).
//!
//! The generic handlers ask iced-x86 about every operand on every
//! execution (kind, register, size, memory base/index/displacement) and map
//! registers to GPR slots each time. For the common forms — GPR, immediate
//! and simple memory operands of MOV, the ALU operations, INC/DEC,
//! MOVZX/MOVSX, LEA, shifts and rotates by an immediate, direct JMP/Jcc,
//! the stack instructions of 64-bit code (PUSH/POP, CALL, RET), NOP,
//! CMOVcc/SETcc, NOT/NEG and BSWAP — [`decode`]
//! resolves all of that once into [`Operands`] and picks a handler
//! specialized for the operation, the operand form and the operand size.
//! Everything else runs the generic handler through [`generic`].
//!
//! A specialized handler must behave exactly like the generic one: same
//! results, same lazy-flags record ([`crate::flags::Flags::set_result`]),
//! same faults, same partial-register rules. Forms whose rules are awkward
//! (AH..BH, LOCK, far or non-64-bit branches) are simply left generic.

pub mod alu;
pub mod data;
pub mod flow;
pub mod fused;
pub mod rmw;
pub mod stack;
#[cfg(test)]
mod tests;
pub mod unary;

use iced_x86::{ConditionCode, FlowControl, Instruction, Mnemonic, OpKind, Register};

use super::operand::{op_size, seg_index};
use super::{lookup, LinkEffect};
use crate::code::Decoded;
use crate::fault::Fault;
use crate::flags::mask;
use crate::mmu::AccessKind;
use crate::state::seg;
use crate::Cpu;

/// Executes one decoded instruction (reading its pre-decoded operands).
pub type Exec = fn(&mut Cpu, &Decoded) -> Result<(), Fault>;

/// Where a specialized handler's operand comes from (a const generic
/// parameter): a register slot, the immediate, or the memory operand.
pub(crate) const REG: u8 = 0;
/// See [`REG`].
pub(crate) const IMM: u8 = 1;
/// See [`REG`].
pub(crate) const MEM: u8 = 2;

/// "No register" in [`MemOperand::base`] / [`MemOperand::index`].
pub const NO_REG: u8 = 0xff;

/// A memory operand resolved at decode time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemOperand {
    /// Displacement (for RIP-relative operands: the absolute address).
    pub disp: u64,
    /// The address-size mask applied to the sum.
    pub addr_mask: u64,
    /// Base GPR slot, or [`NO_REG`].
    pub base: u8,
    /// Index GPR slot, or [`NO_REG`].
    pub index: u8,
    /// log2 of the index scale.
    pub scale_shift: u8,
    /// Segment index ([`crate::state::seg`]).
    pub seg: u8,
    /// Access size in bytes.
    pub size: u8,
}

/// An instruction's operands resolved at decode time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operands {
    /// The immediate, or a direct branch target.
    pub imm: u64,
    /// The memory operand, if any.
    pub mem: MemOperand,
    /// GPR slot of the first register operand.
    pub r0: u8,
    /// GPR slot of the second register operand.
    pub r1: u8,
    /// The condition code of Jcc (as `ConditionCode as u8`).
    pub cc: u8,
}

const NO_MEM: MemOperand = MemOperand {
    disp: 0,
    addr_mask: 0,
    base: NO_REG,
    index: NO_REG,
    scale_shift: 0,
    seg: seg::DS as u8,
    size: 0,
};

/// Runs the generic handler of `d`. The run loop keeps RIP only in the
/// decoded instructions while specialized handlers run; generic handlers
/// see the architectural RIP.
///
/// An instruction declared [`LinkEffect::DropsLinks`] may change anything
/// (mode, CS, CPL, paging), so this also invalidates every block link
/// ([`crate::code::Link`]).
pub fn generic(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    cpu.ctx_epoch = cpu.ctx_epoch.wrapping_add(1);
    cpu.s.rip = d.rip;
    (d.handler)(cpu, &d.insn)
}

/// Runs the generic handler of an instruction that cannot change how a
/// RIP maps to a block (declared [`LinkEffect::KeepsLinks`]): like
/// [`generic`], but the block links stay valid.
pub fn generic_pure(cpu: &mut Cpu, d: &Decoded) -> Result<(), Fault> {
    cpu.s.rip = d.rip;
    (d.handler)(cpu, &d.insn)
}

/// Decodes `insn` (decoded with `bitness` at `rip`; the next instruction
/// is at `next_rip`) into its run-loop form.
pub fn decode(insn: &Instruction, bitness: u32, rip: u64, next_rip: u64) -> Decoded {
    let (handler, links) = lookup(insn);
    let mut ops = Operands {
        imm: 0,
        mem: NO_MEM,
        r0: NO_REG,
        r1: NO_REG,
        cc: 0,
    };
    let exec = select(insn, bitness, &mut ops);
    let chains = exec.is_some()
        && matches!(
            insn.flow_control(),
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch
        );
    Decoded {
        exec: exec.unwrap_or(match links {
            LinkEffect::KeepsLinks => generic_pure,
            LinkEffect::DropsLinks => generic,
        }),
        chains,
        fused: false,
        ops,
        rip,
        next_rip,
        handler,
        insn: *insn,
    }
}

/// The shape of an instruction's first two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// Register.
    R,
    /// Register, register.
    RR,
    /// Register, immediate.
    RI,
    /// Register, memory.
    RM,
    /// Memory, register.
    MR,
    /// Memory, immediate.
    MI,
}

/// The GPR slot of `r` if it is a GPR other than AH..BH.
fn plain_gpr(r: Register) -> Option<u8> {
    let high8 = matches!(r, Register::AH | Register::CH | Register::DH | Register::BH);
    (r.is_gpr() && !high8).then(|| (r.full_register().number() & 15) as u8)
}

fn mem_operand(insn: &Instruction) -> Option<MemOperand> {
    let size = insn.memory_size().size();
    // LEA has no access size; its address is all it needs.
    if !matches!(size, 1 | 2 | 4 | 8) && insn.mnemonic() != Mnemonic::Lea {
        return None;
    }
    let base = match insn.memory_base() {
        Register::None | Register::RIP | Register::EIP => NO_REG,
        r => plain_gpr(r)?,
    };
    let index = match insn.memory_index() {
        Register::None => NO_REG,
        r => plain_gpr(r)?,
    };
    Some(MemOperand {
        disp: insn.memory_displacement64(),
        addr_mask: mask(super::operand::address_size(insn)),
        base,
        index,
        scale_shift: insn.memory_index_scale().trailing_zeros() as u8,
        seg: seg_index(insn.memory_segment()) as u8,
        size: size as u8,
    })
}

fn form(insn: &Instruction, ops: &mut Operands) -> Option<Form> {
    let reg = |n: u32| plain_gpr(insn.op_register(n));
    let imm = |n: u32| {
        matches!(
            insn.op_kind(n),
            OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate64
                | OpKind::Immediate8to16
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32to64
        )
    };
    let k0 = insn.op_kind(0);
    if insn.op_count() == 1 {
        ops.r0 = reg(0).filter(|_| k0 == OpKind::Register)?;
        return Some(Form::R);
    }
    if insn.op_count() != 2 {
        return None;
    }
    let k1 = insn.op_kind(1);
    match (k0, k1) {
        (OpKind::Register, OpKind::Register) => {
            ops.r0 = reg(0)?;
            ops.r1 = reg(1)?;
            Some(Form::RR)
        }
        (OpKind::Register, OpKind::Memory) => {
            ops.r0 = reg(0)?;
            ops.mem = mem_operand(insn)?;
            Some(Form::RM)
        }
        (OpKind::Memory, OpKind::Register) => {
            ops.r1 = reg(1)?;
            ops.mem = mem_operand(insn)?;
            Some(Form::MR)
        }
        (OpKind::Register, _) if imm(1) => {
            ops.r0 = reg(0)?;
            ops.imm = insn.immediate(1);
            Some(Form::RI)
        }
        (OpKind::Memory, _) if imm(1) => {
            ops.mem = mem_operand(insn)?;
            ops.imm = insn.immediate(1);
            Some(Form::MI)
        }
        _ => None,
    }
}

/// Picks a handler monomorphized for operand size `$size` (1, 2, 4, 8).
macro_rules! sized {
    ($size:expr, $f:ident $(, $c:expr)*) => {
        match $size {
            1 => $f::<$($c,)* 1> as Exec,
            2 => $f::<$($c,)* 2> as Exec,
            4 => $f::<$($c,)* 4> as Exec,
            _ => $f::<$($c,)* 8> as Exec,
        }
    };
}
pub(crate) use sized;

fn select(insn: &Instruction, bitness: u32, ops: &mut Operands) -> Option<Exec> {
    if insn.has_lock_prefix() || insn.is_invalid() {
        return None;
    }
    if let Some(e) = flow::select(insn, bitness, ops) {
        return Some(e);
    }
    if let Some(e) = stack::select(insn, bitness, ops) {
        return Some(e);
    }
    if let Some(e) = unary::select(insn, ops) {
        return Some(e);
    }
    let m = insn.mnemonic();
    if !matches!(
        m,
        Mnemonic::Add
            | Mnemonic::Adc
            | Mnemonic::Sub
            | Mnemonic::Sbb
            | Mnemonic::And
            | Mnemonic::Or
            | Mnemonic::Xor
            | Mnemonic::Cmp
            | Mnemonic::Test
            | Mnemonic::Inc
            | Mnemonic::Dec
            | Mnemonic::Mov
            | Mnemonic::Movzx
            | Mnemonic::Movsx
            | Mnemonic::Movsxd
            | Mnemonic::Lea
            | Mnemonic::Shl
            | Mnemonic::Sal
            | Mnemonic::Shr
            | Mnemonic::Sar
            | Mnemonic::Rol
            | Mnemonic::Ror
            | Mnemonic::Imul
    ) {
        return None;
    }
    let size = op_size(insn, 0);
    if !matches!(size, 1 | 2 | 4 | 8) {
        return None;
    }
    let f = form(insn, ops);
    if let Some(e) = rmw::select(insn, f, ops) {
        return Some(e);
    }
    let f = f?;
    alu::select(m, f, size, ops).or_else(|| data::select(insn, m, f, size))
}

/// A GPR read as `SIZE` bytes (never AH..BH).
#[inline(always)]
pub fn rd<const SIZE: u8>(cpu: &Cpu, r: u8) -> u64 {
    cpu.s.gpr[usize::from(r & 15)] & mask(SIZE)
}

/// A GPR write of `SIZE` bytes: 8- and 16-bit writes merge, 32-bit writes
/// zero-extend (never AH..BH).
#[inline(always)]
pub fn wr<const SIZE: u8>(cpu: &mut Cpu, r: u8, v: u64) {
    let g = &mut cpu.s.gpr[usize::from(r & 15)];
    *g = match SIZE {
        8 => v,
        4 => v & 0xffff_ffff,
        _ => (*g & !mask(SIZE)) | (v & mask(SIZE)),
    };
}

/// The effective address (offset in the segment) of `m`.
#[inline(always)]
pub fn ea(cpu: &Cpu, m: &MemOperand) -> u64 {
    let mut a = m.disp;
    if m.base != NO_REG {
        a = a.wrapping_add(cpu.s.gpr[usize::from(m.base & 15)]);
    }
    if m.index != NO_REG {
        a = a.wrapping_add(cpu.s.gpr[usize::from(m.index & 15)] << m.scale_shift);
    }
    a & m.addr_mask
}

impl Cpu {
    /// Whether data segments are flat (64-bit mode): DS, ES, SS have base 0
    /// and no limit, so an offset is a linear address if canonical.
    #[inline(always)]
    fn flat64(&self) -> bool {
        self.s.long_mode() && self.s.seg[seg::CS].l
    }

    /// Reads the memory operand `m` (as [`Cpu::read`] would).
    #[inline(always)]
    pub fn read_mem(&mut self, m: &MemOperand) -> Result<u64, Fault> {
        let off = ea(self, m);
        if usize::from(m.seg) < seg::FS && self.flat64() {
            let lin = self.check_linear64(usize::from(m.seg), off, m.size)?;
            let user = self.user();
            if let Some((p, _)) = self.mmu.host_hit(lin, m.size, AccessKind::Read, user) {
                // SAFETY: `host_hit` found `m.size` bytes of one mapped
                // RAM page at `p`.
                return Ok(unsafe { read_host(p, m.size) });
            }
            return self.read_lin(lin, m.size, user);
        }
        self.read(usize::from(m.seg), off, m.size)
    }

    /// Writes `v` to the memory operand `m` (as [`Cpu::write`] would).
    #[inline(always)]
    pub fn write_mem(&mut self, m: &MemOperand, v: u64) -> Result<(), Fault> {
        let off = ea(self, m);
        if usize::from(m.seg) < seg::FS && self.flat64() {
            let lin = self.check_linear64(usize::from(m.seg), off, m.size)?;
            let user = self.user();
            if let Some((p, phys)) = self.mmu.host_hit(lin, m.size, AccessKind::Write, user) {
                // As `Cpu::write_phys_at`: code decoded on the page since
                // its write entry was made is invalidated.
                if self.code.note_write(phys) {
                    self.end_block = true;
                }
                // SAFETY: `host_hit` found `m.size` bytes of one mapped,
                // writable RAM page at `p`.
                unsafe { write_host(p, m.size, v) };
                return Ok(());
            }
            return self.write_lin(lin, m.size, v, user);
        }
        self.write(usize::from(m.seg), off, m.size, v)
    }
}

/// Reads `size` (1, 2, 4 or 8) bytes at host address `p`.
///
/// # Safety
/// `p` must be valid for reads of `size` bytes.
#[inline(always)]
unsafe fn read_host(p: *mut u8, size: u8) -> u64 {
    // SAFETY: the caller's promise.
    unsafe {
        match size {
            1 => u64::from(p.read()),
            2 => u64::from(p.cast::<u16>().read_unaligned()),
            4 => u64::from(p.cast::<u32>().read_unaligned()),
            _ => p.cast::<u64>().read_unaligned(),
        }
    }
}

/// Writes the low `size` (1, 2, 4 or 8) bytes of `v` at host address `p`.
///
/// # Safety
/// `p` must be valid for writes of `size` bytes.
#[inline(always)]
unsafe fn write_host(p: *mut u8, size: u8, v: u64) {
    // SAFETY: the caller's promise.
    unsafe {
        match size {
            1 => p.write(v as u8),
            2 => p.cast::<u16>().write_unaligned(v as u16),
            4 => p.cast::<u32>().write_unaligned(v as u32),
            _ => p.cast::<u64>().write_unaligned(v),
        }
    }
}

/// `ConditionCode` from its `u8` value.
#[inline(always)]
pub const fn condition(cc: u8) -> ConditionCode {
    use ConditionCode as C;
    match cc {
        1 => C::o,
        2 => C::no,
        3 => C::b,
        4 => C::ae,
        5 => C::e,
        6 => C::ne,
        7 => C::be,
        8 => C::a,
        9 => C::s,
        10 => C::ns,
        11 => C::p,
        12 => C::np,
        13 => C::l,
        14 => C::ge,
        15 => C::le,
        16 => C::g,
        _ => C::None,
    }
}
