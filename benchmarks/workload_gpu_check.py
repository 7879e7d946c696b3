"""`python -m hpcrepro.workload.train` itself on GPUs: NCCL, bf16, channels_last, MLLOG, end to end.

workload_throughput.py times the model and the loader; this script runs the real entry point the
job scripts start, one process per GPU with the Slurm variables hpcrepro's local launcher sets:
  1. the tiny profile on its synthetic set, which must end with run_stop status success;
  2. the full profile (ResNet-50, 224 px, 1000 classes) for one epoch on an ImageNet-sized
     RecordIO set built here, reporting the epoch's images/s from the MLLOG tracked_stats.
Needs torch, numpy, Pillow, hpcrepro's workload modules and mlperf_logging's `mllog` (standard
library only; carry a copy of the package if the machine lacks it):
  PYTHONPATH=src:.device-carry python3 benchmarks/workload_gpu_check.py [--nproc 2]
Writes the logs and $OUT/workload_gpu_check.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, SRC)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from workload_throughput import build_recordio  # noqa: E402

from hpcrepro.workload.synthetic import pack_dataset, write_synthetic_imagenet  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(nproc: int, args: list[str], env: dict[str, str], log: Path) -> dict:
    """Start one training process per GPU as hpcrepro's local launcher does; parse rank 0's log."""
    port = str(_free_port())
    started = time.perf_counter()
    procs = []
    for rank in range(nproc):
        task_env = {
            **env,
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "SLURM_NTASKS": str(nproc),
            "SLURM_NODEID": "0",
            "SLURM_JOB_NODELIST": "localhost",
            "SLURM_TASKS_PER_NODE": str(nproc),
            "MASTER_PORT": port,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "hpcrepro.workload.train", *args],
                env=task_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [proc.communicate(timeout=540)[0] for proc in procs]
    seconds = time.perf_counter() - started
    log.write_text("".join(outputs))
    events = [
        json.loads(line.split(":::MLLOG ", 1)[1])
        for line in outputs[0].splitlines()
        if ":::MLLOG " in line
    ]
    stop = [e for e in events if e["key"] == "run_stop"]
    return {
        "exit_codes": [proc.returncode for proc in procs],
        "status": stop[-1]["metadata"]["status"] if stop else None,
        "eval_accuracy": [e["value"] for e in events if e["key"] == "eval_accuracy"],
        "epoch_images_per_s": [
            e["value"]["throughput"] for e in events if e["key"] == "tracked_stats"
        ],
        "wall_seconds": seconds,
        "log": str(log),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--images", type=int, default=16384, help="JPEGs for the full-size run")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0, help="loader workers per GPU (0: auto)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="cpu only to check this script without a GPU",
    )
    parser.add_argument("--val-images", type=int, default=2048)
    args = parser.parse_args()
    if importlib.util.find_spec("mlperf_logging") is None:
        sys.exit(
            "mlperf_logging is not importable: copy the package (its mllog part needs only the "
            "standard library) into a folder on PYTHONPATH, e.g. .device-carry/"
        )
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.device == "cuda" and gpus < args.nproc:
        sys.exit(f"needs {args.nproc} NVIDIA GPU(s); torch sees {gpus}")
    workers = args.workers or max(1, ((os.cpu_count() or 2) - 2) // args.nproc)
    args.out.mkdir(parents=True, exist_ok=True)
    base = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
    }
    result: dict = {
        "torch": torch.__version__,
        "nproc": args.nproc,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tiny = pack_dataset(write_synthetic_imagenet(Path(tmp) / "tiny-raw"), Path(tmp) / "tiny")
        result["tiny"] = launch(
            args.nproc,
            ["--profile", "tiny", "--device", args.device, "--seed", "1"],
            {**base, "HPCREPRO_DATA_DIR": str(tiny)},
            args.out / "workload_gpu_tiny.log",
        )
        print("tiny:", json.dumps(result["tiny"]), flush=True)
        full = Path(tmp) / "full"
        full.mkdir()
        build_recordio(full, args.images, split="train")
        build_recordio(full, args.val_images, split="val")
        result["full_one_epoch"] = launch(
            args.nproc,
            [
                "--profile",
                "full",
                "--device",
                args.device,
                "--seed",
                "1",
                "--epochs",
                "1",
                "--eval-offset",
                "0",
                "--batch-size",
                str(args.batch),
                "--workers",
                str(workers),
            ],
            {**base, "HPCREPRO_DATA_DIR": str(full)},
            args.out / "workload_gpu_full.log",
        )
        result["full_one_epoch"]["workers_per_gpu"] = workers
        print("full, 1 epoch:", json.dumps(result["full_one_epoch"]), flush=True)
    result["gpu"] = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    ok = (
        result["tiny"]["status"] == "success"
        and result["full_one_epoch"]["status"] in ("success", "aborted")
        and all(
            code == 0
            for code in result["tiny"]["exit_codes"] + result["full_one_epoch"]["exit_codes"]
        )
    )
    result["ok"] = ok
    path = args.out / "workload_gpu_check.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"{'OK' if ok else 'FAILED'}; wrote {path}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
