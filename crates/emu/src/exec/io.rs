//! Port I/O: IN, OUT, INS, OUTS (Intel SDM Vol. 1 chapter 19
//! "Input/Output", Vol. 2 for each instruction).
//!
//! Protection (Vol. 1 §19.5): in protected mode with CPL > IOPL, and
//! always in virtual-8086 mode, every port of the access must be allowed
//! by the I/O permission bitmap of the current 32/64-bit TSS, else #GP(0)
//! (also if the TSS is too short or not a 32/64-bit TSS).
//!
//! Accesses go to the machine's port bus and are counted as
//! [`ExitKind::PortIo`]. An OUT to [`HYPERCALL_PORT`] is an Alcazar
//! hypercall, as under the kvm engine, so guests written for kvm work here
//! too (the emu engine's own hypercall instruction is VMCALL). Every OUT
//! ends the block so the run loop soon notices a stop a device requested.
//! REP INS/OUTS run at most [`IO_CHUNK`] iterations per execution and
//! then resume the instruction (RIP unchanged), so interrupts and stop
//! requests are seen in between.

use alcazar_core::engine::ExitKind;
use alcazar_core::hooks::HYPERCALL_PORT;
use alcazar_core::IoSpace;
use iced_x86::{Instruction, Mnemonic, OpKind};

use super::operand::{address_size, read_reg, seg_index, write_reg};
use super::HandlerEntry;
use super::LinkEffect::DropsLinks;
use crate::fault::Fault;
use crate::flags;
use crate::mmu::AccessKind;
use crate::privilege::check_io;
use crate::state::{reg, seg};
use crate::Cpu;

/// Most iterations of a REP INS/OUTS per execution.
pub const IO_CHUNK: u64 = 1024;

/// The handler for `insn`, if this module implements it, with its effect
/// on block links.
///
/// Port I/O reaches devices, which can change the machine behind the CPU
/// (what memory is mapped, a stop request, an interrupt): every form
/// drops the block links.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    Some(match insn.mnemonic() {
        Mnemonic::In => (in_, DropsLinks),
        Mnemonic::Out => (out, DropsLinks),
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd => (ins, DropsLinks),
        Mnemonic::Outsb | Mnemonic::Outsw | Mnemonic::Outsd => (outs, DropsLinks),
        _ => return None,
    })
}

/// Reads `size` bytes from `port` on the bus.
fn port_read(cpu: &Cpu, port: u16, size: u8) -> u64 {
    cpu.machine.vcpu_stats(cpu.id).count(ExitKind::PortIo);
    let mut buf = [0u8; 4];
    let n = usize::from(size.min(4));
    cpu.machine
        .bus
        .read(IoSpace::Port, u64::from(port), &mut buf[..n]);
    u64::from(u32::from_le_bytes(buf))
}

/// Writes `size` bytes of `value` to `port` (or makes a hypercall).
fn port_write(cpu: &mut Cpu, port: u16, size: u8, value: u64) {
    cpu.machine.vcpu_stats(cpu.id).count(ExitKind::PortIo);
    if port == HYPERCALL_PORT {
        super::system::hypercall(cpu);
    } else {
        let n = usize::from(size.min(4));
        let bytes = (value as u32).to_le_bytes();
        cpu.machine
            .bus
            .write(IoSpace::Port, u64::from(port), &bytes[..n]);
    }
    cpu.end_block = true;
}

/// The port operand `n`: an 8-bit immediate or DX.
fn port_of(cpu: &Cpu, insn: &Instruction, n: u32) -> u16 {
    match insn.op_kind(n) {
        OpKind::Immediate8 => u16::from(insn.immediate8()),
        _ => cpu.s.gpr[reg::RDX] as u16,
    }
}

/// IN AL/AX/EAX, imm8/DX.
fn in_(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let dst = insn.op_register(0);
    let size = dst.size() as u8;
    let port = port_of(cpu, insn, 1);
    check_io(cpu, port, size)?;
    let v = port_read(cpu, port, size);
    write_reg(cpu, dst, v);
    Ok(())
}

/// OUT imm8/DX, AL/AX/EAX.
fn out(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let src = insn.op_register(1);
    let size = src.size() as u8;
    let port = port_of(cpu, insn, 0);
    check_io(cpu, port, size)?;
    let v = read_reg(cpu, src);
    port_write(cpu, port, size, v);
    Ok(())
}

fn string_size(insn: &Instruction) -> u8 {
    match insn.mnemonic() {
        Mnemonic::Insb | Mnemonic::Outsb => 1,
        Mnemonic::Insw | Mnemonic::Outsw => 2,
        _ => 4,
    }
}

