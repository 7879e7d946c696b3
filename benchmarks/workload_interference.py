"""Where the nvJPEG path's GPU time goes, and how much each part slows a training step beside it.

workload_speed.py found the data path alone at about 8,200 images/s and the compiled step alone
at 6,950, but the two together at 4,700: the data path costs the step about 27 ms of a 57 ms
step. This script splits the data path (batched nvJPEG decode; the per-image crop and resize,
antialiased or not; the whole `BatchAssembler`) and times each on the GPU alone (CUDA events),
then runs each in a thread on a side stream, without pause, while the eager training step
(ResNet-50, LARS, bf16, batch 400) runs, and reports the step's time and the data batches done.
Two more runs of the whole assembly: on a high-priority stream, and with the step on a stream of
its own rather than CUDA's legacy default stream (which any synchronous copy inside a library
waits on). Eager rather than compiled, so that it needs no minute of compilation.

  PYTHONPATH=src python3 benchmarks/workload_interference.py --out "$OUT"
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks")]

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from workload_speed import _render  # noqa: E402

from hpcrepro.workload.augment import crop_resize_all, train_plan  # noqa: E402
from hpcrepro.workload.data import JPEG, EncodedBatch, EncodedItem, collate_encoded  # noqa: E402
from hpcrepro.workload.model import ResNet50  # noqa: E402
from hpcrepro.workload.nvjpeg import (  # noqa: E402
    BatchAssembler,
    nvjpeg_decoder,
    pillow_decoder,
)
from hpcrepro.workload.optim import Lars, PolySchedule, lars_groups, smoothed_cross_entropy  # noqa: E402
from hpcrepro.workload.step import TrainStep  # noqa: E402


def make_batches(count: int, batch: int, side: tuple[int, int]) -> list[EncodedBatch]:
    with multiprocessing.Pool() as pool:
        rendered = pool.map(_render, [(i, 1000, *side) for i in range(count * batch)], 16)
    rng = random.Random(0)
    items = []
    for index, (label, jpeg) in enumerate(rendered):
        width, height = Image.open(io.BytesIO(jpeg)).size
        plan = train_plan(width, height, rng)
        items.append(EncodedItem(jpeg, JPEG, height, width, plan, label, index))
    return [collate_encoded(items[i * batch : (i + 1) * batch]) for i in range(count)]


def jpegs_of(batch: EncodedBatch) -> list[torch.Tensor]:
    return list(torch.split(batch.data, batch.offsets.diff().tolist()))


def gpu_ms(work: Callable[[], object], device: torch.device, repeats: int = 5) -> dict:
    """Median GPU time (events on the current stream) and wall time of `work`, after one run."""
    work()
    torch.cuda.synchronize(device)
    gpu, wall = [], []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        began = time.perf_counter()
        start.record()
        work()
        end.record()
        end.synchronize()
        wall.append(1000 * (time.perf_counter() - began))
        gpu.append(start.elapsed_time(end))
    return {
        "gpu_ms": round(statistics.median(gpu), 2),
        "wall_ms": round(statistics.median(wall), 2),
    }


def plain_crop(images: list[torch.Tensor], plans: list[list[int]], size: int) -> torch.Tensor:
    boxes = []
    for image, (left, top, width, height, _) in zip(images, plans, strict=True):
        box = image[:, top : top + height, left : left + width].unsqueeze(0).float()
        boxes.append(
            torch.nn.functional.interpolate(
                box, size=(size, size), mode="bilinear", antialias=False
            )
        )
    return torch.cat(boxes)


def step_ms(
    step: TrainStep, inputs: torch.Tensor, targets: torch.Tensor, steps: int, device: torch.device
) -> float:
    for index in range(2):
        step.train(inputs, targets, index)
    torch.cuda.synchronize(device)
    began = time.perf_counter()
    for index in range(steps):
        step.train(inputs, targets, index)
    torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - began) / steps


def beside(
    work: Callable[[int], object],
    step: TrainStep,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    device: torch.device,
    steps: int,
    priority: int,
    own_stream: bool = False,
) -> dict:
    """The step's ms while a thread runs `work` back to back on a side stream."""
    stop, done = threading.Event(), [0]

    def loop() -> None:
        stream = torch.cuda.Stream(device, priority=priority)
        with torch.cuda.stream(stream):
            while not stop.is_set():
                work(done[0])
                stream.synchronize()
                done[0] += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    time.sleep(0.5)
    began, first = time.perf_counter(), done[0]
    if own_stream:
        with torch.cuda.stream(torch.cuda.Stream(device)):
            ms = step_ms(step, inputs, targets, steps, device)
    else:
        ms = step_ms(step, inputs, targets, steps, device)
    rate = (done[0] - first) / (time.perf_counter() - began)
    stop.set()
    thread.join()
    return {"step_ms": round(ms, 1), "data_batches_per_s": round(rate, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    cpu_check = args.device == "cpu"  # checks the script only: no events, no streams
    size, side = (224, (300, 500)) if not cpu_check else (32, (40, 64))
    batches = make_batches(3, args.batch, side)
    report: dict = {"batch": args.batch}
    args.out.mkdir(parents=True, exist_ok=True)

    def save(key: str, value: object) -> None:
        report[key] = value
        (args.out / "workload_interference.json").write_text(json.dumps(report, indent=1))
        print(f"{key}: {json.dumps(value)}", flush=True)

    if cpu_check:
        out = BatchAssembler(torch.device("cpu"), size, pillow_decoder, False, torch.float32)
        save("cpu_check_shape", list(out(batches[0])[0].shape))
        return 0
    device = torch.device("cuda", 0)
    torch.backends.cudnn.benchmark = True
    decode = nvjpeg_decoder(device)
    crop = crop_resize_all
    decoded = [decode(jpegs_of(b)) for b in batches]
    plans = [b.plans.tolist() for b in batches]
    assemble = BatchAssembler(device, size, decode, True, torch.bfloat16)
    parts: dict[str, Callable[[int], object]] = {
        "decode": lambda i: decode(jpegs_of(batches[i % 3])),
        "crop_resize_antialiased": lambda i: crop(decoded[i % 3], plans[i % 3], size),
        "crop_resize_plain_bilinear": lambda i: plain_crop(decoded[i % 3], plans[i % 3], size),
        "whole_assembly": lambda i: assemble(batches[i % 3]),
    }
    save("alone", {name: gpu_ms(lambda w=work: w(0), device) for name, work in parts.items()})

    layout = torch.channels_last
    model = ResNet50(num_classes=1000).to(device).to(memory_format=layout)  # type: ignore[call-overload]
    optimizer = Lars(lars_groups(model), lr=1.0, momentum=0.9, weight_decay=5e-5, eta=0.001)
    schedule = PolySchedule(base_lr=1.0, warmup_steps=10, total_steps=1000)
    step = TrainStep(model, model, optimizer, smoothed_cross_entropy(0.1), schedule, device, "off")
    inputs = torch.randn(args.batch, 3, size, size, device=device)
    inputs = inputs.to(dtype=torch.bfloat16, memory_format=layout)
    targets = torch.randint(0, 1000, (args.batch,), device=device)
    results = {
        "step_alone": {"step_ms": round(step_ms(step, inputs, targets, args.steps, device), 1)}
    }
    save("eager_step_beside", results)
    for name, work in parts.items():
        results[name] = beside(work, step, inputs, targets, device, args.steps, 0)
        save("eager_step_beside", results)
    results["whole_assembly_high_priority_stream"] = beside(
        parts["whole_assembly"], step, inputs, targets, device, args.steps, -5
    )
    save("eager_step_beside", results)
    results["whole_assembly_step_on_its_own_stream"] = beside(
        parts["whole_assembly"], step, inputs, targets, device, args.steps, 0, own_stream=True
    )
    save("eager_step_beside", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
