"""Training throughput of hpcrepro's reference ResNet-50 on one or two GPUs, against NVIDIA's rate.

Measures images/s of the full ResNet-50 v1.5 at 224x224 (bf16 autocast, channels_last, LARS step):
  1. synthetic: uint8 batches already on the GPU (the model's ceiling);
  2. recordio:  a RecordIO set this script builds from generated ImageNet-sized JPEGs, read with
                hpcrepro's loader (Pillow decode in worker processes), plus the loader alone;
  3. with --nproc 2: the synthetic case on 2 GPUs with NCCL (DDP), and the scaling efficiency.
The anchor is NVIDIA's per-GPU rate implied by its published single-node runs (MLPerf Training
v3.0/v4.0 result logs): epochs x 1,281,167 images / time to train / GPUs, where time to train
(run_start..run_stop) includes the evaluations, so it understates NVIDIA's pure training rate.

Needs only torch, numpy, Pillow and hpcrepro's workload modules:
  PYTHONPATH=src python3 benchmarks/workload_throughput.py [--nproc 2]
Writes $OUT/workload_throughput.json (or --out) and prints a summary. `--device cpu` (gloo for
--nproc) exists only so that the tests can check the script end to end without a GPU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hpcrepro.recordio import encode_record, pack_image
from hpcrepro.workload.augment import normalise
from hpcrepro.workload.data import RecordImageDataset, ShardedBatches, make_loader
from hpcrepro.workload.model import ResNet50
from hpcrepro.workload.optim import Lars, lars_groups, smoothed_cross_entropy
from hpcrepro.workload.synthetic import encode_jpeg, render_image

IMAGENET_TRAIN = 1_281_167
# NVIDIA's published single-node ResNet-50 runs: run_stop - run_start in ms for the 5 runs; all
# converged at epoch 35 (the last evaluation), 8 GPUs, global batch 3200. Read from
# mlcommons/training_results_v3.0 and _v4.0, NVIDIA/results/<dir>/resnet/result_{0..4}.txt.
NVIDIA_RUNS = {
    "v3.0 dgxh100_ngc23.04_mxnet (8x H100)": [816057, 805361, 814917, 860609, 817177],
    "v4.0 eos_ngc24.04_mxnet (8x H100)": [798372, 799068, 798097, 792185, 791159],
    "v4.0 h200_ngc24.04_mxnet (8x H200)": [721149, 721437, 722035, 722400, 721345],
}
NVIDIA_EPOCHS, NVIDIA_GPUS = 35, 8


def nvidia_per_gpu_rates() -> dict[str, float]:
    """Median over the 5 runs of epochs x images / seconds / GPUs."""
    return {
        name: statistics.median(
            NVIDIA_EPOCHS * IMAGENET_TRAIN / (ms / 1000) / NVIDIA_GPUS for ms in runs
        )
        for name, runs in NVIDIA_RUNS.items()
    }


def _render(job: tuple[int, int]) -> tuple[int, bytes]:
    index, classes = job
    rng = np.random.default_rng(index)
    label = index % classes
    # ImageNet's average training image is about 400x350 pixels.
    return label, encode_jpeg(render_image(label, classes, rng, 300, 500))


def build_recordio(
    folder: Path, images: int, classes: int = 1000, split: str = "train"
) -> dict[str, float]:
    """<split>.rec/.idx of `images` generated JPEGs, rendered in parallel, packed with hpcrepro."""
    with multiprocessing.Pool() as pool:
        rendered = pool.map(_render, [(i, classes) for i in range(images)], chunksize=64)
    with open(folder / f"{split}.rec", "wb") as rec, open(folder / f"{split}.idx", "w") as idx:
        for key, (label, jpeg) in enumerate(rendered):
            idx.write(f"{key}\t{rec.tell()}\n")
            rec.write(encode_record(pack_image(float(label), key, jpeg)))
    return {"images": images, "mean_jpeg_kib": statistics.mean(len(j) for _, j in rendered) / 1024}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(device: torch.device, world: int) -> tuple[torch.nn.Module, Lars]:
    model = ResNet50(num_classes=1000).to(device)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = Lars(lars_groups(model), lr=1.0, momentum=0.9, weight_decay=5e-5, eta=0.001)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model, optimizer


def _step(model, optimizer, criterion, images: torch.Tensor, labels: torch.Tensor) -> None:  # type: ignore[no-untyped-def]
    inputs = normalise(images, channels_last=True, dtype=torch.float32)
    with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16):
        loss = criterion(model(inputs), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def measure_synthetic(
    device: torch.device, world: int, batch: int, warmup: int, steps: int
) -> float:
    """Images/s of this process on batches that are already on the GPU."""
    model, optimizer = _model(device, world)
    criterion = smoothed_cross_entropy(0.1)
    images = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    for _ in range(warmup):
        _step(model, optimizer, criterion, images, labels)
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        _step(model, optimizer, criterion, images, labels)
    _sync(device)
    return batch * steps / (time.perf_counter() - started)


def measure_recordio(
    device: torch.device, folder: Path, batch: int, warmup: int, steps: int, workers: int
) -> dict[str, float]:
    """Loader-only and end-to-end training images/s reading the RecordIO set."""
    dataset = RecordImageDataset(folder / "train.rec", folder / "train.idx", 224, True, seed=1)
    sampler = ShardedBatches(len(dataset), batch, 0, 1, seed=1, train=True)
    loader = make_loader(dataset, sampler, workers, pin_memory=device.type == "cuda")

    def batches():  # endless, epoch after epoch
        epoch = 0
        while True:
            sampler.epoch = epoch
            yield from loader
            epoch += 1

    stream = batches()
    for _ in range(warmup):
        next(stream)
    started = time.perf_counter()
    for _ in range(steps):
        next(stream)
    loader_rate = batch * steps / (time.perf_counter() - started)

    model, optimizer = _model(device, 1)
    criterion = smoothed_cross_entropy(0.1)

    def train(count: int) -> None:
        for _ in range(count):
            images, labels = next(stream)
            _step(
                model,
                optimizer,
                criterion,
                images.to(device, non_blocking=True),
                labels.to(device, non_blocking=True),
            )
        _sync(device)

    train(warmup)
    started = time.perf_counter()
    train(steps)
    train_rate = batch * steps / (time.perf_counter() - started)
    return {
        "loader_only_images_per_s": loader_rate,
        "train_images_per_s": train_rate,
        "workers": workers,
    }


def _distributed_worker(
    rank: int, world: int, port: int, args: argparse.Namespace, out: str
) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    if args.device == "cuda":
        torch.cuda.set_device(rank)
        torch.backends.cudnn.benchmark = True
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
    backend = "nccl" if args.device == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world)
    rate = measure_synthetic(device, world, args.batch, args.warmup, args.steps)
    rates = [None] * world
    dist.all_gather_object(rates, rate)
    if rank == 0:
        Path(out).write_text(json.dumps(rates))
    dist.destroy_process_group()


def measure_multi_gpu(args: argparse.Namespace) -> list[float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rates.json")
        mp.spawn(_distributed_worker, args=(args.nproc, port, args, out), nprocs=args.nproc)
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=1, help="GPUs for the NCCL scaling run")
    parser.add_argument("--batch", type=int, default=256, help="images per GPU per step")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--images", type=int, default=8192, help="JPEGs in the RecordIO set")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("this benchmark needs an NVIDIA GPU (torch.cuda.is_available() is False)")
        if args.nproc > torch.cuda.device_count():
            sys.exit(
                f"--nproc {args.nproc} but only {torch.cuda.device_count()} GPU(s) are visible"
            )
    with tempfile.TemporaryDirectory() as tmp:
        # Rendered in forked processes before this process touches CUDA.
        started = time.perf_counter()
        built = build_recordio(Path(tmp), args.images)
        built["build_seconds"] = time.perf_counter() - started
        measure_all(args, Path(tmp), built)


def measure_all(args: argparse.Namespace, data: Path, built: dict) -> None:
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
        device, name = torch.device("cuda", 0), torch.cuda.get_device_name(0)
    else:
        device, name = torch.device("cpu"), "CPU"
    result: dict = {
        "gpu": name,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "batch_per_gpu": args.batch,
        "precision": "bf16 autocast, channels_last, LARS",
    }
    synthetic = measure_synthetic(device, 1, args.batch, args.warmup, args.steps)
    result["synthetic_images_per_s"] = synthetic
    print(f"synthetic, 1 GPU:        {synthetic:9.1f} images/s", flush=True)

    recordio = measure_recordio(
        device, data, args.batch, min(args.warmup, 5), min(args.steps, 30), args.workers
    )
    result["recordio"] = {**built, **recordio}
    print(
        f"recordio loader alone:   {recordio['loader_only_images_per_s']:9.1f} images/s "
        f"({args.workers} workers, {built['mean_jpeg_kib']:.0f} KiB JPEGs)"
    )
    print(f"recordio, 1 GPU:         {recordio['train_images_per_s']:9.1f} images/s")

    if args.nproc > 1:
        if args.device == "cuda":
            torch.cuda.empty_cache()  # leave GPU 0 to the spawned rank 0
        rates = measure_multi_gpu(args)
        total = sum(rates)
        result["multi_gpu"] = {
            "gpus": args.nproc,
            "per_process_images_per_s": rates,
            "total_images_per_s": total,
            "scaling_efficiency": total / (args.nproc * synthetic),
        }
        print(
            f"synthetic, {args.nproc} GPUs NCCL:  {total:9.1f} images/s, scaling efficiency "
            f"{total / (args.nproc * synthetic):.3f}"
        )

    anchors = nvidia_per_gpu_rates()
    result["nvidia_per_gpu_images_per_s"] = anchors
    result["ratio_synthetic_to_nvidia"] = {name: synthetic / rate for name, rate in anchors.items()}
    result["ratio_recordio_to_nvidia"] = {
        name: recordio["train_images_per_s"] / rate for name, rate in anchors.items()
    }
    for name, rate in anchors.items():
        print(
            f"NVIDIA {name}: {rate:7.1f} images/s/GPU -> ours synthetic "
            f"{synthetic / rate:.2f}x, recordio {recordio['train_images_per_s'] / rate:.2f}x"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "workload_throughput.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
