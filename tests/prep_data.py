"""A synthetic ImageNet-shaped data set: class folders of real JPEGs, and the same as ILSVRC tars.

Images are real Pillow-encoded JPEGs of varied sizes, plus the oddities real ImageNet has (a PNG
and a CMYK JPEG under `.JPEG` names, a grayscale JPEG) and one JPEG whose bytes contain the RecordIO
magic number at 4-byte-aligned offsets, so the packed file needs dmlc's split records.
Used by the tests, `benchmarks/bench_prep.py` and `benchmarks/dali_read.py` (stdlib + Pillow only).
"""

from __future__ import annotations

import io
import random
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MAGIC_BYTES = struct.pack("<I", 0xCED7230A)


@dataclass
class SyntheticSet:
    root: Path
    wnids: list[str]
    train: dict[str, list[str]] = field(default_factory=dict)  # wnid -> file names
    val: dict[str, str] = field(default_factory=dict)  # val file name -> wnid

    @property
    def extracted(self) -> Path:
        return self.root / "extracted"

    @property
    def tars(self) -> Path:
        return self.root / "tars"


def jpeg_bytes(
    rng: random.Random,
    width: int,
    height: int,
    mode: str = "RGB",
    quality: int = 90,
    noise: bool = False,
) -> bytes:
    """A real JPEG: a smooth gradient (small) or noise (large, like photos compress)."""
    from PIL import Image

    channels = {"RGB": 3, "L": 1, "CMYK": 4}[mode]
    if noise:
        raw = rng.randbytes(width * height * channels)
    else:
        a, b = rng.randrange(256), rng.randrange(1, 8)
        raw = bytes(
            ((x * b + y + a + c * 40) & 0xFF)
            for y in range(height)
            for x in range(width)
            for c in range(channels)
        )
    image = Image.frombytes(mode, (width, height), raw)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png_bytes(rng: random.Random, width: int, height: int) -> bytes:
    from PIL import Image

    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def with_comment(jpeg: bytes, comment: bytes) -> bytes:
    """Insert a COM segment right after SOI (the comment starts at byte 6 of the file)."""
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]


def magic_jpeg(rng: random.Random) -> bytes:
    """A JPEG whose bytes hold the RecordIO magic at offsets 8 and 16 (aligned in the payload)."""
    comment = b"\0\0" + MAGIC_BYTES + b"xyzw" + MAGIC_BYTES + b"tail"
    data = with_comment(jpeg_bytes(rng, 48, 40), comment)
    assert data[8:12] == MAGIC_BYTES and data[16:20] == MAGIC_BYTES
    return data


def make_imagenet(
    root: Path,
    *,
    classes: int = 4,
    train_per_class: int = 5,
    val_per_class: int = 2,
    seed: int = 0,
    min_side: int = 40,
    max_side: int = 96,
    noise: bool = False,
    specials: bool = True,
    tars: bool = True,
) -> SyntheticSet:
    """Write `root/extracted/{train,val}/<wnid>/` and (optionally) `root/tars/` ILSVRC-style."""
    rng = random.Random(seed)
    wnids = sorted(f"n{rng.randrange(10**7, 10**8):08d}" for _ in range(classes))
    data = SyntheticSet(root, wnids)
    val_number = 0
    blobs: dict[str, bytes] = {}
    for class_no, wnid in enumerate(wnids):
        names = []
        for n in range(train_per_class):
            name = f"{wnid}_{rng.randrange(1, 99999)}_{n}.JPEG"
            size = (rng.randint(min_side, max_side), rng.randint(min_side, max_side))
            blob = jpeg_bytes(rng, *size, noise=noise)
            if specials and class_no == 0 and n == 0:
                blob = magic_jpeg(rng)
            elif specials and class_no == 0 and n == 1:
                blob = png_bytes(rng, 40, 44)  # ImageNet's n02105855_2933.JPEG is a PNG too
            elif specials and class_no == 1 and n == 0:
                blob = jpeg_bytes(rng, *size, mode="CMYK")
            elif specials and class_no == 1 and n == 1:
                blob = jpeg_bytes(rng, *size, mode="L")
            names.append(name)
            blobs[f"train/{wnid}/{name}"] = blob
        data.train[wnid] = names
        for _ in range(val_per_class):
            val_number += 1
            name = f"ILSVRC2012_val_{val_number:08d}.JPEG"
            size = (rng.randint(min_side, max_side), rng.randint(min_side, max_side))
            blobs[f"val/{wnid}/{name}"] = jpeg_bytes(rng, *size, noise=noise)
            data.val[name] = wnid
    for rel, blob in blobs.items():
        path = data.extracted / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    if tars:
        write_tars(data)
    return data


def _add_bytes(tar: tarfile.TarFile, name: str, blob: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    info.mtime = 1_300_000_000
    tar.addfile(info, io.BytesIO(blob))


def write_tars(data: SyntheticSet) -> None:
    """ILSVRC2012_img_train.tar (a tar of <wnid>.tar), ILSVRC2012_img_val.tar (flat) + labels."""
    data.tars.mkdir(parents=True, exist_ok=True)
    with tarfile.open(
        data.tars / "ILSVRC2012_img_train.tar", "w", format=tarfile.GNU_FORMAT
    ) as outer:
        for wnid in data.wnids:
            inner_buffer = io.BytesIO()
            with tarfile.open(fileobj=inner_buffer, mode="w", format=tarfile.GNU_FORMAT) as inner:
                for name in data.train[wnid]:
                    _add_bytes(inner, name, (data.extracted / "train" / wnid / name).read_bytes())
            _add_bytes(outer, f"{wnid}.tar", inner_buffer.getvalue())
    with tarfile.open(data.tars / "ILSVRC2012_img_val.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(data.val):
            _add_bytes(tar, name, (data.extracted / "val" / data.val[name] / name).read_bytes())
    lines = ["ImageId,PredictionString"]
    lines += [
        f"{name.rsplit('.', 1)[0]},{wnid} 1 2 30 40" for name, wnid in sorted(data.val.items())
    ]
    (data.tars / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")


def write_valprep(data: SyntheticSet, path: Path) -> None:
    """The valprep.sh format: mkdir lines then `mv <image> <wnid>/` lines."""
    lines = [f"mkdir -p {w}" for w in data.wnids]
    lines += [f"mv {name} {wnid}/" for name, wnid in sorted(data.val.items())]
    path.write_text("\n".join(lines) + "\n")
