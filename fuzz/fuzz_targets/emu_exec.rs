//! Fuzzes the emu engine's instruction execution: random instruction
//! bytes run from random machine state on a bare emu [`Cpu`] over 2 MiB of
//! guest RAM, in any of eight modes — real mode, virtual-8086, 16- and
//! 32-bit protected mode (flat, with 2-level paging, with PAE paging),
//! 64-bit and compatibility mode under 4-level paging — at CPL 0 or 3.
//!
//! The machine around the code is a small but complete system image: a
//! GDT with ring-0 and ring-3 code and data segments of every size, a
//! conforming code and an expand-down data segment, a call gate, an LDT
//! (loaded) and a TSS, an IDT (or, in real mode, an IVT) whose every vector leads to a
//! `hlt`, SYSCALL/SYSENTER MSRs pointing at it too, and identity page
//! tables over RAM whose data-page flags (present, writable, user, NX...)
//! come from the input. Two more regions reach outside RAM: virtual
//! 2-4 MiB maps the MMIO hole at 0xfec0_0000 (a sink device in its first
//! page) and virtual 4-6 MiB maps 4 GiB (nothing there). Ports 0-0xff go
//! to a sink device, the rest are unclaimed.
//!
//! The CPU runs through [`Cpu::run_slice`] (the real run loop, blocks
//! linked and chained) or one block at a time through [`Cpu::step`],
//! at most [`SLICES`] slices, [`MAX_INSNS`] instructions and [`BUDGET`]
//! of time (a REP string instruction is one instruction of up to 4096
//! iterations), with an NMI or an external interrupt raised between
//! slices if the input asks. Each input gets a fresh machine and CPU.
//! A fault, a triple fault (shutdown), `hlt`, a stop request (a
//! hypercall) and port I/O or MMIO are all normal outcomes.
//!
//! Asserts, whatever the code does: no panic; the run ends within its
//! bound; every slice that does not end the run gets somewhere (see
//! [`progress`]: an empty block once left RIP in place for ever); every bus access reaches a device inside the range it was
//! registered for, with a width of 1, 2, 4 or 8; CPL stays 0-3; outside
//! 64-bit mode RIP fits in 32 bits and in 64-bit mode it is canonical
//! (checked between slices, unless the CPU shut down); the inspector tree
//! builds (when the input asks: it is slow). AddressSanitizer catches host-memory errors.
//!
//! Input: mode byte (bits 0-2: the mode, see [`Mode`]; bit 3: CPL 3;
//! bit 4: RSP from the input instead of the default stack; bit 5: raise
//! an NMI, bit 6: an external interrupt, after the first slice; bit 7:
//! single blocks instead of slices), CR0 extras (1 byte: MP, EM, TS, NE,
//! WP, AM, CD), CR4 extras (2 bytes: TSD, DE, PSE, MCE, PGE, PCE, OSFXSR,
//! OSXMMEXCPT, OSXSAVE if CPUID has XSAVE), EFER extras (1 byte: SCE,
//! NXE; bit 7: build the inspector tree at the end), the interrupt vector (1 byte), RFLAGS (8 bytes), RAX..R15 (8
//! bytes each), flags of the 8 data pages' PTEs (1 byte each, XORed into
//! bits 0-7) and their NX bits (1 byte); then the code, placed at CS:RIP
//! (linear [`CODE`]), its first 4 KiB in the code page and the rest in
//! the data pages at [`DATA`].

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use alcazar_core::engine::VcpuExit;
use alcazar_core::memory::{GuestMemory, MemoryMap};
use alcazar_core::regs::{DescriptorTable, Segment};
use alcazar_core::{BusDevice, IoSpace, Machine};
use alcazar_emu::code::CodePages;
use alcazar_emu::cpu::{cr0, cr4, efer, reg, seg};
use alcazar_emu::Cpu;
use common::Input;
use libfuzzer_sys::fuzz_target;

