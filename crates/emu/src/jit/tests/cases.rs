//! The hard cases of a translator, each run on both tiers (or, where only
//! translated code can show the problem, checked against what the guest
//! must see).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alcazar_core::engine::VcpuExit;
use alcazar_core::{BusDevice, IoSpace};
use iced_x86::code_asm::*;

use super::{assert_same, both, cpu_with, run_bounded, small_pages, PD};
use crate::flags::IF;
use crate::interrupts::tests::{long_tables, put, set_gate64, HANDLER};
use crate::state::reg;
use crate::testutil::{assemble, CODE, DATA};
use crate::{Cpu, EmuTier};

/// IDT gates for every exception vector to a handler that records the
/// vector in RAX's place (`mov eax, vector; hlt`).
fn exception_handlers(cpu: &mut Cpu) {
    long_tables(cpu);
    for v in 0..32u8 {
        let at = HANDLER + 16 * u64::from(v);
        put(cpu, at, 64, |a| {
            a.mov(r15d, u32::from(v) | 0x1000).unwrap();
            a.hlt().unwrap();
        });
        set_gate64(cpu, v, at, 0, 0);
    }
}

#[test]
fn a_page_fault_in_the_middle_of_a_translated_block_leaves_the_interpreters_state() {
    // A loop walks RBX up a page at a time into an unmapped 2 MiB region;
    // the load faults half-way through the block, after ADD changed RCX
    // and the flags (which DEC and JNZ would have changed next).
    let code = assemble(64, |a| {
        let mut top = a.create_label();
        a.mov(ebx, 0x5f_0000u32).unwrap();
        a.mov(edx, 1000u32).unwrap();
        a.set_label(&mut top).unwrap();
        a.add(rcx, 3).unwrap();
        a.mov(rax, qword_ptr(rbx)).unwrap();
        a.add(rbx, 0x1000).unwrap();
        a.dec(rdx).unwrap();
        a.jnz(top).unwrap();
        a.hlt().unwrap();
    });
    let setup = |cpu: &mut Cpu| {
        exception_handlers(cpu);
        cpu.machine.memory.write_u64(PD + 8 * 3, 0).unwrap(); // 6-8 MiB gone
        cpu.s.gpr[reg::RCX] = u64::MAX - 20; // the ADD carries on the way
    };
    let (interp, jit) = both(&code, &setup);
    assert_eq!(jit.s.gpr[15], 0x1000 | 14, "#PF delivered");
    assert_eq!(jit.s.cr2, 0x60_0000);
    assert_same(&interp, &jit);
    // The exception frame (error code, RIP, CS, RFLAGS, RSP, SS) too.
    let frame = |c: &Cpu| {
        let top = c.s.gpr[reg::RSP];
        (0..6)
            .map(|i| c.machine.memory.read_u64(top + 8 * i).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(frame(&interp), frame(&jit));
    assert!(jit.jit.stats.blocks_translated > 0);
}

#[test]
fn a_store_fault_and_a_divide_error_mid_block_are_precise_too() {
    for divide in [false, true] {
        let code = assemble(64, |a| {
            let mut top = a.create_label();
            a.mov(ebx, 0x5f_8000u32).unwrap();
            a.mov(edi, 1000u32).unwrap();
            a.set_label(&mut top).unwrap();
            a.sub(rsi, 7).unwrap();
            if divide {
                a.xor(edx, edx).unwrap();
                a.mov(eax, 100u32).unwrap();
                a.div(r13).unwrap();
                a.dec(r13).unwrap();
            } else {
                a.mov(qword_ptr(rbx), rsi).unwrap();
                a.add(rbx, 0x800).unwrap();
            }
            a.dec(rdi).unwrap();
            a.jnz(top).unwrap();
            a.hlt().unwrap();
        });
        let setup = |cpu: &mut Cpu| {
            exception_handlers(cpu);
            // 6-8 MiB read-only (CR0.WP is set).
            cpu.machine
                .memory
                .write_u64(PD + 8 * 3, 0x60_0000 | 0x81)
                .unwrap();
            cpu.s.gpr[13] = 40;
        };
        let (interp, jit) = both(&code, &setup);
        let vector = if divide { 0 } else { 14 };
        assert_eq!(jit.s.gpr[15], 0x1000 | vector);
        assert_same(&interp, &jit);
    }
}

#[test]
fn self_modifying_code_changes_a_translated_block_for_its_next_run() {
    // Half-way through, the loop patches the immediate of an ADD in a
    // block that is already translated (and linked to).
    let program = |patch: u64| {
        assemble(64, |a| {
            let (mut top, mut skip) = (a.create_label(), a.create_label());
            a.xor(eax, eax).unwrap();
            a.mov(ecx, 100u32).unwrap();
            a.set_label(&mut top).unwrap();
            a.db(&[0x83, 0xc0, 0x01]).unwrap(); // add eax, 1
            a.cmp(ecx, 50).unwrap();
            a.jne(skip).unwrap();
            a.mov(byte_ptr(patch), 2u32).unwrap();
            a.set_label(&mut skip).unwrap();
            a.dec(ecx).unwrap();
            a.jnz(top).unwrap();
            a.hlt().unwrap();
        })
    };
    let at = |code: &[u8]| {
        code.windows(3)
            .position(|w| w == [0x83, 0xc0, 0x01])
            .unwrap()
    };
    let code = program(CODE + at(&program(CODE)) as u64 + 2);
    let (interp, jit) = both(&code, &|_| {});
    assert_eq!(jit.s.gpr[reg::RAX], 51 + 49 * 2);
    assert_same(&interp, &jit);
}

#[test]
fn a_store_into_the_running_block_is_seen_by_its_next_instruction() {
    // Each iteration rewrites the immediate of the ADD right after the
    // store, in the same block: the ADD must add the new value at once.
    let program = |patch: u64| {
        assemble(64, |a| {
            let mut top = a.create_label();
            a.xor(eax, eax).unwrap();
            a.mov(ecx, 40u32).unwrap();
            a.set_label(&mut top).unwrap();
            a.mov(byte_ptr(patch), cl).unwrap();
            a.db(&[0x83, 0xc0, 0x01]).unwrap(); // add eax, <patched>
            a.dec(ecx).unwrap();
            a.jnz(top).unwrap();
            a.hlt().unwrap();
        })
    };
    let at = |code: &[u8]| {
        code.windows(3)
            .position(|w| w == [0x83, 0xc0, 0x01])
            .unwrap()
    };
    let code = program(CODE + at(&program(CODE)) as u64 + 2);
    let (interp, jit) = both(&code, &|_| {});
    assert_eq!(jit.s.gpr[reg::RAX], 40 * 41 / 2);
    assert_same(&interp, &jit);
}

#[test]
fn an_interrupt_stops_a_long_chained_loop() {
    // An endless loop of two linked blocks; an external interrupt from
    // another thread must get in, and its handler stops the loop.
    let code = assemble(64, |a| {
        let (mut top, mut other) = (a.create_label(), a.create_label());
        a.set_label(&mut top).unwrap();
        a.inc(rax).unwrap();
        a.jmp(other).unwrap();
        a.set_label(&mut other).unwrap();
        a.add(rbx, rax).unwrap();
        a.jmp(top).unwrap();
    });
    let mut cpu = cpu_with(&code, EmuTier::Jit, &|cpu| {
        long_tables(cpu);
        put(cpu, HANDLER, 64, |a| {
            a.mov(qword_ptr(DATA), rax).unwrap();
            a.hlt().unwrap();
        });
        set_gate64(cpu, 0x40, HANDLER, 0, 0);
        cpu.s.flags.set_flag(IF, true);
    });
    let lines = cpu.irq.clone();
    let machine = cpu.machine.clone();
    let poker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        lines.set_external(Some(0x40));
        // Wait for the handler's store, then stop the halted vCPU.
        let start = Instant::now();
        while machine.memory.read_u64(DATA).unwrap() == 0 {
            assert!(start.elapsed() < Duration::from_secs(20), "no interrupt");
            std::thread::sleep(Duration::from_millis(1));
        }
        machine.control.request_pause();
    });
    let exit = run_bounded(&mut cpu, 10_000_000);
    poker.join().unwrap();
    assert_eq!(exit, VcpuExit::Stopped);
    let seen = cpu.machine.memory.read_u64(DATA).unwrap();
    assert!(seen > 1000, "the loop ran ({seen} iterations)");
    assert!(cpu.jit.stats.instructions > 1000);
    assert!(
        cpu.jit.stats.exits[1] > 0,
        "left through the attention poll"
    );
}

