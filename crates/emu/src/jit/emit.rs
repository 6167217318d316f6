//! A small x86-64 emitter for the translator's own code: the glue around
//! guest instructions (TLB probes, flag saves, block entry checks, exit
//! stubs, the trampoline). Guest instructions themselves are re-encoded
//! with iced-x86's [`iced_x86::Encoder`] (see `native.rs`); this emitter
//! only knows the few forms the glue needs, and is much faster than
//! building iced `Instruction`s for them (translation time matters: a
//! Linux boot translates tens of thousands of blocks).
//!
//! Encodings follow the Intel SDM Vol. 2, chapter 2 ("Instruction
//! format": REX, ModR/M, SIB) and the opcode tables of Appendix A.
//!
//! Code is emitted for a known address ([`Asm::new`]'s `base`): relative
//! jumps to absolute targets (the shared glue of the code cache) are
//! resolved at once, jumps to [`Label`]s when the label is bound or in
//! [`Asm::finish`].

/// A host general-purpose register, by its encoding number (0-15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg(pub u8);

#[allow(missing_docs)]
impl Reg {
    pub const RAX: Reg = Reg(0);
    pub const RCX: Reg = Reg(1);
    pub const RDX: Reg = Reg(2);
    pub const RBX: Reg = Reg(3);
    pub const RSP: Reg = Reg(4);
    pub const RBP: Reg = Reg(5);
    pub const RSI: Reg = Reg(6);
    pub const RDI: Reg = Reg(7);
    pub const R8: Reg = Reg(8);
    pub const R9: Reg = Reg(9);
    pub const R10: Reg = Reg(10);
    pub const R11: Reg = Reg(11);
    pub const R12: Reg = Reg(12);
    pub const R13: Reg = Reg(13);
    pub const R14: Reg = Reg(14);
    pub const R15: Reg = Reg(15);
}

/// A memory operand: `[base + index << scale + disp]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mem {
    /// Base register, if any.
    pub base: Option<Reg>,
    /// Index register and log2 of its scale, if any (never RSP).
    pub index: Option<(Reg, u8)>,
    /// Displacement.
    pub disp: i32,
}

/// `[base + disp]`.
pub fn at(base: Reg, disp: i32) -> Mem {
    Mem {
        base: Some(base),
        index: None,
        disp,
    }
}

/// `[base + index + disp]`.
pub fn at_index(base: Reg, index: Reg, disp: i32) -> Mem {
    Mem {
        base: Some(base),
        index: Some((index, 0)),
        disp,
    }
}

/// ALU operations of the `/digit` group 1 (SDM Vol. 2 Table A-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Alu {
    Add = 0,
    Or = 1,
    And = 4,
    Sub = 5,
    Xor = 6,
    Cmp = 7,
}

/// Shift operations of group 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Shift {
    Shl = 4,
    Shr = 5,
    Sar = 7,
}

/// Condition codes in encoding order (the low nibble of `Jcc`/`SETcc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Cond {
    O = 0,
    No = 1,
    B = 2,
    Ae = 3,
    E = 4,
    Ne = 5,
    Be = 6,
    A = 7,
    S = 8,
    Ns = 9,
    P = 10,
    Np = 11,
    L = 12,
    Ge = 13,
    Le = 14,
    G = 15,
}

impl Cond {
    /// From an iced-x86 condition code (`None` has no encoding).
    pub fn from_iced(cc: iced_x86::ConditionCode) -> Option<Cond> {
        use iced_x86::ConditionCode as C;
        Some(match cc {
            C::o => Cond::O,
            C::no => Cond::No,
            C::b => Cond::B,
            C::ae => Cond::Ae,
            C::e => Cond::E,
            C::ne => Cond::Ne,
            C::be => Cond::Be,
            C::a => Cond::A,
            C::s => Cond::S,
            C::ns => Cond::Ns,
            C::p => Cond::P,
            C::np => Cond::Np,
            C::l => Cond::L,
            C::ge => Cond::Ge,
            C::le => Cond::Le,
            C::g => Cond::G,
            C::None => return None,
        })
    }
}

/// A position in the code being emitted, bound once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(u32);

const UNBOUND: usize = usize::MAX;

