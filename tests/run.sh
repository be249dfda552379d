#!/usr/bin/env bash
# Runs every test of the project: unit tests, the end-to-end tests of the real binary, and the
# OSSEC compatibility suite. Installs the system packages the tests use when run as root (as CI does).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the end-to-end tests start for real (servers on 127.0.0.1, journal tools).
PKGS=(python3 python3-pip procps util-linux systemd systemd-journal-remote rsyslog rsyslog-gnutls openssl nftables iptables)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "tests/run.sh: missing packages: ${missing[*]} (run as root once, or apt-get install them)" >&2
    exit 2
  fi
fi

# Python packages the end-to-end tests run (the SMTP server of the email tests).
if ! python3 -c "import aiosmtpd" 2>/dev/null; then
  python3 -m pip install --quiet aiosmtpd 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages aiosmtpd
fi

cargo test --workspace --locked "$@"
