//! The sequence builder: operand choice (registers, memory operands with
//! their setup instructions, immediates) and the bookkeeping that keeps a
//! sequence meaningful (a flags-defining `cmp` before an instruction that
//! would read flags left undefined).

use iced_x86::{
    Code, Encoder, IcedError, Instruction, MemoryOperand, OpCodeOperandKind as K, Register,
};

use super::regs::{self, HIGH8, R32, R64, RSP};
use super::tables::{kinds, Tables};
use super::Item;
use crate::analysis::effect;
use crate::layout::{CODE, DATA, DATA_SIZE, PAGE, STACK, STACK_SIZE};
use crate::rng::Rng;

/// An operand value for [`make`].
#[derive(Clone, Copy, Debug)]
pub enum Operand {
    /// A register.
    Reg(Register),
    /// A memory operand.
    Mem(MemoryOperand),
    /// An immediate (sign-extended from its encoded width).
    Imm(i64),
}

/// Creates an instruction of `code` with `ops` (`None` if iced-x86 does
/// not accept them).
pub fn make(code: Code, ops: &[Operand]) -> Option<Instruction> {
    make_inner(code, ops).ok().flatten()
}

fn make_inner(code: Code, ops: &[Operand]) -> Result<Option<Instruction>, IcedError> {
    use Operand::{Imm, Mem, Reg};
    Ok(Some(match *ops {
        [] => Instruction::with(code),
        [Reg(a)] => Instruction::with1(code, a)?,
        [Mem(a)] => Instruction::with1(code, a)?,
        [Imm(a)] => Instruction::with1(code, a as i32)?,
        [Reg(a), Reg(b)] => Instruction::with2(code, a, b)?,
        [Reg(a), Mem(b)] => Instruction::with2(code, a, b)?,
        [Mem(a), Reg(b)] => Instruction::with2(code, a, b)?,
        [Reg(a), Imm(b)] => Instruction::with2(code, a, b)?,
        [Mem(a), Imm(b)] => Instruction::with2(code, a, b as i32)?,
        [Imm(a), Imm(b)] => Instruction::with2(code, a as i32, b as i32)?,
        [Reg(a), Reg(b), Reg(c)] => Instruction::with3(code, a, b, c)?,
        [Reg(a), Reg(b), Imm(c)] => Instruction::with3(code, a, b, c as i32)?,
        [Reg(a), Mem(b), Imm(c)] => Instruction::with3(code, a, b, c as i32)?,
        [Reg(a), Reg(b), Mem(c)] => Instruction::with3(code, a, b, c)?,
        [Reg(a), Mem(b), Reg(c)] => Instruction::with3(code, a, b, c)?,
        [Mem(a), Reg(b), Reg(c)] => Instruction::with3(code, a, b, c)?,
        [Mem(a), Reg(b), Imm(c)] => Instruction::with3(code, a, b, c as i32)?,
        _ => return Ok(None),
    }))
}

/// Where a memory operand may point and how.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemOpts {
    /// GPRs (bit per encoding index) the setup must not overwrite.
    pub avoid: u16,
    /// Keep the access inside one 64-byte line (locked accesses: a split
    /// lock is slow or even fatal on the host).
    pub line_safe: bool,
    /// Align the address to this many bytes (0 or 1: no constraint).
    pub align: u64,
    /// Sometimes point anywhere (non-canonical, unmapped, kernel pages).
    pub wild: bool,
}

/// How [`Builder::fill`] chooses operands.
#[derive(Clone, Copy, Debug)]
pub struct Fill {
    /// Percent chance that an r/m operand is memory.
    pub mem_percent: u64,
    /// Force the first r/m operand to be memory.
    pub force_mem: bool,
    /// Bytes accessed by a `mem`-kind operand (CMPXCHG8B: 8, ...).
    pub mem_size: u32,
    /// Memory operand constraints.
    pub mem: MemOpts,
    /// GPRs (bit per encoding index) not to use as register operands.
    pub avoid: u16,
}

impl Default for Fill {
    fn default() -> Self {
        Fill {
            mem_percent: 35,
            force_mem: false,
            mem_size: 8,
            mem: MemOpts::default(),
            avoid: 0,
        }
    }
}

