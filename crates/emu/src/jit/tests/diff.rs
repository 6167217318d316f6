//! Differential testing of the two tiers: random 64-bit code at CPL 0
//! under 4-level paging (4 KiB pages, one read-only and one missing),
//! with memory operands of every form (base, base + index * scale,
//! RSP-, FS-, GS- and RIP-relative; GS points at an MMIO device), runs on
//! the interpreter and on the translator from the same state; registers,
//! RIP, flags, CR2, instructions retired, memory and the exception taken
//! (if any) must be the same.
//!
//! Flags the SDM leaves undefined (after IMUL, shifts, BT...) are tracked
//! while generating: no instruction reads them before something defines
//! them, and they are masked out of the comparison.

use std::sync::{Arc, Mutex};

use alcazar_core::{BusDevice, IoSpace};
use iced_x86::code_asm::*;
use iced_x86::{Formatter, IntelFormatter, RflagsBits};

use super::{assert_same, cpu_with, run_bounded, small_pages};
use crate::flags;
use crate::interrupts::tests::{long_tables, put, set_gate64, HANDLER};
use crate::state::{reg, seg};
use crate::testutil::CODE;
use crate::{Cpu, EmuTier};

/// The data pages (4 KiB pages over 4-6 MiB).
const DATA: u64 = 0x40_0000;
/// Page 10 is read-only, page 11 missing.
const RO_PAGE: u64 = DATA + 0xa000;
const MISSING_PAGE: u64 = DATA + 0xb000;
const MMIO: u64 = 0x2000_0000;

/// Registers the generated code may write (RBX, R12: data pointers; RSP;
/// R14: an index 0-15; R15: the loop counter, then the exception marker).
const FREE: [usize; 11] = [0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 13];

const R8: [AsmRegister8; 16] = [
    al, cl, dl, bl, spl, bpl, sil, dil, r8b, r9b, r10b, r11b, r12b, r13b, r14b, r15b,
];
const R16: [AsmRegister16; 16] = [
    ax, cx, dx, bx, sp, bp, si, di, r8w, r9w, r10w, r11w, r12w, r13w, r14w, r15w,
];
const R32: [AsmRegister32; 16] = [
    eax, ecx, edx, ebx, esp, ebp, esi, edi, r8d, r9d, r10d, r11d, r12d, r13d, r14d, r15d,
];
const R64: [AsmRegister64; 16] = [
    rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
];

