#!/usr/bin/env bash
# FIM benchmark: hids against b3sum, a stat-only walk and AIDE on the same corpus, in one run,
# with a warm page cache. Prints each timing (best of $RUNS) and the ratios the FIM issue asks for:
#   (a) hids fim init            / b3sum, two parallel processes
#   (b) hids fim check (no change) / find stat-only walk
#   (c) hids fim check --full    / b3sum, two parallel processes
#   (d) hids fim init            / aide --init with sha256
#   (e) peak RSS of hids fim init and check
#
# Usage: tests/bench/fim.sh [CORPUS_DIR]   (env: RUNS=3; HIDS=path/to/hids to measure another build)
#   CORPUS_DIR defaults to $FIM_CORPUS or /tmp/fim-corpus; it is built with
#   ../shared/bench/fim/make-corpus.sh when missing (a copy of /usr, about 5 GB).
# Needs: b3sum, aide, GNU time (Debian packages b3sum aide time); installs them when root.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
CORPUS=${1:-${FIM_CORPUS:-/tmp/fim-corpus}}
RUNS=${RUNS:-3}

need=()
command -v b3sum >/dev/null || need+=(b3sum)
command -v aide >/dev/null || need+=(aide)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "fim.sh: install ${need[*]} first" >&2; exit 2
  fi
fi

if [ ! -d "$CORPUS" ]; then
  "$ROOT/../shared/bench/fim/make-corpus.sh" "$CORPUS"
fi
CORPUS=$(cd "$CORPUS" && pwd)

if [ -z "${HIDS:-}" ]; then
  cargo build --release --quiet
  HIDS=$ROOT/target/release/hids
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/hids.toml" <<EOF
[agent]
state_dir = "$WORK/state"
log_level = "warn"
[fim]
interval = 0
[[fim.paths]]
path = "$CORPUS"
EOF
cat >"$WORK/aide.conf" <<EOF
database_in=file:$WORK/aide.db
database_out=file:$WORK/aide.db.new
gzip_dbout=no
report_url=stdout
Hashed = p+i+n+u+g+s+m+c+sha256
$CORPUS Hashed
EOF

# Each command is run $RUNS times, the commands taking turns (b3sum, find, hids, aide, b3sum, ...)
# so that a busy machine weighs on all of them alike; the best wall time of each is kept, with the
# peak RSS of that run.
declare -A WALL RSS
LABELS=()
declare -A CMDS
add() { local label=$1; shift; LABELS+=("$label"); CMDS[$label]=$(printf '%q ' "$@"); }

once() {
  local label=$1
  eval "/usr/bin/time -f '%e %M' -o \"$WORK/time\" ${CMDS[$label]}" >/dev/null 2>"$WORK/err" || {
    local rc=$?
    # fim check exits 1 when something changed (it should not here).
    [ "$rc" = 1 ] || { echo "fim.sh: $label failed ($rc):" >&2; cat "$WORK/err" >&2; exit 1; }
  }
  read -r t m < <(tail -1 "$WORK/time")
  if [ -z "${WALL[$label]:-}" ] || (( $(echo "$t < ${WALL[$label]}" | bc) )); then
    WALL[$label]=$t; RSS[$label]=$m
  fi
}

b3_two() { find "$CORPUS" -type f -print0 | xargs -0 -P2 -n500 b3sum >/dev/null; }
b3_one() { find "$CORPUS" -type f -print0 | xargs -0 -n500 b3sum >/dev/null; }
stat_walk() { find "$CORPUS" -printf '%s %T@ %C@ %i %m %U %G\n' >/dev/null; }
export -f b3_two b3_one stat_walk
export CORPUS

echo "corpus: $CORPUS ($(find "$CORPUS" -type f | wc -l) files, $(du -sh "$CORPUS" | cut -f1)); $(nproc) cores; $RUNS rounds, best kept; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "warming the page cache..."
b3_two

add "b3sum (2 processes)" bash -c b3_two
add "b3sum (1 process)" bash -c b3_one
add "find stat walk" bash -c stat_walk
add "hids fim init" "$HIDS" -c "$WORK/hids.toml" fim init
add "hids fim check (no change)" "$HIDS" -c "$WORK/hids.toml" fim check
add "hids fim check --full" "$HIDS" -c "$WORK/hids.toml" fim check --full
add "aide --init (sha256)" aide --init -c "$WORK/aide.conf"

for r in $(seq "$RUNS"); do
  for label in "${LABELS[@]}"; do once "$label"; done
  echo "round $r done (load average $(cut -d' ' -f1-3 /proc/loadavg))"
done
for label in "${LABELS[@]}"; do
  printf '%-34s %8.2f s  peak RSS %6d MiB\n' "$label" "${WALL[$label]}" "$((RSS[$label] / 1024))"
done

ratio() { echo "scale=3; $1 / $2" | bc; }
echo
echo "(a) hids fim init / b3sum x2:          $(ratio "${WALL[hids fim init]}" "${WALL[b3sum (2 processes)]}")  (target <= 1.0)"
echo "(b) hids fim check / stat walk:        $(ratio "${WALL[hids fim check (no change)]}" "${WALL[find stat walk]}")  (target <= 1.5)"
echo "(c) hids fim check --full / b3sum x2:  $(ratio "${WALL[hids fim check --full]}" "${WALL[b3sum (2 processes)]}")  (target <= 1.0)"
echo "(d) hids fim init / aide --init sha256: $(ratio "${WALL[hids fim init]}" "${WALL[aide --init (sha256)]}")  (target <= 0.07)"
echo "(e) peak RSS: init $((RSS[hids fim init] / 1024)) MiB, check $((RSS[hids fim check (no change)] / 1024)) MiB, check --full $((RSS[hids fim check --full] / 1024)) MiB  (target < 60 MB)"