#[test]
fn rep_movs_across_pages_and_into_a_fault_matches_the_interpreter() {
    let code = assemble(64, |a| {
        let mut top = a.create_label();
        a.mov(r8d, 4u32).unwrap();
        a.set_label(&mut top).unwrap();
        a.mov(esi, 0x4_0f80u32).unwrap();
        a.mov(edi, 0x5_0ff3u32).unwrap();
        a.mov(ecx, 0x1105u32).unwrap();
        a.rep().movsb().unwrap();
        a.add(r9, rcx).unwrap();
        a.dec(r8d).unwrap();
        a.jnz(top).unwrap();
        // Now a REP MOVSQ that runs into an unmapped page.
        a.mov(esi, 0x4_0000u32).unwrap();
        a.mov(edi, 0x5f_f000u32).unwrap();
        a.mov(ecx, 0x400u32).unwrap();
        a.rep().movsq().unwrap();
        a.hlt().unwrap();
    });
    let setup = |cpu: &mut Cpu| {
        exception_handlers(cpu);
        cpu.machine.memory.write_u64(PD + 8 * 3, 0).unwrap();
        let pattern: Vec<u8> = (0..0x3000u32).map(|i| (i * 7 + 3) as u8).collect();
        cpu.machine.memory.write(0x4_0000, &pattern).unwrap();
    };
    let (interp, jit) = both(&code, &setup);
    assert_eq!(jit.s.gpr[15], 0x1000 | 14);
    assert_same(&interp, &jit);
    let mem = |c: &Cpu| {
        let mut v = vec![0u8; 0x3000];
        c.machine.memory.read(0x5_0000, &mut v).unwrap();
        v
    };
    assert_eq!(mem(&interp), mem(&jit));
}

