#!/usr/bin/env bash
# Benchmark of log collection, against a reference tool run in the same invocation.
#
# 1. Throughput: lines read from a file (default 1 GB of syslog-like lines, from the page cache) and
#    handed on to the consumer, which acknowledges them (`hids tail --once --count`: the same
#    readers, channel and position bookkeeping as the agent, without printing), against `wc -l` on
#    the same file. Target: hids takes at most 3x the time of wc -l.
# 2. Latency: from a line appended to a followed file to its event printed by `hids tail`
#    (inotify wake-up, read, channel, JSON, stdout), over LAT_N appends. Target: p99 < 50 ms.
#
# Usage: tests/bench/logs.sh [SIZE_MB]   (env: RUNS=3, LAT_N=1000, BENCH_DIR=/tmp)
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZE_MB=${1:-1024}
LAT_N=${LAT_N:-1000}
RUNS=${RUNS:-3}
cargo build --release --quiet
HIDS=$PWD/target/release/hids

WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/hids-bench-logs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOG=$WORK/big.log

# A 1 MiB block of varied syslog lines, repeated.
python3 - "$WORK/block" <<'EOF'
import sys
out = []
size = 0
i = 0
while size < (1 << 20):
    line = (f"Nov 22 03:{i % 60:02d}:{(i * 7) % 60:02d} web1 sshd[{1000 + i % 5000}]: "
            f"Failed password for invalid user admin{i % 97} from 10.{i % 256}.{(i // 256) % 256}.7 "
            f"port {20000 + i % 40000} ssh2\n")
    out.append(line)
    size += len(line)
    i += 1
open(sys.argv[1], "w").write("".join(out))
EOF
for _ in $(seq 1 "$SIZE_MB"); do cat "$WORK/block"; done > "$LOG"
BYTES=$(stat -c %s "$LOG")
cat "$LOG" > /dev/null # into the page cache for both readers

now() { date +%s.%N; }
# CPU seconds (user + system) of each command too: on a busy machine wall time mostly measures
# the other load. The pair is measured RUNS times (a fresh state each time) and the median ratios
# reported.
TIMEFORMAT='%U %S'
: > "$WORK/runs"
for run in $(seq 1 "$RUNS"); do
    cat > "$WORK/throughput.toml" <<EOF
[agent]
state_dir = "$WORK/state-throughput-$run"
hostname = "bench"
log_level = "warn"
[[logs]]
path = "$LOG"
format = "syslog"
start = "beginning"
EOF
    t0=$(now); { time wc -l < "$LOG" > "$WORK/wc.out"; } 2> "$WORK/wc.cpu"; t1=$(now)
    { time "$HIDS" --config "$WORK/throughput.toml" tail --once --count > "$WORK/hids.out"; } 2> "$WORK/hids.cpu"; t2=$(now)
    t3=$(now); wc -l < "$LOG" > /dev/null; t4=$(now)
    echo "$t0 $t1 $t2 $t3 $t4 $(cat "$WORK/wc.out") $(cat "$WORK/hids.out") $(tail -1 "$WORK/wc.cpu") $(tail -1 "$WORK/hids.cpu")" >> "$WORK/runs"
done

python3 - "$WORK/runs" "$BYTES" <<'EOF'
import statistics, sys
size = int(sys.argv[2])
rows = []
for line in open(sys.argv[1]):
    f = line.split()
    t0, t1, t2, t3, t4 = map(float, f[:5])
    wc_lines, hids_lines = int(f[5]), int(f[6])
    wc_cpu, hids_cpu = float(f[7]) + float(f[8]), float(f[9]) + float(f[10])
    wc = min(t1 - t0, t4 - t3)  # the better of the two wc runs around hids
    hids = t2 - t1
    rows.append((hids / wc, hids_cpu / max(wc_cpu, 0.01), wc_lines, hids_lines))
    print(f"run {len(rows)}: wc -l {wc:.3f} s, hids tail {hids:.3f} s ({hids_lines / hids / 1e6:.1f} M lines/s)"
          f" = {hids / wc:.2f}x; CPU (user+sys, all threads) wc -l {wc_cpu:.2f} s, hids {hids_cpu:.2f} s"
          f" = {hids_cpu / max(wc_cpu, 0.01):.2f}x")
print(f"file: {size / 1e9:.2f} GB, {rows[0][2]} lines")
print(f"ratio hids/wc: {statistics.median(r[0] for r in rows):.2f}x wall time (median of {len(rows)})  (target <= 3x)")
print(f"ratio hids/wc: {statistics.median(r[1] for r in rows):.2f}x CPU time (median of {len(rows)})")
for r in rows:
    if r[3] != r[2]:
        print(f"MISMATCH: hids handed on {r[3]} events for {r[2]} lines")
        sys.exit(1)
EOF
rm -f "$LOG"

# Latency: append a line with its write time, wait for it on hids' stdout.
LAT=$WORK/lat.log
: > "$LAT"
cat > "$WORK/latency.toml" <<EOF
[agent]
state_dir = "$WORK/state-latency"
hostname = "bench"
log_level = "warn"
[[logs]]
path = "$LAT"
format = "plain"
start = "beginning"
EOF
python3 - "$HIDS" "$WORK/latency.toml" "$LAT" "$LAT_N" <<'EOF'
import json, subprocess, sys, time
hids, cfg, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
p = subprocess.Popen([hids, "--config", cfg, "tail"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
try:
    # Wait until the file is followed: a probe line comes through (read from the file's beginning
    # whenever hids gets to it).
    with open(path, "a") as f:
        f.write("probe\n"); f.flush()
        while json.loads(p.stdout.readline())["full_log"] != "probe":
            pass
        lat = []
        for i in range(n):
            t = time.monotonic_ns()
            f.write(f"lat {i} {t}\n"); f.flush()
            ev = json.loads(p.stdout.readline())
            got = time.monotonic_ns()
            assert ev["full_log"] == f"lat {i} {t}", ev
            lat.append((got - t) / 1e6)
            time.sleep(0.005)
    lat.sort()
    q = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))]
    print(f"latency append -> event over {n} lines: p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {lat[-1]:.2f} ms  (target p99 < 50 ms)")
finally:
    p.kill()
    p.wait()
EOF
