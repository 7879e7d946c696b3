#!/usr/bin/env bash
# The GPU checks of issues 5, 6 and 7 in one unattended session on an NVIDIA machine (used on a
# lent 2 x H200 node): DALI reads hpcrepro's RecordIO, detect captures the node, the reference
# workload trains on the GPUs and is timed. Results go under $OUT/gpu (also tarred to one file).
#
#   bash benchmarks/gpu_session.sh checks       # DALI, detect, workload end-to-end check
#   bash benchmarks/gpu_session.sh throughput   # workload images/s on 1 and 2 GPUs
#   bash benchmarks/gpu_session.sh speed        # issue 16: entry point beside its ceiling, 1 GPU
#   bash benchmarks/gpu_session.sh x8           # issue 17: 1/2/4/8-GPU scaling, detect capture
#
#   bash benchmarks/gpu_session.sh stage        # copy this call's DALI parts (.dali*/part-*)
#   bash benchmarks/gpu_session.sh dali-speed   # issue 16: the entry point on DALI, 1 GPU
#
# DALI with its wheels is larger than one transfer: benchmarks/dali_parts.sh makes it an
# installed tree, xz-compressed and split in parts; each call carries one part (`stage`) until the
# last one installs it under /tmp/dali-site. Parts stay in /tmp/dali-parts while the machine is
# warm. DALI already importable is used as it is. A call that also carries a baseline tree
# (workload_speed.py --baseline) needs smaller parts: `bash benchmarks/dali_parts.sh 4`.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
export PYTHONUNBUFFERED=1
OUT=${OUT:-$PWD/gpu-out}
results=/tmp/gpu-results  # many files: only the tarball goes to $OUT
mkdir -p "$results"

nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv | tee "$results/gpus.csv"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())'

stage_dali() {
    mkdir -p /tmp/dali-parts
    cp .dali*/part-* /tmp/dali-parts/ 2>/dev/null
    ls -l /tmp/dali-parts
}

install_dali() {
    if ! python3 -c 'import nvidia.dali' 2>/dev/null; then
        stage_dali
        if [[ ! -d /tmp/dali-site/nvidia/dali ]]; then
            mkdir -p /tmp/dali-site
            cat /tmp/dali-parts/part-* | xz -d | tar xf - -C /tmp/dali-site || return 1
        fi
        export PYTHONPATH="/tmp/dali-site${PYTHONPATH:+:$PYTHONPATH}"
        # libnvjpeg of the nvidia-nvjpeg wheel (torch's CUDA wheels do not carry it).
        export LD_LIBRARY_PATH="/tmp/dali-site/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    python3 -c 'import nvidia.dali; print("DALI", nvidia.dali.__version__)'
}

case "${1:-checks}" in
stage)
    stage_dali
    exit 0
    ;;
checks)
    install_dali || exit 1
    mkdir -p "$results/detect" "$results/dali" "$results/workload-check"
    OUT="$results/detect" timeout 300 python3 benchmarks/detect_capture.py 2>&1 | tee "$results/detect.log"
    OUT="$results/dali" PYTHONPATH="src:${PYTHONPATH:-}" timeout 400 python3 benchmarks/dali_read.py \
        2>&1 | tee "$results/dali.log"
    PYTHONPATH="src:.device-carry" timeout 400 python3 benchmarks/workload_gpu_check.py --nproc 2 \
        --out "$results/workload-check" 2>&1 | tee "$results/workload-check.log"
    ;;
throughput)
    mkdir -p "$results/throughput-1" "$results/throughput-2"
    CUDA_VISIBLE_DEVICES=0 PYTHONPATH=src timeout 280 python3 benchmarks/workload_throughput.py \
        --out "$results/throughput-1" 2>&1 | tee "$results/throughput-1.log"
    PYTHONPATH=src timeout 280 python3 benchmarks/workload_throughput.py --nproc 2 \
        --out "$results/throughput-2" 2>&1 | tee "$results/throughput-2.log"
    ;;
speed)
    # mlperf_logging (pure Python) must be importable: carried under .device-carry/ if missing.
    mkdir -p "$results/speed" "$results/interference"
    CUDA_VISIBLE_DEVICES=0 PYTHONPATH="src:.device-carry:${PYTHONPATH:-}" timeout 580 python3 \
        benchmarks/workload_speed.py --out "$results/speed" 2>&1 | tee "$results/speed.log"
    CUDA_VISIBLE_DEVICES=0 PYTHONPATH=src timeout 200 python3 benchmarks/workload_interference.py \
        --out "$results/interference" 2>&1 | tee "$results/interference.log"
    ;;
dali-speed)
    # DALI beside nvJPEG through the entry point; mlperf_logging carried under .device-carry/.
    install_dali || exit 1
    mkdir -p "$results/speed"
    CUDA_VISIBLE_DEVICES=0 PYTHONPATH="src:$PWD/.device-carry:${PYTHONPATH:-}" timeout 560 python3 \
        benchmarks/workload_speed.py --out "$results/speed" "${@:2}" 2>&1 | tee "$results/speed.log"
    cp "$results/speed/workload_speed.json" "$OUT/" 2>/dev/null
    ;;
x8)
    # mlperf_logging (pure Python) must be importable: carried under .device-carry/ if missing.
    mkdir -p "$results/scaling" "$results/detect"
    PYTHONPATH="src:.device-carry:${PYTHONPATH:-}" timeout 580 python3 benchmarks/workload_scaling.py \
        --out "$results/scaling" 2>&1 | tee "$results/scaling.log"
    OUT="$results/detect" timeout 300 python3 benchmarks/detect_capture.py 2>&1 | tee "$results/detect.log"
    ;;
esac
tar czf "$OUT/gpu-${1:-checks}.tgz" -C "$results" .
