#!/usr/bin/env bash
# Soak benchmark of the agent (issue 8): a day of a busy API server's logs compressed by 20x,
# through the real `hids run` with the project's decoders and rules, a FIM tree scanned every
# minute and the file outputs. Reports:
#   - RSS of the agent at the start (after a warm-up) and at the end, and its peak: flat is good;
#   - lines written vs events read and analysed (from the Prometheus endpoint): equal, nothing lost;
#   - CPU seconds (user + system) per 1,000 events, and the alerts raised.
#
# "Busy server": BUSY_RATE lines/s (default 100: an API under steady load with its auth log);
# the soak writes RATE = 20 x BUSY_RATE lines/s for SOAK_MINUTES (default 10).
#
# Usage: tests/bench/soak.sh            (env: SOAK_MINUTES=10, BUSY_RATE=100, BENCH_DIR=/tmp)
#        SOAK_MINUTES=2 tests/bench/soak.sh   for a short run
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

MINUTES=${SOAK_MINUTES:-10}
BUSY=${BUSY_RATE:-100}
RATE=$((BUSY * 20))
SECONDS_TOTAL=$((MINUTES * 60))

cargo build --release --quiet
HIDS=$ROOT/target/release/hids

WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/hids-soak.XXXXXX")
PID=
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/tree/etc" "$WORK/tree/bin"
for i in $(seq 1 200); do echo "setting$i = $i" >"$WORK/tree/etc/conf$i"; done
: >"$WORK/app.log"
cat >"$WORK/hids.toml" <<EOF
[agent]
state_dir = "$WORK/state"
log_level = "warn"
metrics_listen = "127.0.0.1:$PORT"
[fim]
interval = 60
[[fim.paths]]
path = "$WORK/tree"
[[logs]]
path = "$WORK/app.log"
format = "syslog"
[rules]
decoders = ["$ROOT/decoders"]
rules = ["$ROOT/rules"]
EOF

"$HIDS" --config "$WORK/hids.toml" run 2>"$WORK/agent.log" &
PID=$!

metric() { # metric NAME -> value (0 when absent)
  curl -s "http://127.0.0.1:$PORT/metrics" | awk -v n="$1" '$1 == n { print $2; found = 1 } END { if (!found) print 0 }'
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$PID/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }

for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/metrics" && break
  sleep 0.1
done

# The writer: a mix of sshd failures and successes, API access lines (200s, 401 bursts, the odd
# SQL injection and path traversal), sudo and cron, appended in 100 ms slices at RATE lines/s.
cat >"$WORK/gen.py" <<'EOF'
import random, sys, time
path, rate, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(8)
def ip():
    return f"203.0.113.{random.randint(1, 254)}"
def line(t):
    ts = time.strftime("%b %d %H:%M:%S", time.localtime(t))
    r = random.random()
    if r < 0.55:
        status = random.choice([200] * 12 + [201, 204, 304, 401, 403, 404, 500])
        return (f'{ts} api1 nginx: {ip()} - - [22/Nov/2026:03:00:00 +0000] '
                f'"GET /v1/orders/{random.randint(1, 99999)} HTTP/1.1" {status} 512 "-" "client/1.0"')
    if r < 0.57:
        return (f'{ts} api1 nginx: {ip()} - - [22/Nov/2026:03:00:00 +0000] '
                f'"GET /v1/items?id=1%20UNION%20SELECT%20password%20FROM%20users HTTP/1.1" 200 90 "-" "sqlmap"')
    if r < 0.80:
        return (f"{ts} api1 sshd[{random.randint(1000, 9999)}]: Failed password for invalid user "
                f"admin{random.randint(1, 50)} from {ip()} port {random.randint(1024, 65535)} ssh2")
    if r < 0.90:
        return (f"{ts} api1 sshd[{random.randint(1000, 9999)}]: Accepted publickey for deploy "
                f"from 198.51.100.7 port {random.randint(1024, 65535)} ssh2")
    if r < 0.95:
        return f"{ts} api1 sudo:   deploy : TTY=pts/0 ; PWD=/srv ; USER=root ; COMMAND=/usr/bin/systemctl restart api"
    return f"{ts} api1 CRON[{random.randint(1000, 9999)}]: (root) CMD (/usr/local/bin/backup)"
written = 0
start = time.monotonic()
with open(path, "a", buffering=1 << 20) as f:
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        due = int(min(elapsed + 0.1, seconds) * rate)
        now = time.time()
        f.write("".join(line(now) + "\n" for _ in range(due - written)))
        f.flush()
        written = due
        time.sleep(max(0.0, start + (due / rate) - time.monotonic()))
print(written)
EOF

sleep 5
RSS_START=$(rss_kb)
CPU_START=$(cpu_ticks)
ANALYSED_START=$(metric 'hids_events_analysed_total{kind="log"}')
echo "soak: $RATE lines/s (20 x $BUSY) for $MINUTES min; agent pid $PID, RSS at start ${RSS_START} kB"

python3 "$WORK/gen.py" "$WORK/app.log" "$RATE" "$SECONDS_TOTAL" >"$WORK/written" &
GEN=$!
RSS_MAX=$RSS_START
while kill -0 "$GEN" 2>/dev/null; do
  sleep 10
  r=$(rss_kb)
  [ "$r" -gt "$RSS_MAX" ] && RSS_MAX=$r
  echo "  t+$((SECONDS))s RSS ${r} kB, analysed $(metric 'hids_events_analysed_total{kind="log"}')"
done
wait "$GEN"
WRITTEN=$(cat "$WORK/written")

# Let the agent catch up (bounded), then read the counters.
LINE_SRC="hids_source_events_total{source=\"$WORK/app.log\"}"
for _ in $(seq 1 600); do
  [ "$(metric 'hids_events_analysed_total{kind="log"}')" -ge "$((WRITTEN + ANALYSED_START))" ] && break
  sleep 0.5
done
READ=$(metric "$LINE_SRC")
ANALYSED=$(metric 'hids_events_analysed_total{kind="log"}')
RSS_END=$(rss_kb)
CPU_END=$(cpu_ticks)
ALERTS=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^hids_alerts_total/ { s += $2 } END { print s + 0 }')
TICKS=$(getconf CLK_TCK)

kill -TERM "$PID"
wait "$PID" || true
PID=

python3 - "$WRITTEN" "$READ" "$ANALYSED" "$RSS_START" "$RSS_END" "$RSS_MAX" \
  "$CPU_START" "$CPU_END" "$TICKS" "$ALERTS" "$MINUTES" "$RATE" <<'EOF'
import sys
w, rd, an, r0, r1, rmax, c0, c1, tck, alerts, mins, rate = map(int, sys.argv[1:])
cpu = (c1 - c0) / tck
print(f"lines written {w}, read {rd}, analysed {an}: {'nothing lost' if w == rd == an else 'MISMATCH'}")
print(f"RSS start {r0} kB, end {r1} kB ({(r1 - r0) / max(r0, 1) * 100:+.1f}%), peak {rmax} kB")
print(f"CPU {cpu:.1f} s over {mins} min at {rate} lines/s: {cpu / max(an, 1) * 1000 * 1000:.1f} ms per 1,000 events")
print(f"alerts raised: {alerts}")
sys.exit(0 if w == rd == an else 1)
EOF