/// A checkpoint of a [`Builder`], to undo a template that failed.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    len: usize,
    maybe_undefined: u64,
    units: usize,
    branches: usize,
}

/// Builds one sequence.
pub struct Builder<'a> {
    /// The random source.
    pub rng: &'a mut Rng,
    /// The instruction forms.
    pub tables: &'a Tables,
    items: Vec<Item>,
    /// Flags that may be undefined at the end of the sequence so far.
    maybe_undefined: u64,
    /// Registers the sequence favours, so instructions depend on each other.
    hot: [usize; 4],
    encoder: Encoder,
    /// The first item of each unit (template instance).
    units: Vec<usize>,
    /// Branches: (item index, units to skip).
    branches: Vec<(usize, usize)>,
}

impl std::fmt::Debug for Builder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("items", &self.items.len())
            .finish_non_exhaustive()
    }
}

/// The bit of GPR `index` in a register mask.
pub const fn bit(index: usize) -> u16 {
    1 << index
}

impl<'a> Builder<'a> {
    /// An empty sequence.
    pub fn new(rng: &'a mut Rng, tables: &'a Tables) -> Self {
        let mut hot = [0; 4];
        for h in hot.iter_mut() {
            *h = loop {
                let i = rng.below(16) as usize;
                if i != RSP {
                    break i;
                }
            };
        }
        Builder {
            rng,
            tables,
            items: Vec::new(),
            maybe_undefined: 0,
            hot,
            encoder: Encoder::new(64),
            units: Vec::new(),
            branches: Vec::new(),
        }
    }

    /// Starts a new unit: branches skip whole units, so that a template's
    /// setup is never skipped without the instruction it sets up.
    pub fn begin_unit(&mut self) {
        self.units.push(self.items.len());
    }

    /// The finished items, branch targets resolved: a branch that skips
    /// `k` units jumps to the start of the `k+1`-th unit after its own (or
    /// to the final `out`).
    pub fn finish(mut self) -> Vec<Item> {
        for &(i, skip) in &self.branches {
            let unit = self.units.partition_point(|&start| start <= i);
            let target = self
                .units
                .get(unit + skip)
                .copied()
                .unwrap_or(self.items.len());
            self.items[i].target = Some(target.max(i + 1));
        }
        self.items
    }

    /// Items so far.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing was added yet.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// A checkpoint.
    pub fn mark(&self) -> Mark {
        Mark {
            len: self.items.len(),
            maybe_undefined: self.maybe_undefined,
            units: self.units.len(),
            branches: self.branches.len(),
        }
    }

    /// Undoes everything after `m`.
    pub fn reset(&mut self, m: Mark) {
        self.items.truncate(m.len);
        self.maybe_undefined = m.maybe_undefined;
        self.units.truncate(m.units);
        self.branches.truncate(m.branches);
    }

    fn encodable(&mut self, insn: &Instruction) -> bool {
        let ok = self.encoder.encode(insn, CODE).is_ok();
        let _ = self.encoder.take_buffer();
        ok
    }

    /// Appends `insn` (preceded by a flags-defining `cmp` if it reads a
    /// flag an earlier instruction may have left undefined). Returns false
    /// if it cannot be encoded.
    pub fn push(&mut self, insn: Instruction) -> bool {
        self.push_item(insn, None)
    }

    /// Appends a branch that skips the rest of its unit and then `skip`
    /// more units (its target is set by [`Builder::finish`]).
    pub fn push_branch(&mut self, insn: Instruction, skip: usize) -> bool {
        self.push_item(insn, Some(skip))
    }

    fn push_item(&mut self, insn: Instruction, skip: Option<usize>) -> bool {
        if skip.is_none() && !self.encodable(&insn) {
            return false;
        }
        let e = effect(&insn, None);
        if e.read & self.maybe_undefined != 0 {
            self.define_flags();
        }
        self.maybe_undefined = e.apply(self.maybe_undefined);
        if let Some(skip) = skip {
            self.branches.push((self.items.len(), skip));
        }
        self.items.push(Item { insn, target: None });
        true
    }

