"""A small, learnable, ImageNet-shaped synthetic data set: JPEGs in `train/<wnid>/`, `val/<wnid>/`.

Each class has its own hue and stripe orientation; every image gets a random shade, stripe phase,
frequency jitter, noise and size, so a network has to learn colour and texture rather than memorise
pixels. Hue ranges of neighbouring classes overlap, so colour alone is not enough. Used by the tiny
profile, `hpcrepro demo`, the tests and the GPU benchmark (which asks for 224-pixel-sized images).
It needs only numpy and Pillow.
"""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

import numpy as np
from PIL import Image

from hpcrepro.recordio import encode_record, pack_image


def class_wnids(num_classes: int) -> list[str]:
    """WordNet-id-shaped class names (`n0100000c`), sorted like ImageNet's."""
    return [f"n{1_000_000 + index:08d}" for index in range(num_classes)]


def render_image(
    label: int, num_classes: int, rng: np.random.Generator, min_side: int, max_side: int
) -> np.ndarray:
    """One HxWx3 uint8 image of class `label`."""
    height = int(rng.integers(min_side, max_side + 1))
    width = int(rng.integers(min_side, max_side + 1))
    hue = (label + rng.uniform(-0.6, 0.6)) / num_classes % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 0.9), rng.uniform(0.45, 0.9))
    angle = np.pi * ((label * 3) % num_classes) / num_classes
    period = rng.uniform(0.12, 0.2) * min(height, width)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period + phase)
    base = np.array([red, green, blue], dtype=np.float32)
    pixels = base[None, None, :] * (0.75 + 0.25 * stripes[..., None])
    pixels += rng.normal(0.0, 0.06, size=pixels.shape).astype(np.float32)
    return (np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_synthetic_imagenet(
    root: Path,
    *,
    num_classes: int = 10,
    train_per_class: int = 100,
    val_per_class: int = 20,
    min_side: int = 36,
    max_side: int = 56,
    seed: int = 0,
) -> Path:
    """Write `root/train/<wnid>/*.JPEG` and `root/val/<wnid>/*.JPEG`; returns `root`."""
    rng = np.random.default_rng(seed)
    wnids = class_wnids(num_classes)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for label, wnid in enumerate(wnids):
            folder = Path(root) / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                pixels = render_image(label, num_classes, rng, min_side, max_side)
                (folder / f"{wnid}_{index:05d}.JPEG").write_bytes(encode_jpeg(pixels))
    return Path(root)


def pack_split(split_dir: Path, rec_path: Path, idx_path: Path) -> int:
    """Pack one `<split>/<wnid>/*.JPEG` tree into RecordIO as im2rec --pass-through would.

    Labels are class indices in sorted wnid order; JPEG bytes are stored unchanged. This is a
    plain sequential packer for tests and benchmarks; `hpcrepro prep` is the real, parallel one.
    Returns the number of records.
    """
    classes = sorted(entry.name for entry in Path(split_dir).iterdir() if entry.is_dir())
    count = 0
    with open(rec_path, "wb") as rec, open(idx_path, "w", encoding="ascii") as idx:
        for label, wnid in enumerate(classes):
            for image in sorted((Path(split_dir) / wnid).iterdir()):
                idx.write(f"{count}\t{rec.tell()}\n")
                rec.write(encode_record(pack_image(float(label), count, image.read_bytes())))
                count += 1
    return count


def pack_dataset(raw_root: Path, out_dir: Path) -> Path:
    """`train.rec/.idx` and `val.rec/.idx` in `out_dir` from a `train/` + `val/` tree."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        pack_split(Path(raw_root) / split, out_dir / f"{split}.rec", out_dir / f"{split}.idx")
    return out_dir