#[test]
fn a_tlb_flush_requested_by_an_ipi_is_seen_by_translated_code() {
    // Translated code polls a flag through a virtual page. "Another vCPU"
    // remaps that page and sends an IPI whose handler does INVLPG: after
    // the IRET the loop must read the new page.
    const VIRT: u64 = 0x60_0000;
    let code = assemble(64, |a| {
        let mut top = a.create_label();
        a.set_label(&mut top).unwrap();
        a.inc(rcx).unwrap();
        a.mov(rax, qword_ptr(VIRT)).unwrap();
        a.cmp(rax, 2).unwrap();
        a.jne(top).unwrap();
        a.mov(qword_ptr(DATA), rcx).unwrap();
        a.hlt().unwrap();
    });
    let mut cpu = cpu_with(&code, EmuTier::Jit, &|cpu| {
        long_tables(cpu);
        put(cpu, HANDLER, 64, |a| {
            a.invlpg(byte_ptr(VIRT)).unwrap();
            a.iretq().unwrap();
        });
        set_gate64(cpu, 0xf0, HANDLER, 0, 0);
        cpu.s.flags.set_flag(IF, true);
        let pte = small_pages(cpu, VIRT);
        // VIRT maps physical 0x61_0000 (value 1) for now.
        cpu.machine
            .memory
            .write_u64(pte(VIRT), 0x61_0000 | 3)
            .unwrap();
        cpu.machine.memory.write_u64(0x61_0000, 1).unwrap();
        cpu.machine.memory.write_u64(0x62_0000, 2).unwrap();
    });
    let lines = cpu.irq.clone();
    let machine = cpu.machine.clone();
    let ipi = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        // Remap without telling anyone, then the shootdown IPI.
        machine.memory.write_u64(super::PT, 0x62_0000 | 3).unwrap();
        lines.set_external(Some(0xf0));
        let start = Instant::now();
        while machine.memory.read_u64(DATA).unwrap() == 0 {
            assert!(start.elapsed() < Duration::from_secs(20), "flush not seen");
            std::thread::sleep(Duration::from_millis(1));
        }
        machine.control.request_pause();
    });
    let exit = run_bounded(&mut cpu, 10_000_000);
    ipi.join().unwrap();
    assert_eq!(exit, VcpuExit::Stopped);
    assert_eq!(cpu.s.gpr[reg::RAX], 2);
    assert!(cpu.s.gpr[reg::RCX] > 100, "the loop ran before the IPI");
    assert!(cpu.jit.stats.instructions > 100);
}

