"""DALI judges the format on a GPU: read every record of an hpcrepro-prepared set with
`fn.readers.mxnet` (what NVIDIA's ResNet-50 training uses) and decode it with
`fn.decoders.image(device="mixed")`.

Builds a synthetic ImageNet-shaped set (real JPEGs of varied sizes, the nested ILSVRC tars, a PNG
and a CMYK JPEG under .JPEG names, one JPEG that forces a split record), prepares it with
`hpcrepro.prep` from the tars, then checks per split: record count, every label against the .lst,
every stored byte string against the source file, decoded shapes against Pillow's, and reports
the pixel difference to Pillow's decode (nvJPEG and libjpeg may round differently).
Writes $OUT/dali_read.json (or ./dali_read.json) and exits non-zero when a check fails.

    PYTHONPATH=src python3 benchmarks/dali_read.py [--classes 20] [--per-class 100]

Needs: numpy, pillow, nvidia-dali-cuda130, an NVIDIA GPU. Nothing else from hpcrepro's deps.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]

import prep_data  # noqa: E402
from hpcrepro.prep.imagenet import Request, prepare  # noqa: E402
from hpcrepro.prep.listing import read_lst  # noqa: E402
from hpcrepro.recordio import read_index  # noqa: E402


def _sample(batch: Any, i: int) -> Any:
    """Sample `i` of a CPU TensorList as a numpy array (DALI 1.x `at`, or indexing)."""
    import numpy as np

    return batch.at(i) if hasattr(batch, "at") else np.array(batch[i])


def read_split(folder: Path, raw: Path, split: str, batch: int) -> dict[str, object]:
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types
    from PIL import Image

    lst = {line.index: line for line in read_lst(folder / f"{split}.lst")}
    keys = [key for key, _ in read_index(folder / f"{split}.idx")]

    @pipeline_def(batch_size=batch, num_threads=4, device_id=0, prefetch_queue_depth=2)
    def pipeline():  # type: ignore[no-untyped-def]
        encoded, labels = fn.readers.mxnet(
            path=[str(folder / f"{split}.rec")],
            index_path=[str(folder / f"{split}.idx")],
            random_shuffle=False,
            shard_id=0,
            num_shards=1,
            pad_last_batch=True,
            name="Reader",
        )
        images = fn.decoders.image(encoded, device="mixed", output_type=types.RGB)
        return encoded, labels, images

    pipe = pipeline()
    if hasattr(pipe, "build"):
        pipe.build()
    size = len(keys)
    reader_size = None
    if hasattr(pipe, "reader_meta"):
        reader_size = pipe.reader_meta("Reader").get("epoch_size")
    problems: list[str] = []
    seen = 0
    max_diff = 0
    diff_sum = 0.0
    pixels = 0
    started = time.perf_counter()
    while seen < size:
        encoded, labels, images = pipe.run()
        images = images.as_cpu()
        for i in range(min(batch, size - seen)):
            key = keys[seen]
            line = lst[key]
            source = (raw / split / line.relpath).read_bytes()
            label = float(np.asarray(_sample(labels, i)).reshape(-1)[0])
            if label != line.label:
                problems.append(f"{split} record {seen} (id {key}): label {label} != {line.label}")
            if np.asarray(_sample(encoded, i)).tobytes() != source:
                problems.append(
                    f"{split} record {seen} (id {key}): bytes differ from {line.relpath}"
                )
            decoded = np.asarray(_sample(images, i))
            reference = np.asarray(Image.open(io.BytesIO(source)).convert("RGB"))
            if decoded.shape != reference.shape:
                problems.append(
                    f"{split} {line.relpath}: shape {decoded.shape} != {reference.shape}"
                )
            else:
                diff = np.abs(decoded.astype(np.int16) - reference.astype(np.int16))
                max_diff = max(max_diff, int(diff.max()))
                diff_sum += float(diff.sum())
                pixels += diff.size
            seen += 1
    seconds = time.perf_counter() - started
    return {
        "records_in_idx": len(keys),
        "listed": len(lst),
        "read": seen,
        "reader_epoch_size": reader_size,
        "seconds": round(seconds, 3),
        "images_per_s": round(seen / seconds, 1),
        "pixel_max_abs_diff_vs_pillow": max_diff,
        "pixel_mean_abs_diff_vs_pillow": round(diff_sum / max(pixels, 1), 4),
        "problems": problems[:20],
        "ok": not problems and seen == len(lst) and reader_size in (None, len(keys)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    import nvidia.dali

    out_dir = Path(os.environ.get("OUT", "."))
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dali-read-") as scratch:
        work = Path(scratch)
        data = prep_data.make_imagenet(work / "raw", classes=args.classes,
                                       train_per_class=args.per_class,
                                       val_per_class=max(1, args.per_class // 10),
                                       min_side=64, max_side=400, noise=True)  # fmt: skip
        started = time.perf_counter()
        prepare(Request(raw=data.tars, out=work / "rec", workers=os.cpu_count() or 1),
                log=lambda message: print(f"prep: {message}", flush=True))  # fmt: skip
        prep_seconds = time.perf_counter() - started
        splits = {
            s: read_split(work / "rec", data.extracted, s, args.batch) for s in ("train", "val")
        }
    report = {
        "dali": nvidia.dali.__version__,
        "classes": args.classes,
        "prep_seconds": round(prep_seconds, 3),
        "splits": splits,
        "ok": all(s["ok"] for s in splits.values()),
    }
    text = json.dumps(report, indent=1)
    (out_dir / "dali_read.json").write_text(text + "\n")
    print(text)
    print(
        "DALI read every record with the right label and bytes: "
        + ("yes" if report["ok"] else "NO")
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
