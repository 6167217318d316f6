#!/usr/bin/env python3
"""Stamp each stdout line of a command with the host's clock.

    line_timer.py TIMEOUT_S -- COMMAND...

Runs COMMAND (stdin from /dev/null; process handling shared with
boot_timer.py) and prints every line of its stdout
as "SECONDS LINE", SECONDS counted from the start on the host's monotonic
clock, so a benchmark can time what happens between two lines a guest
prints without trusting the guest's clock. Kills the command after
TIMEOUT_S seconds and exits 1 then.
"""
import sys
import time

from boot_timer import chunks, kill, spawn


def main():
    timeout = float(sys.argv[1])
    cmd = sys.argv[sys.argv.index("--") + 1:]
    start = time.monotonic()
    proc = spawn(cmd)
    buf = b""
    timed_out = True
    for now, chunk in chunks(proc, start, timeout):
        if not chunk:
            timed_out = False
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace").rstrip("\r")
            print(f"{now:.3f} {text}", flush=True)
    if buf:
        print(f"{time.monotonic() - start:.3f} {buf.decode(errors='replace')}")
    kill(proc)
    if timed_out:
        print("timed out", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
