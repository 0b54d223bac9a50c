#!/usr/bin/env bash
# Install the peer tools the benchmarks measure reprieve against (restic, borg, pgBackRest),
# from the distribution's packages. Safe to run repeatedly: it only installs
# what is missing and refreshes the package lists at most once.
set -euo pipefail

declare -A package_for=([restic]=restic [borg]=borgbackup [pgbackrest]=pgbackrest)
missing=()
for cmd in restic borg pgbackrest; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        missing+=("${package_for[$cmd]}")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "peers present: $(restic version | head -n1); $(borg --version); $(pgbackrest version)"
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi

echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends "${missing[@]}"
echo "peers installed: $(restic version | head -n1); $(borg --version); $(pgbackrest version)"
