//! Diagnostics: what the CPU was running, in words, for log lines about
//! faults the VM cannot survive (Alcazar's, no SDM section).

use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

use crate::mmu::AccessKind;
use crate::state::seg;
use crate::Cpu;

/// The instruction at CS:RIP, disassembled (`"?"` where its bytes cannot
/// be read), with its bytes in hex.
pub fn insn_at_rip(cpu: &mut Cpu) -> String {
    let rip = cpu.s.rip;
    let Ok(lin) = cpu.linear(seg::CS, rip, 1, AccessKind::Fetch) else {
        return "? (CS:RIP outside CS)".into();
    };
    let mut bytes = Vec::with_capacity(15);
    for i in 0..15u64 {
        let user = cpu.user();
        let Ok(t) = cpu.translate(lin.wrapping_add(i), AccessKind::Fetch, user) else {
            break;
        };
        let mut b = [0u8];
        if cpu.machine.memory.read(t.phys, &mut b).is_err() {
            break;
        }
        bytes.push(b[0]);
    }
    if bytes.is_empty() {
        return "? (not mapped)".into();
    }
    let bitness = cpu.s.code_size().bitness();
    let mut decoder = Decoder::with_ip(bitness, &bytes, rip, DecoderOptions::NONE);
    let insn = decoder.decode();
    let mut text = String::new();
    IntelFormatter::new().format(&insn, &mut text);
    let hex: Vec<String> = bytes[..insn.len().clamp(1, bytes.len())]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{text} [{}]", hex.join(" "))
}