    /// Appends `cmp r64, imm32`, which defines all six arithmetic flags.
    pub fn define_flags(&mut self) {
        let r = R64[self.gpr(0)];
        let imm = self.rng.edgy() as i32;
        if let Ok(i) = Instruction::with2(Code::Cmp_rm64_imm32, r, imm) {
            self.maybe_undefined = effect(&i, None).apply(self.maybe_undefined);
            self.items.push(Item {
                insn: i,
                target: None,
            });
        }
    }

    /// A GPR index other than RSP and those in `avoid`, usually a hot one.
    pub fn gpr(&mut self, avoid: u16) -> usize {
        let avoid = avoid | bit(RSP);
        if self.rng.chance(7, 10) {
            let h = self.hot[self.rng.below(4) as usize];
            if avoid & bit(h) == 0 {
                return h;
            }
        }
        loop {
            let i = self.rng.below(16) as usize;
            if avoid & bit(i) == 0 {
                return i;
            }
        }
    }

    /// A register of `size` bytes (AH..BH possible for 1), not RSP.
    pub fn reg(&mut self, size: u32, avoid: u16) -> Register {
        let i = self.gpr(avoid);
        if size == 1 && i < 4 && self.rng.chance(1, 4) {
            HIGH8[i]
        } else {
            regs::sized(i, size)
        }
    }

    /// Appends `mov r64, imm64` setting GPR `index` to `value`.
    pub fn set_reg(&mut self, index: usize, value: u64) {
        if let Ok(i) = Instruction::with2(Code::Mov_r64_imm64, R64[index & 15], value as i64) {
            self.push(i);
        }
    }

    /// An immediate for an operand of `kind`, biased toward edge values.
    pub fn imm(&mut self, kind: K) -> i64 {
        let v = self.rng.edgy();
        match kind {
            K::imm8_const_1 => 1,
            K::imm8 => i64::from(v as u8),
            K::imm8sex16 | K::imm8sex32 | K::imm8sex64 => i64::from(v as i8),
            K::imm16 => i64::from(v as i16),
            K::imm32 | K::imm32sex64 => i64::from(v as i32),
            _ => v as i64,
        }
    }

    /// A target address for an access of `size` bytes.
    fn target(&mut self, size: u64, opts: &MemOpts) -> u64 {
        let size = size.max(1);
        let (base, len) = if self.rng.chance(1, 6) {
            (STACK + 0x100, STACK_SIZE - 0x200)
        } else {
            (DATA, DATA_SIZE)
        };
        let r = self.rng.below(100);
        let mut off = if r < 12 && base == DATA {
            // Straddle the boundary between the two data pages.
            PAGE - self.rng.range(1, size)
        } else if r < 14 && base == DATA && !opts.line_safe {
            // Run off the end of the data pages: a page fault.
            DATA_SIZE - self.rng.range(1, size)
        } else {
            self.rng.below(len - size + 1)
        };
        if (14..40).contains(&r) {
            off &= !(size.next_power_of_two() - 1);
        }
        if opts.align > 1 {
            off &= !(opts.align - 1);
        }
        if opts.line_safe && (off % 64) + size > 64 {
            off = (off & !63) + self.rng.below(64 - size + 1);
            if opts.align > 1 {
                off &= !(opts.align - 1);
            }
        }
        base + off
    }