/// Guest RAM.
const RAM: u64 = 2 << 20;
/// The GDT.
const GDT: u64 = 0x1000;
/// The IDT (256 16-byte gates in long mode, 8-byte ones otherwise).
const IDT: u64 = 0x2000;
/// The TSS (32- or 64-bit, with a 32-byte I/O bitmap for ports 0-0xff).
const TSS: u64 = 0x3000;
/// Where every interrupt, exception and system call lands: `hlt`.
const HANDLER: u64 = 0x4000;
/// 4-level paging: PML4, PDPT, PD, PT (the PD and PT double for PAE).
const PML4: u64 = 0x5000;
const PDPT: u64 = 0x6000;
const PD: u64 = 0x7000;
const PT: u64 = 0x8000;
/// PAE's 4-entry page-directory-pointer table.
const PAE_PDPT: u64 = 0x9000;
/// 2-level (32-bit) paging: the page directory and its first table.
const PD32: u64 = 0xa000;
const PT32: u64 = 0xb000;
/// The ring-0 stack interrupts switch to.
const STACK0: u64 = 0xf000;
/// Where the code starts (linear; RIP is 0 in 16-bit modes, whose CS
/// base is here).
const CODE: u64 = 0x10000;
/// The 8 data pages whose PTE flags the input chooses.
const DATA: u64 = 0x20000;
/// The default stack (top).
const STACK: u64 = 0x80000;
/// The MMIO sink (mapped at virtual 2 MiB) and the port sink.
const MMIO_SINK: u64 = 0xfec0_0000;
const SINK_LEN: u64 = 0x1000;
const PORT_SINK_LEN: u64 = 0x100;

/// Most run slices (or single blocks) per input.
const SLICES: usize = 256;
/// Block steps per slice.
const STEPS: usize = 1;
/// The run stops once this many instructions retired...
const MAX_INSNS: u64 = 50_000;
/// ... or after this long (REP string instructions run up to 4096
/// iterations as one instruction, and code that stores into itself is
/// decoded again and again: instructions alone do not bound the time).
const BUDGET: Duration = Duration::from_millis(5);

/// Selectors of the GDT below.
const CODE32: u16 = 0x08;
const DATA32: u16 = 0x10;
const CODE64: u16 = 0x18;
const CODE16: u16 = 0x38;
const DATA16: u16 = 0x40;
const TSS_SEL: u16 = 0x58;
/// A call gate (DPL 3) to the handler's code segment.
const CALL_GATE: u16 = 0x68;
/// A conforming 32-bit code segment (DPL 0) and an expand-down 32-bit
/// data segment (DPL 3, limit 0xfff: offsets 0x1000 and up are valid).
const CONFORMING: u16 = 0x78;
const EXPAND_DOWN: u16 = 0x80;
/// An LDT (at [`LDT`]) holding 32-bit code and data segments, DPL 3.
const LDT_SEL: u16 = 0x88;
/// The GDT's limit.
const GDT_LIMIT: u16 = 0x97;
/// The LDT.
const LDT: u64 = 0x1800;
/// Added to a ring-0 selector for its ring-3 twin (the GDT holds them
/// 0x18 further on, RPL 3).
const RING3: u16 = 0x18 + 3;

/// The execution modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Real,
    V86,
    Prot16,
    Prot32,
    Paged32,
    Pae32,
    Long64,
    Compat32,
}

impl Mode {
    fn from(bits: u8) -> Self {
        [
            Mode::Real,
            Mode::V86,
            Mode::Prot16,
            Mode::Prot32,
            Mode::Paged32,
            Mode::Pae32,
            Mode::Long64,
            Mode::Compat32,
        ][usize::from(bits & 7)]
    }

    fn long(self) -> bool {
        matches!(self, Mode::Long64 | Mode::Compat32)
    }
}

/// A device that checks every access lands inside its range with a
/// width the bus promises, and reads as a fixed pattern.
struct Sink(u64);

impl Sink {
    fn check(&self, offset: u64, len: usize) {
        assert!(
            matches!(len, 1 | 2 | 4 | 8),
            "a {len}-byte access reached a device"
        );
        assert!(
            offset.checked_add(len as u64).is_some_and(|e| e <= self.0),
            "an access at {offset:#x}+{len} passed the end of a {:#x}-byte device",
            self.0
        );
    }
}

impl BusDevice for Sink {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.check(offset, data.len());
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8) ^ 0x5a;
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.check(offset, data.len());
    }
}