/// The iteration count of a string I/O instruction: RCX (address-sized)
/// with REP, else 1.
fn count_of(cpu: &Cpu, insn: &Instruction, asz: u8) -> u64 {
    if insn.has_rep_prefix() || insn.has_repne_prefix() {
        cpu.s.read_gpr(reg::RCX, asz, false)
    } else {
        1
    }
}

/// Runs `step` for up to [`IO_CHUNK`] iterations, maintaining RCX with
/// REP; resumes the instruction if iterations remain.
fn repeat(
    cpu: &mut Cpu,
    insn: &Instruction,
    asz: u8,
    mut step: impl FnMut(&mut Cpu) -> Result<(), Fault>,
) -> Result<(), Fault> {
    let rep = insn.has_rep_prefix() || insn.has_repne_prefix();
    let mut count = count_of(cpu, insn, asz);
    let mut done = 0;
    while count > 0 && done < IO_CHUNK {
        step(cpu)?;
        done += 1;
        count -= 1;
        if rep {
            cpu.s.write_gpr(reg::RCX, asz, false, count);
        }
        if cpu.machine.control.should_leave_run() {
            break;
        }
    }
    if rep && count > 0 {
        cpu.next_rip = cpu.s.rip;
        cpu.end_block = true;
    }
    Ok(())
}

/// Moves index register `r` by one element in the DF direction.
fn advance(cpu: &mut Cpu, r: usize, asz: u8, size: u8) {
    let v = cpu.s.read_gpr(r, asz, false);
    let v = if cpu.s.flags.test(flags::DF) {
        v.wrapping_sub(u64::from(size))
    } else {
        v.wrapping_add(u64::from(size))
    };
    cpu.s.write_gpr(r, asz, false, v & flags::mask(asz));
}

/// INS: port DX to ES:[rDI] (no segment override). The destination is
/// checked before the port is read, so a fault loses no data.
fn ins(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = string_size(insn);
    let asz = address_size(insn);
    let port = cpu.s.gpr[reg::RDX] as u16;
    check_io(cpu, port, size)?;
    repeat(cpu, insn, asz, |cpu| {
        let di = cpu.s.read_gpr(reg::RDI, asz, false);
        let lin = cpu.linear(seg::ES, di, size, AccessKind::Write)?;
        let user = cpu.user();
        cpu.translate(lin, AccessKind::Write, user)?;
        if (lin & 0xfff) + u64::from(size) > 0x1000 {
            cpu.translate(
                lin.wrapping_add(u64::from(size) - 1),
                AccessKind::Write,
                user,
            )?;
        }
        let v = port_read(cpu, port, size);
        cpu.write_lin(lin, size, v, user)?;
        advance(cpu, reg::RDI, asz, size);
        Ok(())
    })
}

