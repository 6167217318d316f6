//! Tests of the CR4 features the system instructions implement: UMIP
//! (SGDT, SIDT, SLDT, SMSW, STR), STAC/CLAC, PCIDs (CR4.PCIDE and CR3) and
//! INVPCID, and CR4 bits refused when CPUID does not offer them.

use iced_x86::code_asm::*;

use crate::fault::Fault;
use crate::flags;
use crate::interrupts::tests::{long_tables, put, to_user64};
use crate::modes::write_cr;
use crate::state::{cr4, reg};
use crate::testutil::*;
use crate::Cpu;

const GP: Result<(), Fault> = Err(Fault::GeneralProtection(0));

/// A [`cpu64`] CPU running `f` at CPL 3 (every page user-accessible).
fn user_cpu(cr4_bits: u64, f: impl FnOnce(&mut CodeAssembler)) -> Cpu {
    let mut cpu = cpu64(&[]);
    long_tables(&mut cpu);
    cpu.s.cr4 |= cr4_bits;
    to_user64(&mut cpu, 0x7_f000);
    put(&cpu, CODE, 64, f);
    cpu
}

#[test]
fn umip_makes_the_descriptor_table_stores_gp_at_cpl3() {
    let stores: [&dyn Fn(&mut CodeAssembler); 5] = [
        &|a| a.sgdt(ptr(DATA)).unwrap(),
        &|a| a.sidt(ptr(DATA)).unwrap(),
        &|a| a.sldt(ax).unwrap(),
        &|a| a.str(ax).unwrap(),
        &|a| a.smsw(ax).unwrap(),
    ];
    for (i, store) in stores.iter().enumerate() {
        let mut cpu = user_cpu(cr4::UMIP, store);
        assert_eq!(cpu.run_block(1), GP, "store {i} at CPL 3 with UMIP");
        let mut cpu = user_cpu(0, store);
        assert_eq!(cpu.run_block(1), Ok(()), "store {i} at CPL 3 without UMIP");
        let mut cpu = cpu64(&[]);
        long_tables(&mut cpu);
        cpu.s.cr4 |= cr4::UMIP;
        put(&cpu, CODE, 64, store);
        assert_eq!(cpu.run_block(1), Ok(()), "store {i} at CPL 0 with UMIP");
    }
}

#[test]
fn stac_and_clac_set_and_clear_ac_at_cpl0_only() {
    let mut cpu = cpu64(&[]);
    let end = put(&cpu, CODE, 64, |a| {
        a.stac().unwrap();
        a.pushfq().unwrap();
        a.pop(rbx).unwrap();
        a.clac().unwrap();
        a.pushfq().unwrap();
        a.pop(rcx).unwrap();
    });
    run_until(&mut cpu, end, 10);
    assert_ne!(cpu.s.gpr[reg::RBX] & flags::AC, 0);
    assert_eq!(cpu.s.gpr[reg::RCX] & flags::AC, 0);
    for f in [
        &(|a: &mut CodeAssembler| a.stac().unwrap()) as &dyn Fn(&mut CodeAssembler),
        &|a| a.clac().unwrap(),
    ] {
        let mut cpu = user_cpu(0, f);
        assert_eq!(cpu.run_block(1), Err(Fault::InvalidOpcode));
    }
}

#[test]
fn cr4_bits_of_features_cpuid_hides_are_reserved() {
    let mut cpu = cpu64(&[]);
    for bit in [cr4::SMEP, cr4::SMAP, cr4::UMIP, cr4::PCIDE] {
        let v = cpu.s.cr4 | bit;
        assert_eq!(write_cr(&mut cpu, 4, v), Ok(()), "{bit:#x} offered");
        let v = cpu.s.cr4 & !bit;
        write_cr(&mut cpu, 4, v).unwrap();
    }
    // What `--cpu max,-smap` does to the table.
    for e in cpu.cpuid.iter_mut().filter(|e| e.leaf == 7) {
        e.result.ebx &= !(1 << 20);
    }
    let v = cpu.s.cr4 | cr4::SMAP;
    assert_eq!(write_cr(&mut cpu, 4, v), GP);
    let v = cpu.s.cr4 | cr4::SMEP;
    assert_eq!(write_cr(&mut cpu, 4, v), Ok(()));
}

#[test]
fn pcide_is_set_only_in_ia32e_mode_with_pcid_zero() {
    let mut cpu = cpu64(&[]);
    cpu.s.cr3 |= 5;
    let v = cpu.s.cr4 | cr4::PCIDE;
    assert_eq!(write_cr(&mut cpu, 4, v), GP, "CR3[11:0] != 0");
    cpu.s.cr3 &= !0xfff;
    assert_eq!(write_cr(&mut cpu, 4, v), Ok(()));
    let mut cpu = cpu32(&[]);
    let v = cpu.s.cr4 | cr4::PCIDE;
    assert_eq!(write_cr(&mut cpu, 4, v), GP, "outside IA-32e mode");
}