    /// A memory operand for an access of `size` bytes into the sequence's
    /// pages, in a random addressing form; appends the instructions that
    /// set its base and index registers.
    pub fn mem(&mut self, size: u32, opts: MemOpts) -> MemoryOperand {
        let avoid = opts.avoid | bit(RSP);
        if opts.wild && self.rng.chance(1, 40) {
            let base = self.gpr(avoid);
            // Lower-half canonical addresses only: a non-canonical one
            // raises #GP, which PVM hands to KVM's instruction emulator
            // (see compare::Quirk), and PVM reserves parts of the upper
            // half for itself.
            let addr = match self.rng.below(3) {
                0 => crate::layout::GDT + self.rng.below(64),
                1 => crate::layout::CODE + self.rng.below(PAGE),
                _ => self.rng.edgy() & 0x7fff_ffff_ffff,
            };
            self.set_reg(base, addr);
            return MemoryOperand::with_base(R64[base]);
        }
        let target = self.target(u64::from(size), &opts);
        let disp: i64 = match self.rng.below(10) {
            0..=2 => 0,
            3..=6 => i64::from(self.rng.next_u64() as i8),
            _ => self.rng.range(0, 0x2_0000) as i64 - 0x1_0000,
        };
        let m = |base: Register, index: Register, scale: u32, displ: i64, size: u32| {
            MemoryOperand::new(base, index, scale, displ, size, false, Register::None)
        };
        match self.rng.below(100) {
            0..=11 => m(Register::None, Register::None, 1, target as i64, 8),
            12..=15 => m(Register::None, Register::None, 1, target as i64, 4),
            16..=29 => m(Register::RIP, Register::None, 1, target as i64, 8),
            30..=59 => {
                let b = self.gpr(avoid);
                self.set_reg(b, target.wrapping_sub(disp as u64));
                m(R64[b], Register::None, 1, disp, 8)
            }
            60..=79 => {
                let b = self.gpr(avoid);
                let i = self.gpr(avoid | bit(b));
                let scale = 1u32 << self.rng.below(4);
                let index = self.rng.below(17) as i64 - 8;
                self.set_reg(i, index as u64);
                let base = target
                    .wrapping_sub(disp as u64)
                    .wrapping_sub((index * i64::from(scale)) as u64);
                self.set_reg(b, base);
                m(R64[b], R64[i], scale, disp, 8)
            }
            80..=89 => {
                // 0x67: 32-bit address size, wrapping at 4 GiB.
                let b = self.gpr(avoid);
                let base = (target as u32).wrapping_sub(disp as u32);
                // Sometimes leave garbage in the upper half: it must be ignored.
                let upper = if self.rng.chance(1, 3) {
                    self.rng.next_u64() << 32
                } else {
                    0
                };
                self.set_reg(b, upper | u64::from(base));
                if self.rng.chance(1, 2) {
                    let i = self.gpr(avoid | bit(b));
                    self.set_reg(i, upper);
                    m(
                        R32[b],
                        R32[i],
                        1 << self.rng.below(4),
                        i64::from(disp as i32),
                        4,
                    )
                } else {
                    m(R32[b], Register::None, 1, i64::from(disp as i32), 4)
                }
            }
            _ if !opts.line_safe => {
                // Relative to RSP, which stays near the middle of the stack page.
                let d = self.rng.range(0, 0x400) as i64 - 0x200;
                let d = if opts.align > 1 {
                    d & !(opts.align as i64 - 1)
                } else {
                    d
                };
                m(Register::RSP, Register::None, 1, d, 8)
            }
            _ => m(Register::RIP, Register::None, 1, target as i64, 8),
        }
    }

    /// A memory operand with random registers and no setup (for LEA, which
    /// computes the address without accessing it).
    pub fn address(&mut self) -> MemoryOperand {
        let bits32 = self.rng.chance(1, 4);
        let table = if bits32 { &R32 } else { &R64 };
        let base = match self.rng.below(8) {
            0 => Register::None,
            1 => {
                if bits32 {
                    Register::EIP
                } else {
                    Register::RIP
                }
            }
            _ => table[self.rng.below(16) as usize],
        };
        let index = if base != Register::RIP && base != Register::EIP && self.rng.chance(1, 2) {
            loop {
                let i = self.rng.below(16) as usize;
                if i != RSP {
                    break table[i];
                }
            }
        } else {
            Register::None
        };
        let disp = match self.rng.below(4) {
            0 => 0,
            1 => i64::from(self.rng.next_u64() as i8),
            _ => i64::from(self.rng.edgy() as i32),
        };
        let displ_size = if bits32 { 4 } else { 8 };
        let scale = if index == Register::None {
            1
        } else {
            1 << self.rng.below(4)
        };
        MemoryOperand::new(base, index, scale, disp, displ_size, false, Register::None)
    }