const ARITH: u32 = RflagsBits::OF
    | RflagsBits::SF
    | RflagsBits::ZF
    | RflagsBits::AF
    | RflagsBits::CF
    | RflagsBits::PF;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, s: &[T]) -> T {
        s[self.below(s.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

macro_rules! sized {
    ($size:expr, |$sz:ident| $body:expr) => {
        match $size {
            1 => {
                let $sz = (R8, byte_ptr as fn(AsmMemoryOperand) -> AsmMemoryOperand);
                $body
            }
            2 => {
                let $sz = (R16, word_ptr as fn(AsmMemoryOperand) -> AsmMemoryOperand);
                $body
            }
            4 => {
                let $sz = (R32, dword_ptr as fn(AsmMemoryOperand) -> AsmMemoryOperand);
                $body
            }
            _ => {
                let $sz = (R64, qword_ptr as fn(AsmMemoryOperand) -> AsmMemoryOperand);
                $body
            }
        }
    };
}

/// The generator's state.
struct Gen {
    a: CodeAssembler,
    rng: Rng,
    /// Arithmetic flags undefined at this point (iced bits).
    undefined: u32,
    /// Every flag that was undefined at some point.
    ever_undefined: u32,
    /// Pushes not popped yet.
    depth: usize,
    /// A forward Jcc's label, bound after `n` more instructions, with
    /// the undefined flags at the jump.
    skip: Option<(CodeLabel, usize, u32)>,
    func: CodeLabel,
    rodata: CodeLabel,
}

impl Gen {
    fn free(&mut self) -> usize {
        self.rng.pick(&FREE)
    }

    fn size(&mut self) -> u8 {
        self.rng.pick(&[1, 2, 4, 8])
    }

    fn imm(&mut self, size: u8) -> i32 {
        let v = self.rng.next() as i64;
        (match size {
            1 => v as i8 as i64,
            2 => v as i16 as i64,
            _ => match self.rng.below(3) {
                0 => v as i8 as i64,
                1 => v as i32 as i64,
                _ => v & 0xff,
            },
        }) as i32
    }

    /// A memory operand (its size chosen by the caller).
    fn mem(&mut self) -> AsmMemoryOperand {
        let d = |g: &mut Gen, span: i64| (g.rng.below(span as u64 * 2) as i64 - span) as i32;
        match self.rng.below(8) {
            0 | 1 => rbx + d(self, 0x200),
            2 => {
                // Close to a page boundary (R12 is DATA + 0x9800): reads
                // and writes that cross into the read-only or the
                // missing page, or between two ordinary pages.
                let boundary = self.rng.pick(&[0x9000i32, 0xa000, 0xb000, 0xc000, 0xd000]);
                r12 + (boundary - 0x9800 + self.rng.below(17) as i32 - 8)
            }
            3 => rbx + r14 * self.rng.pick(&[1, 2, 4, 8]) + d(self, 0x80),
            4 => rsp + self.rng.below(0x80) as i32,
            5 => (rbx + d(self, 0x100)).fs(),
            6 => (rbx + self.rng.below(0x40) as i32).gs(),
            _ => r12 + r14 * 8 + d(self, 0x1000),
        }
    }

    /// Makes every arithmetic flag defined (before an instruction that
    /// reads flags).
    fn define_flags(&mut self) {
        if self.undefined != 0 {
            let (x, y) = (self.free(), self.free());
            self.a.cmp(R64[x], R64[y]).unwrap();
            self.after();
        }
    }

    /// Bookkeeping after each instruction.
    fn after(&mut self) {
        use iced_x86::Mnemonic as M;
        let i = *self.a.instructions().last().unwrap();
        self.undefined = (self.undefined & !i.rflags_modified()) | (i.rflags_undefined() & ARITH);
        // Shifts and rotates leave OF undefined for counts other than 1
        // (and AF for any count); iced cannot always tell the count.
        if matches!(
            i.mnemonic(),
            M::Shl | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr | M::Shld | M::Shrd
        ) {
            self.undefined |= RflagsBits::OF | RflagsBits::AF;
        }
        self.ever_undefined |= self.undefined;
    }

    fn alu(&mut self) {
        let size = self.size();
        let (d, s) = (self.free(), self.free());
        let op = self.rng.below(8);
        if op == 2 || op == 3 {
            self.define_flags(); // ADC, SBB read CF
        }
        let form = self.rng.below(5);
        let imm = self.imm(size);
        let m = self.mem();
        let a = &mut self.a;
        macro_rules! go {
            ($op:ident) => {
                sized!(size, |z| match form {
                    0 => a.$op(z.0[d], z.0[s]),
                    1 => a.$op(z.0[d], imm),
                    2 => a.$op(z.0[d], z.1(m)),
                    3 => a.$op(z.1(m), z.0[s]),
                    _ => a.$op(z.1(m), imm),
                })
            };
        }
        match op {
            0 => go!(add),
            1 => go!(or),
            2 => go!(adc),
            3 => go!(sbb),
            4 => go!(and),
            5 => go!(sub),
            6 => go!(xor),
            _ => go!(cmp),
        }
        .unwrap();
    }

    fn unary(&mut self) {
        let size = self.size();
        let d = self.free();
        let on_mem = self.rng.chance(40);
        let m = self.mem();
        let op = self.rng.below(4);
        let a = &mut self.a;
        macro_rules! go {
            ($op:ident) => {
                sized!(size, |z| if on_mem { a.$op(z.1(m)) } else { a.$op(z.0[d]) })
            };
        }
        match op {
            0 => go!(inc),
            1 => go!(dec),
            2 => go!(neg),
            _ => go!(not),
        }
        .unwrap();
    }

    fn shift(&mut self) {
        let size = self.size();
        let d = self.free();
        let op = self.rng.below(7);
        let by = self.rng.below(3); // imm, 1, CL
        if by == 2 || op >= 5 {
            self.define_flags(); // count 0 keeps them; RCL/RCR read CF
        }
        let count = self.rng.below(70) as u32;
        let on_mem = self.rng.chance(30);
        let m = self.mem();
        let a = &mut self.a;
        macro_rules! go {
            ($op:ident) => {
                sized!(size, |z| match (by, on_mem) {
                    (0, false) => a.$op(z.0[d], count),
                    (1, false) => a.$op(z.0[d], 1u32),
                    (_, false) => a.$op(z.0[d], cl),
                    (0, true) => a.$op(z.1(m), count),
                    (1, true) => a.$op(z.1(m), 1u32),
                    (_, true) => a.$op(z.1(m), cl),
                })
            };
        }
        match op {
            0 => go!(shl),
            1 => go!(shr),
            2 => go!(sar),
            3 => go!(rol),
            4 => go!(ror),
            5 => go!(rcl),
            _ => go!(rcr),
        }
        .unwrap();
    }

    fn mov(&mut self) {
        let size = self.size();
        let (d, s) = (self.free(), self.free());
        let imm = self.imm(size);
        let m = self.mem();
        let form = self.rng.below(8);
        let wide = self.rng.next() as i64;
        let a = &mut self.a;
        match form {
            1 => match size {
                1 => a.mov(R8[d], imm),
                2 => a.mov(R16[d], imm),
                4 => a.mov(R32[d], imm),
                _ => a.mov(R64[d], wide),
            },
            0..=4 => sized!(size, |z| match form {
                0 => a.mov(z.0[d], z.0[s]),
                2 => a.mov(z.0[d], z.1(m)),
                3 => a.mov(z.1(m), z.0[s]),
                _ => a.mov(z.1(m), imm),
            }),
            5 => a.movzx(R32[d], byte_ptr(m)),
            6 => a.movsx(R64[d], word_ptr(m)),
            _ => a.movsxd(R64[d], dword_ptr(m)),
        }
        .unwrap();
    }

    fn other(&mut self) {
        let (d, s) = (self.free(), self.free());
        let m = self.mem();
        let cc = self.rng.below(4);
        match self.rng.below(27) {
            22 => {
                // A zero source sometimes (the destination then stays).
                if self.rng.chance(30) {
                    self.a.xor(R32[s], R32[s]).unwrap();
                    self.after();
                }
                match cc {
                    0 => self.a.bsf(R64[d], R64[s]),
                    1 => self.a.bsr(R32[d], R32[s]),
                    2 => self.a.tzcnt(R32[d], dword_ptr(m)),
                    _ => self.a.bsf(R16[d], R16[s]),
                }
            }
            23 => {
                self.a.cqo().unwrap();
                self.after();
                self.a.idiv(R64[s])
            }
            24 => {
                self.a.cdq().unwrap();
                self.after();
                self.a.idiv(dword_ptr(m))
            }
            25 => self.a.div(R32[s]),
            26 => self.a.div(qword_ptr(m)),
            0 => self.a.lea(R64[d], m),
            1 => self.a.lea(R32[d], r12 + R64[s] * 4 + 0x33),
            2 => self.a.imul_2(R64[d], R64[s]),
            3 => self.a.imul_3(R32[d], dword_ptr(m), 0x1234),
            4 => self.a.mul(R64[s]),
            5 => {
                self.define_flags();
                match cc {
                    0 => self.a.cmovb(R64[d], R64[s]),
                    1 => self.a.cmovle(R32[d], dword_ptr(m)),
                    2 => self.a.setne(R8[d]),
                    _ => self.a.seto(byte_ptr(m)),
                }
            }
            6 => self.a.xchg(R64[d], R64[s]),
            7 => self.a.xchg(qword_ptr(m), R64[s]),
            8 => self.a.xadd(R32[d], R32[s]),
            9 => self.a.lock().xadd(qword_ptr(m), R64[s]),
            10 => self.a.cmpxchg(qword_ptr(m), R64[s]),
            11 => self.a.lock().add(dword_ptr(m), R32[s]),
            12 => self.a.bt(R64[d], R64[s]),
            13 => self.a.bts(qword_ptr(m), 33u32),
            14 => self.a.bswap(R64[d]),
            15 => match cc {
                0 => self.a.cqo(),
                1 => self.a.cdq(),
                2 => self.a.cdqe(),
                _ => self.a.cwde(),
            },
            16 => match cc {
                0 => self.a.clc(),
                1 => self.a.stc(),
                _ => {
                    self.define_flags();
                    self.a.cmc()
                }
            },
            17 => {
                // DIV r64: RDX small so the quotient fits, the divisor
                // sometimes 0 (#DE).
                self.a.and(edx, 0xff).unwrap();
                self.after();
                self.a.div(R64[s])
            }
            18 => self.a.shld(R64[d], R64[s], (self.rng.below(64)) as u32),
            19 => {
                self.define_flags();
                self.a.lahf()
            }
            20 => self.a.mov(ah, R8[s & 3]),
            _ => self.a.nop(),
        }
        .unwrap();
    }

    fn stack(&mut self) {
        let r = self.free();
        if self.depth > 0 && self.rng.chance(50) {
            self.a.pop(R64[r]).unwrap();
            self.depth -= 1;
        } else if self.depth < 4 {
            match self.rng.below(3) {
                0 => self.a.push(R64[r]).unwrap(),
                1 => self.a.push(self.rng.next() as i32).unwrap(),
                _ => {
                    self.define_flags();
                    self.a.pushfq().unwrap();
                }
            }
            self.depth += 1;
        }
    }

    fn sse(&mut self) {
        const X: [AsmRegisterXmm; 16] = [
            xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13,
            xmm14, xmm15,
        ];
        let (d, s) = (
            X[self.rng.below(16) as usize],
            X[self.rng.below(16) as usize],
        );
        let r = self.free();
        // Aligned (mostly) or not: misaligned 16-byte operands fault.
        // Mostly 16-byte aligned (RBX is DATA + 0x4000 + 0..0x100, so
        // not always): misaligned 16-byte operands fault.
        let m = if self.rng.chance(80) {
            rbx + (self.rng.below(0x20) as i32 * 16 - 0x100)
        } else {
            self.mem()
        };
        let any = self.mem();
        let imm = self.rng.below(256) as u32;
        let shift = self.rng.below(20) as u32;
        let a = &mut self.a;
        match self.rng.below(24) {
            0 => a.movdqa(d, xmmword_ptr(m)),
            1 => a.movdqu(d, xmmword_ptr(any)),
            2 => a.movaps(xmmword_ptr(m), s),
            3 => a.movups(xmmword_ptr(any), s),
            4 => a.pcmpeqb(d, s),
            5 => a.pcmpeqb(d, xmmword_ptr(m)),
            6 => a.pmovmskb(R32[r], s),
            7 => a.pxor(d, s),
            8 => a.por(d, xmmword_ptr(m)),
            9 => a.pand(d, s),
            10 => a.paddb(d, s),
            11 => a.psubw(d, xmmword_ptr(m)),
            12 => a.punpcklbw(d, s),
            13 => a.pshufd(d, s, imm),
            14 => a.movq(d, R64[r]),
            15 => a.movq(R64[r], s),
            16 => a.movd(d, R32[r]),
            17 => a.movq(d, qword_ptr(any)),
            18 => a.movlpd(d, qword_ptr(any)),
            19 => a.movhpd(qword_ptr(any), s),
            20 => a.movsd_2(d, s),
            21 => a.pslldq(d, shift),
            22 => a.pminub(d, s),
            _ => a.xorps(d, s),
        }
        .unwrap();
    }

    fn string(&mut self) {
        let d = self.rng.below(0x300) as i32;
        self.a.lea(rdi, rbx + d).unwrap();
        self.after();
        self.a.lea(rsi, r12 + (d - 0x200)).unwrap();
        self.after();
        self.a.mov(ecx, self.rng.below(40) as u32).unwrap();
        self.after();
        match self.rng.below(3) {
            0 => self.a.rep().movsb(),
            1 => self.a.rep().stosq(),
            _ => self.a.lodsw(),
        }
        .unwrap();
    }

    /// One random instruction (or a short group).
    fn one(&mut self) {
        match self.rng.below(20) {
            0..=4 => self.alu(),
            5 | 6 => self.unary(),
            7 | 8 => self.shift(),
            9..=11 => self.mov(),
            12..=15 => self.other(),
            16 => self.stack(),
            17 => self.sse(),
            18 => self.string(),
            _ => {
                if self.skip.is_none() && self.rng.chance(50) {
                    self.define_flags();
                    let l = self.a.create_label();
                    match self.rng.below(3) {
                        0 => self.a.jb(l),
                        1 => self.a.jne(l),
                        _ => self.a.jle(l),
                    }
                    .unwrap();
                    self.after();
                    let n = 1 + self.rng.below(3) as usize;
                    self.skip = Some((l, n, self.undefined));
                    return;
                } else if self.rng.chance(50) {
                    self.a.call(self.func).unwrap();
                } else {
                    let d = self.free();
                    self.a.mov(R64[d], qword_ptr(self.rodata)).unwrap();
                }
            }
        }
        self.after();
    }

    /// Binds a pending skip label whose instructions were emitted.
    fn bind_skip(&mut self, force: bool) {
        if let Some((mut l, n, undefined)) = self.skip.take() {
            if n == 0 || force {
                self.a.set_label(&mut l).unwrap();
                self.a.nop().unwrap();
                self.undefined |= undefined;
            } else {
                self.skip = Some((l, n - 1, undefined));
            }
        }
    }
}

/// A random program: a loop of `len` instructions run `iterations`
/// times, a function it calls, 8 bytes of read-only data. Returns the
/// code and the flags that may be undefined at the end.
fn program(seed: u64, len: usize, iterations: u32) -> (Vec<u8>, u32) {
    let mut a = CodeAssembler::new(64).unwrap();
    let func = a.create_label();
    let rodata = a.create_label();
    let mut g = Gen {
        a,
        rng: Rng(seed | 1),
        undefined: 0,
        ever_undefined: 0,
        depth: 0,
        skip: None,
        func,
        rodata,
    };
    let mut top = g.a.create_label();
    g.a.mov(r15d, iterations).unwrap();
    g.a.set_label(&mut top).unwrap();
    for _ in 0..len {
        g.one();
        g.bind_skip(false);
    }
    g.bind_skip(true);
    while g.depth > 0 {
        g.a.pop(R64[g.rng.pick(&FREE)]).unwrap();
        g.depth -= 1;
    }
    // The next iteration starts with these flags: define them.
    g.define_flags();
    g.a.dec(r15d).unwrap();
    g.after();
    g.a.jnz(top).unwrap();
    g.a.hlt().unwrap();
    g.a.set_label(&mut g.func).unwrap();
    g.a.add(rax, 0x11).unwrap();
    g.a.ret().unwrap();
    g.a.set_label(&mut g.rodata).unwrap();
    g.a.dq(&[0x0123_4567_89ab_cdef]).unwrap();
    let code = g.a.assemble(CODE).unwrap();
    (code, g.ever_undefined | g.undefined)
}

/// An MMIO device whose reads depend only on the address.
struct Pattern;

impl BusDevice for Pattern {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_mul(13).wrapping_add(i as u8);
        }
    }
    fn write(&mut self, _: u64, _: &[u8]) {}
}

/// The machine around the code: exception handlers that record the
/// vector in R15 (`0x1000 | vector`), 4 KiB data pages, the MMIO device,
/// random registers and flags.
fn setup(cpu: &mut Cpu, seed: u64) {
    long_tables(cpu);
    for v in 0..32u8 {
        let at = HANDLER + 16 * u64::from(v);
        put(cpu, at, 64, |a| {
            a.mov(r15d, u32::from(v) | 0x1000).unwrap();
            a.hlt().unwrap();
        });
        set_gate64(cpu, v, at, 0, 0);
    }
    let pte = small_pages(cpu, DATA);
    let m = &cpu.machine.memory;
    m.write_u64(pte(RO_PAGE), RO_PAGE | 1).unwrap();
    m.write_u64(pte(MISSING_PAGE), 0).unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9) | 1);
    let fill: Vec<u8> = (0..0x10000).map(|_| rng.next() as u8).collect();
    m.write(DATA, &fill).unwrap();
    cpu.machine
        .bus
        .insert(
            IoSpace::Mmio,
            MMIO,
            0x1000,
            "pattern",
            Arc::new(Mutex::new(Pattern)),
        )
        .unwrap();
    for g in FREE {
        cpu.s.gpr[g] = match rng.below(4) {
            0 => rng.below(0x100),
            1 => u64::MAX - rng.below(0x100),
            _ => rng.next(),
        };
    }
    cpu.s.gpr[reg::RBX] = DATA + 0x4000 + rng.below(0x100);
    cpu.s.gpr[12] = DATA + 0x9800;
    cpu.s.gpr[14] = rng.below(16);
    cpu.s.gpr[reg::RSP] = DATA + 0x8000 - 8 * rng.below(4);
    cpu.s.seg[seg::FS].base = DATA + 0x2000;
    cpu.s.seg[seg::GS].base = MMIO;
    cpu.s.cr4 |= crate::state::cr4::OSFXSR;
    for x in cpu.s.fpu.xmm.iter_mut() {
        *x = u128::from(rng.next()) << 64 | u128::from(rng.next());
    }
    let arith = rng.next() & flags::ARITH;
    let df = if rng.chance(20) { flags::DF } else { 0 };
    cpu.s.flags.set(arith | df);
}

