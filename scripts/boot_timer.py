#!/usr/bin/env python3
"""Time from process start to a marker line on stdout, and peak RSS then.

    boot_timer.py MARKER TIMEOUT_S -- COMMAND...

Starts COMMAND, reads its stdout until a line contains MARKER, then prints
"SECONDS PEAK_RSS_KIB" (VmHWM from /proc/PID/status at that moment) and
kills the command. Exits 1 if the marker does not appear in time.
"""
import os
import select
import signal
import subprocess
import sys
import time


def spawn(cmd):
    """Starts COMMAND in its own session, stdin from /dev/null, stdout piped."""
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def chunks(proc, start, timeout):
    """Yields (seconds since `start`, bytes) as `proc`'s stdout arrives,
    until TIMEOUT seconds after `start`; end of output is a last empty
    chunk."""
    while time.monotonic() - start < timeout:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if not ready:
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        yield time.monotonic() - start, chunk
        if not chunk:
            return


def kill(proc):
    """Kills the command's whole session and reaps it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def main():
    marker, timeout = sys.argv[1].encode(), float(sys.argv[2])
    cmd = sys.argv[sys.argv.index("--") + 1:]
    start = time.monotonic()
    proc = spawn(cmd)
    buf = b""
    found = None
    for now, chunk in chunks(proc, start, timeout):
        buf += chunk
        if marker in buf:
            found = now
            break
        buf = buf[-len(marker) * 2:]
    rss = 0
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    kill(proc)
    if found is None:
        print("marker not seen", file=sys.stderr)
        sys.exit(1)
    print(f"{found:.3f} {rss}")


if __name__ == "__main__":
    main()
