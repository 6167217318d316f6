#!/usr/bin/env python3
"""Writes the hand-made seeds of the emu_exec and virtio_devices fuzz
targets into fuzz/corpus/<target>/ (the input layouts are in each target's
doc comment). Run from anywhere: python3 fuzz/gen_seeds.py"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def save(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    assert len(data) < 4096, (target, name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- emu_exec -------------------------------------------------------------
REAL, V86, PROT16, PROT32, PAGED32, PAE32, LONG64, COMPAT32 = range(8)
RING3, OWN_RSP, NMI, INTR, SINGLE = 8, 0x10, 0x20, 0x40, 0x80
# cr0 extras: MP EM TS NE WP AM CD; cr4: TSD DE PSE MCE PGE PCE OSFXSR OSXMMEXCPT
CR4_PSE, CR4_OSFXSR = 1 << 2, 1 << 6
EFER_SCE, EFER_NXE = 1, 2
RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI = range(8)


def emu(mode, code, cr0=0, cr4=0, efer=0, vector=0x20, rflags=2, gpr=None,
        flips=0, nx=0):
    g = [0] * 16
    for i, v in (gpr or {}).items():
        g[i] = v
    return (bytes([mode, cr0]) + struct.pack("<H", cr4) + bytes([efer, vector])
            + struct.pack("<Q", rflags) + struct.pack("<16Q", *g)
            + struct.pack("<Q", flips) + bytes([nx]) + code)


NOP_HLT = b"\x90\xf4"
for name, mode in [("real_nop_hlt", REAL), ("v86_nop_hlt", V86),
                   ("prot16_nop_hlt", PROT16), ("prot32_nop_hlt", PROT32),
                   ("paged32_nop_hlt", PAGED32), ("pae32_nop_hlt", PAE32),
                   ("long64_nop_hlt", LONG64), ("compat32_nop_hlt", COMPAT32)]:
    save("emu_exec", name, emu(mode, NOP_HLT))
# int 0x10 through the IVT (real mode) and the IDT from ring 3 (64-bit).
save("emu_exec", "real_int10", emu(REAL, b"\xcd\x10"))
save("emu_exec", "long64_ring3_int3_syscall",
     emu(LONG64 | RING3, b"\xcc\x0f\x05", efer=EFER_SCE))
# mov rax, [0x200000]; mov [0x200008], rax; out 0x80, al; in al, 0x10; hlt
# (the MMIO sink through a 2 MiB page, the port sink).
save("emu_exec", "long64_mmio_ports",
     emu(LONG64, bytes.fromhex("488b042500002000" "4889042508002000"
                               "e680" "e410" "f4")))
# mov eax, [0x400000] through a 4 MiB PSE page onto the MMIO sink; hlt.
save("emu_exec", "paged32_pse_mmio",
     emu(PAGED32, bytes.fromhex("a100004000" "f4"), cr4=CR4_PSE))
# rep movsb of 1 MiB from the data pages (bounded by the run budget).
save("emu_exec", "long64_rep_movsb",
     emu(LONG64, b"\xf3\xa4\xf4",
         gpr={RSI: 0x20000, RDI: 0x30000, RCX: 0x100000}))
# jmp $ with an NMI raised after the first slice (delivered, then hlt).
save("emu_exec", "long64_loop_nmi", emu(LONG64 | NMI, b"\xeb\xfe"))
# sti; jmp $ with an external interrupt (vector 0x30) after the first slice.
save("emu_exec", "prot32_loop_intr",
     emu(PROT32 | INTR, b"\xfb\xeb\xfe", vector=0x30))
# div ecx with ecx = 0: #DE through the IDT.
save("emu_exec", "compat32_div0", emu(COMPAT32, b"\xf7\xf1\xf4"))
# movaps xmm0, [0x20000]; a store to a read-only data page (PTE RW
# flipped); one block at a time.
save("emu_exec", "long64_sse_ro_page",
     emu(LONG64 | SINGLE, bytes.fromhex("0f28042500000200" "c6042500000200" "01" "f4"),
         cr4=CR4_OSFXSR, flips=0x02))
# ud2 in virtual-8086 mode with IOPL 3 and an out to the hypercall port.
save("emu_exec", "v86_out_ud2",
     emu(V86, bytes.fromhex("e6ea" "0f0b"), rflags=0x3002))
# call far 0x6b:0 through the call gate from ring 3 (to ring 0, hlt).
save("emu_exec", "prot32_ring3_call_gate",
     emu(PROT32 | RING3, bytes.fromhex("9a000000006b00")))
# mov rax, cr4; or rax, 0x80 (PGE); mov cr4, rax; mov rax, cr3;
# mov cr3, rax; invlpg [0x20000]; hlt
save("emu_exec", "long64_control_regs",
     emu(LONG64, bytes.fromhex("0f20e0" "480d80000000" "0f22e0" "0f20d8" "0f22d8"
                               "0f013c2500000200" "f4")))
# mov rax, 0x400000; jmp rax: into the window onto 4 GiB, where nothing
# is (#UD there; the engine used to spin on an empty block).
save("emu_exec", "long64_jmp_outside_ram",
     emu(LONG64, bytes.fromhex("48c7c000004000" "ffe0")))

# ---- virtio_devices -------------------------------------------------------
NET, CONSOLE, RNG = range(3)
VERSION_1 = 1 << 32
F_WRITE, F_NEXT = 2, 1


def queue(size, desc, avail, used, ready=1):
    return struct.pack("<HBQQQ", size, ready, desc, avail, used)


def op(kind, *args):
    return bytes([kind]) + b"".join(args)


def activate(features=VERSION_1):
    return op(0, struct.pack("<Q", features))


def notify(q):
    return op(1, bytes([q]))


RESET = op(2)
INSPECT = op(7)
DRAIN = op(6)
SLEEP = op(10)


def config_read(offset, width_index):
    return op(3 | width_index << 4, bytes([offset]))


def config_write(offset, width_index, value):
    return op(4 | width_index << 4, bytes([offset]), value)


def host_input(data):
    return op(5, struct.pack("<H", len(data)), data)


def memory(size, pieces):
    m = bytearray(size)
    for at, data in pieces:
        m[at:at + len(data)] = data
    return bytes(m)


def desc(addr, length, flags=0, next_=0):
    return struct.pack("<QIHH", addr, length, flags, next_)


def avail(*heads):
    return struct.pack("<HH", 0, len(heads)) + b"".join(
        struct.pack("<H", h) for h in heads)


def virtio(which, queues, ops, mem):
    return bytes([which]) + b"".join(queues) + struct.pack("<H", len(ops)) + ops + mem


# rng: one 64-byte writable buffer.
rng_mem = memory(0x500, [(0x0, desc(0x400, 64, F_WRITE)), (0x100, avail(0))])
save("virtio_devices", "rng_request",
     virtio(RNG, [queue(8, 0x0, 0x100, 0x200)],
            activate() + notify(0) + INSPECT + RESET + config_read(0, 2), rng_mem))
# rng: a chain of two writable buffers, reset and activated again.
rng2_mem = memory(0x600, [(0x0, desc(0x400, 16, F_WRITE | F_NEXT, 1) + desc(0x500, 48, F_WRITE)),
                          (0x100, avail(0))])
save("virtio_devices", "rng_chain_reactivate",
     virtio(RNG, [queue(4, 0x0, 0x100, 0x200)],
            activate() + RESET + activate() + notify(0) + notify(1), rng2_mem))

# Two-queue devices: rx (desc 0x0, avail 0x100, used 0x200), tx (desc
# 0x300, avail 0x400, used 0x500); rx buffer at 0x800, tx buffer at 0xa00.
frame = b"\xff" * 6 + b"\x52\x54\x00\x12\x34\x56" + b"\x08\x06" + bytes(46)
two_q = [queue(8, 0x0, 0x100, 0x200), queue(8, 0x300, 0x400, 0x500)]
net_mem = memory(0xa00 + 12 + len(frame), [
    (0x0, desc(0x800, 0x200, F_WRITE)), (0x100, avail(0)),
    (0x300, desc(0xa00, 12 + len(frame))), (0x400, avail(0)),
    (0xa00, bytes(12) + frame)])
save("virtio_devices", "net_tx_rx",
     virtio(NET, two_q,
            host_input(bytes(12) + frame) + activate() + notify(1) + notify(0)
            + SLEEP + SLEEP + DRAIN + INSPECT
            + config_read(0, 0) + config_read(6, 1) + config_read(4, 2) + config_read(8, 6)
            + RESET + activate() + SLEEP + RESET, net_mem))
save("virtio_devices", "net_stop_mid_flight",
     virtio(NET, two_q,
            activate() + host_input(bytes(12) + frame) + op(9) + notify(0) + SLEEP
            + activate() + notify(1) + DRAIN, net_mem))

con_mem = memory(0xa00 + 5, [
    (0x0, desc(0x800, 0x10, F_WRITE)), (0x100, avail(0)),
    (0x300, desc(0xa00, 5)), (0x400, avail(0)), (0xa00, b"hello")])
save("virtio_devices", "console_io",
     virtio(CONSOLE, two_q,
            host_input(b"input bytes") + activate() + notify(1) + notify(0)
            + config_write(8, 0, b"x") + config_write(6, 2, b"abcd")
            + config_read(0, 7) + INSPECT + RESET + host_input(b"more"), con_mem))


# ---- fw_cfg ---------------------------------------------------------------
# Ops: kind byte (bits 0-1 op, 2-4 width index), 2-byte offset/what, then
# the value (writes) or an 8-byte argument (Other).
def fw_op_write(offset, width_index, value, width):
    return bytes([1 | (width_index << 2)]) + struct.pack("<H", offset) + value.to_bytes(width, "little")


def fw_op_read(offset):
    return bytes([0]) + struct.pack("<H", offset)


def fw_op_other(what, arg):
    return bytes([3]) + struct.pack("<H", what) + struct.pack("<Q", arg)


def fw_seed(ops):
    return struct.pack("<H", len(ops)) + ops


# Select the directory by port, read its count and first entry, check it.
dir_by_ports = fw_op_write(0, 1, 0x19, 2) + b"".join(fw_op_read(1) for _ in range(68))
save("fw_cfg", "directory_by_ports", fw_seed(dir_by_ports + fw_op_other(0, 2)))
# DMA: select key 0x20 (the first file) and read 20 bytes to 0x2000.
READ, SKIP, SELECT = 2, 4, 8
dma = (((READ | SELECT) << 2) | (20 << 8) | (0x20 << 32) | (0x80 << 48))
save("fw_cfg", "dma_select_read", fw_seed(fw_op_other(0x10, dma)))
# DMA: skip then read past the end; a structure at the top of RAM.
dma_skip = (((SKIP | SELECT) << 2) | (4000 << 8) | (0x22 << 32))
dma_tail = ((READ << 2) | (0x2000 << 8) | (0x3fff << 48))
save("fw_cfg", "dma_skip_past_end",
     fw_seed(fw_op_other(0x20, dma_skip) + fw_op_other(0xff, dma_tail)))
# A host file with an odd name, then the directory and the inspector.
save("fw_cfg", "odd_file_name",
     fw_seed(fw_op_other(0x2f, 1 | (0x6574632f << 8)) + fw_op_other(0, 2) + fw_op_other(0, 3)))
