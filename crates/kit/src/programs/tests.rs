//! Build-time checks of every program: it assembles, fits, decodes cleanly
//! at the bitness each part was assembled for, and jumps where it should.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, OpKind, Register};

use super::{find, Built, REGISTRY};
use crate::image::CodePart;
use crate::{
    all, build, debug_exit_status, names, smp_expect, FlatMode, DEFAULT_LOAD_ADDRESS, KIT_PASS,
};

/// Everything the kit may occupy from the load address up (see crate docs).
const MAX_IMAGE: usize = 0x70000;

fn built(name: &str) -> Built {
    find(name)
        .expect("program is registered")
        .build()
        .expect("program assembles")
}

/// Decodes one code part with the IP it was assembled for.
fn decode(built: &Built, part: &CodePart) -> Vec<Instruction> {
    let bytes = &built.program.code[part.offset..part.offset + part.len];
    let ip = if part.bitness == 16 {
        part.offset as u64
    } else {
        built.program.load_address + part.offset as u64
    };
    Decoder::with_ip(part.bitness, bytes, ip, DecoderOptions::NONE)
        .into_iter()
        .collect()
}

fn far_jumps(instructions: &[Instruction]) -> Vec<(u16, u32)> {
    instructions
        .iter()
        .filter(|i| matches!(i.code(), Code::Jmp_ptr1632 | Code::Jmp_ptr1616))
        .map(|i| (i.far_branch_selector(), i.far_branch32()))
        .collect()
}

#[test]
fn every_program_assembles() {
    let programs = all().expect("all programs assemble");
    assert_eq!(programs.len(), REGISTRY.len());
    for program in programs {
        assert!(!program.code.is_empty(), "{} is empty", program.name);
        assert!(
            program.code.len() < MAX_IMAGE,
            "{} is too big",
            program.name
        );
        let expected_load = if program.name.starts_with("bench-") {
            super::bench::BENCH_LOAD_ADDRESS
        } else {
            DEFAULT_LOAD_ADDRESS
        };
        assert_eq!(program.load_address, expected_load, "{}", program.name);
        assert!(!program.description.is_empty(), "{}", program.name);
        assert!(!program.expect.output.is_empty(), "{}", program.name);
    }
}

#[test]
fn names_are_the_documented_ones_and_each_builds() {
    let expected = [
        "real-hello",
        "protected-hello",
        "long-hello",
        "demo",
        "port-sweep",
        "smp-hello",
        "fault-pf",
        "fault-gp",
        "fault-ud",
        "fault-de",
        "int-roundtrip",
        "int-roundtrip-real",
        "syscall-sysret",
        "apic-timer",
        "smp-sipi",
        "isa-irq",
        "virtio-rng",
        "hostile-virtio",
        "hostile-virtio-blk",
        "irq-storm",
        "register-storm",
        "register-storm-quick",
        "ticker",
        "spinner",
        "bench-sieve",
        "bench-memcpy",
        "bench-interp",
    ];
    assert_eq!(names(), expected);
    for name in expected {
        let program = build(name).expect("known name").expect("assembles");
        assert_eq!(program.name, name);
    }
}

#[test]
fn unknown_names_build_nothing() {
    assert!(build("no-such-program").is_none());
}

#[test]
fn every_code_part_decodes_without_invalid_instructions() {
    for entry in REGISTRY {
        let built = built(entry.name);
        assert!(!built.parts.is_empty(), "{} has no code", entry.name);
        for part in &built.parts {
            let instructions = decode(&built, part);
            assert!(!instructions.is_empty());
            let invalid = instructions.iter().find(|i| i.is_invalid());
            assert!(
                invalid.is_none(),
                "{}: invalid instruction in {part:?} at {:#x}",
                entry.name,
                invalid.map_or(0, |i| i.ip())
            );
        }
    }
}

#[test]
fn first_part_matches_the_start_mode() {
    for entry in REGISTRY {
        let built = built(entry.name);
        let first = built
            .parts
            .iter()
            .min_by_key(|part| part.offset)
            .expect("has code");
        assert_eq!(
            first.offset, 0,
            "{} must start executing at its first byte",
            entry.name
        );
        let bitness = match built.program.mode {
            FlatMode::Real => 16,
            FlatMode::Protected => 32,
            FlatMode::Long => 64,
        };
        assert_eq!(first.bitness, bitness, "{}", entry.name);
    }
}