/// An operand in the r/m position.
#[derive(Clone, Copy)]
enum Rm {
    Reg(Reg),
    Mem(Mem),
}

/// The emitter: a byte buffer for code that will run at `base`.
pub struct Asm {
    buf: Vec<u8>,
    base: u64,
    labels: Vec<usize>,
    /// (position of a rel32 field, label it points at).
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    /// An empty buffer for code that will run at host address `base`.
    pub fn new(base: u64) -> Self {
        Asm {
            buf: Vec::with_capacity(1024),
            base,
            labels: Vec::new(),
            fixups: Vec::new(),
        }
    }

    /// Bytes emitted so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The address the next byte will run at.
    pub fn here(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Appends raw bytes (an instruction encoded elsewhere).
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// A new, unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(UNBOUND);
        Label(self.labels.len() as u32 - 1)
    }

    /// Binds `l` to the current position.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0 as usize] = self.buf.len();
    }

    /// The offset `l` is bound at, if bound.
    pub fn offset_of(&self, l: Label) -> Option<usize> {
        let o = self.labels[l.0 as usize];
        (o != UNBOUND).then_some(o)
    }

    /// Resolves the label fixups and returns the code. `None` if a label
    /// was used but never bound (a translator bug, reported as a failed
    /// translation rather than a panic).
    pub fn finish(mut self) -> Option<Vec<u8>> {
        for &(pos, l) in &self.fixups {
            let target = self.labels[l.0 as usize];
            if target == UNBOUND {
                return None;
            }
            let rel = target as i64 - (pos as i64 + 4);
            self.buf[pos..pos + 4].copy_from_slice(&(rel as i32).to_le_bytes());
        }
        Some(self.buf)
    }

    fn u8(&mut self, b: u8) {
        self.buf.push(b);
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Emits REX if needed: `w` for 64-bit operands, `r`/`x`/`b` the
    /// extension bits, `byte_reg` when an 8-bit register operand 4-7 needs
    /// REX to mean SPL..DIL instead of AH..BH.
    fn rex(&mut self, w: bool, r: u8, x: u8, b: u8, byte_reg: bool) {
        let rex = 0x40 | (u8::from(w) << 3) | ((r >> 3) << 2) | ((x >> 3) << 1) | (b >> 3);
        if rex != 0x40 || byte_reg {
            self.u8(rex);
        }
    }

    /// Emits `[prefixes] [REX] opcode modrm [sib] [disp]` for an operation
    /// of `size` bytes with `reg` in ModR/M.reg and `rm` as the r/m
    /// operand. `byte_reg`: the operation has 8-bit register operands.
    fn op(&mut self, size: u8, opcode: &[u8], reg: u8, rm: Rm) {
        if size == 2 {
            self.u8(0x66);
        }
        let (x, b) = match rm {
            Rm::Reg(r) => (0, r.0),
            Rm::Mem(m) => (m.index.map_or(0, |(i, _)| i.0), m.base.map_or(0, |b| b.0)),
        };
        let byte_reg = size == 1
            && ((4..8).contains(&reg) || matches!(rm, Rm::Reg(r) if (4..8).contains(&r.0)));
        self.rex(size == 8, reg, x, b, byte_reg);
        self.buf.extend_from_slice(opcode);
        self.modrm(reg & 7, rm);
    }

    fn modrm(&mut self, reg: u8, rm: Rm) {
        let m = match rm {
            Rm::Reg(r) => return self.u8(0xc0 | (reg << 3) | (r.0 & 7)),
            Rm::Mem(m) => m,
        };
        let Some(base) = m.base else {
            // [index*s + disp32] or [disp32]: SIB with base = 101, mod = 00.
            self.u8((reg << 3) | 4);
            let (idx, scale) = m.index.map_or((4, 0), |(i, s)| (i.0 & 7, s));
            self.u8((scale << 6) | (idx << 3) | 5);
            return self.u32(m.disp as u32);
        };
        let (md, disp8) = if m.disp == 0 && base.0 & 7 != 5 {
            (0u8, false)
        } else if i8::try_from(m.disp).is_ok() {
            (1, true)
        } else {
            (2, false)
        };
        if m.index.is_some() || base.0 & 7 == 4 {
            let (idx, scale) = m.index.map_or((4, 0), |(i, s)| (i.0 & 7, s));
            self.u8((md << 6) | (reg << 3) | 4);
            self.u8((scale << 6) | (idx << 3) | (base.0 & 7));
        } else {
            self.u8((md << 6) | (reg << 3) | (base.0 & 7));
        }
        match md {
            0 => {}
            1 if disp8 => self.u8(m.disp as u8),
            _ => self.u32(m.disp as u32),
        }
    }

    /// `mov dst, src` (register to register, `size` bytes).
    pub fn mov_rr(&mut self, size: u8, dst: Reg, src: Reg) {
        let opc = if size == 1 { 0x88 } else { 0x89 };
        self.op(size, &[opc], src.0, Rm::Reg(dst));
    }

    /// `mov dst, [m]`.
    pub fn load(&mut self, size: u8, dst: Reg, m: Mem) {
        let opc = if size == 1 { 0x8a } else { 0x8b };
        self.op(size, &[opc], dst.0, Rm::Mem(m));
    }

    /// `mov [m], src`.
    pub fn store(&mut self, size: u8, m: Mem, src: Reg) {
        let opc = if size == 1 { 0x88 } else { 0x89 };
        self.op(size, &[opc], src.0, Rm::Mem(m));
    }

    /// `mov [m], imm` (`size` 4 or 8: the immediate is sign-extended).
    pub fn store_imm(&mut self, size: u8, m: Mem, imm: i32) {
        self.op(size, &[0xc7], 0, Rm::Mem(m));
        self.u32(imm as u32);
    }

    /// `mov dst, imm64` in its shortest form.
    pub fn mov_imm(&mut self, dst: Reg, imm: u64) {
        if let Ok(v) = u32::try_from(imm) {
            self.rex(false, 0, 0, dst.0, false);
            self.u8(0xb8 | (dst.0 & 7));
            self.u32(v);
        } else if let Ok(v) = i32::try_from(imm as i64) {
            self.op(8, &[0xc7], 0, Rm::Reg(dst));
            self.u32(v as u32);
        } else {
            self.rex(true, 0, 0, dst.0, false);
            self.u8(0xb8 | (dst.0 & 7));
            self.buf.extend_from_slice(&imm.to_le_bytes());
        }
    }

    /// `mov dst, imm64` always as the 10-byte form (for patched values).
    pub fn mov_imm64(&mut self, dst: Reg, imm: u64) {
        self.rex(true, 0, 0, dst.0, false);
        self.u8(0xb8 | (dst.0 & 7));
        self.buf.extend_from_slice(&imm.to_le_bytes());
    }

    /// `lea dst, [m]` (`size` 4 or 8).
    pub fn lea(&mut self, size: u8, dst: Reg, m: Mem) {
        self.op(size, &[0x8d], dst.0, Rm::Mem(m));
    }

    /// `op dst, imm` (sign-extended imm8 when it fits).
    pub fn alu_ri(&mut self, op: Alu, size: u8, dst: Reg, imm: i32) {
        self.alu_imm(op, size, Rm::Reg(dst), imm);
    }

    /// `op [m], imm`.
    pub fn alu_mi(&mut self, op: Alu, size: u8, m: Mem, imm: i32) {
        self.alu_imm(op, size, Rm::Mem(m), imm);
    }

    fn alu_imm(&mut self, op: Alu, size: u8, rm: Rm, imm: i32) {
        if size == 1 {
            self.op(1, &[0x80], op as u8, rm);
            self.u8(imm as u8);
        } else if let Ok(v) = i8::try_from(imm) {
            self.op(size, &[0x83], op as u8, rm);
            self.u8(v as u8);
        } else {
            self.op(size, &[0x81], op as u8, rm);
            if size == 2 {
                self.buf.extend_from_slice(&(imm as u16).to_le_bytes());
            } else {
                self.u32(imm as u32);
            }
        }
    }

    /// `op dst, [m]`.
    pub fn alu_rm(&mut self, op: Alu, size: u8, dst: Reg, m: Mem) {
        let opc = (op as u8) * 8 + if size == 1 { 2 } else { 3 };
        self.op(size, &[opc], dst.0, Rm::Mem(m));
    }

    /// `op dst, src` (registers).
    pub fn alu_rr(&mut self, op: Alu, size: u8, dst: Reg, src: Reg) {
        let opc = (op as u8) * 8 + if size == 1 { 0 } else { 1 };
        self.op(size, &[opc], src.0, Rm::Reg(dst));
    }

    /// `imul dst, src, imm32`.
    pub fn imul_ri(&mut self, size: u8, dst: Reg, src: Reg, imm: i32) {
        self.op(size, &[0x69], dst.0, Rm::Reg(src));
        self.u32(imm as u32);
    }

    /// `div r` (unsigned RDX:RAX / r).
    pub fn div_r(&mut self, size: u8, r: Reg) {
        self.op(size, &[0xf7], 6, Rm::Reg(r));
    }

    /// `idiv r` (signed RDX:RAX / r).
    pub fn idiv_r(&mut self, size: u8, r: Reg) {
        self.op(size, &[0xf7], 7, Rm::Reg(r));
    }

    /// `shift dst, imm8`.
    pub fn shift_ri(&mut self, op: Shift, size: u8, dst: Reg, imm: u8) {
        let opc = if size == 1 { 0xc0 } else { 0xc1 };
        self.op(size, &[opc], op as u8, Rm::Reg(dst));
        self.u8(imm);
    }

    /// `test byte [m], imm8`.
    pub fn test_mi8(&mut self, m: Mem, imm: u8) {
        self.op(1, &[0xf6], 0, Rm::Mem(m));
        self.u8(imm);
    }

    /// `test r8, imm8` (the low byte of `r`).
    pub fn test_ri8(&mut self, r: Reg, imm: u8) {
        self.op(1, &[0xf6], 0, Rm::Reg(r));
        self.u8(imm);
    }

    /// `cmp byte [m], imm8`.
    pub fn cmp_mi8(&mut self, m: Mem, imm: u8) {
        self.op(1, &[0x80], Alu::Cmp as u8, Rm::Mem(m));
        self.u8(imm);
    }

    /// `test a, b` (registers).
    pub fn test_rr(&mut self, size: u8, a: Reg, b: Reg) {
        let opc = if size == 1 { 0x84 } else { 0x85 };
        self.op(size, &[opc], b.0, Rm::Reg(a));
    }

    /// An SSE instruction `prefix 0F opcode /r` with `reg` in ModR/M.reg
    /// (an XMM register or a GPR, by number) and `rm` (a register number
    /// or memory).
    fn sse(&mut self, prefix: u8, opcode: u8, reg: u8, rm: Rm) {
        self.u8(prefix);
        let (x, b) = match rm {
            Rm::Reg(r) => (0, r.0),
            Rm::Mem(m) => (m.index.map_or(0, |(i, _)| i.0), m.base.map_or(0, |b| b.0)),
        };
        self.rex(false, reg, x, b, false);
        self.u8(0x0f);
        self.u8(opcode);
        self.modrm(reg & 7, rm);
    }

    /// `movq xmm, qword [m]`.
    pub fn movq_load(&mut self, xmm: u8, m: Mem) {
        self.sse(0xf3, 0x7e, xmm, Rm::Mem(m));
    }

    /// `movq qword [m], xmm`.
    pub fn movq_store(&mut self, m: Mem, xmm: u8) {
        self.sse(0x66, 0xd6, xmm, Rm::Mem(m));
    }

    /// `paddq xmm, [m]` (`m` 16-byte aligned).
    pub fn paddq(&mut self, xmm: u8, m: Mem) {
        self.sse(0x66, 0xd4, xmm, Rm::Mem(m));
    }

    /// `psubq xmm, [m]` (`m` 16-byte aligned).
    pub fn psubq(&mut self, xmm: u8, m: Mem) {
        self.sse(0x66, 0xfb, xmm, Rm::Mem(m));
    }

    /// `movaps xmm, [m]` (`m` 16-byte aligned).
    pub fn movaps_load(&mut self, xmm: u8, m: Mem) {
        self.sse_np(0x28, xmm, Rm::Mem(m));
    }

    /// `movaps [m], xmm` (`m` 16-byte aligned).
    pub fn movaps_store(&mut self, m: Mem, xmm: u8) {
        self.sse_np(0x29, xmm, Rm::Mem(m));
    }

    /// An SSE instruction without a mandatory prefix: `0F opcode /r`.
    fn sse_np(&mut self, opcode: u8, reg: u8, rm: Rm) {
        let (x, b) = match rm {
            Rm::Reg(r) => (0, r.0),
            Rm::Mem(m) => (m.index.map_or(0, |(i, _)| i.0), m.base.map_or(0, |b| b.0)),
        };
        self.rex(false, reg, x, b, false);
        self.u8(0x0f);
        self.u8(opcode);
        self.modrm(reg & 7, rm);
    }

    /// `movmskpd r32, xmm`: the sign bits of the two qwords.
    pub fn movmskpd(&mut self, dst: Reg, xmm: u8) {
        self.sse(0x66, 0x50, dst.0, Rm::Reg(Reg(xmm)));
    }

    /// `lahf`: AH = SF:ZF:0:AF:0:PF:1:CF.
    pub fn lahf(&mut self) {
        self.u8(0x9f);
    }

    /// `sahf`: SF, ZF, AF, PF, CF from AH.
    pub fn sahf(&mut self) {
        self.u8(0x9e);
    }

    /// `setcc dst` (8-bit register).
    pub fn setcc(&mut self, cc: Cond, dst: Reg) {
        self.op(1, &[0x0f, 0x90 | cc as u8], 0, Rm::Reg(dst));
    }

    /// `push r64`.
    pub fn push(&mut self, r: Reg) {
        self.rex(false, 0, 0, r.0, false);
        self.u8(0x50 | (r.0 & 7));
    }

    /// `pop r64`.
    pub fn pop(&mut self, r: Reg) {
        self.rex(false, 0, 0, r.0, false);
        self.u8(0x58 | (r.0 & 7));
    }

    /// `ret`.
    pub fn ret(&mut self) {
        self.u8(0xc3);
    }

    /// `call r64`.
    pub fn call_r(&mut self, r: Reg) {
        self.op(4, &[0xff], 2, Rm::Reg(r));
    }

    /// `jmp r64`.
    pub fn jmp_r(&mut self, r: Reg) {
        self.op(4, &[0xff], 4, Rm::Reg(r));
    }

    /// `jmp qword [m]`.
    pub fn jmp_m(&mut self, m: Mem) {
        self.op(4, &[0xff], 4, Rm::Mem(m));
    }

    /// `int3` (padding that must never run).
    pub fn int3(&mut self) {
        self.u8(0xcc);
    }

    fn rel32_to(&mut self, target: u64) {
        let next = self.here() + 4;
        let rel = target.wrapping_sub(next) as i64;
        debug_assert!(i32::try_from(rel).is_ok(), "rel32 out of range");
        self.u32(rel as i32 as u32);
    }

    fn rel32_label(&mut self, l: Label) {
        let pos = self.buf.len();
        self.fixups.push((pos, l));
        self.u32(0);
    }

    /// `jmp rel32` to label `l`.
    pub fn jmp(&mut self, l: Label) {
        self.u8(0xe9);
        self.rel32_label(l);
    }

    /// `jmp rel32` to absolute `target` (within ±2 GiB); returns the
    /// offset of the rel32 field (for patching).
    pub fn jmp_abs(&mut self, target: u64) -> usize {
        self.u8(0xe9);
        let pos = self.buf.len();
        self.rel32_to(target);
        pos
    }

    /// `jcc rel32` to label `l`.
    pub fn jcc(&mut self, cc: Cond, l: Label) {
        self.u8(0x0f);
        self.u8(0x80 | cc as u8);
        self.rel32_label(l);
    }

    /// `jcc rel32` to absolute `target`.
    pub fn jcc_abs(&mut self, cc: Cond, target: u64) {
        self.u8(0x0f);
        self.u8(0x80 | cc as u8);
        self.rel32_to(target);
    }

    /// `call rel32` to absolute `target`.
    pub fn call_abs(&mut self, target: u64) {
        self.u8(0xe8);
        self.rel32_to(target);
    }
}

