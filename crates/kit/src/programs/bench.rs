//! Benchmark guests: `bench-sieve`, `bench-memcpy`, `bench-interp`.
//!
//! Integer workloads for measuring an engine's speed in guest instructions
//! per second. Each is a **multiboot** image (Multiboot 0.6.96 §3.1, with
//! the a.out kludge: flags bit 16), so the very same bytes also boot under
//! QEMU with `-kernel`, which is how `scripts/bench.sh` gets its reference
//! time. The image is entered in flat 32-bit protected mode with paging
//! off — the state both Alcazar's `protected` start mode and a multiboot
//! loader provide — loads its own GDT, builds identity page tables for the
//! first 1 GiB with 2 MiB pages, enters long mode, runs its workload, checks
//! the result against the value computed on the host at build time, prints
//! one line and leaves through debug-exit (`KIT_PASS`, or `KIT_FAIL` with a
//! FAILED line if the result is wrong).
//!
//! Memory used: image at 1 MiB, stack below 0x280000, tables at 0x300000,
//! work buffers from 0x400000. Guests need at least 16 MiB.
//!
//! Workloads:
//! * sieve: the sieve of Eratosthenes over 2^20 bytes, `SIEVE_PASSES` times
//!   (counts primes; 82,025 per pass).
//! * memcpy: a 1 MiB quadword copy loop (not `rep movs`), `COPY_PASSES`
//!   times, then a checksum of the destination.
//! * interp: a bytecode interpreter dispatching through a jump table, the
//!   branchy loop of every language VM.

use iced_x86::code_asm::*;

use super::{finish, Built, Info};
use crate::arch::{CODE32_FLAT, CODE64, DATA_FLAT, NULL_DESCRIPTOR};
use crate::cpu::{enable_ia32e, push_gdt};
use crate::image::{addr32, Asm, DataArea, Image};
use crate::uart::{exit, Uart};
use crate::{debug_exit_status, Expect, FlatMode, KitError, KIT_FAIL, KIT_PASS};

/// Where benchmark images load (1 MiB: where multiboot loaders like it).
pub const BENCH_LOAD_ADDRESS: u64 = 0x10_0000;

const HEADER: usize = 0x04;
const PART32: usize = 0x40;
const PART64: usize = 0x400;
const DATA: usize = 0xc00;

const CODE64_SEL: u16 = 0x18;
const DATA_SEL: u32 = 0x10;
const STACK: u32 = 0x28_0000;
const PML4: u32 = 0x30_0000;
const PDPT: u32 = PML4 + 0x1000;
const PD: u32 = PML4 + 0x2000;
const BUF_A: u32 = 0x40_0000;
const BUF_B: u32 = 0x50_0000;

/// Sieve size (bytes = candidate numbers).
pub const SIEVE_N: u64 = 1 << 20;
/// Sieve repetitions.
pub const SIEVE_PASSES: u64 = 10;
/// Quadwords copied per memcpy pass (1 MiB).
pub const COPY_QWORDS: u64 = 1 << 17;
/// memcpy repetitions.
pub const COPY_PASSES: u64 = 150;
/// Loop iterations of the interpreted program.
pub const INTERP_ITERATIONS: u64 = 2_000_000;

const MULTIBOOT_MAGIC: u32 = 0x1bad_b002;
const MULTIBOOT_AOUT_KLUDGE: u32 = 1 << 16;

/// Registry facts for the three programs.
pub(crate) const SIEVE: Info = Info {
    name: "bench-sieve",
    description: "benchmark: sieve of Eratosthenes over 1 MiB, 10 passes (multiboot, long mode)",
    mode: FlatMode::Protected,
};
/// See [`SIEVE`].
pub(crate) const MEMCPY: Info = Info {
    name: "bench-memcpy",
    description: "benchmark: 1 MiB quadword copy loop, 150 passes (multiboot, long mode)",
    mode: FlatMode::Protected,
};
/// See [`SIEVE`].
pub(crate) const INTERP: Info = Info {
    name: "bench-interp",
    description: "benchmark: bytecode interpreter with jump-table dispatch (multiboot, long mode)",
    mode: FlatMode::Protected,
};

/// The workload body of a benchmark: emits 64-bit code that leaves its
/// result in RAX.
type Workload = fn(&mut CodeAssembler, &Addrs) -> Asm;

/// Addresses the 64-bit part needs.
struct Addrs {
    done: u32,
    failed: u32,
    bytecode: u32,
}

