#!/usr/bin/env bash
# Alert outputs benchmark: alerts/s through the spool to alerts.json and to rsyslog over TCP,
# util-linux logger to the same rsyslog as the reference, and the delay from submit to rsyslog's
# receipt (p50/p99). Needs rsyslog (tests/run.sh installs it). BENCH_ALERTS=N changes the count.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench --locked -p hids --bench outputs
