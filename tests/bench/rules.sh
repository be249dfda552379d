#!/bin/sh
# Rules benchmark: events per second through pre-decoding, decoding and the rule engine with OSSEC's
# stock decoders and rules (its include order, rule 31140 removed as in the OSSEC reference run), on
# the 200,000-line corpus from ../shared/bench/corpus/gen.py (seed 1), on one core, every alert
# formatted as JSON to /dev/null; peak RSS; alert counts per rule id against OSSEC's
# (../shared/bench/corpus/ossec-alerts-per-rule.txt).
#
# Usage: tests/bench/rules.sh [LINES]     (set KEEP_31140=1 to keep rule 31140)
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
shared="$repo/../shared"
# From a worktree the shared folder may sit one level higher.
[ -d "$shared/ossec-ruleset" ] || shared="$repo/../../shared"
[ -d "$shared/ossec-ruleset" ] || { echo "ossec-ruleset not found next to $repo" >&2; exit 2; }
lines=${1:-200000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 "$shared/bench/corpus/gen.py" --lines "$lines" --seed 1 -o "$tmp/corpus.log"
cp -r "$shared/ossec-ruleset/rules" "$tmp/rules"
if [ "${KEEP_31140:-0}" != 1 ]; then
    python3 - "$tmp/rules/web_rules.xml" <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
s2 = re.sub(r'\s*<rule id="31140".*?</rule>', '', s, count=1, flags=re.S)
assert s2 != s, "rule 31140 not found"
open(p, "w").write(s2)
PY
fi
ref=""
[ "$lines" = 200000 ] && [ "${KEEP_31140:-0}" != 1 ] && ref="--reference $shared/bench/corpus/ossec-alerts-per-rule.txt"

cd "$repo"
cargo build --release --bench rules >/dev/null 2>&1 || cargo build --release --bench rules
bin=$(ls -t target/release/deps/rules-* | grep -v '\.d$' | head -1)
# One core.
# shellcheck disable=SC2086
taskset -c 0 "$bin" "$tmp/corpus.log" "$shared/ossec-ruleset/decoder.xml" "$tmp/rules" \
    --order "$shared/ossec-ruleset/rules-include-order.txt" $ref
