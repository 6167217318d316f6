//! Tests of the access rights the MMU enforces beyond U/S, R/W and XD:
//! SMEP and SMAP (SDM Vol. 3A §4.6.1), and that no TLB entry lets an access
//! through that those rules forbid (the entry was filled under other
//! conditions: RFLAGS.AC, CR4, an explicit rather than implicit access).

use iced_x86::code_asm::*;

use super::{AccessKind, Privilege};
use crate::fault::{pf, Fault};
use crate::flags::AC;
use crate::interrupts::tests::put;
use crate::modes::write_cr;
use crate::state::cr4;
use crate::testutil::{cpu64, CODE};
use crate::Cpu;

/// A user-mode 2 MiB page of [`cpu64`]'s identity map (the rest stays
/// supervisor-only).
const USER: u64 = 0x20_0000;

/// Makes the 2 MiB page at [`USER`] a user-mode page.
fn user_page(cpu: &mut Cpu) {
    let m = &cpu.machine.memory;
    for table in [0x1000u64, 0x2000] {
        let e = m.read_u64(table).unwrap();
        m.write_u64(table, e | 4).unwrap();
    }
    let pde = 0x3000 + 8 * (USER >> 21);
    let e = m.read_u64(pde).unwrap();
    m.write_u64(pde, e | 4).unwrap();
    cpu.mmu.flush_all();
}

/// A [`cpu64`] CPU at CPL 0 with a user page at [`USER`] and `bits` set
/// in CR4 by MOV to CR4 (so CPUID must offer them).
fn cpu_with_cr4(bits: u64) -> Cpu {
    let mut cpu = cpu64(&[]);
    user_page(&mut cpu);
    let v = cpu.s.cr4 | bits;
    write_cr(&mut cpu, 4, v).unwrap();
    cpu
}

fn set_ac(cpu: &mut Cpu, on: bool) {
    cpu.s.flags.set_flag(AC, on);
}

fn page_fault(addr: u64, code: u32) -> Result<u64, Fault> {
    Err(Fault::PageFault { addr, code })
}

#[test]
fn smep_refuses_a_supervisor_fetch_from_a_user_page() {
    let mut cpu = cpu_with_cr4(cr4::SMEP);
    put(&cpu, USER, 64, |a| a.nop().unwrap());
    cpu.s.rip = USER;
    assert_eq!(
        cpu.run_block(1),
        Err(Fault::PageFault {
            addr: USER,
            code: pf::PRESENT | pf::FETCH
        })
    );
    // Data accesses are not SMEP's business.
    assert_eq!(cpu.read_lin(USER, 8, false), Ok(0x90));
}

#[test]
fn a_block_decoded_before_smep_is_not_run_in_supervisor_mode_after_it() {
    let mut cpu = cpu64(&[]);
    user_page(&mut cpu);
    put(&cpu, USER, 64, |a| a.nop().unwrap());
    cpu.s.rip = USER;
    cpu.run_block(1).unwrap();
    cpu.s.rip = USER;
    cpu.run_block(1).unwrap();
    let v = cpu.s.cr4 | cr4::SMEP;
    write_cr(&mut cpu, 4, v).unwrap();
    cpu.s.rip = USER;
    assert_eq!(
        cpu.run_block(1),
        Err(Fault::PageFault {
            addr: USER,
            code: pf::PRESENT | pf::FETCH
        })
    );
}

#[test]
fn smap_faults_supervisor_data_accesses_to_user_pages_unless_ac_is_set() {
    let mut cpu = cpu_with_cr4(cr4::SMAP);
    cpu.machine.memory.write_u64(USER, 0x1234).unwrap();
    assert_eq!(cpu.read_lin(USER, 8, false), page_fault(USER, pf::PRESENT));
    assert_eq!(
        cpu.write_lin(USER, 8, 1, false),
        Err(Fault::PageFault {
            addr: USER,
            code: pf::PRESENT | pf::WRITE
        })
    );
    set_ac(&mut cpu, true);
    assert_eq!(cpu.read_lin(USER, 8, false), Ok(0x1234));
    cpu.write_lin(USER + 8, 8, 0x77, false).unwrap();
    assert_eq!(cpu.read_lin(USER + 8, 8, false), Ok(0x77));
    // Supervisor pages and user-mode accesses are unaffected.
    set_ac(&mut cpu, false);
    assert!(cpu.read_lin(CODE, 8, false).is_ok());
    assert_eq!(cpu.read_lin(USER, 8, true), Ok(0x1234));
}