fn listing(code: &[u8]) -> String {
    let mut d = iced_x86::Decoder::with_ip(64, code, CODE, iced_x86::DecoderOptions::NONE);
    let mut f = IntelFormatter::new();
    let mut out = String::new();
    while d.can_decode() {
        let i = d.decode();
        let mut s = String::new();
        f.format(&i, &mut s);
        out += &format!("{:#x}: {s}\n", i.ip());
    }
    out
}

/// iced flag bits to RFLAGS bits.
fn rflags_mask(bits: u32) -> u64 {
    let map = [
        (RflagsBits::OF, flags::OF),
        (RflagsBits::SF, flags::SF),
        (RflagsBits::ZF, flags::ZF),
        (RflagsBits::AF, flags::AF),
        (RflagsBits::CF, flags::CF),
        (RflagsBits::PF, flags::PF),
    ];
    map.iter()
        .filter(|(i, _)| bits & i != 0)
        .fold(0, |m, (_, f)| m | f)
}

/// Runs one random program on both tiers and compares.
fn check(seed: u64) {
    let mut rng = Rng(seed);
    let len = 4 + rng.below(40) as usize;
    let iterations = 1 + rng.below(5) as u32;
    let threshold = rng.pick(&[0, 0, 1, 2]);
    check_program(seed, len, iterations, threshold);
}

