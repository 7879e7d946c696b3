#!/usr/bin/env bash
# Install the Debian packages of the test Slurm cluster when they are missing (root only).
# Idempotent: does nothing when slurmctld, slurmd, slurmdbd, munged and mariadbd are all present.
# HPCREPRO_SKIP_APT_UPDATE=1 skips `apt-get update` (the caller just ran it).
set -euo pipefail

missing=()
for tool in slurmctld slurmd slurmdbd sbatch munged mariadbd; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "test Slurm: packages already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "test Slurm: missing ${missing[*]}; run this script as root to install them" >&2
    exit 1
fi
echo "test Slurm: installing slurm-wlm slurmdbd munge mariadb-server (missing: ${missing[*]})"
export DEBIAN_FRONTEND=noninteractive
if [ "${HPCREPRO_SKIP_APT_UPDATE:-0}" != 1 ]; then
    apt-get update -qq
fi
# policy-rc.d keeps the packages' own services from starting: start.sh runs every daemon itself.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
status=0
apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge mariadb-server slurm-client >/dev/null || status=$?
if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi
exit "$status"