/// An MMIO device: reads return a counter, writes are logged.
struct Counter {
    reads: Arc<AtomicU64>,
    writes: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl BusDevice for Counter {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = self.reads.fetch_add(1, Ordering::SeqCst) + offset;
        let bytes = v.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut b = [0u8; 8];
        b[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
        self.writes
            .lock()
            .unwrap()
            .push((offset, u64::from_le_bytes(b)));
    }
}

#[test]
fn mmio_from_translated_code_reaches_the_device_in_order() {
    const MMIO: u64 = 0x2000_0000;
    let code = assemble(64, |a| {
        let mut top = a.create_label();
        a.mov(ecx, 50u32).unwrap();
        a.set_label(&mut top).unwrap();
        a.mov(eax, dword_ptr(MMIO + 4)).unwrap();
        a.add(rbx, rax).unwrap();
        a.mov(qword_ptr(MMIO + 8), rbx).unwrap();
        a.add(word_ptr(MMIO + 0x10), cx).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(top).unwrap();
        a.hlt().unwrap();
    });
    let run = |tier| {
        let reads = Arc::new(AtomicU64::new(0));
        let writes = Arc::new(Mutex::new(Vec::new()));
        let (r, w) = (reads.clone(), writes.clone());
        let mut cpu = cpu_with(&code, tier, &move |cpu| {
            let dev = Counter {
                reads: r.clone(),
                writes: w.clone(),
            };
            cpu.machine
                .bus
                .insert(
                    IoSpace::Mmio,
                    MMIO,
                    0x1000,
                    "counter",
                    Arc::new(Mutex::new(dev)),
                )
                .unwrap();
        });
        assert_eq!(run_bounded(&mut cpu, 1000), VcpuExit::Halted);
        let log = writes.lock().unwrap().clone();
        (cpu, reads.load(Ordering::SeqCst), log)
    };
    let (interp, ir, iw) = run(EmuTier::Interp);
    let (jit, jr, jw) = run(EmuTier::Jit);
    assert_eq!((ir, iw.len()), (100, 100));
    assert_eq!((jr, &jw), (ir, &iw));
    assert_same(&interp, &jit);
    assert!(jit.jit.stats.blocks_translated > 0);
}

#[test]
fn an_exhausted_code_cache_is_flushed_and_translation_goes_on() {
    // 400 blocks, each adding its number and jumping to the next, run 5
    // times: far more code than a 64 KiB cache holds.
    const BLOCKS: u32 = 400;
    let code = assemble(64, |a| {
        let mut labels: Vec<CodeLabel> = (0..=BLOCKS).map(|_| a.create_label()).collect();
        a.mov(r10d, 5u32).unwrap();
        for i in 0..BLOCKS as usize {
            a.set_label(&mut labels[i]).unwrap();
            a.add(rax, i as i32).unwrap();
            a.mov(qword_ptr(DATA + 8 * (i as u64 % 64)), rax).unwrap();
            a.jmp(labels[i + 1]).unwrap();
        }
        a.set_label(&mut labels[BLOCKS as usize]).unwrap();
        a.dec(r10d).unwrap();
        a.jnz(labels[0]).unwrap();
        a.hlt().unwrap();
    });
    let setup = |cpu: &mut Cpu| cpu.jit.config.cache_bytes = crate::jit::cache::MIN_CACHE_BYTES;
    let (interp, jit) = both(&code, &setup);
    assert_eq!(
        jit.s.gpr[reg::RAX],
        5 * u64::from(BLOCKS * (BLOCKS - 1) / 2)
    );
    assert_same(&interp, &jit);
    assert!(
        jit.jit.stats.cache_flushes > 0,
        "{:?}",
        jit.jit.stats.top_fallbacks(4)
    );
    let (used, size) = jit.jit.cache_bytes();
    assert!(used <= size);
}

#[test]
fn user_mode_code_runs_translated_with_user_permissions() {
    // At CPL 3 a hot loop reads a user page and then touches a
    // supervisor-only page: #PF with the user bit, as in the interpreter.
    let code = assemble(64, |a| {
        let mut top = a.create_label();
        a.mov(ecx, 100u32).unwrap();
        a.set_label(&mut top).unwrap();
        a.add(rax, qword_ptr(DATA)).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(top).unwrap();
        a.mov(rbx, qword_ptr(0x60_0000)).unwrap();
        a.hlt().unwrap();
    });
    let setup = |cpu: &mut Cpu| {
        exception_handlers(cpu);
        crate::interrupts::tests::to_user64(cpu, 0x7_f000);
        // 6-8 MiB supervisor-only.
        cpu.machine
            .memory
            .write_u64(PD + 8 * 3, 0x60_0000 | 0x83)
            .unwrap();
        cpu.machine.memory.write_u64(DATA, 3).unwrap();
    };
    let (interp, jit) = both(&code, &setup);
    assert_eq!(jit.s.gpr[15], 0x1000 | 14);
    assert_eq!(jit.s.gpr[reg::RAX], 300);
    assert_same(&interp, &jit);
    assert!(jit.jit.stats.blocks_translated > 0);
}

#[test]
fn one_physical_routine_mapped_at_two_addresses_runs_right_at_each() {
    // A routine whose result depends on where it runs (its own RIP), on
    // one physical page mapped at two virtual pages, as a shared library
    // is in two processes. Its translation made at the first address must
    // not be entered at the second.
    const BASE: u64 = 0x60_0000;
    const ROUTINE: u64 = 0x61_0000;
    const FIRST: u64 = BASE + 0x1000;
    const SECOND: u64 = BASE + 0x2000;
    let code = assemble(64, |a| {
        for (at, out) in [(FIRST, r8), (SECOND, r9), (FIRST, r10), (SECOND, r11)] {
            a.mov(rbx, at).unwrap();
            a.call(rbx).unwrap();
            a.mov(out, rax).unwrap();
        }
        a.hlt().unwrap();
    });
    let routine = assemble(64, |a| {
        let mut here = a.create_label();
        a.lea(rax, ptr(here)).unwrap();
        a.set_label(&mut here).unwrap();
        a.ret().unwrap();
    });
    let setup = move |cpu: &mut Cpu| {
        let pte = small_pages(cpu, BASE);
        for at in [FIRST, SECOND] {
            cpu.machine.memory.write_u64(pte(at), ROUTINE | 3).unwrap();
        }
        cpu.machine.memory.write(ROUTINE, &routine).unwrap();
        cpu.mmu.flush_all();
    };
    let (interp, jit) = both(&code, &setup);
    let after_lea = 7; // lea rax, [rip + 0] is 7 bytes
    for (r, at) in [(8, FIRST), (9, SECOND), (10, FIRST), (11, SECOND)] {
        assert_eq!(jit.s.gpr[r], at + after_lea, "r{r}");
    }
    assert_same(&interp, &jit);
}

/// Makes the 2 MiB page at `base` a user-mode page of `cpu`'s identity
/// map (the rest stays supervisor-only).
fn user_region(cpu: &mut Cpu, base: u64) {
    let m = &cpu.machine.memory;
    for table in [0x1000u64, 0x2000, PD + 8 * (base >> 21)] {
        let e = m.read_u64(table).unwrap();
        m.write_u64(table, e | 4).unwrap();
    }
    cpu.mmu.flush_all();
}

#[test]
fn translated_supervisor_code_faults_on_a_user_page_after_clac() {
    // A hot loop reads a user page between STAC and CLAC; on its last
    // round it reads the page once more after CLAC: #PF under SMAP,
    // although the same translated block just read it.
    const USER: u64 = 0x20_0000;
    let code = assemble(64, |a| {
        let (mut top, mut skip) = (a.create_label(), a.create_label());
        a.mov(ecx, 100u32).unwrap();
        a.set_label(&mut top).unwrap();
        a.stac().unwrap();
        a.add(rax, qword_ptr(USER)).unwrap();
        a.mov(qword_ptr(USER + 8), rax).unwrap();
        a.clac().unwrap();
        a.cmp(ecx, 1).unwrap();
        a.jne(skip).unwrap();
        a.add(rbx, qword_ptr(USER)).unwrap();
        a.set_label(&mut skip).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(top).unwrap();
        a.hlt().unwrap();
    });
    let setup = |cpu: &mut Cpu| {
        exception_handlers(cpu);
        user_region(cpu, USER);
        cpu.s.cr4 |= crate::state::cr4::SMAP;
        cpu.machine.memory.write_u64(USER, 2).unwrap();
    };
    let (interp, jit) = both(&code, &setup);
    assert_eq!(jit.s.gpr[15], 0x1000 | 14, "#PF delivered");
    assert_eq!(jit.s.gpr[reg::RAX], 2 * 100, "the reads with AC = 1 worked");
    assert_eq!(jit.s.cr2, USER);
    assert_eq!(jit.s.gpr[reg::RBX], 0, "the read after CLAC did not");
    let error_code = jit.machine.memory.read_u64(jit.s.gpr[reg::RSP]).unwrap();
    assert_eq!(error_code, u64::from(crate::fault::pf::PRESENT));
    assert_same(&interp, &jit);
    assert!(jit.jit.stats.blocks_translated > 0);
    // The accesses with AC = 1 ran translated (from the AC sets), after
    // the first ones filled them.
    let fallbacks = |m: iced_x86::Mnemonic| {
        let n = jit.jit.stats.fallbacks.get(m as usize);
        n.copied().unwrap_or(0)
    };
    assert!(
        fallbacks(iced_x86::Mnemonic::Add) < 5,
        "{:?}",
        jit.jit.stats.top_fallbacks(4)
    );
    assert!(
        fallbacks(iced_x86::Mnemonic::Mov) < 5,
        "{:?}",
        jit.jit.stats.top_fallbacks(4)
    );
}

#[test]
fn translated_calls_into_a_user_page_fault_once_smep_is_on() {
    // A hot loop calls a routine on a user page (allowed without SMEP);
    // then the code sets CR4.SMEP and calls it again: #PF with I/D.
    const USER: u64 = 0x20_0000;
    let code = assemble(64, |a| {
        let mut top = a.create_label();
        a.mov(ecx, 100u32).unwrap();
        a.mov(esi, USER as u32).unwrap();
        a.set_label(&mut top).unwrap();
        a.call(rsi).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(top).unwrap();
        a.mov(rdx, cr4).unwrap();
        a.or(rdx, crate::state::cr4::SMEP as i32).unwrap();
        a.mov(cr4, rdx).unwrap();
        a.call(rsi).unwrap();
        a.hlt().unwrap();
    });
    let setup = |cpu: &mut Cpu| {
        exception_handlers(cpu);
        user_region(cpu, USER);
        put(cpu, USER, 64, |a| {
            a.add(rax, 1).unwrap();
            a.ret().unwrap();
        });
    };
    let (interp, jit) = both(&code, &setup);
    assert_eq!(jit.s.gpr[15], 0x1000 | 14, "#PF delivered");
    assert_eq!(jit.s.gpr[reg::RAX], 100);
    assert_eq!(jit.s.cr2, USER);
    let error_code = jit.machine.memory.read_u64(jit.s.gpr[reg::RSP]).unwrap();
    let fetch = crate::fault::pf::PRESENT | crate::fault::pf::FETCH;
    assert_eq!(error_code, u64::from(fetch));
    assert_same(&interp, &jit);
    assert!(jit.jit.stats.blocks_translated > 0);
}