/// Runs the program of `seed` with `len` instructions on both tiers.
fn check_program(seed: u64, len: usize, iterations: u32, threshold: u32) {
    let (code, undefined) = program(seed, len, iterations);
    let set = |cpu: &mut Cpu| {
        setup(cpu, seed);
        cpu.jit.config.threshold = threshold;
    };
    let mut interp = cpu_with(&code, EmuTier::Interp, &set);
    let mut jit = cpu_with(&code, EmuTier::Jit, &set);
    let ea = run_bounded(&mut interp, 10_000);
    let eb = run_bounded(&mut jit, 10_000);
    let context = || format!("seed {seed:#x}, threshold {threshold}\n{}", listing(&code));
    assert_eq!(ea, eb, "exits differ: {}", context());
    let mask = !rflags_mask(undefined);
    for c in [&mut interp, &mut jit] {
        let f = c.s.flags.get() & mask;
        c.s.flags.set(f);
        // The exception frame's RFLAGS may hold undefined flags too.
        if c.s.gpr[15] & 0x1000 != 0 {
            let top = c.s.gpr[reg::RSP];
            for slot in [top + 16, top + 24] {
                if let Ok(v) = c.machine.memory.read_u64(slot) {
                    c.machine.memory.write_u64(slot, v & mask).unwrap();
                }
            }
        }
    }
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| assert_same(&interp, &jit)));
    if let Err(e) = result {
        panic!("{e:?}: {}", context());
    }
    let mem = |c: &Cpu| {
        let mut v = vec![0u8; 0x10000];
        c.machine.memory.read(DATA, &mut v).unwrap();
        v
    };
    let (ma, mb) = (mem(&interp), mem(&jit));
    if let Some(i) = (0..ma.len()).find(|&i| ma[i] != mb[i]) {
        panic!(
            "memory differs at {:#x}: {:#x} vs {:#x}: {}",
            DATA + i as u64,
            ma[i],
            mb[i],
            context()
        );
    }
}

