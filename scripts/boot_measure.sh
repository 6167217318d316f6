# Shared by the boot benchmarks (bench-boot.sh, bench-bios.sh); source it
# after setting RUNS, MARKER and TIMEOUT.

# median: the median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# measure COMMAND...: RUNS boots to MARKER (scripts/boot_timer.py); prints
# "median_seconds median_peak_rss_mib".
measure() {
    local out
    out=$(mktemp)
    for _ in $(seq "$RUNS"); do
        scripts/boot_timer.py "$MARKER" "$TIMEOUT" -- "$@" >>"$out"
    done
    local secs rss
    secs=$(awk '{print $1}' "$out" | median)
    rss=$(awk '{print $2}' "$out" | median)
    rm -f "$out"
    echo "$secs $((rss / 1024))"
}