/// OUTS: DS:[rSI] (segment override allowed) to port DX.
fn outs(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    let size = string_size(insn);
    let asz = address_size(insn);
    let port = cpu.s.gpr[reg::RDX] as u16;
    let s = seg_index(insn.memory_segment());
    check_io(cpu, port, size)?;
    repeat(cpu, insn, asz, |cpu| {
        let si = cpu.s.read_gpr(reg::RSI, asz, false);
        let v = cpu.read(s, si, size)?;
        port_write(cpu, port, size, v);
        advance(cpu, reg::RSI, asz, size);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::sys;
    use crate::testutil::*;
    use alcazar_core::bus::BusDevice;
    use alcazar_core::hooks::HypercallArgs;
    use iced_x86::code_asm::*;
    use std::sync::{Arc, Mutex};

    /// A device that records writes and answers reads with 0xa0 + offset.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = 0xa0 + offset as u8 + i as u8;
            }
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    fn with_device(cpu: &Cpu) -> Arc<Mutex<Recorder>> {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        cpu.machine
            .bus
            .insert(IoSpace::Port, 0x3f8, 8, "recorder", dev.clone())
            .unwrap();
        dev
    }

    #[test]
    fn in_and_out_reach_a_bus_device() {
        let code = assemble(64, |a| {
            a.mov(dx, 0x3f9u32).unwrap();
            a.in_(al, dx).unwrap();
            a.mov(ebx, eax).unwrap();
            a.mov(eax, 0x1234_5678u32).unwrap();
            a.out(dx, ax).unwrap();
            a.in_(eax, 0xfa).unwrap();
            a.nop().unwrap();
        });
        let mut cpu = cpu64(&code);
        let dev = with_device(&cpu);
        run_until(&mut cpu, CODE + code.len() as u64 - 1, 100);
        assert_eq!(cpu.s.gpr[reg::RBX] & 0xff, 0xa1);
        assert_eq!(dev.lock().unwrap().writes, vec![(1, vec![0x78, 0x56])]);
        assert_eq!(cpu.s.gpr[reg::RAX], 0xffff_ffff, "nobody at 0xfa");
        assert_eq!(cpu.machine.vcpu_stats(0).get(ExitKind::PortIo), 3);
    }

    #[test]
    fn rep_outsb_writes_a_string_and_rep_insw_reads_into_memory() {
        let code = assemble(32, |a| {
            a.mov(esi, DATA as u32).unwrap();
            a.mov(ecx, 5u32).unwrap();
            a.mov(dx, 0x3f8u32).unwrap();
            a.rep().outsb().unwrap();
            a.mov(edi, DATA as u32 + 0x100).unwrap();
            a.mov(ecx, 2u32).unwrap();
            a.mov(dx, 0x3fau32).unwrap();
            a.rep().insw().unwrap();
            a.nop().unwrap();
        });
        let mut cpu = cpu32(&code);
        cpu.machine.memory.write(DATA, b"hello").unwrap();
        let dev = with_device(&cpu);
        run_until(&mut cpu, CODE + code.len() as u64 - 1, 100);
        let w = &dev.lock().unwrap().writes;
        let text: Vec<u8> = w.iter().map(|(_, d)| d[0]).collect();
        assert_eq!(text, b"hello");
        let mut buf = [0u8; 4];
        cpu.machine.memory.read(DATA + 0x100, &mut buf).unwrap();
        assert_eq!(buf, [0xa2, 0xa3, 0xa2, 0xa3]);
        assert_eq!(cpu.s.gpr[reg::RCX], 0);
        assert_eq!(cpu.s.gpr[reg::RSI], DATA + 5);
    }

    #[test]
    fn a_long_rep_ins_resumes_in_chunks() {
        let code = assemble(32, |a| {
            a.mov(edi, DATA as u32).unwrap();
            a.mov(ecx, 3000u32).unwrap();
            a.mov(dx, 0x3f8u32).unwrap();
            a.rep().insb().unwrap();
            a.nop().unwrap();
        });
        let mut cpu = cpu32(&code);
        with_device(&cpu);
        let n = run_until(&mut cpu, CODE + code.len() as u64 - 1, 100);
        assert_eq!(n, 3 + 3, "three instructions, then 3000 / 1024 -> 3 runs");
        assert_eq!(cpu.s.gpr[reg::RDI], DATA + 3000);
    }

    #[test]
    fn user_mode_io_follows_the_tss_bitmap() {
        let mut cpu = cpu32(&[]);
        // A TSS at 0x5000 with the bitmap at offset 0x68: ports 0x3f8-0x3ff
        // allowed (byte 0x7f = 0), everything else denied.
        let tss = 0x5000u64;
        let limit = 0x68 + 0x2000;
        cpu.machine.memory.write(tss, &[0xff; 0x2100]).unwrap();
        cpu.machine.memory.write(tss + 102, &[0x68, 0]).unwrap();
        cpu.machine.memory.write(tss + 0x68 + 0x7f, &[0]).unwrap();
        cpu.s.tr = alcazar_core::regs::Segment {
            base: tss,
            limit,
            type_: sys::TSS_BUSY,
            present: true,
            selector: 0x28,
            ..Default::default()
        };
        cpu.s.cpl = 3;
        assert_eq!(check_io(&mut cpu, 0x3f8, 1), Ok(()));
        assert_eq!(check_io(&mut cpu, 0x3fe, 2), Ok(()));
        assert_eq!(
            check_io(&mut cpu, 0x3ff, 2),
            Err(Fault::GeneralProtection(0)),
            "0x400 is denied"
        );
        assert_eq!(
            check_io(&mut cpu, 0x80, 1),
            Err(Fault::GeneralProtection(0))
        );
        cpu.s.flags.set_flag(flags::IOPL, true);
        assert_eq!(check_io(&mut cpu, 0x80, 1), Ok(()), "IOPL 3 allows all");
    }

    #[test]
    fn out_to_the_hypercall_port_is_a_hypercall() {
        let code = assemble(64, |a| {
            a.mov(eax, 7u32).unwrap();
            a.mov(ebx, 35u32).unwrap();
            a.out(HYPERCALL_PORT as u32, al).unwrap();
            a.nop().unwrap();
        });
        let mut cpu = cpu64(&code);
        let add = |_: u32, args: &HypercallArgs| args.a0 + 7;
        cpu.machine
            .hooks
            .register_hypercall(7, Arc::new(add))
            .unwrap();
        run_until(&mut cpu, CODE + code.len() as u64 - 1, 100);
        assert_eq!(cpu.s.gpr[reg::RAX], 42);
        assert_eq!(cpu.machine.vcpu_stats(0).get(ExitKind::Hypercall), 1);
    }
}