#[test]
fn demo_parts_decode_at_their_bitness() {
    let demo = built("demo");
    let bitnesses: Vec<(usize, u32)> = demo
        .parts
        .iter()
        .map(|part| (part.offset, part.bitness))
        .collect();
    assert_eq!(bitnesses, [(0x000, 16), (0x400, 32), (0x800, 64)]);
    for part in &demo.parts {
        assert!(
            decode(&demo, part).iter().all(|i| !i.is_invalid()),
            "{part:?}"
        );
    }
}

#[test]
fn demo_far_jumps_climb_from_real_to_long_mode() {
    let demo = built("demo");
    let load = demo.program.load_address as u32;
    assert_eq!(
        far_jumps(&decode(&demo, &demo.parts[0])),
        [(0x08, load + 0x400)]
    );
    assert_eq!(
        far_jumps(&decode(&demo, &demo.parts[1])),
        [(0x18, load + 0x800)]
    );
    assert!(far_jumps(&decode(&demo, &demo.parts[2])).is_empty());
}

#[test]
fn demo_loads_its_gdt_with_a_32_bit_base() {
    let demo = built("demo");
    let real = decode(&demo, &demo.parts[0]);
    assert!(real.iter().any(|i| i.code() == Code::Lgdt_m1632));
}

#[test]
fn protected_hello_reloads_cs_with_its_own_selector() {
    let program = built("protected-hello");
    let load = program.program.load_address as u32;
    assert_eq!(
        far_jumps(&decode(&program, &program.parts[0])),
        [(0x18, load + 0x100)]
    );
}

#[test]
fn absolute_memory_operands_stay_clear_of_the_vmm_tables() {
    // Flat 32/64-bit code: any [disp] operand is a linear address and must
    // not point below 0x8000 (VMM GDT and page tables).
    for entry in REGISTRY {
        let built = built(entry.name);
        for part in built.parts.iter().filter(|part| part.bitness != 16) {
            for instruction in decode(&built, part) {
                let absolute = (0..instruction.op_count())
                    .any(|n| instruction.op_kind(n) == OpKind::Memory)
                    && instruction.memory_base() == Register::None
                    && instruction.memory_index() == Register::None;
                if absolute {
                    assert!(
                        instruction.memory_displacement64() >= 0x8000,
                        "{}: {instruction}",
                        entry.name
                    );
                }
            }
        }
    }
}

#[test]
fn expectations_use_the_documented_statuses() {
    let status = |name: &str| {
        build(name)
            .expect("known")
            .expect("assembles")
            .expect
            .status
    };
    assert_eq!(debug_exit_status(KIT_PASS), 0x21);
    for name in [
        "real-hello",
        "protected-hello",
        "long-hello",
        "port-sweep",
        "smp-hello",
        "fault-pf",
        "fault-gp",
        "fault-ud",
        "fault-de",
        "int-roundtrip",
        "int-roundtrip-real",
        "syscall-sysret",
        "apic-timer",
        "smp-sipi",
        "isa-irq",
    ] {
        assert_eq!(status(name), 0x21, "{name}");
    }
    assert_eq!(status("demo"), 0);
}

#[test]
fn smp_expect_lists_every_cpu_in_index_order() {
    assert_eq!(
        smp_expect(1).output,
        ["kit: cpu 0 up", "kit: all 1 cpus up"]
    );
    assert_eq!(
        smp_expect(2).output,
        ["kit: cpu 0 up", "kit: cpu 1 up", "kit: all 2 cpus up"]
    );
    let many = smp_expect(20);
    assert_eq!(many.output.len(), 21);
    assert_eq!(many.output[19], "kit: cpu 19 up");
    assert_eq!(many.output[20], "kit: all 20 cpus up");
    assert_eq!(many.status, 0x21);
}