#[test]
fn an_access_allowed_with_ac_is_refused_again_after_ac_is_cleared() {
    let mut cpu = cpu_with_cr4(cr4::SMAP);
    set_ac(&mut cpu, true);
    cpu.read_lin(USER, 8, false).unwrap();
    cpu.write_lin(USER, 8, 5, false).unwrap();
    set_ac(&mut cpu, false);
    assert_eq!(cpu.read_lin(USER, 8, false), page_fault(USER, pf::PRESENT));
    assert_eq!(
        cpu.write_lin(USER, 8, 6, false),
        Err(Fault::PageFault {
            addr: USER,
            code: pf::PRESENT | pf::WRITE
        })
    );
    // Nor did the interpreter's inline check find an entry.
    assert!(cpu.mmu.host_hit(USER, 8, AccessKind::Read, false).is_none());
    assert!(cpu
        .mmu
        .host_hit(USER, 8, AccessKind::Write, false)
        .is_none());
}

#[test]
fn implicit_supervisor_accesses_to_user_pages_fault_whatever_ac() {
    let mut cpu = cpu_with_cr4(cr4::SMAP);
    set_ac(&mut cpu, true);
    cpu.read_lin(USER, 8, false).unwrap();
    assert_eq!(cpu.read_system(USER, 8), page_fault(USER, pf::PRESENT));
    // At CPL 3 too: a descriptor-table read is a supervisor access.
    cpu.s.cpl = 3;
    assert_eq!(cpu.read_system(USER, 8), page_fault(USER, pf::PRESENT));
    assert!(cpu.read_lin(USER, 8, true).is_ok());
}

#[test]
fn a_segment_load_from_a_gdt_on_a_user_page_faults_under_smap() {
    let mut cpu = cpu_with_cr4(cr4::SMAP);
    let gdt = [0u64, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
    for (i, e) in gdt.iter().enumerate() {
        cpu.machine
            .memory
            .write_u64(USER + 8 * i as u64, *e)
            .unwrap();
    }
    cpu.s.gdtr.base = USER;
    cpu.s.gdtr.limit = 23;
    put(&cpu, CODE, 64, |a| {
        a.stac().unwrap();
        a.mov(eax, 0x10u32).unwrap();
        a.mov(ds, ax).unwrap();
    });
    cpu.run_block(1).unwrap();
    cpu.run_block(1).unwrap();
    assert!(cpu.s.flags.test(AC));
    assert_eq!(
        cpu.run_block(1),
        Err(Fault::PageFault {
            addr: USER + 0x10,
            code: pf::PRESENT
        })
    );
}

#[test]
fn turning_smap_on_drops_entries_filled_without_it() {
    let mut cpu = cpu_with_cr4(0);
    cpu.read_lin(USER, 8, false).unwrap();
    assert!(cpu.mmu.host_hit(USER, 8, AccessKind::Read, false).is_some());
    let v = cpu.s.cr4 | cr4::SMAP;
    write_cr(&mut cpu, 4, v).unwrap();
    assert_eq!(cpu.read_lin(USER, 8, false), page_fault(USER, pf::PRESENT));
}

#[test]
fn the_ac_sets_serve_only_explicit_supervisor_accesses_with_ac() {
    let mut cpu = cpu_with_cr4(cr4::SMAP);
    set_ac(&mut cpu, true);
    let walks = cpu.mmu.walks;
    for _ in 0..3 {
        cpu.translate_as(USER, AccessKind::Read, Privilege::Supervisor)
            .unwrap();
    }
    assert_eq!(cpu.mmu.walks, walks + 1, "later accesses hit the TLB");
    assert!(cpu
        .translate_as(USER, AccessKind::Read, Privilege::Implicit)
        .is_err());
}
