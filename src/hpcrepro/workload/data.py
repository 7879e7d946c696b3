"""RecordIO images for training and evaluation, read through hpcrepro's own `IndexedReader`.

Training images get a random-resized crop (area 5-100 %, aspect 3/4-4/3, as NVIDIA's DALI pipeline
uses) and a random horizontal flip; evaluation images are resized so the short side is
size/0.875 and centre-cropped. JPEGs are decoded with Pillow; `Image.draft` lets the JPEG decoder
scale down by 1/2, 1/4 or 1/8 while decoding whenever the crop still has enough pixels, which saves
most of the decode time on full-size ImageNet. Batches leave the workers as uint8 NCHW tensors;
`normalise` turns them into float on the device, where it is cheapest.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hpcrepro.errors import UserError
from hpcrepro.recordio import IndexedReader, RecordIOError

MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
MIN_AREA, MAX_AREA = 0.05, 1.0
MIN_RATIO, MAX_RATIO = 3 / 4, 4 / 3
EVAL_CROP_FRACTION = 0.875


def random_crop_box(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """(left, top, crop_width, crop_height) of a random-resized crop; whole image as a fallback."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(MIN_AREA, MAX_AREA)
        ratio = math.exp(rng.uniform(math.log(MIN_RATIO), math.log(MAX_RATIO)))
        crop_w = round(math.sqrt(target * ratio))
        crop_h = round(math.sqrt(target / ratio))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            return rng.randint(0, width - crop_w), rng.randint(0, height - crop_h), crop_w, crop_h
    return 0, 0, width, height