#[test]
fn paging_cannot_be_turned_off_with_pcide_even_from_compatibility_mode() {
    let mut cpu = cpu64(&[]);
    cpu.s.seg[crate::state::seg::CS] = alcazar_core::regs::Segment::flat32(0x38, true);
    let v = cpu.s.cr4 | cr4::PCIDE;
    write_cr(&mut cpu, 4, v).unwrap();
    let no_paging = cpu.s.cr0 & !crate::state::cr0::PG;
    assert_eq!(write_cr(&mut cpu, 0, no_paging), GP);
    let v = cpu.s.cr4 & !cr4::PCIDE;
    write_cr(&mut cpu, 4, v).unwrap();
    assert_eq!(write_cr(&mut cpu, 0, no_paging), Ok(()));
    assert!(!cpu.s.long_mode());
}

#[test]
fn cr3_with_pcide_keeps_the_pcid_drops_bit_63_and_still_flushes() {
    let mut cpu = cpu64(&[]);
    let base = cpu.s.cr3;
    let no_flush = 1u64 << 63;
    assert_eq!(
        write_cr(&mut cpu, 3, base | no_flush),
        GP,
        "bit 63 is reserved without PCIDE"
    );
    let v = cpu.s.cr4 | cr4::PCIDE;
    write_cr(&mut cpu, 4, v).unwrap();
    let flushes = cpu.mmu.flush_log.non_global;
    let end = put(&cpu, CODE, 64, |a| {
        a.mov(rax, base | no_flush | 0x123).unwrap();
        a.mov(cr3, rax).unwrap();
        a.mov(rbx, cr3).unwrap();
        a.mov(ecx, 7u32).unwrap();
    });
    run_until(&mut cpu, end, 10);
    assert_eq!(cpu.s.rip, end, "the page walk ignores the PCID");
    assert_eq!(cpu.s.gpr[reg::RBX], base | 0x123);
    assert_eq!(cpu.s.cr3, base | 0x123);
    assert_eq!(cpu.mmu.flush_log.non_global, flushes + 1);
    // Clearing PCIDE drops every translation, global ones too.
    let full = cpu.mmu.flush_log.full;
    let v = cpu.s.cr4 & !cr4::PCIDE;
    write_cr(&mut cpu, 4, v).unwrap();
    assert_eq!(cpu.mmu.flush_log.full, full + 1);
}

/// Runs `invpcid rax, [DATA]` with the descriptor (`low`, `lin`) and type
/// `kind` on `cpu`.
fn invpcid(cpu: &mut Cpu, kind: u64, low: u64, lin: u64) -> Result<(), Fault> {
    cpu.machine.memory.write_u64(DATA, low).unwrap();
    cpu.machine.memory.write_u64(DATA + 8, lin).unwrap();
    cpu.s.gpr[reg::RAX] = kind;
    cpu.s.rip = CODE;
    put(cpu, CODE, 64, |a| {
        a.invpcid(rax, xmmword_ptr(DATA)).unwrap()
    });
    cpu.run_block(1)
}

#[test]
fn invpcid_invalidates_by_type_and_checks_its_operands() {
    let mut cpu = cpu64(&[]);
    let log = |cpu: &Cpu| {
        let l = cpu.mmu.flush_log;
        (l.pages, l.non_global, l.full)
    };
    let (pages, non_global, full) = log(&cpu);
    invpcid(&mut cpu, 0, 0, 0x20_1000).unwrap();
    assert_eq!(
        log(&cpu),
        (pages + 512, non_global, full),
        "the 2 MiB region"
    );
    let last = cpu.mmu.flush_log.pages_since(pages + 500).unwrap().last();
    assert_eq!(last, Some(0x3f_f000));
    invpcid(&mut cpu, 1, 0, 0).unwrap();
    assert_eq!(log(&cpu), (pages + 512, non_global + 1, full));
    invpcid(&mut cpu, 2, 0, 0).unwrap();
    assert_eq!(log(&cpu), (pages + 512, non_global + 1, full + 1));
    invpcid(&mut cpu, 3, 0xabc, 0x8000_0000_0000).unwrap();
    assert_eq!(log(&cpu), (pages + 512, non_global + 2, full + 1));

    assert_eq!(invpcid(&mut cpu, 4, 0, 0), GP, "no type 4");
    assert_eq!(invpcid(&mut cpu, 2, 1 << 12, 0), GP, "bits 63:12");
    assert_eq!(invpcid(&mut cpu, 0, 0, 0x8000_0000_0000), GP, "canonical");
    assert_eq!(invpcid(&mut cpu, 1, 1, 0), GP, "PCID 1 without PCIDE");
    let v = cpu.s.cr4 | cr4::PCIDE;
    write_cr(&mut cpu, 4, v).unwrap();
    assert_eq!(invpcid(&mut cpu, 1, 1, 0), Ok(()), "PCID 1 with PCIDE");
    assert_eq!(invpcid(&mut cpu, 0, 0xfff, 0x1000), Ok(()));

    let mut user = user_cpu(0, |a| a.invpcid(rax, xmmword_ptr(DATA)).unwrap());
    user.s.gpr[reg::RAX] = 2;
    assert_eq!(user.run_block(1), GP, "CPL 3");
}
