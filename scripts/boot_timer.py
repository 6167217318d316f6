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


def main():
    marker, timeout = sys.argv[1].encode(), float(sys.argv[2])
    cmd = sys.argv[sys.argv.index("--") + 1:]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    buf = b""
    found = None
    while time.monotonic() - start < timeout:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if not ready:
            continue
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        if marker in buf:
            found = time.monotonic() - start
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
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if found is None:
        print("marker not seen", file=sys.stderr)
        sys.exit(1)
    print(f"{found:.3f} {rss}")


if __name__ == "__main__":
    main()