def decode_train(jpeg: bytes, size: int, rng: random.Random) -> Image.Image:
    source = Image.open(io.BytesIO(jpeg))
    width, height = source.size
    left, top, crop_w, crop_h = random_crop_box(width, height, rng)
    # Ask the decoder for the smallest DCT scale that keeps the crop at least `size` pixels wide.
    source.draft("RGB", (math.ceil(width * size / crop_w), math.ceil(height * size / crop_h)))
    scale_x, scale_y = source.size[0] / width, source.size[1] / height
    box = (left * scale_x, top * scale_y, (left + crop_w) * scale_x, (top + crop_h) * scale_y)
    image = source.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, box=box)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def decode_eval(jpeg: bytes, size: int) -> Image.Image:
    source = Image.open(io.BytesIO(jpeg))
    short = size / EVAL_CROP_FRACTION
    width, height = source.size
    scale = short / min(width, height)
    source.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    image = source.convert("RGB")
    width, height = image.size
    scale = short / min(width, height)
    resized = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(resized, Image.Resampling.BILINEAR)
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_chw_uint8(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


_DATA_HINT = (
    "check the data set with `hpcrepro prep verify` and rebuild it with `hpcrepro prep imagenet`"
)
_HEADER_BYTES = 8  # a record's magic and length word


def _first_non_ascii_line(path: Path) -> int:
    data = path.read_bytes()
    position = next((i for i, byte in enumerate(data) if byte > 127), len(data))
    return data.count(b"\n", 0, position) + 1


def open_indexed(rec_path: Path, idx_path: Path) -> IndexedReader:
    """An `IndexedReader` whose index has been checked against its `.rec`.

    A damaged index must be blamed on itself: an `.idx` cut short mid-line still parses (its
    last offset shrinks to a few digits), and the run would fail later on "bad magic" in the
    `.rec`. Offsets grow in file order in every index im2rec or `hpcrepro prep` writes, and each
    must leave room for a record header inside the `.rec`.
    """
    try:
        reader = IndexedReader(rec_path, idx_path)
        rec_size = rec_path.stat().st_size
    except UnicodeDecodeError:
        raise UserError(
            "the index holds non-ASCII bytes; an .idx has 'id<TAB>offset' lines only",
            where=f"{idx_path}:{_first_non_ascii_line(idx_path)}",
            hint=_DATA_HINT,
        ) from None
    except RecordIOError as exc:  # its message starts with 'path:line:'
        raise UserError(f"damaged index: {exc}", hint=_DATA_HINT) from None
    except OSError as exc:
        raise UserError(
            f"cannot read {exc.filename or idx_path}: {exc.strerror or exc}", hint=_DATA_HINT
        ) from None
    previous = -1
    for line, (_, offset) in enumerate(reader.entries, 1):
        problem = ""
        if offset <= previous:
            problem = f"offset {offset} does not follow the previous line's {previous}"
        elif offset + _HEADER_BYTES > rec_size:
            problem = f"offset {offset} lies beyond the end of {rec_path} ({rec_size} bytes)"
        if problem:
            raise UserError(
                f"the index is damaged: {problem} (a copy cut short, or an index written "
                "for another .rec?)",
                where=f"{idx_path}:{line}",
                hint=_DATA_HINT,
            )
        previous = offset
    return reader


class RecordImageDataset(torch.utils.data.Dataset):
    """Images of one `.rec`/`.idx` pair, decoded and augmented per item.

    Items are addressed as (record position, epoch): the epoch travels with the index because
    persistent loader workers never see attribute changes made in the main process.
    """

    def __init__(self, rec_path: Path, idx_path: Path, size: int, train: bool, seed: int) -> None:
        for path in (rec_path, idx_path):
            if not Path(path).is_file():
                raise UserError(
                    f"data file not found: {path}",
                    hint="point HPCREPRO_DATA_DIR (or --data-dir) at the folder that holds "
                    "train.rec, train.idx, val.rec and val.idx (made by `hpcrepro prep imagenet`)",
                )
        self.reader = open_indexed(Path(rec_path), Path(idx_path))
        self.size = size
        self.train = train
        self.seed = seed

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        position, epoch = item
        try:
            record = self.reader.read_position(position)
            if self.train:
                # Seeded per (run, epoch, image): augmentations do not depend on worker scheduling.
                rng = random.Random(hash((self.seed, epoch, position)))
                image = decode_train(record.image, self.size, rng)
            else:
                image = decode_eval(record.image, self.size)
        except (OSError, SyntaxError, ValueError) as exc:  # Pillow and RecordIOError
            raise UserError(
                f"{self.reader.rec_path}: record {position} of the index cannot be read as an "
                f"image ({exc})",
                hint=_DATA_HINT,
            ) from None
        return to_chw_uint8(image), int(record.label)


@dataclass
class ShardedBatches(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """This rank's batches of one epoch: a seeded global permutation, cut into global batches.

    Every rank draws the same permutation, takes its slice of each global batch and so sees a
    disjoint shard; the incomplete last global batch is dropped so that all ranks step together.
    For evaluation (`train=False`) the shard is every world_size-th image, in order,
    so that the sum over ranks counts each image exactly once.
    """

    length: int
    batch_size: int
    rank: int
    world_size: int
    seed: int
    train: bool
    epoch: int = 0

    def indices(self) -> list[int]:
        if not self.train:
            return list(range(self.rank, self.length, self.world_size))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        global_batch = self.batch_size * self.world_size
        usable = (self.length // global_batch) * global_batch
        mine: list[int] = []
        for start in range(0, usable, global_batch):
            first = start + self.rank * self.batch_size
            mine.extend(order[first : first + self.batch_size])
        return mine

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        mine = self.indices()
        for start in range(0, len(mine), self.batch_size):
            yield [(position, self.epoch) for position in mine[start : start + self.batch_size]]

    def __len__(self) -> int:
        if self.train:
            return self.length // (self.batch_size * self.world_size)
        return math.ceil(len(self.indices()) / self.batch_size)


def make_loader(
    dataset: RecordImageDataset,
    sampler: ShardedBatches,
    workers: int,
    pin_memory: bool,
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_quiet_worker,
    )


def _quiet_worker(_: int) -> None:
    # Decoding is Pillow's work; one intra-op thread per worker keeps workers from fighting.
    torch.set_num_threads(1)


def normalise(batch: torch.Tensor, channels_last: bool, dtype: torch.dtype) -> torch.Tensor:
    """uint8 NCHW on the device -> normalised float, optionally channels_last."""
    mean = torch.tensor(MEAN, device=batch.device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=batch.device, dtype=torch.float32).view(1, 3, 1, 1)
    out = (batch.float() - mean) / std
    if channels_last:
        out = out.contiguous(memory_format=torch.channels_last)
    return out.to(dtype)
