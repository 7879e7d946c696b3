#!/usr/bin/env bash
# DALI for the lent GPU machine (Python 3.12, CUDA 13), as parts small enough for one transfer
# each: downloads the wheels, installs them into one tree, drops what that Python never loads
# (other Pythons' modules, headers) and writes .dali1/part-00, .dali2/part-01, ... (xz, split).
# benchmarks/gpu_session.sh `stage` and `dali-speed` put them back together there.
#
#   bash benchmarks/dali_parts.sh [PARTS]     # default 3 parts (about 58 MiB each)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
parts=${1:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
wheels=(nvidia-dali-cuda130==2.4.0 nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.3.2.43
        nvidia-libnvcomp-cu13==5.3.0.16 astunparse==1.6.3 gast==0.7.0 optree==0.20.0
        nvtx==0.2.17 makefun==1.16.0 libcst==1.9.0)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d "$work/wheels" "${wheels[@]}"
python3 -m pip install -q --no-deps --no-compile --target "$work/site" --python-version 3.12 \
    --implementation cp --only-binary=:all: "${platforms[@]}" "$work"/wheels/*.whl
find "$work/site" -name '*cpython-3*' ! -name '*cpython-312*' -delete
find "$work/site" -name include -type d -prune -exec rm -rf {} +
rm -f "$work/site/nvidia/__init__.py"  # keep `nvidia` a namespace beside torch's CUDA wheels
tar cf - -C "$work/site" . | xz -T0 -6 > "$work/site.tar.xz"
split -n "$parts" -d "$work/site.tar.xz" "$work/part-"
for i in $(seq 1 "$parts"); do
    rm -rf ".dali$i" && mkdir ".dali$i"
    mv "$work/part-$(printf '%02d' $((i - 1)))" ".dali$i/"
done
ls -l .dali*/part-*