    /// Fills every operand of `code` and returns the instruction (setup
    /// instructions for memory operands are already appended), or `None`
    /// if some operand kind cannot be filled.
    pub fn fill(&mut self, code: Code, f: &Fill) -> Option<Instruction> {
        let kinds = kinds(code);
        let mut ops = Vec::with_capacity(kinds.len());
        let mut forced = f.force_mem;
        let mut opts = f.mem;
        opts.avoid |= f.avoid;
        for (n, &kind) in kinds.iter().enumerate() {
            let op = match kind {
                K::r8_or_mem | K::r16_or_mem | K::r32_or_mem | K::r64_or_mem => {
                    let size = match kind {
                        K::r8_or_mem => 1,
                        K::r16_or_mem => 2,
                        K::r32_or_mem => 4,
                        _ => 8,
                    };
                    if forced || self.rng.chance(f.mem_percent, 100) {
                        forced = false;
                        Operand::Mem(self.mem(size, opts))
                    } else {
                        Operand::Reg(self.reg(size, f.avoid))
                    }
                }
                K::mem => Operand::Mem(self.mem(f.mem_size, opts)),
                K::mem_offs => {
                    let size = match kinds.get(1 - n.min(1)) {
                        Some(K::al) => 1,
                        Some(K::ax) => 2,
                        Some(K::eax) => 4,
                        _ => 8,
                    };
                    let addr = self.target(size, &opts);
                    let displ_size = if self.rng.chance(1, 5) { 4 } else { 8 };
                    Operand::Mem(MemoryOperand::new(
                        Register::None,
                        Register::None,
                        1,
                        addr as i64,
                        displ_size,
                        false,
                        Register::None,
                    ))
                }
                K::r8_reg | K::r8_opcode => Operand::Reg(self.reg(1, f.avoid)),
                K::r16_reg | K::r16_rm | K::r16_opcode => Operand::Reg(self.reg(2, f.avoid)),
                K::r32_reg | K::r32_rm | K::r32_opcode | K::r32_vvvv => {
                    Operand::Reg(self.reg(4, f.avoid))
                }
                K::r64_reg | K::r64_rm | K::r64_opcode | K::r64_vvvv => {
                    Operand::Reg(self.reg(8, f.avoid))
                }
                K::xmm_reg | K::xmm_rm => {
                    Operand::Reg(super::simd::XMM[self.rng.below(16) as usize])
                }
                K::xmm_vvvv | K::xmm_is4 => {
                    Operand::Reg(super::simd::XMM[self.rng.below(16) as usize])
                }
                K::ymm_reg | K::ymm_rm | K::ymm_vvvv | K::ymm_is4 => {
                    Operand::Reg(super::simd::YMM[self.rng.below(16) as usize])
                }
                K::ymm_or_mem => {
                    if forced || self.rng.chance(f.mem_percent, 100) {
                        forced = false;
                        Operand::Mem(self.mem(f.mem_size, opts))
                    } else {
                        Operand::Reg(super::simd::YMM[self.rng.below(16) as usize])
                    }
                }
                K::mm_reg | K::mm_rm => Operand::Reg(super::simd::MM[self.rng.below(8) as usize]),
                K::st0 => Operand::Reg(Register::ST0),
                K::sti_opcode => Operand::Reg(super::simd::ST[self.rng.below(8) as usize]),
                K::xmm_or_mem | K::mm_or_mem => {
                    if forced || self.rng.chance(f.mem_percent, 100) {
                        forced = false;
                        Operand::Mem(self.mem(f.mem_size, opts))
                    } else if kind == K::xmm_or_mem {
                        Operand::Reg(super::simd::XMM[self.rng.below(16) as usize])
                    } else {
                        Operand::Reg(super::simd::MM[self.rng.below(8) as usize])
                    }
                }
                K::al => Operand::Reg(Register::AL),
                K::cl => Operand::Reg(Register::CL),
                K::ax => Operand::Reg(Register::AX),
                K::eax => Operand::Reg(Register::EAX),
                K::rax => Operand::Reg(Register::RAX),
                K::imm8
                | K::imm8_const_1
                | K::imm8sex16
                | K::imm8sex32
                | K::imm8sex64
                | K::imm16
                | K::imm32
                | K::imm32sex64
                | K::imm64 => Operand::Imm(self.imm(kind)),
                _ => return None,
            };
            ops.push(op);
        }
        make(code, &ops)
    }

    /// `fill` then `push`.
    pub fn emit(&mut self, code: Code, f: &Fill) -> bool {
        match self.fill(code, f) {
            Some(i) => self.push(i),
            None => false,
        }
    }
}
