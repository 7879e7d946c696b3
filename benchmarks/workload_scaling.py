"""Issue 17: the reference workload's entry point on 1, 2, 4 and 8 GPUs of one node.

Each size is one training run of `python -m hpcrepro.workload.train` started the way the rendered
job's launcher starts it on a node: one process per GPU with Slurm's rank variables
(SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, SLURM_NTASKS_PER_NODE, SLURM_JOB_ID,
SLURM_JOB_NODELIST=localhost), no torchrun, NCCL between them. Images/s come from rank 0's MLLOG
(run_start to run_stop, evaluations included); per GPU, the scaling efficiency against the one-GPU
run, and the ratio to NVIDIA's v4.0 H200 per-GPU rate (from its published logs, as
workload_speed.py computes it) are printed and written to $OUT/workload_scaling.json.

  PYTHONPATH=src:<folder holding mlperf_logging> python3 benchmarks/workload_scaling.py --out "$OUT"
  python3 benchmarks/workload_scaling.py --device cpu --gpus 1 2 --train-images 64 ...  # check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks")]

from workload_speed import H200, build_set, nvidia_per_gpu_rates  # noqa: E402


def run(args: argparse.Namespace, data: Path, tasks: int) -> dict:
    """One training run on `tasks` GPUs; its rate from rank 0's MLLOG."""
    command = [
        sys.executable, "-m", "hpcrepro.workload.train", "--profile", "full",
        "--data-dir", str(data), "--seed", "1", "--epochs", str(args.epochs),
        "--eval-offset", "2", "--eval-period", "4", "--batch-size", str(args.batch),
        "--workers", str(args.workers), "--device", args.device,
    ]  # fmt: skip
    if args.device == "cpu":
        command += ["--image-size", str(args.size), "--data-backend", "cpu", "--compile", "off"]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_"))}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), base.get("PYTHONPATH", "")])
    base |= {"PYTHONUNBUFFERED": "1", "SLURM_JOB_ID": str(40000 + tasks),
             "SLURM_JOB_NODELIST": "localhost", "SLURM_NTASKS": str(tasks),
             "SLURM_NTASKS_PER_NODE": str(tasks), "SLURM_NODEID": "0"}  # fmt: skip
    started = time.perf_counter()
    log = args.out / f"scaling_{tasks}.log"
    procs = []
    with open(log, "w") as out, open(log.with_suffix(".stderr"), "w") as err:
        for rank in range(tasks):
            env = dict(base, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank))
            procs.append(subprocess.Popen(command, env=env, stdout=out if rank == 0 else
                                          subprocess.DEVNULL, stderr=err))  # fmt: skip
        codes = [proc.wait(timeout=args.timeout) for proc in procs]
    events = [json.loads(line.split(":::MLLOG ", 1)[1])
              for line in log.read_text().splitlines() if ":::MLLOG " in line]  # fmt: skip
    result: dict = {"gpus": tasks, "exit_codes": codes,
                    "wall_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    keys = {e["key"]: e for e in events}
    if any(codes) or "run_stop" not in keys:
        result["stderr_tail"] = log.with_suffix(".stderr").read_text()[-1500:]
        return result
    epochs = sum(e["key"] == "epoch_stop" for e in events)
    global_batch = args.batch * tasks
    images = epochs * (args.train_images // global_batch) * global_batch
    seconds = (keys["run_stop"]["time_ms"] - keys["run_start"]["time_ms"]) / 1000
    rate = images / seconds
    result.update({"epochs": epochs, "run_seconds": round(seconds, 2),
                   "images_per_s": round(rate, 1), "images_per_s_per_gpu": round(rate / tasks, 1),
                   "status": keys["run_stop"]["metadata"].get("status")})  # fmt: skip
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batch", type=int, default=400, help="images per GPU (NVIDIA: 400)")
    parser.add_argument("--train-images", type=int, default=64000)
    parser.add_argument("--val-images", type=int, default=2500)
    parser.add_argument("--unique", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=4, help="an evaluation after epoch 3")
    parser.add_argument("--workers", type=int, default=2, help="loader workers per GPU")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    side = (300, 500) if args.device == "cuda" else (40, 64)
    report: dict = {"command": sys.argv[1:], "runs": []}
    with tempfile.TemporaryDirectory(prefix="workload-scaling-") as scratch:
        data = Path(scratch)
        report["data_set"] = build_set(data, args.unique, args.train_images, args.val_images, side)
        for tasks in args.gpus:
            report["runs"].append(run(args, data, tasks))
            print(json.dumps(report["runs"][-1]), flush=True)
    one = next((r for r in report["runs"] if r["gpus"] == 1 and "images_per_s" in r), None)
    nvidia = nvidia_per_gpu_rates()[H200]
    report["nvidia_v4_h200_per_gpu_images_per_s"] = round(nvidia, 1)
    for result in report["runs"]:
        if "images_per_s_per_gpu" in result:
            result["vs_nvidia_per_gpu"] = round(result["images_per_s_per_gpu"] / nvidia, 3)
            if one:
                result["scaling_efficiency"] = round(
                    result["images_per_s_per_gpu"] / one["images_per_s_per_gpu"], 3
                )
    (args.out / "workload_scaling.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({r["gpus"]: r.get("scaling_efficiency") for r in report["runs"]}))
    return 0 if all(r.get("status") in ("success", "aborted") for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
