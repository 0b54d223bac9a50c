#!/usr/bin/env bash
# Make the outside tools some tests drive available when this machine allows it:
#   promtool, for tests/deploy/test_monitoring.py (Debian package prometheus);
#   the PostgreSQL server, for the fixture in tests/pg.py (Debian package postgresql);
#   the system's python3, which runs the archive helper as the postgres user
#   (tests/sources/test_postgres_wal.py), since that user cannot run the project's venv.
#
# Never fails: without promtool the monitoring tests fall back to structural checks, and
# without PostgreSQL the tests that need it fail with a message pointing here, so a
# machine where we cannot install (not root, no apt-get) says in one line what it lacks.
# Safe to run again: a tool already there is skipped, and with both it exits at once.
set -euo pipefail

have_promtool() {
    command -v promtool >/dev/null 2>&1
}

# tests/pg.py looks only in Debian's versioned folders, never on PATH, so this does too.
have_postgres() {
    local bin
    for bin in /usr/lib/postgresql/*/bin; do
        if [[ -x "$bin/initdb" && -x "$bin/postgres" ]]; then
            return 0
        fi
    done
    return 1
}

unavailable() {
    case "$1" in
        prometheus) echo "promtool unavailable ($2); monitoring tests use structural checks" ;;
        postgresql) echo "PostgreSQL unavailable ($2); tests using tests/pg.py will fail" ;;
        python3-minimal) echo "no /usr/bin/python3 ($2); the archive-helper test will fail" ;;
    esac
}

wanted=()
have_system_python() {
    [[ -x /usr/bin/python3 ]]
}

have_promtool || wanted+=(prometheus)
have_postgres || wanted+=(postgresql)
have_system_python || wanted+=(python3-minimal)
if [[ ${#wanted[@]} -eq 0 ]]; then
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    for package in "${wanted[@]}"; do
        unavailable "$package" "needs root and apt-get"
    done
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive

# Debian ships promtool only inside the server package (bookworm: prometheus 2.42,
# /usr/bin/promtool); there is no promtool-only package. postgresql pulls in the
# current major's server (bookworm: postgresql-15, /usr/lib/postgresql/15/bin).
for package in "${wanted[@]}"; do
    candidate="$(apt-cache policy "$package" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
        # Offline, the install below fails and says so; this must not stop the script.
        apt-get update -qq || true
        break
    fi
done

# The packages' maintainer scripts start their servers. A policy-rc.d that answers 101
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

# Belt and braces for hosts where a service was started or enabled anyway: tests need
# the binaries, not servers of the machine's own running in the background.
stop_service() {
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now "$1" >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        service "$1" stop >/dev/null 2>&1 || true
    fi
}

# --no-install-recommends skips prometheus-node-exporter, another daemon we do not want,
# and postgresql-contrib and sysstat, which the tests do not use. postgresql's install
# still creates a "main" cluster under /var/lib/postgresql; policy-rc.d keeps it stopped.
for package in "${wanted[@]}"; do
    if ! apt-get install -y -qq --no-install-recommends "$package" >/dev/null; then
        unavailable "$package" "apt-get install $package failed"
        continue
    fi
    stop_service "$package"
    case "$package" in
        python3-minimal)
            /usr/bin/python3 --version
            ;;
        prometheus)
            if have_promtool; then
                promtool --version 2>&1 | head -n 1
            else
                unavailable prometheus "package installed but no promtool on PATH"
            fi
            ;;
        postgresql)
            if have_postgres; then
                newest="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
                "$newest/postgres" --version
            else
                unavailable postgresql "package installed but no /usr/lib/postgresql/*/bin/initdb"
            fi
            ;;
    esac
done