/// A flat segment of `size` (16, 32 or 64) bits at `dpl`, based at
/// `base` (16-bit ones have a 64 KiB limit).
fn segment(selector: u16, code: bool, size: u32, dpl: u8, base: u64) -> Segment {
    let mut s = Segment::flat32(selector, code);
    s.dpl = dpl;
    s.base = base;
    match size {
        16 => {
            s.db = false;
            s.g = false;
            s.limit = 0xffff;
        }
        64 => {
            s.db = false;
            s.l = true;
        }
        _ => {}
    }
    s
}

/// The bytes of the low RAM below [`CODE`]: the system image.
struct Image(Vec<u8>);

impl Image {
    fn w64(&mut self, at: u64, v: u64) {
        self.write(at, &v.to_le_bytes());
    }
    fn w32(&mut self, at: u64, v: u32) {
        self.write(at, &v.to_le_bytes());
    }
    fn write(&mut self, at: u64, bytes: &[u8]) {
        let at = at as usize;
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

/// The system image for long mode or the other modes, built once.
fn image(long: bool) -> &'static [u8] {
    static IMAGES: [OnceLock<Vec<u8>>; 2] = [OnceLock::new(), OnceLock::new()];
    IMAGES[usize::from(long)].get_or_init(|| build_image(long))
}

fn build_image(long: bool) -> Vec<u8> {
    let mut m = Image(vec![0; CODE as usize]);
    // GDT: null, then ring 0 and ring 3 code32/data32/code64 and
    // code16/data16, then the TSS.
    let descriptors = [
        (CODE32, segment(CODE32, true, 32, 0, 0)),
        (DATA32, segment(DATA32, false, 32, 0, 0)),
        (CODE64, segment(CODE64, true, 64, 0, 0)),
        (CODE32 + 0x18, segment(CODE32 + RING3, true, 32, 3, 0)),
        (DATA32 + 0x18, segment(DATA32 + RING3, false, 32, 3, 0)),
        (CODE64 + 0x18, segment(CODE64 + RING3, true, 64, 3, 0)),
        (CODE16, segment(CODE16, true, 16, 0, CODE)),
        (DATA16, segment(DATA16, false, 16, 0, 0)),
        (CODE16 + 0x10, segment(CODE16 + 0x13, true, 16, 3, CODE)),
        (DATA16 + 0x10, segment(DATA16 + 0x13, false, 16, 3, 0)),
    ];
    for (sel, s) in descriptors {
        m.w64(GDT + u64::from(sel), s.to_descriptor());
    }
    m.w64(GDT + u64::from(TSS_SEL), tss_segment().to_descriptor());
    // The call gate (SDM Vol. 3A 5.8.3): 16 bytes in IA-32e mode.
    let gate_cs = if long { CODE64 } else { CODE32 };
    m.w64(
        GDT + u64::from(CALL_GATE),
        (HANDLER & 0xffff)
            | u64::from(gate_cs) << 16
            | 0xecu64 << 40
            | ((HANDLER >> 16) & 0xffff) << 48,
    );
    let mut conforming = segment(CONFORMING, true, 32, 0, 0);
    conforming.type_ = 0xf;
    m.w64(GDT + u64::from(CONFORMING), conforming.to_descriptor());
    let mut down = segment(EXPAND_DOWN, false, 32, 3, 0);
    (down.type_, down.g, down.limit) = (0x7, false, 0xfff);
    m.w64(GDT + u64::from(EXPAND_DOWN), down.to_descriptor());
    let ldt = Segment {
        base: LDT,
        limit: 0xf,
        type_: 0x2,
        present: true,
        ..Segment::default()
    };
    m.w64(GDT + u64::from(LDT_SEL), ldt.to_descriptor());
    m.w64(LDT, segment(0, true, 32, 3, 0).to_descriptor());
    m.w64(LDT + 8, segment(0, false, 32, 3, 0).to_descriptor());
    // TSS: the ring-0 stack, the I/O bitmap right after the 104 bytes
    // (all 256 ports of the sink allowed, the rest past the limit).
    if long {
        m.w64(TSS + 4, STACK0);
        for ist in 0..7 {
            m.w64(TSS + 0x24 + ist * 8, STACK0 - 0x400 * ist);
        }
    } else {
        m.w64(TSS + 4, STACK0 | u64::from(DATA32) << 32);
    }
    m.write(TSS + 102, &104u16.to_le_bytes());
    // IDT: interrupt gates to the handler, callable from ring 3 (`int n`).
    let (cs, gate) = if long { (CODE64, 16) } else { (CODE32, 8) };
    let lo = (HANDLER & 0xffff)
        | u64::from(cs) << 16
        | (0xeeu64 << 40)
        | ((HANDLER >> 16) & 0xffff) << 48;
    for v in 0..256u64 {
        m.w64(IDT + v * gate, lo);
        // The real-mode IVT: every vector at HANDLER (segment:offset).
        m.w32(v * 4, ((HANDLER >> 4) << 16) as u32);
    }
    m.write(HANDLER, &[0xf4]); // hlt
                               // Identity page tables over RAM for 4-level, PAE and 2-level paging,
                               // plus the windows outside RAM (all present, writable, user).
    const URW: u64 = 7;
    m.w64(PML4, PDPT | URW);
    m.w64(PDPT, PD | URW);
    // A 1 GiB page at 3 GiB (the MMIO hole).
    m.w64(PDPT + 3 * 8, 0xc000_0000 | 0x80 | URW);
    m.w64(PAE_PDPT, PD | 1);
    m.w64(PD, PT | URW);
    m.w64(PD + 8, MMIO_SINK | 0x80 | URW);
    m.w64(PD + 16, (1 << 32) | 0x80 | URW);
    m.w32(PD32, (PT32 | URW) as u32);
    m.w32(PD32 + 4, (MMIO_SINK | 0x80 | URW) as u32);
    for i in 0..512u64 {
        m.w64(PT + i * 8, (i << 12) | URW);
        m.w32(PT32 + i * 4, ((i << 12) | URW) as u32);
    }
    m.0
}

/// The machine: RAM with the system image, the sinks on the bus.
fn machine(long: bool) -> Arc<Machine> {
    let memory = GuestMemory::new(MemoryMap::pc(RAM).expect("2 MiB map")).expect("2 MiB of RAM");
    memory.write(0, image(long)).expect("inside RAM");
    let machine = Arc::new(Machine::new(memory, 1));
    let sink = |len| Arc::new(Mutex::new(Sink(len)));
    let sinks = [
        (IoSpace::Mmio, MMIO_SINK, SINK_LEN, "mmio-sink"),
        (IoSpace::Port, 0, PORT_SINK_LEN, "port-sink"),
    ];
    for (space, base, len, name) in sinks {
        machine
            .bus
            .insert(space, base, len, name, sink(len))
            .expect("a free range");
    }
    machine
}

/// The TSS's segment: a 32- or 64-bit available TSS.
fn tss_segment() -> Segment {
    Segment {
        base: TSS,
        limit: 104 + 32,
        selector: TSS_SEL,
        // An available 32-bit TSS; in IA-32e mode the same type is the
        // 64-bit TSS (SDM Vol. 3A 3.5, Table 3-2).
        type_: 0x9,
        present: true,
        ..Segment::default()
    }
}

/// The data pages' PTE flags, from the input.
fn data_page_flags(memory: &GuestMemory, flips: u64, nx: u8) {
    for i in 0..8u64 {
        let page = (DATA >> 12) + i;
        let flip = (flips >> (8 * i)) & 0xff;
        let no_exec = u64::from(nx >> i & 1) << 63;
        let pte = ((page << 12) | 7) ^ flip;
        memory
            .write_u64(PT + page * 8, pte | no_exec)
            .expect("inside RAM");
        memory
            .write(PT32 + page * 4, &(pte as u32).to_le_bytes())
            .expect("inside RAM");
    }
}

/// Picks the set bits of `bits` out of `choices` (bit i selects entry i).
fn pick(bits: u64, choices: &[u64]) -> u64 {
    choices
        .iter()
        .enumerate()
        .filter(|(i, _)| bits >> i & 1 != 0)
        .fold(0, |acc, (_, &c)| acc | c)
}

/// Sets up segments, control registers and MSRs for `mode`.
fn enter(cpu: &mut Cpu, mode: Mode, ring3: bool) {
    let s = &mut cpu.s;
    let dpl = if ring3 { 3 } else { 0 };
    let r3 = if ring3 { RING3 } else { 0 };
    s.gdtr = DescriptorTable {
        base: GDT,
        limit: GDT_LIMIT,
    };
    s.idtr = match mode {
        // Real mode: the IVT at 0 (SDM Vol. 3A 21.1.4).
        Mode::Real => DescriptorTable {
            base: 0,
            limit: 0x3ff,
        },
        _ if mode.long() => DescriptorTable {
            base: IDT,
            limit: 0xfff,
        },
        _ => DescriptorTable {
            base: IDT,
            limit: 0x7ff,
        },
    };
    s.tr = tss_segment();
    s.tr.type_ = 0xb; // busy, as after LTR
    s.ldtr = Segment {
        selector: LDT_SEL,
        base: LDT,
        limit: 0xf,
        type_: 2,
        present: true,
        ..Segment::default()
    };
    s.msr.star = u64::from(CODE32) << 32 | u64::from(CODE32 + 0x10) << 48;
    s.msr.lstar = HANDLER;
    s.msr.cstar = HANDLER;
    s.msr.sysenter_cs = u64::from(CODE32);
    s.msr.sysenter_eip = HANDLER;
    s.msr.sysenter_esp = STACK0;
    s.cr0 = cr0::ET;
    let (cs, ds) = match mode {
        Mode::Real | Mode::V86 => {
            let mut cs = Segment::real_mode((CODE >> 4) as u16, true);
            let mut ds = Segment::real_mode(0, false);
            if mode == Mode::V86 {
                s.cr0 |= cr0::PE;
                cs.dpl = 3;
                ds.dpl = 3;
                s.flags.set(s.flags.get() | alcazar_emu::flags::VM);
            }
            (cs, ds)
        }
        Mode::Prot16 => (
            segment(CODE16 + if ring3 { 0x13 } else { 0 }, true, 16, dpl, CODE),
            segment(DATA16 + if ring3 { 0x13 } else { 0 }, false, 16, dpl, 0),
        ),
        Mode::Long64 => (
            segment(CODE64 + r3, true, 64, dpl, 0),
            segment(DATA32 + r3, false, 32, dpl, 0),
        ),
        _ => (
            segment(CODE32 + r3, true, 32, dpl, 0),
            segment(DATA32 + r3, false, 32, dpl, 0),
        ),
    };
    s.seg[seg::CS] = cs;
    for i in [seg::DS, seg::ES, seg::SS, seg::FS, seg::GS] {
        s.seg[i] = ds;
    }
    if mode != Mode::Real {
        s.cr0 |= cr0::PE;
    }
    match mode {
        Mode::Paged32 => {
            s.cr0 |= cr0::PG;
            s.cr3 = PD32;
        }
        Mode::Pae32 => {
            s.cr0 |= cr0::PG;
            s.cr4 |= cr4::PAE;
            s.cr3 = PAE_PDPT;
        }
        Mode::Long64 | Mode::Compat32 => {
            s.cr0 |= cr0::PG;
            s.cr4 |= cr4::PAE;
            s.cr3 = PML4;
            s.efer |= efer::LME | efer::LMA;
        }
        _ => {}
    }
    s.cpl = match mode {
        Mode::Real => 0,
        Mode::V86 => 3,
        _ => dpl,
    };
    s.rip = if matches!(mode, Mode::Real | Mode::V86 | Mode::Prot16) {
        0
    } else {
        CODE
    };
}

/// What changes when the CPU gets anywhere: instructions retired (a
/// chunk of a REP instruction counts), RIP, RSP (an event delivered to
/// the address that raised it still pushes a frame) and CS. (A triple
/// fault changes none of them: it leaves its exit pending instead.)
fn progress(cpu: &Cpu) -> (u64, u64, u64, u16) {
    let s = &cpu.s;
    (cpu.icount, s.rip, s.gpr[reg::RSP], s.seg[seg::CS].selector)
}

/// Checks what must hold between slices.
fn check(cpu: &Cpu) {
    let s = &cpu.s;
    assert!(s.cpl <= 3, "CPL {}", s.cpl);
    if s.long_mode() && s.seg[seg::CS].l {
        let top = s.rip >> 47;
        assert!(
            top == 0 || top == 0x1_ffff,
            "non-canonical RIP {:#x}",
            s.rip
        );
    } else {
        assert!(s.rip <= 0xffff_ffff, "RIP {:#x} outside 64-bit mode", s.rip);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let control = input.take(1) as u8;
    let mode = Mode::from(control);
    let ring3 = control & 8 != 0 && !matches!(mode, Mode::Real | Mode::V86);
    let cr0_extra = pick(
        input.take(1),
        &[
            cr0::MP,
            cr0::EM,
            cr0::TS,
            cr0::NE,
            cr0::WP,
            cr0::AM,
            cr0::CD,
        ],
    );
    let cr4_bits = input.take(2);
    let efer_byte = input.take(1);
    let efer_extra = pick(efer_byte, &[efer::SCE, efer::NXE]);
    let inspect = efer_byte & 0x80 != 0;
    let vector = input.take(1) as u8;
    let rflags = input.take(8);
    let mut gpr = [0u64; 16];
    for g in &mut gpr {
        *g = input.take(8);
    }
    let pte_flips = input.take(8);
    let nx = input.take(1) as u8;
    let code = input.0;

    let machine = machine(mode.long());
    let mem = &machine.memory;
    data_page_flags(mem, pte_flips, nx);
    let (first, rest) = code.split_at(code.len().min(0x1000));
    mem.write(CODE, first).expect("inside RAM");
    let rest = &rest[..rest.len().min(8 * 0x1000)];
    mem.write(DATA, rest).expect("inside RAM");

    let mut cpu = Cpu::new(0, machine.clone(), Arc::new(CodePages::new(RAM)));
    let leaf1 = alcazar_core::cpuid::CpuidPolicy::lookup(&cpu.cpuid, 1, 0);
    let mut cr4_choices = vec![
        cr4::TSD,
        cr4::DE,
        cr4::PSE,
        cr4::MCE,
        cr4::PGE,
        cr4::PCE,
        cr4::OSFXSR,
        cr4::OSXMMEXCPT,
    ];
    if leaf1.ecx & (1 << 26) != 0 {
        cr4_choices.push(cr4::OSXSAVE);
    }
    // RFLAGS: bit 1 is always set; VM only by the mode; RF, VIF, VIP
    // and the reserved bits clear.
    let flags_mask = 0x0024_7fd5;
    cpu.s
        .flags
        .set((rflags & flags_mask & !alcazar_emu::flags::VM) | 2);
    cpu.s.gpr = gpr;
    if control & 0x10 == 0 {
        cpu.s.gpr[reg::RSP] = if matches!(mode, Mode::Real | Mode::V86) {
            0x7000
        } else {
            STACK
        };
    }
    enter(&mut cpu, mode, ring3);
    cpu.s.cr0 |= cr0_extra;
    cpu.s.cr4 |= pick(cr4_bits, &cr4_choices);
    cpu.s.efer |= efer_extra;

    let single = control & 0x80 != 0;
    let start = Instant::now();
    for slice in 0..SLICES {
        if cpu.s.halted || cpu.icount >= MAX_INSNS || start.elapsed() > BUDGET {
            break;
        }
        if slice == 1 {
            if control & 0x20 != 0 {
                cpu.irq.raise_nmi();
            }
            if control & 0x40 != 0 {
                cpu.irq.set_external(Some(vector));
            }
        }
        let before = progress(&cpu);
        let exit = if single {
            cpu.step();
            cpu.exit.take()
        } else {
            cpu.run_slice(STEPS)
        };
        match exit {
            None => {
                check(&cpu);
                assert!(
                    cpu.s.halted || cpu.exit.is_some() || progress(&cpu) != before,
                    "a slice made no progress at RIP {:#x}",
                    cpu.s.rip
                );
            }
            Some(VcpuExit::Shutdown | VcpuExit::Stopped | VcpuExit::Halted) => break,
        }
    }
    if inspect {
        let tree = alcazar_emu::inspect::inspect_cpu(&cpu, alcazar_core::inspect::Tree::new());
        let _ = tree.flatten("");
    }
});
