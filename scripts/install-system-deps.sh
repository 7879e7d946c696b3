#!/usr/bin/env bash
# Debian packages the test suite needs (run as root; idempotent, quick when all are present).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The linter shellcheck checks generated scripts; libgomp1 and libquadmath0 are loaded by mxnet, whose own
# RecordIO readers judge the prepared datasets. podman, mmdebstrap and squashfs-tools make the real
# image builds of tests/test_image_build.py (a Debian base, podman build, enroot's squashfs).
# libpmix-dev lets Slurm's mpi/pmix plugin load (NVIDIA's jobs start MPI through PMIx).
# chromium views `collect --format html` in tests/test_results_report.py (headless screenshot).
packages=(shellcheck libgomp1 libquadmath0 podman mmdebstrap squashfs-tools libpmix-dev chromium)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$package")
done
updated=0
if ((${#missing[@]})); then
    apt-get update -qq
    updated=1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [[ -x tests/slurm/install.sh ]]; then
    HPCREPRO_SKIP_APT_UPDATE=$updated bash tests/slurm/install.sh
fi
# enroot and pyxis, built from the shared sources (their own build and run-time packages).
HPCREPRO_SKIP_APT_UPDATE=$updated bash tests/runtime/build.sh >/dev/null
