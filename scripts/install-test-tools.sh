#!/usr/bin/env bash
# Make `promtool` available for tests/deploy/test_monitoring.py when this machine allows it.
#
# Never fails: without promtool the tests fall back to structural checks, so a machine
# where we cannot install it (not root, no apt-get) only loses the stronger check.
# Safe to run again: it exits at once once promtool is on PATH.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "promtool unavailable (needs root and apt-get); monitoring tests use structural checks"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive

# Debian ships promtool only inside the server package (bookworm: prometheus 2.42,
# /usr/bin/promtool); there is no promtool-only package.
candidate="$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')"
if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
    apt-get update -qq
fi

# The package's maintainer scripts start the server. A policy-rc.d that answers 101
# ("action forbidden") is the Debian way to stop that; keep one that is already there.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    made_policy=1
fi
cleanup() {
    if [[ "$made_policy" -eq 1 ]]; then
        rm -f "$policy"
    fi
}
trap cleanup EXIT

# --no-install-recommends skips prometheus-node-exporter, another daemon we do not want.
if ! apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
    echo "promtool unavailable (apt-get install prometheus failed); monitoring tests use structural checks"
    exit 0
fi

# Belt and braces for hosts where the service was started or enabled anyway: tests need
# the binary, not a Prometheus server scraping in the background.
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
elif command -v service >/dev/null 2>&1; then
    service prometheus stop >/dev/null 2>&1 || true
fi

if command -v promtool >/dev/null 2>&1; then
    promtool --version 2>&1 | head -n 1
else
    echo "promtool unavailable (package installed but no promtool on PATH); monitoring tests use structural checks"
fi