#[cfg(test)]
mod tests {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    use super::*;

    /// Disassembles `code` (at 0x1000) into Intel syntax lines.
    fn dis(code: &[u8]) -> Vec<String> {
        let mut d = Decoder::with_ip(64, code, 0x1000, DecoderOptions::NONE);
        let mut f = IntelFormatter::new();
        let mut out = Vec::new();
        while d.can_decode() {
            let i = d.decode();
            let mut s = String::new();
            f.format(&i, &mut s);
            out.push(s);
        }
        out
    }

    #[test]
    fn memory_operands_encode_every_base_index_and_displacement_form() {
        let mut a = Asm::new(0x1000);
        a.load(8, Reg::RAX, at(Reg::R15, 0x10));
        a.load(8, Reg::RAX, at(Reg::R13, 0));
        a.load(8, Reg::RAX, at(Reg::R12, 0));
        a.load(4, Reg::R9, at_index(Reg::R15, Reg::R13, 0x1_0000));
        a.store(2, at(Reg::RBP, -8), Reg::RAX);
        a.store(1, at(Reg::RAX, 0), Reg::RSI);
        a.lea(
            8,
            Reg::R14,
            Mem {
                base: None,
                index: Some((Reg::R12, 3)),
                disp: 8,
            },
        );
        a.alu_rm(Alu::Sub, 8, Reg::R14, at_index(Reg::R15, Reg::R13, 0x20));
        a.test_mi8(at(Reg::R13, 3), 0x80);
        a.store_imm(8, at(Reg::R15, 0x80), -1);
        let code = a.finish().unwrap();
        assert_eq!(
            dis(&code),
            [
                "mov rax,[r15+10h]",
                "mov rax,[r13]",
                "mov rax,[r12]",
                "mov r9d,[r15+r13+10000h]",
                "mov [rbp-8],ax",
                "mov [rax],sil",
                "lea r14,[r12*8+8]",
                "sub r14,[r15+r13+20h]",
                "test byte ptr [r13+3],80h",
                "mov qword ptr [r15+80h],0FFFFFFFFFFFFFFFFh",
            ]
        );
    }