#[test]
fn random_code_runs_the_same_on_both_tiers() {
    let count: u64 = std::env::var("ALCAZAR_JIT_DIFF_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let first: u64 = std::env::var("ALCAZAR_JIT_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for seed in first..first + count {
        check(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed);
    }
}

/// Debugging aid: `ALCAZAR_JIT_DIFF_SHRINK=seed` finds the shortest
/// failing prefix of that seed's program.
#[test]
fn shrink_a_failing_seed() {
    let Some(seed) = std::env::var("ALCAZAR_JIT_DIFF_SHRINK")
        .ok()
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
    else {
        return;
    };
    let mut rng = Rng(seed);
    let len = 4 + rng.below(40) as usize;
    let iterations = 1 + rng.below(5) as u32;
    let threshold = rng.pick(&[0, 0, 1, 2]);
    for n in 1..=len {
        for it in 1..=iterations {
            let r = std::panic::catch_unwind(|| check_program(seed, n, it, threshold));
            if r.is_err() {
                panic!("shortest: {n} instructions, {it} iterations");
            }
        }
    }
}

#[test]
fn random_code_reaches_faults_and_translated_code() {
    // The generator's reach: over a few programs, faults of both kinds
    // happen and most instructions run translated.
    let mut faults = 0;
    let mut translated = 0;
    for seed in 0..40u64 {
        let (code, _) = program(seed * 7 + 3, 30, 3);
        let mut jit = cpu_with(&code, EmuTier::Jit, &|c| setup(c, seed));
        run_bounded(&mut jit, 10_000);
        faults += u64::from(jit.s.gpr[15] & 0x1000 != 0);
        translated += jit.jit.stats.instructions;
    }
    assert!(faults > 2, "{faults} programs faulted");
    assert!(translated > 1000, "{translated} instructions translated");
}