/// Builds `bench-sieve`.
pub(crate) fn build_sieve() -> Result<Built, KitError> {
    build(&SIEVE, sieve, expected_sieve())
}

/// Builds `bench-memcpy`.
pub(crate) fn build_memcpy() -> Result<Built, KitError> {
    build(&MEMCPY, memcpy, expected_memcpy())
}

/// Builds `bench-interp`.
pub(crate) fn build_interp() -> Result<Built, KitError> {
    build(&INTERP, interp, expected_interp())
}

fn build(info: &Info, workload: Workload, expected: u64) -> Result<Built, KitError> {
    let load = BENCH_LOAD_ADDRESS;
    let mut image = Image::new(load);
    let mut data = DataArea::new(DATA);
    let done = data.push_cstr(&format!("kit: {} done, result ok\n", info.name));
    let failed = data.push_cstr(&format!("kit: {} FAILED: wrong result\n", info.name));
    data.align(8);
    let bytecode = data.push_bytes(&BYTECODE);
    let gdtr = push_gdt(
        &mut data,
        load,
        &[NULL_DESCRIPTOR, CODE32_FLAT, DATA_FLAT, CODE64],
    )?;
    data.place_into(&mut image)?;
    let addrs = Addrs {
        done: addr32("done message", image.linear(done))?,
        failed: addr32("failed message", image.linear(failed))?,
        bytecode: addr32("bytecode", image.linear(bytecode))?,
    };
    let gdtr = addr32("GDTR", image.linear(gdtr))?;
    let part32 = addr32("32-bit part", image.linear(PART32))?;
    let part64 = addr32("64-bit part", image.linear(PART64))?;
    let image_start = addr32("image start", load)?;
    // The entry point is the first byte (Alcazar's convention); it jumps
    // over the multiboot header, whose entry_addr points at PART32 too.
    image.code("bench entry jump", 0, 32, |a| {
        a.jmp(u64::from(part32))?;
        Ok(())
    })?;
    let header = multiboot_header(image_start + HEADER as u32, image_start, part32);
    image.place("multiboot header", HEADER, &header)?;
    image.code("bench 32-bit part", PART32, 32, |a| {
        enter_long_mode(a, gdtr, part64)
    })?;
    image.code("bench 64-bit part", PART64, 64, |a| {
        part64_code(a, &addrs, workload, expected)
    })?;
    let expect = Expect {
        output: vec![leak(format!("kit: {} done, result ok", info.name))],
        status: debug_exit_status(KIT_PASS),
    };
    Ok(finish(image, info, expect))
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The multiboot header with the a.out kludge addresses (Multiboot §3.1.1).
/// `load_end_addr` and `bss_end_addr` are 0: load the whole file, no BSS.
fn multiboot_header(header_addr: u32, load_addr: u32, entry: u32) -> Vec<u8> {
    let flags = MULTIBOOT_AOUT_KLUDGE;
    let checksum = 0u32.wrapping_sub(MULTIBOOT_MAGIC).wrapping_sub(flags);
    [
        MULTIBOOT_MAGIC,
        flags,
        checksum,
        header_addr,
        load_addr,
        0,
        0,
        entry,
    ]
    .iter()
    .flat_map(|w| w.to_le_bytes())
    .collect()
}

/// 32-bit protected mode: own GDT, 1 GiB identity map, long mode.
fn enter_long_mode(a: &mut CodeAssembler, gdtr: u32, part64: u32) -> Asm {
    a.cli()?;
    a.cld()?;
    a.lgdt(ptr(gdtr))?;
    a.mov(eax, DATA_SEL)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(ss, ax)?;
    a.mov(esp, STACK)?;
    // Clear PML4, PDPT and PD, then link them; PD maps 512 x 2 MiB.
    a.mov(edi, PML4)?;
    a.xor(eax, eax)?;
    a.mov(ecx, 3 * 1024)?;
    a.rep().stosd()?;
    a.mov(dword_ptr(PML4), PDPT | 3)?;
    a.mov(dword_ptr(PDPT), PD | 3)?;
    let mut fill = a.create_label();
    a.mov(edi, PD)?;
    a.mov(eax, 0x83u32)?;
    a.mov(ecx, 512u32)?;
    a.set_label(&mut fill)?;
    a.mov(dword_ptr(edi), eax)?;
    a.add(eax, 0x20_0000)?;
    a.add(edi, 8)?;
    a.dec(ecx)?;
    a.jnz(fill)?;
    enable_ia32e(a, PML4)?;
    a.jmp_far(CODE64_SEL, part64)?;
    Ok(())
}

/// 64-bit part: run the workload, compare, report, exit.
fn part64_code(a: &mut CodeAssembler, addrs: &Addrs, workload: Workload, expected: u64) -> Asm {
    a.mov(esp, STACK)?;
    let mut uart = Uart::new(a);
    Uart::init(a)?;
    workload(a, addrs)?;
    let mut bad = a.create_label();
    a.mov(rbx, expected)?;
    a.cmp(rax, rbx)?;
    a.jne(bad)?;
    uart.print(a, addrs.done)?;
    exit(a, KIT_PASS)?;
    a.set_label(&mut bad)?;
    uart.print(a, addrs.failed)?;
    exit(a, KIT_FAIL)?;
    uart.emit_routines(a)
}

/// Sieve: RAX = total primes found over all passes.
fn sieve(a: &mut CodeAssembler, _: &Addrs) -> Asm {
    let (mut pass, mut fill, mut outer, mut inner, mut next, mut count, mut counted) = (
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
    );
    a.xor(r15, r15)?; // total
    a.mov(r14d, SIEVE_PASSES as u32)?;
    a.set_label(&mut pass)?;
    // a[i] = 1 for all i, with a plain byte loop.
    a.mov(rdi, u64::from(BUF_A))?;
    a.xor(ecx, ecx)?;
    a.set_label(&mut fill)?;
    a.mov(byte_ptr(rdi + rcx), 1u32)?;
    a.inc(rcx)?;
    a.cmp(rcx, SIEVE_N as i32)?;
    a.jb(fill)?;
    // for i in 2.. while i*i < N: if a[i]: for j = i*i; j < N; j += i: a[j] = 0
    a.mov(ebx, 2u32)?;
    a.set_label(&mut outer)?;
    a.mov(rax, rbx)?;
    a.imul_2(rax, rbx)?;
    a.cmp(rax, SIEVE_N as i32)?;
    a.jae(count)?;
    a.cmp(byte_ptr(rdi + rbx), 0u32)?;
    a.je(next)?;
    a.set_label(&mut inner)?;
    a.mov(byte_ptr(rdi + rax), 0u32)?;
    a.add(rax, rbx)?;
    a.cmp(rax, SIEVE_N as i32)?;
    a.jb(inner)?;
    a.set_label(&mut next)?;
    a.inc(rbx)?;
    a.jmp(outer)?;
    // Count a[2..N].
    a.set_label(&mut count)?;
    a.mov(ecx, 2u32)?;
    a.set_label(&mut counted)?;
    a.movzx(eax, byte_ptr(rdi + rcx))?;
    a.add(r15, rax)?;
    a.inc(rcx)?;
    a.cmp(rcx, SIEVE_N as i32)?;
    a.jb(counted)?;
    a.dec(r14d)?;
    a.jnz(pass)?;
    a.mov(rax, r15)?;
    Ok(())
}

/// memcpy: fill A with a pattern, copy A -> B `COPY_PASSES` times with a
/// quadword loop, RAX = sum of B's quadwords.
fn memcpy(a: &mut CodeAssembler, _: &Addrs) -> Asm {
    let (mut fill, mut pass, mut copy, mut sum) = (
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
    );
    a.mov(rsi, u64::from(BUF_A))?;
    a.mov(rdi, u64::from(BUF_B))?;
    a.mov(rdx, 0x9e37_79b9_7f4a_7c15u64)?;
    a.xor(ecx, ecx)?;
    a.xor(eax, eax)?;
    a.set_label(&mut fill)?;
    a.add(rax, rdx)?;
    a.mov(qword_ptr(rsi + rcx * 8), rax)?;
    a.inc(rcx)?;
    a.cmp(rcx, COPY_QWORDS as i32)?;
    a.jb(fill)?;
    a.mov(r14d, COPY_PASSES as u32)?;
    a.set_label(&mut pass)?;
    a.xor(ecx, ecx)?;
    a.set_label(&mut copy)?;
    a.mov(rax, qword_ptr(rsi + rcx * 8))?;
    a.mov(qword_ptr(rdi + rcx * 8), rax)?;
    a.inc(rcx)?;
    a.cmp(rcx, COPY_QWORDS as i32)?;
    a.jb(copy)?;
    a.dec(r14d)?;
    a.jnz(pass)?;
    a.xor(ecx, ecx)?;
    a.xor(eax, eax)?;
    a.set_label(&mut sum)?;
    a.add(rax, qword_ptr(rdi + rcx * 8))?;
    a.inc(rcx)?;
    a.cmp(rcx, COPY_QWORDS as i32)?;
    a.jb(sum)?;
    Ok(())
}

/// Bytecode of the interpreted program, one byte per op.
const BYTECODE: [u8; 6] = [OP_ADD, OP_MIX, OP_ADD, OP_DEC, OP_JNZ, OP_HALT];
const OP_ADD: u8 = 0; // acc += counter
const OP_MIX: u8 = 1; // acc = (acc ^ (acc >> 7)) * 3
const OP_DEC: u8 = 2; // counter -= 1
const OP_JNZ: u8 = 3; // if counter != 0: pc = 0
const OP_HALT: u8 = 4; // anything >= 4 halts

/// interp: fetch a bytecode, dispatch through a compare-and-branch chain
/// (the branchy shape of a simple language VM), RAX = acc.
fn interp(a: &mut CodeAssembler, addrs: &Addrs) -> Asm {
    let mut dispatch = a.create_label();
    let mut handlers: Vec<CodeLabel> = (0..4).map(|_| a.create_label()).collect();
    let mut halt = a.create_label();
    a.xor(eax, eax)?; // acc
    a.mov(ecx, INTERP_ITERATIONS as u32)?; // counter
    a.mov(esi, addrs.bytecode)?; // code base
    a.xor(edx, edx)?; // pc
    a.set_label(&mut dispatch)?;
    a.movzx(ebx, byte_ptr(rsi + rdx))?;
    a.inc(edx)?;
    for (op, label) in handlers.iter().enumerate() {
        a.cmp(ebx, op as u32)?;
        a.je(*label)?;
    }
    a.jmp(halt)?;
    // OP_ADD
    a.set_label(&mut handlers[0])?;
    a.add(rax, rcx)?;
    a.jmp(dispatch)?;
    // OP_MIX
    a.set_label(&mut handlers[1])?;
    a.mov(r8, rax)?;
    a.shr(r8, 7)?;
    a.xor(rax, r8)?;
    a.lea(rax, ptr(rax + rax * 2))?;
    a.jmp(dispatch)?;
    // OP_DEC
    a.set_label(&mut handlers[2])?;
    a.dec(rcx)?;
    a.jmp(dispatch)?;
    // OP_JNZ
    a.set_label(&mut handlers[3])?;
    a.test(rcx, rcx)?;
    a.jz(dispatch)?;
    a.xor(edx, edx)?;
    a.jmp(dispatch)?;
    a.set_label(&mut halt)?;
    Ok(())
}

fn expected_sieve() -> u64 {
    let n = SIEVE_N as usize;
    let mut a = vec![true; n];
    let mut i = 2;
    while i * i < n {
        if a[i] {
            let mut j = i * i;
            while j < n {
                a[j] = false;
                j += i;
            }
        }
        i += 1;
    }
    (a[2..].iter().filter(|&&p| p).count() as u64) * SIEVE_PASSES
}

fn expected_memcpy() -> u64 {
    let step = 0x9e37_79b9_7f4a_7c15u64;
    (1..=COPY_QWORDS).fold(0u64, |sum, i| sum.wrapping_add(step.wrapping_mul(i)))
}

fn expected_interp() -> u64 {
    let (mut acc, mut counter, mut pc) = (0u64, INTERP_ITERATIONS, 0usize);
    loop {
        let op = BYTECODE[pc];
        pc += 1;
        match op {
            OP_ADD => acc = acc.wrapping_add(counter),
            OP_MIX => acc = (acc ^ (acc >> 7)).wrapping_mul(3),
            OP_DEC => counter -= 1,
            OP_JNZ if counter != 0 => pc = 0,
            OP_JNZ => {}
            _ => return acc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sieve_expectation_counts_the_primes_below_2_pow_20() {
        assert_eq!(expected_sieve(), 82_025 * SIEVE_PASSES);
    }

    #[test]
    fn multiboot_header_checksums_to_zero() {
        let h = multiboot_header(1, 2, 3);
        let words: Vec<u32> = h
            .chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(words[0].wrapping_add(words[1]).wrapping_add(words[2]), 0);
    }
}