    #[test]
    fn immediates_registers_and_jumps_encode() {
        let mut a = Asm::new(0x1000);
        let l = a.label();
        a.mov_imm(Reg::R13, 0x1234);
        a.mov_imm(Reg::RAX, 0xffff_ffff_8000_0000);
        a.mov_imm(Reg::R14, 0x1_0000_0000);
        a.alu_ri(Alu::And, 4, Reg::R13, 0x7fe0);
        a.alu_ri(Alu::Cmp, 8, Reg::R14, 0xff8);
        a.shift_ri(Shift::Shr, 8, Reg::R13, 7);
        a.setcc(Cond::O, Reg::RAX);
        a.lahf();
        a.jcc(Cond::A, l);
        a.bind(l);
        a.jmp_abs(0x1000);
        a.push(Reg::R12);
        a.pop(Reg::RBX);
        a.call_r(Reg::RAX);
        a.jmp_m(at_index(Reg::R15, Reg::R13, 8));
        a.movq_load(15, at(Reg::R15, 0x88));
        a.movq_store(at(Reg::R15, 0x88), 15);
        a.psubq(15, at(Reg::R15, 0x100));
        a.paddq(15, at(Reg::R15, 0x110));
        a.movmskpd(Reg::R13, 15);
        a.movaps_load(1, at(Reg::R15, 0x200));
        a.movaps_store(at(Reg::R15, 0x210), 9);
        let code = a.finish().unwrap();
        assert_eq!(
            dis(&code),
            [
                "mov r13d,1234h",
                "mov rax,0FFFFFFFF80000000h",
                "mov r14,100000000h",
                "and r13d,7FE0h",
                "cmp r14,0FF8h",
                "shr r13,7",
                "seto al",
                "lahf",
                "ja 0000000000001033h",
                "jmp 0000000000001000h",
                "push r12",
                "pop rbx",
                "call rax",
                "jmp qword ptr [r15+r13+8]",
                "movq xmm15,[r15+88h]",
                "movq [r15+88h],xmm15",
                "psubq xmm15,[r15+100h]",
                "paddq xmm15,[r15+110h]",
                "movmskpd r13d,xmm15",
                "movaps xmm1,[r15+200h]",
                "movaps [r15+210h],xmm9",
            ]
        );
    }
}