#[test]
fn messages_live_inside_the_image() {
    for program in all().expect("assembles") {
        for line in &program.expect.output {
            // Exception checks print the recorded values in parentheses
            // after a stored title.
            let line = match line.split_once(" (vector=") {
                Some((title, _)) => title,
                None => line,
            };
            let found = program
                .code
                .windows(line.len())
                .any(|window| window == line.as_bytes());
            // smp-hello and smp-sipi build their lines from pieces around
            // the numbers, hostile-virtio around the name of each abuse.
            if !matches!(
                program.name,
                "smp-hello" | "smp-sipi" | "hostile-virtio" | "hostile-virtio-blk"
            ) {
                assert!(found, "{}: {line:?} not in image", program.name);
            }
        }
    }
}

/// The programs that install the shared exception IDT (see `crate::idt`).
const IDT_PROGRAMS: [&str; 6] = [
    "fault-pf",
    "fault-gp",
    "fault-ud",
    "fault-de",
    "int-roundtrip",
    "syscall-sysret",
];

#[test]
fn exception_stubs_push_their_vector_and_jump_to_the_handler() {
    for name in IDT_PROGRAMS {
        let built = built(name);
        let handler = built.program.load_address + 0x800;
        for vector in 0..32u64 {
            let offset = 0x900 + vector as usize * 16;
            let part = built
                .parts
                .iter()
                .find(|part| part.offset == offset)
                .unwrap_or_else(|| panic!("{name}: no stub for vector {vector}"));
            let instructions = decode(&built, part);
            let pushes: Vec<u64> = instructions
                .iter()
                .filter(|i| i.code() == Code::Pushq_imm8)
                .map(|i| i.immediate(0))
                .collect();
            let with_error = matches!(vector, 8 | 10..=14 | 17 | 21);
            let expected = if with_error {
                vec![vector]
            } else {
                vec![0, vector]
            };
            assert_eq!(pushes, expected, "{name}: stub {vector}");
            let last = instructions.last().expect("stub has code");
            assert_eq!(last.near_branch_target(), handler, "{name}: stub {vector}");
        }
    }
}

#[test]
fn fault_ud_keeps_its_invalid_opcodes_outside_the_code_parts() {
    let built = built("fault-ud");
    for offset in [0xb00, 0xb10] {
        assert!(
            built
                .parts
                .iter()
                .all(|part| offset < part.offset || offset >= part.offset + part.len),
            "{offset:#x} is inside a code part"
        );
        let bytes = &built.program.code[offset..offset + 5];
        let first = Decoder::new(64, bytes, DecoderOptions::NONE).decode();
        assert!(first.is_invalid(), "{offset:#x} decodes as {first}");
    }
}

#[test]
fn syscall_sysret_user_code_has_a_page_of_its_own() {
    let built = built("syscall-sysret");
    let user = built
        .parts
        .iter()
        .find(|part| part.offset == 0x6000)
        .expect("user part");
    assert!(user.len <= 0x1000);
    let instructions = decode(&built, user);
    assert_eq!(
        instructions
            .iter()
            .filter(|i| i.code() == Code::Syscall)
            .count(),
        3
    );
    let kernel = built
        .parts
        .iter()
        .find(|part| part.offset == 0)
        .expect("kernel part");
    let kernel = decode(&built, kernel);
    assert!(kernel.iter().any(|i| i.code() == Code::Sysretq));
}

#[test]
fn smp_sipi_expects_one_line_per_ap_and_asks_for_wait_for_sipi() {
    use crate::smp_sipi_expect;
    assert_eq!(smp_sipi_expect(1).output, ["kit: all 1 cpus up via sipi"]);
    assert_eq!(
        smp_sipi_expect(3).output,
        [
            "kit: ap 1 up",
            "kit: ap 2 up",
            "kit: all 3 cpus up via sipi"
        ]
    );
    let program = build("smp-sipi").expect("known").expect("assembles");
    assert!(program.aps_wait_for_sipi);
    assert!(!build("smp-hello").unwrap().unwrap().aps_wait_for_sipi);
    // The trampoline is 16-bit code at the STARTUP vector's page.
    let built = built("smp-sipi");
    assert!(built
        .parts
        .iter()
        .any(|p| p.bitness == 16 && p.offset == 0x1000));
}
