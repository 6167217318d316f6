#!/usr/bin/env python3
"""Append files to an initramfs as a second, uncompressed newc cpio archive.

    userland_initrd.py BASE_INITRD OUTPUT ROOT PATH...

Copies BASE_INITRD to OUTPUT, pads it to a multiple of 4 bytes (the kernel
looks for a following archive only there), then appends ROOT/PATH as PATH
for each PATH (relative, e.g. usr/bin/openssl), with the directories they
need and the /lib64 loader link Debian binaries name. The kernel unpacks
the second archive over the first (Documentation/driver-api/
early-userspace/buffer-format.rst). Used by scripts/bench-simd.sh; the
userland integration test builds the same layout in Rust.
"""
import os
import sys


def entry(name, mode, data):
    fields = [0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    out = b"070701" + b"".join(b"%08x" % f for f in fields) + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def main():
    base, output, root, paths = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    archive = open(base, "rb").read()
    archive += b"\0" * (-len(archive) % 4)
    dirs = sorted({os.path.dirname(p) for p in paths} | {"lib64"})
    done = set()
    for d in dirs:
        parts = d.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub and sub not in done:
                done.add(sub)
                archive += entry(sub, 0o040755, b"")
    for p in paths:
        archive += entry(p, 0o100755, open(os.path.join(root, p), "rb").read())
    loader = b"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    archive += entry("lib64/ld-linux-x86-64.so.2", 0o120777, loader)
    archive += entry("TRAILER!!!", 0, b"")
    open(output, "wb").write(archive)


if __name__ == "__main__":
    main()
