"""A small RecordIO set with every kind of image ImageNet holds, for the decode paths' tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from hpcrepro.recordio import encode_record, pack_image
from hpcrepro.workload.synthetic import encode_jpeg, render_image


def _image(pixels: np.ndarray, mode: str, kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=kind)
    return buffer.getvalue()


def write_mixed_records(folder: Path) -> Path:
    """20 colour JPEGs, then a greyscale JPEG, a CMYK JPEG and a PNG, as train and val sets."""
    rng = np.random.default_rng(7)
    images = [(i % 4, encode_jpeg(render_image(i % 4, 4, rng, 60, 130))) for i in range(20)]
    pixels = render_image(1, 4, rng, 60, 130)
    images += [(1, _image(pixels, mode, kind)) for mode, kind in (("L", "JPEG"), ("CMYK", "JPEG"))]
    images.append((2, _image(pixels, "RGB", "PNG")))
    for split in ("train", "val"):
        with open(folder / f"{split}.rec", "wb") as rec, open(folder / f"{split}.idx", "w") as idx:
            for key, (label, data) in enumerate(images):
                idx.write(f"{key}\t{rec.tell()}\n")
                rec.write(encode_record(pack_image(float(label), key, data)))
    return folder
