#!/usr/bin/env bash
# Make `promtool` and the `prometheus` server available (Debian's `prometheus` package), for the rule tests
# and the end-to-end scrape test. Does nothing when both are already on PATH.
#
# The Debian package would start a system Prometheus on :9090 at install time; this script keeps it from
# starting (policy-rc.d for the install) and stops and disables it if it started anyway, so nothing is
# left listening. Tests start their own Prometheus on a free port.
set -euo pipefail

have() { command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; }
have && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "promtool/prometheus missing: run 'apt-get install -y --no-install-recommends prometheus' as root" >&2
    exit 1
fi

# Two test runs may get here at once; the second waits and then finds the tools installed.
exec 9>/tmp/recovery-ensure-prometheus.lock
flock 9
have && exit 0

policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# Temporary, from scripts/ensure_prometheus.sh: start no daemon while installing.\nexit 101\n' >"$policy"
    chmod +x "$policy"
    made_policy=1
fi
cleanup() { if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
if ! install; then
    apt-get update -q >/dev/null
    install
fi

# If the daemon started anyway (a policy-rc.d that allowed it), stop it and keep it from starting again.
if [ -x /etc/init.d/prometheus ]; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    update-rc.d prometheus disable >/dev/null 2>&1 || true
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

have
echo "installed: $(promtool --version 2>&1 | head -1)"
