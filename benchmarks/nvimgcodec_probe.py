"""Does nvImageCodec decode on this GPU's JPEG engines, and how fast is each part of the data path?

On one GPU, for one batch of ImageNet-shaped JPEGs (rendered here, 300-500 px): nvImageCodec's
version; the batch decoded by nvImageCodec with the hardware backend only, with its CUDA backend
only, with both (as `nvjpeg.nvimgcodec_decoder`), and by torchvision's `decode_jpeg`; then the
planned crops resized per image (`augment.crop_resize_all`) and in one batch
(`augment.crop_resize_batched`); and how far each decoder's pixels are from Pillow's. Times are
medians of --repeats, CUDA-synchronised wall time per batch.

  PYTHONPATH=src python3 benchmarks/nvimgcodec_probe.py --out "$OUT"

Exits 1 when nvImageCodec cannot decode here (the JSON says why).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from hpcrepro.workload.augment import crop_resize_all, crop_resize_batched, train_plan  # noqa: E402
from hpcrepro.workload.synthetic import encode_jpeg, render_image  # noqa: E402


def timed(work, repeats: int) -> tuple[float, object]:
    result = work()  # warm-up
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 2), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}

    def save() -> None:
        (args.out / "nvimgcodec_probe.json").write_text(json.dumps(report, indent=1))

    rng = np.random.default_rng(0)
    jpegs = [encode_jpeg(render_image(i % 1000, 1000, rng, 300, 500)) for i in range(args.batch)]
    report["mean_jpeg_kib"] = round(sum(map(len, jpegs)) / len(jpegs) / 1024, 1)
    tensors = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
    device = torch.device("cuda", 0)
    try:
        from nvidia import nvimgcodec

        report["nvimgcodec"] = nvimgcodec.__version__
        from hpcrepro.workload.nvjpeg import nvimgcodec_decoder, nvjpeg_decoder
    except Exception as exc:
        report["nvimgcodec_error"] = f"{type(exc).__name__}: {exc}"
        save()
        print(json.dumps(report, indent=1))
        return 1

    pillow = [np.asarray(Image.open(io.BytesIO(j)).convert("RGB")).astype(np.int16) for j in jpegs]
    decoders = {"nvimgcodec (hardware, then CUDA)": nvimgcodec_decoder(device),
                "torchvision nvJPEG": nvjpeg_decoder(device)}
    for name, kinds in (("nvimgcodec hardware only", ["HW_GPU_ONLY"]),
                        ("nvimgcodec CUDA only", ["GPU_ONLY"]),
                        ("nvimgcodec hybrid only", ["HYBRID_CPU_GPU"])):
        try:
            only = nvimgcodec.Decoder(backends=[nvimgcodec.Backend(getattr(
                nvimgcodec.BackendKind, kind)) for kind in kinds])
            params = nvimgcodec.DecodeParams(apply_exif_orientation=False,
                                             color_spec=nvimgcodec.ColorSpec.SRGB)

            def decode(batch, only=only, params=params):
                images = only.decode([nvimgcodec.CodeStream(t.numpy()) for t in batch],
                                     params=params)
                if any(image is None for image in images):
                    raise RuntimeError(f"{sum(i is None for i in images)} images not decoded")
                return [torch.from_dlpack(i).permute(2, 0, 1) for i in images]

            decoders[name] = decode
        except Exception as exc:
            report[f"{name} error"] = f"{type(exc).__name__}: {exc}"
    decode_ms, differences = {}, {}
    decoded = None
    for name, decode in decoders.items():
        try:
            milliseconds, images = timed(lambda decode=decode: decode(tensors), args.repeats)
        except Exception as exc:
            report[f"{name} error"] = f"{type(exc).__name__}: {exc}"
            continue
        decode_ms[name] = milliseconds
        cpu_started = time.thread_time()
        decode(tensors)
        torch.cuda.synchronize()
        report.setdefault("decode_thread_cpu_ms_per_batch", {})[name] = round(
            1000 * (time.thread_time() - cpu_started), 2)
        diffs = [float(np.abs(im.permute(1, 2, 0).cpu().numpy().astype(np.int16) - p).mean())
                 for im, p in zip(images, pillow, strict=True)]
        differences[name] = {"mean_abs": round(statistics.mean(diffs), 3),
                             "worst_image": round(max(diffs), 3)}
        if decoded is None or name.startswith("nvimgcodec (hardware"):
            decoded = [image.clone() for image in images]
        report["decode_ms_per_batch"], report["vs_pillow_full_image"] = decode_ms, differences
        save()
        print(name, milliseconds, "ms", differences[name], flush=True)
    if decoded is None:
        save()
        return 1
    plans = [list(train_plan(int(i.shape[2]), int(i.shape[1]), random.Random(n)).as_tuple())
             for n, i in enumerate(decoded)]
    resize_ms = {}
    for name, resize in (("per image (crop_resize_all)", crop_resize_all),
                         ("batched (crop_resize_batched)", crop_resize_batched)):
        resize_ms[name], out = timed(lambda r=resize: r(decoded, plans, args.size), args.repeats)
        if name.startswith("per"):
            reference = out
        else:
            report["batched_vs_per_image_mean_abs"] = round(
                float((out.round() - reference.round()).abs().mean()), 4)
    report["resize_ms_per_batch"] = resize_ms
    cpu_started = time.thread_time()
    crop_resize_batched(decoded, plans, args.size)
    torch.cuda.synchronize()
    report["batched_resize_thread_cpu_ms"] = round(1000 * (time.thread_time() - cpu_started), 2)
    progressive = io.BytesIO()
    Image.open(io.BytesIO(jpegs[0])).save(progressive, format="JPEG", progressive=True)
    for name, decode in decoders.items():
        try:
            (image,) = decode([torch.frombuffer(bytearray(progressive.getvalue()),
                                                dtype=torch.uint8)])
            report.setdefault("progressive_jpeg", {})[name] = list(image.shape)
        except Exception as exc:
            report.setdefault("progressive_jpeg", {})[name] = f"{type(exc).__name__}: {exc}"
    started = torch.cuda.Event(enable_timing=True)
    ended = torch.cuda.Event(enable_timing=True)
    started.record()
    crop_resize_batched(decoded, plans, args.size)
    ended.record()
    torch.cuda.synchronize()
    report["batched_resize_gpu_ms_event"] = round(started.elapsed_time(ended), 2)
    save()
    print(json.dumps(report, indent=1))
    return 0 if any(k.startswith("nvimgcodec (") for k in decode_ms) else 1


if __name__ == "__main__":
    sys.exit(main())
