//! Human-readable output: disassembly (Intel syntax), initial state, and
//! the two final states side by side with the differing fields marked.

use std::fmt::Write;

use iced_x86::{Formatter, IntelFormatter};

use crate::analysis::fl;
use crate::compare::{Diff, Field};
use crate::gen::Case;
use crate::harness::{Checked, Verdict};
use crate::layout::{DATA, STACK};
use crate::state::{FinalState, Program, GPR_NAMES};

/// The program, one instruction per line: address, bytes, Intel syntax.
pub fn disassemble(prog: &Program) -> String {
    let mut f = IntelFormatter::new();
    f.options_mut().set_hex_prefix("0x");
    f.options_mut().set_hex_suffix("");
    f.options_mut().set_uppercase_hex(false);
    let mut out = String::new();
    for insn in &prog.insns {
        let off = (insn.ip() - crate::layout::CODE) as usize;
        let bytes = &prog.bytes[off..off + insn.len()];
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut text = String::new();
        f.format(insn, &mut text);
        let end = if insn.ip() == prog.end_rip {
            "   ; end"
        } else {
            ""
        };
        let _ = writeln!(out, "  {:#07x}  {hex:<24} {text}{end}", insn.ip());
    }
    out
}

/// RFLAGS as hex plus the names of the set status/control bits.
pub fn flags(v: u64) -> String {
    const NAMES: [(u64, &str); 13] = [
        (fl::CF, "CF"),
        (fl::PF, "PF"),
        (fl::AF, "AF"),
        (fl::ZF, "ZF"),
        (fl::SF, "SF"),
        (fl::TF, "TF"),
        (fl::IF, "IF"),
        (fl::DF, "DF"),
        (fl::OF, "OF"),
        (fl::NT, "NT"),
        (fl::RF, "RF"),
        (fl::AC, "AC"),
        (fl::ID, "ID"),
    ];
    let set: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| v & b != 0)
        .map(|(_, n)| *n)
        .collect();
    format!("{v:#x} [{}]", set.join(" "))
}

/// A page's contents in brief: all zero, or its non-zero qwords if few.
fn memory_summary(name: &str, base: u64, bytes: &[u8]) -> String {
    let nonzero: Vec<(usize, u64)> = bytes
        .chunks(8)
        .enumerate()
        .map(|(i, c)| {
            let mut q = [0u8; 8];
            q[..c.len()].copy_from_slice(c);
            (i * 8, u64::from_le_bytes(q))
        })
        .filter(|(_, q)| *q != 0)
        .collect();
    if nonzero.is_empty() {
        return format!(
            "  {name} {base:#x}..{:#x}: all zero\n",
            base + bytes.len() as u64
        );
    }
    if nonzero.len() > 16 {
        return format!(
            "  {name} {base:#x}..{:#x}: random ({} non-zero qwords; regenerate with --seed/--case)\n",
            base + bytes.len() as u64,
            nonzero.len()
        );
    }
    let mut out = format!(
        "  {name} {base:#x}..{:#x}: zero except\n",
        base + bytes.len() as u64
    );
    for (off, q) in nonzero {
        let _ = writeln!(out, "    qword [{:#x}] = {q:#018x}", base + off as u64);
    }
    out
}

fn ending_line(s: &FinalState) -> String {
    match &s.note {
        Some(n) => format!("{} ({n})", s.ending),
        None => s.ending.to_string(),
    }
}

/// The whole report for one (usually shrunk) case.
pub fn describe(case: &Case, c: &Checked) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "class {}: {} instruction(s)",
        case.class,
        case.items.len()
    );
    out.push_str(&disassemble(&c.prog));
    out.push_str("initial state:\n");
    for row in 0..4 {
        out.push(' ');
        for col in 0..4 {
            let i = row * 4 + col;
            let _ = write!(out, " {:>3}={:#018x}", GPR_NAMES[i], case.init.gpr[i]);
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "  rflags={}",
        flags(case.init.rflags | crate::kvm_runner::FORCED_FLAGS)
    );
    out.push_str(&memory_summary("data", DATA, &case.init.data));
    out.push_str(&memory_summary("stack", STACK, &case.init.stack));
    let diffs: &[Diff] = match &c.verdict {
        Verdict::Mismatch(d) => d,
        _ => &[],
    };
    let differs = |f: Field| diffs.iter().any(|d| d.field == f);
    let mark = |b: bool| if b { "  <<<" } else { "" };
    let _ = writeln!(
        out,
        "ending:\n  kvm  {}\n  emu  {}{}",
        ending_line(&c.kvm),
        ending_line(&c.emu),
        mark(differs(Field::Ending))
    );
    let _ = writeln!(out, "final state:{:>22}{:>26}", "kvm", "emu");
    for (i, name) in GPR_NAMES.iter().enumerate() {
        let compared = c.masks.gprs & (1 << i) != 0;
        let _ = writeln!(
            out,
            "  {name:<4}{:<10}{:#018x}{:>8}{:#018x}{}",
            if compared { "" } else { "(undef)" },
            c.kvm.gpr[i],
            "",
            c.emu.gpr[i],
            mark(differs(Field::Gpr(i)))
        );
    }
    let _ = writeln!(
        out,
        "  rip           {:#018x}{:>8}{:#018x}{}",
        c.kvm.rip,
        "",
        c.emu.rip,
        mark(differs(Field::Rip))
    );
    let _ = writeln!(
        out,
        "  rflags        {:<34}{}{}",
        flags(c.kvm.rflags),
        flags(c.emu.rflags),
        mark(differs(Field::Rflags))
    );
    let _ = writeln!(
        out,
        "  (rflags bits compared: {:#x}; differing: {})",
        c.masks.flags & 0x3f_ffff,
        flags((c.kvm.rflags ^ c.emu.rflags) & c.masks.flags)
    );
    if let Some(q) = c.quirk {
        let _ = writeln!(
            out,
            "  (endings differ as a known quirk allows: {})",
            q.describe()
        );
    }
    for d in diffs {
        if let Field::Fpu(f) = d.field {
            let _ = writeln!(
                out,
                "  {f:<12?}  {:#018x}{:>8}{:#018x}  <<<",
                d.kvm, "", d.emu
            );
        }
    }
    if case.class.is_simd() {
        let _ = writeln!(
            out,
            "  initial fcw {:#06x} fsw {:#06x} ftw {:#04x} mxcsr {:#010x}",
            case.init.fpu.fcw, case.init.fpu.fsw, case.init.fpu.ftw, case.init.fpu.mxcsr
        );
        for (i, v) in case.init.fpu.st.iter().enumerate() {
            let _ = writeln!(out, "  initial st{i} {v:#022x}");
        }
        for (i, v) in case.init.fpu.xmm.iter().enumerate() {
            let _ = writeln!(out, "  initial xmm{i} {v:#034x}");
        }
    }
    let mem: Vec<&Diff> = diffs
        .iter()
        .filter(|d| matches!(d.field, Field::Mem(_)))
        .collect();
    if !mem.is_empty() {
        let _ = writeln!(out, "  memory: {} byte(s) differ  <<<", mem.len());
        for d in mem.iter().take(32) {
            if let Field::Mem(a) = d.field {
                let _ = writeln!(out, "    [{a:#x}] kvm {:#04x} emu {:#04x}", d.kvm, d.emu);
            }
        }
    }
    out
}
