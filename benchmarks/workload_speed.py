"""The reference workload's images/s through its real entry point, beside its ceiling (issue 16).

In one run on one GPU:
  1. builds an ImageNet-shaped RecordIO set: JPEGs of 300-500 px (about 70 KiB, 1000 classes),
     a few thousand rendered once and repeated to --train-images records, so it takes seconds;
  2. runs `python -m hpcrepro.workload.train` (full profile: ResNet-50 v1.5, LARS, label
     smoothing, MLLOG) for --epochs epochs with NVIDIA's evaluation schedule (offset 2, period 4)
     and reads its MLLOG: the warm-up (init_start..init_stop, where compilation falls), images/s
     over run_start..run_stop with the evaluations inside, the per-epoch rates; checks the log
     with mlperf-logging's compliance checker; and samples the CPU time of the run's processes
     between run_start and run_stop (cores busy per GPU);
  3. the ceiling: the same `TrainStep` (LARS, bf16, channels_last) on random tensors already on
     the GPU: eager, `torch.compile`, and `torch.compile` with CUDA graphs;
  4. the data path alone for one epoch: each GPU backend of --backends (dali, nvjpeg,
     nvimgcodec) with --loader-workers loader workers (images/s and CPU seconds per image,
     workers and main process), and Pillow decoding for comparison;
  5. the agreement of each GPU path with the CPU path on the same images and plans (greyscale,
     CMYK and PNG records included).
Steps 2, 4 and 5 run once per backend of --backends. With --baseline SRC (the src folder of
another checkout), each entry-point run of step 2 is repeated from SRC right after: lent hosts
differ by up to 16 % on the same code, so a change is judged against its baseline on one machine.
The anchor is NVIDIA's per-GPU rate implied by its v4.0 8x H200 result (see workload_throughput).

  PYTHONPATH=src:<mlperf_logging's folder> python3 benchmarks/workload_speed.py --out "$OUT"

Writes $OUT/workload_speed.json (updated after each part) and the training log. `--device cpu`
only checks this script end to end on a machine without a GPU (tiny sizes, the CPU path).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import multiprocessing
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from workload_throughput import nvidia_per_gpu_rates  # noqa: E402

from hpcrepro.recordio import encode_record, pack_image  # noqa: E402
from hpcrepro.workload.augment import denormalise, normalise  # noqa: E402
from hpcrepro.workload.data import (  # noqa: E402
    EncodedRecordDataset,
    RecordImageDataset,
    ShardedBatches,
    collate_encoded,
    make_loader,
)
from hpcrepro.workload.model import ResNet50  # noqa: E402
from hpcrepro.workload.nvjpeg import BatchAssembler, gpu_decoder, pillow_decoder  # noqa: E402
from hpcrepro.workload.optim import Lars, PolySchedule, lars_groups, smoothed_cross_entropy  # noqa: E402
from hpcrepro.workload.prefetch import Assembler, Prefetcher  # noqa: E402
from hpcrepro.workload.step import TrainStep  # noqa: E402
from hpcrepro.workload.synthetic import encode_jpeg, render_image  # noqa: E402

H200 = "v4.0 h200_ngc24.04_mxnet (8x H200)"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def _render(job: tuple[int, int, int, int]) -> tuple[int, bytes]:
    index, classes, low, high = job
    rng = np.random.default_rng(index)
    return index % classes, encode_jpeg(render_image(index % classes, classes, rng, low, high))


def write_split(path: Path, images: list[tuple[int, bytes]], count: int, stride: int) -> None:
    with open(path.with_suffix(".rec"), "wb") as rec, open(path.with_suffix(".idx"), "w") as idx:
        for key in range(count):
            label, jpeg = images[(key * stride) % len(images)]
            idx.write(f"{key}\t{rec.tell()}\n")
            rec.write(encode_record(pack_image(float(label), key, jpeg)))


def build_set(folder: Path, unique: int, train: int, val: int, side: tuple[int, int]) -> dict:
    started = time.perf_counter()
    with multiprocessing.Pool() as pool:
        jobs = [(i, 1000, *side) for i in range(unique)]
        rendered = pool.map(_render, jobs, chunksize=16)
    write_split(folder / "train", rendered, train, 1)
    write_split(folder / "val", rendered, val, 7)
    return {
        "unique_jpegs": unique,
        "train_records": train,
        "val_records": val,
        "mean_jpeg_kib": round(sum(len(j) for _, j in rendered) / len(rendered) / 1024, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


def build_mixed_set(folder: Path, count: int, side: tuple[int, int]) -> None:
    """Colour JPEGs plus a greyscale JPEG, a CMYK JPEG and a PNG, as ImageNet's train set holds."""
    images = [_render((i, 1000, *side)) for i in range(count - 3)]
    rng = np.random.default_rng(1)
    pixels = render_image(3, 1000, rng, *side)
    for mode, kind in (("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "PNG")):
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(buffer, format=kind)
        images.append((3, buffer.getvalue()))
    for split in ("train", "val"):
        write_split(folder / split, images, count, 1)


def agreement(folder: Path, device: torch.device, size: int, backend: str) -> dict:
    """Pixel differences between the paths on the same records and plans (uint8 levels)."""
    result = {}
    for train in (True, False):
        split = "train" if train else "val"
        args = (folder / f"{split}.rec", folder / f"{split}.idx", size, train, 5)
        cpu_set, encoded_set = RecordImageDataset(*args), EncodedRecordDataset(*args)
        positions = range(len(cpu_set))
        cpu = torch.stack([cpu_set[(p, 1)][0] for p in positions]).int()
        batch = collate_encoded([encoded_set[(p, 1)] for p in positions])
        (assemble,) = assemblers(backend, device, size, True, torch.float32, len(batch))
        on_gpu = assemble(batch)[0]
        libjpeg = BatchAssembler(torch.device("cpu"), size, pillow_decoder, False, torch.float32)
        for name, out in (("gpu_path", on_gpu), ("gpu_path_code_with_libjpeg", libjpeg(batch)[0])):
            diff = (denormalise(out).cpu().int() - cpu).abs().float()
            per_image = diff.mean(dim=(1, 2, 3))
            result[f"{split}_{name}"] = {
                "mean_abs": round(float(diff.mean()), 3),
                "p99_abs": float(diff.flatten().kthvalue(int(0.99 * diff.numel())).values),
                "max_abs": float(diff.max()),
                "worst_image_mean_abs": round(float(per_image.max()), 3),
            }
    return result


def assemblers(
    backend: str,
    device: torch.device,
    size: int,
    channels_last: bool,
    dtype: torch.dtype,
    batch: int,
    pipelines: int = 1,
) -> list[Assembler]:
    """What the training loop builds for `backend` (Pillow standing in for nvJPEG on a CPU):
    one lane, or `pipelines` DALI pipelines."""
    if backend == "dali":
        from hpcrepro.workload.dali import DaliAssembler, pipeline_threads

        threads = pipeline_threads(1, 2, pipelines)
        return [
            DaliAssembler(device, size, channels_last, dtype, batch, threads)
            for _ in range(pipelines)
        ]
    decoder = gpu_decoder(backend, device) if device.type == "cuda" else pillow_decoder
    return [BatchAssembler(device, size, decoder, channels_last, dtype)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_loader(
    folder: Path,
    device: torch.device,
    backend: str,
    workers: int,
    batch: int,
    size: int,
    pipelines: int = 1,
) -> dict:
    """One epoch of the data path alone: images/s and CPU seconds per image (workers + main)."""
    dataset_type = EncodedRecordDataset if backend != "cpu" else RecordImageDataset
    dataset = dataset_type(folder / "train.rec", folder / "train.idx", size, True, 1)
    sampler = ShardedBatches(len(dataset), batch, 0, 1, 1, True)
    loader = make_loader(dataset, sampler, workers, device.type == "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    batches = None
    if backend != "cpu":
        lanes = assemblers(backend, device, size, device.type == "cuda", dtype, batch, pipelines)
        batches = Prefetcher(loader, lanes, device)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    main_cpu = time.process_time()
    started = time.perf_counter()
    images = 0
    if batches is not None:
        for inputs, _ in batches:
            images += len(inputs)
    else:
        for pixels, _ in loader:
            inputs = normalise(pixels.to(device, non_blocking=True), True, dtype)
            images += len(inputs)
    _sync(device)
    seconds = time.perf_counter() - started
    main_cpu = time.process_time() - main_cpu
    del loader, batches
    gc.collect()  # the workers exit and are reaped: their CPU time becomes RUSAGE_CHILDREN's
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return {
        "backend": backend,
        "workers": workers,
        **({"dali_pipelines": pipelines} if backend == "dali" else {}),
        "images": images,
        "images_per_s": round(images / seconds, 1),
        "worker_cpu_ms_per_image": round(1000 * worker_cpu / images, 3),
        "main_process_cpu_ms_per_image": round(1000 * main_cpu / images, 3),
    }


def measure_synthetic(
    device: torch.device, batch: int, size: int, compile_mode: str, steps: int
) -> dict:
    """The model's ceiling: TrainStep (LARS) on batches already on the GPU."""
    torch.manual_seed(0)
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = ResNet50(num_classes=1000).to(device).to(memory_format=layout)  # type: ignore[call-overload]
    optimizer = Lars(lars_groups(model), lr=1.0, momentum=0.9, weight_decay=5e-5, eta=0.001)
    schedule = PolySchedule(base_lr=1.0, warmup_steps=10, total_steps=10 * steps)
    criterion = smoothed_cross_entropy(0.1)
    step = TrainStep(model, model, optimizer, criterion, schedule, device, compile_mode)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    warm_up = step.warm_up(batch, size, 1000, dtype)
    inputs = torch.randn(batch, 3, size, size, device=device).to(dtype=dtype, memory_format=layout)
    targets = torch.randint(0, 1000, (batch,), device=device)
    for index in range(3):
        step.train(inputs, targets, index)
    _sync(device)
    cpu, started = time.process_time(), time.perf_counter()
    for index in range(steps):
        step.train(inputs, targets, index)
    _sync(device)
    seconds = time.perf_counter() - started
    result = {
        "compile": compile_mode,
        "warm_up_seconds": round(warm_up, 1),
        "images_per_s": round(batch * steps / seconds, 1),
        "ms_per_step": round(1000 * seconds / steps, 2),
        "main_process_cpu_busy": round((time.process_time() - cpu) / seconds, 2),
    }
    del step, model, optimizer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _tree_cpu_seconds(root: int) -> float:
    """utime + stime of `root` and every descendant still alive, from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICK
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0.0) for pid in tree)


def run_entry_point(
    args: argparse.Namespace,
    data: Path,
    backend: str,
    compile_mode: str,
    source: Path,
    pipelines: int | None = None,
) -> dict:
    """One run of the entry point, with the hpcrepro package found under `source` (and
    --dali-pipelines `pipelines` where given)."""
    name = f"{backend}_{compile_mode}" + (f"_p{pipelines}" if pipelines else "")
    name += "" if source == REPO / "src" else "_baseline"
    log = args.out / f"workload_speed_{name}.log"
    errors = args.out / f"workload_speed_{name}.stderr"
    command = [
        sys.executable,
        "-m",
        "hpcrepro.workload.train",
        "--profile",
        "full",
        "--data-dir",
        str(data),
        "--seed",
        "1",
        "--epochs",
        str(args.epochs),
        "--eval-offset",
        "2",
        "--eval-period",
        "4",
        "--batch-size",
        str(args.batch),
        "--workers",
        str(args.workers),
        "--data-backend",
        backend,
        "--compile",
        compile_mode,
        "--device",
        args.device,
    ]
    if args.device == "cpu":
        command += ["--image-size", str(args.size)]
    if pipelines:
        command += ["--dali-pipelines", str(pipelines)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    lines: list[str] = []
    cpu_marks: dict[str, tuple[float, float]] = {}
    started = time.perf_counter()
    with open(errors, "w") as stderr:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert proc.stdout is not None
        timer = threading.Timer(args.entry_timeout, proc.kill)
        timer.start()
        for line in proc.stdout:
            lines.append(line)
            for key in ("run_start", "run_stop"):
                if f'"key": "{key}"' in line:
                    cpu_marks[key] = (time.perf_counter(), _tree_cpu_seconds(proc.pid))
        proc.wait()
        timer.cancel()
    log.write_text("".join(lines))
    events = [json.loads(x.split(":::MLLOG ", 1)[1]) for x in lines if ":::MLLOG " in x]
    at = {e["key"]: e["time_ms"] / 1000 for e in events}  # the last of each key
    first = {}
    for event in events:
        first.setdefault(event["key"], event["time_ms"] / 1000)
    said = errors.read_text()
    result: dict = {
        "command": " ".join(command[1:]),
        "exit_code": proc.returncode,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "stderr_tail": said[-1500:],
    }
    waited = re.search(r"training epochs waited ([\d.]+) s of ([\d.]+) s", said)
    if waited:  # the entry point's own account (a baseline checkout may not give it)
        result["input_wait_seconds"] = float(waited[1])
        result["train_epoch_seconds"] = float(waited[2])
    if proc.returncode != 0 or "run_stop" not in at:
        return result
    epochs = sum(e["key"] == "epoch_stop" for e in events)
    images = epochs * (args.train_images // args.batch) * args.batch
    run_seconds = at["run_stop"] - first["run_start"]
    evals = [e for e in events if e["key"] in ("eval_start", "eval_stop")]
    eval_seconds = sum(
        stop["time_ms"] / 1000 - start["time_ms"] / 1000
        for start, stop in zip(evals[::2], evals[1::2], strict=True)
    )
    (t0, c0), (t1, c1) = cpu_marks["run_start"], cpu_marks["run_stop"]
    result.update(
        {
            "warm_up_seconds_init_start_to_init_stop": round(
                at["init_stop"] - first["init_start"], 1
            ),
            "epochs_trained": epochs,
            "evaluations": len(evals) // 2,
            "run_seconds": round(run_seconds, 2),
            "eval_seconds": round(eval_seconds, 2),
            "images_per_s_run_start_to_run_stop": round(images / run_seconds, 1),
            "epoch_images_per_s": [
                e["value"]["throughput"] for e in events if e["key"] == "tracked_stats"
            ],
            "cpu_cores_busy_during_run": round((c1 - c0) / (t1 - t0), 2),
            "status": next(e for e in events if e["key"] == "run_stop")["metadata"]["status"],
        }
    )
    checker = [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training"]
    checked = subprocess.run(
        [
            *checker,
            "--ruleset",
            "4.0.0",
            "--log_output",
            str(log.with_suffix(".compliance")),
            str(log),
        ],
        capture_output=True,
        text=True,
        cwd=args.out,
        check=False,
        env=env,
    )
    result["compliance_exit_code"] = checked.returncode
    result["compliance_tail"] = (checked.stdout + checked.stderr)[-600:]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=400, help="images per GPU (NVIDIA: 400)")
    parser.add_argument("--train-images", type=int, default=24000)
    parser.add_argument("--val-images", type=int, default=940, help="ImageNet's val/train ratio")
    parser.add_argument("--unique", type=int, default=4096, help="distinct JPEGs rendered")
    parser.add_argument("--epochs", type=int, default=8, help="evaluations after epochs 3 and 7")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the run")
    parser.add_argument("--steps", type=int, default=40, help="timed synthetic steps")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--graphs", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--entry-compile",
        nargs="+",
        default=["default", "reduce-overhead"],
        help="--compile values of the entry-point runs, one run each",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["nvjpeg"],
        help="GPU data backends (nvjpeg; dali, nvimgcodec where installed): each gets "
        "the entry-point runs, the data path alone and the agreement check",
    )
    parser.add_argument(
        "--dali-pipelines",
        type=int,
        nargs="+",
        default=[2],
        help="--dali-pipelines values: one entry-point run and one data-path run each (dali)",
    )
    parser.add_argument("--loader-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpu-loader", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--entry-timeout", type=float, default=420)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="the src folder of another checkout (git worktree add): each entry-point run is "
        "repeated from it, so that a change is compared on one machine (lent hosts differ)",
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("this benchmark needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    args.out.mkdir(parents=True, exist_ok=True)
    report_path = args.out / "workload_speed.json"
    report: dict = {"torch": torch.__version__, "cpus": os.cpu_count(), "batch": args.batch}

    def save(part: str, value: object) -> None:
        report[part] = value
        report_path.write_text(json.dumps(report, indent=1))
        print(f"{part}: {json.dumps(value)}", flush=True)

    side = (300, 500) if args.device == "cuda" else (40, 64)
    backends = args.backends if args.device == "cuda" else ["cpu"]
    with tempfile.TemporaryDirectory(prefix="workload-speed-") as scratch:
        data, mixed = Path(scratch) / "data", Path(scratch) / "mixed"
        data.mkdir()
        mixed.mkdir()
        # Rendered in forked processes before this process touches CUDA.
        save("data_set", build_set(data, args.unique, args.train_images, args.val_images, side))
        build_mixed_set(mixed, 64, side)
        device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
        if args.device == "cuda":
            torch.backends.cudnn.benchmark = True
            report["gpu"] = torch.cuda.get_device_name(0)
            import torchvision

            report["torchvision"] = torchvision.__version__
            if "dali" in backends:
                import nvidia.dali

                report["dali"] = nvidia.dali.__version__
        # The entry point first: its warm-up is then a cold compile, as on a fresh node.
        entry = {}
        for backend in backends:
            for mode in args.entry_compile if args.device == "cuda" else ["off"]:
                for pipelines in args.dali_pipelines if backend == "dali" else [None]:
                    label = f"{backend} {mode}" + (f" p{pipelines}" if pipelines else "")
                    ours = run_entry_point(args, data, backend, mode, REPO / "src", pipelines)
                    entry[label] = ours
                    save("entry_point", entry)
                    if args.baseline:
                        baseline = run_entry_point(
                            args, data, backend, mode, args.baseline.resolve()
                        )
                        entry[f"{label} baseline"] = baseline
                        save("entry_point", entry)
        modes = ["off", "default"] + (["reduce-overhead"] if args.graphs else [])
        if args.device == "cpu":
            modes = ["off"]
        synthetic = {}
        for mode in modes:
            synthetic[mode] = measure_synthetic(device, args.batch, args.size, mode, args.steps)
            save("synthetic", synthetic)
        loaders = [
            measure_loader(data, device, backend, workers, args.batch, args.size, pipelines)
            for backend in backends
            for workers in args.loader_workers
            for pipelines in (args.dali_pipelines if backend == "dali" else [1])
        ]
        save("loader_gpu", loaders)
        if args.cpu_loader:
            cpu_workers = max(1, (os.cpu_count() or 2) - 2)
            cpu = measure_loader(data, device, "cpu", cpu_workers, args.batch, args.size)
            save("loader_cpu", cpu)
        save("agreement", {b: agreement(mixed, device, args.size, b) for b in backends})
    summarise(report, args)
    report_path.write_text(json.dumps(report, indent=1))
    passed = all(run.get("compliance_exit_code") == 0 for run in report["entry_point"].values())
    return 0 if passed else 1


def summarise(report: dict, args: argparse.Namespace) -> None:
    nvidia = nvidia_per_gpu_rates()[H200]
    report["nvidia_v4_h200_per_gpu_images_per_s"] = round(nvidia, 1)
    synthetic = report["synthetic"]
    ceiling = max(s["images_per_s"] for s in synthetic.values())
    rows = [(f"synthetic, compile {m}", s["images_per_s"]) for m, s in synthetic.items()]
    best = 0.0
    for mode, run in report["entry_point"].items():
        rate = run.get("images_per_s_run_start_to_run_stop")
        if rate:
            rows.append((f"entry point, {mode}, run_start..run_stop", rate))
            run["ratio_to_nvidia"] = round(rate / nvidia, 3)
            run["ratio_to_best_synthetic"] = round(rate / ceiling, 3)
            best = max(best, rate)
    print(f"\n{'case':58s} {'images/s':>9s} {'vs NVIDIA':>9s} {'vs ceiling':>10s}")
    for name, rate in rows:
        print(f"{name:58s} {rate:9.1f} {rate / nvidia:8.2f}x {rate / ceiling:9.2f}x")
    print(f"NVIDIA v4.0 8x H200, per GPU: {nvidia:.1f} images/s; goal 0.8x = {0.8 * nvidia:.0f}")
    for loader in report["loader_gpu"]:
        cpu_ms = loader["worker_cpu_ms_per_image"] + loader["main_process_cpu_ms_per_image"]
        cores = cpu_ms / 1000 * (best or loader["images_per_s"])
        loader["cpu_cores_at_best_entry_point_rate"] = round(cores, 2)
        pipelines = f", {loader['dali_pipelines']} pipelines" if "dali_pipelines" in loader else ""
        print(
            f"{loader['backend']} data path alone, {loader['workers']} workers{pipelines}: "
            f"{loader['images_per_s']:.0f} "
            f"images/s, {cores:.2f} CPU cores at the best entry point's rate"
        )
    for mode, run in report["entry_point"].items():
        warm_up = run.get("warm_up_seconds_init_start_to_init_stop")
        busy, checked = run.get("cpu_cores_busy_during_run"), run.get("compliance_exit_code")
        waited = run.get("input_wait_seconds")
        print(
            f"entry point, {mode}: warm-up {warm_up} s before run_start, "
            f"CPU cores busy {busy}, waited for input {waited} s, "
            f"compliance exit code {checked}"
        )


if __name__ == "__main__":
    sys.exit(main())
