#!/usr/bin/env bash
# Debian packages the test suite needs (run as root; idempotent, quick when all are present).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(shellcheck)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$package")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [[ -x tests/slurm/install.sh ]]; then
    bash tests/slurm/install.sh
fi
