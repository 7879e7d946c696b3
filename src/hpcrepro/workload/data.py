"""RecordIO images for training and evaluation, read through hpcrepro's own `IndexedReader`.

Every item gets its `augment.Plan` from the image's size and a seed per (run, epoch, image), so
augmentation does not depend on worker scheduling or on the decode path. `RecordImageDataset`
decodes with Pillow in the loader workers (the CPU path) and hands out uint8 CHW crops;
`EncodedRecordDataset` hands out the JPEG bytes with their plan, for the GPU path to decode
(`hpcrepro.workload.nvjpeg`). `normalise` (in `augment`) turns a batch into float on the device.
"""

from __future__ import annotations

import io
import math
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hpcrepro.errors import UserError
from hpcrepro.recordio import IndexedReader, RecordIOError
from hpcrepro.workload.augment import Plan, apply_pillow, eval_plan, train_plan


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
    """Images of one `.rec`/`.idx` pair, decoded with Pillow and augmented per item (CPU path).

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

    def plan(self, position: int, epoch: int, width: int, height: int) -> Plan:
        if not self.train:
            return eval_plan(width, height)
        # Seeded per (run, epoch, image): augmentations do not depend on worker scheduling.
        return train_plan(width, height, random.Random(hash((self.seed, epoch, position))))

    def _open(self, position: int) -> tuple[Image.Image, bytes, int]:
        try:
            record = self.reader.read_position(position)
            return Image.open(io.BytesIO(record.image)), record.image, int(record.label)
        except (OSError, SyntaxError, ValueError) as exc:  # Pillow and RecordIOError
            raise self.unreadable(position, exc) from None

    def unreadable(self, position: int, reason: object) -> UserError:
        return UserError(
            f"{self.reader.rec_path}: record {position} of the index cannot be read as an "
            f"image ({reason})",
            hint=_DATA_HINT,
        )

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        position, epoch = item
        source, _, label = self._open(position)
        try:
            image = apply_pillow(source, self.plan(position, epoch, *source.size), self.size)
        except (OSError, SyntaxError, ValueError) as exc:
            raise self.unreadable(position, exc) from None
        return to_chw_uint8(image), label


JPEG, PIXELS = 0, 1  # how an EncodedItem's payload is stored


@dataclass(frozen=True)
class EncodedItem:
    """One image for the GPU path: JPEG bytes (or, for what nvJPEG cannot read, RGB pixels)."""

    payload: bytes
    kind: int
    height: int
    width: int
    plan: Plan
    label: int
    position: int


class EncodedRecordDataset(RecordImageDataset):
    """Records with their plans, undecoded: the loader workers only read and parse headers.

    Baseline and progressive JPEGs in RGB or greyscale go to the GPU as bytes. The rest (CMYK
    JPEGs, and the PNG that ImageNet's training set holds under a .JPEG name) are decoded here
    with Pillow and travel as pixels, so the GPU path accepts every image the CPU path accepts.
    """

    def __getitem__(self, item: tuple[int, int]) -> EncodedItem:  # type: ignore[override]
        position, epoch = item
        source, jpeg, label = self._open(position)
        width, height = source.size
        plan = self.plan(position, epoch, width, height)
        if source.format == "JPEG" and source.mode in ("RGB", "L"):
            return EncodedItem(jpeg, JPEG, height, width, plan, label, position)
        try:
            pixels = np.asarray(source.convert("RGB"), dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as exc:
            raise self.unreadable(position, exc) from None
        return EncodedItem(pixels.tobytes(), PIXELS, height, width, plan, label, position)


@dataclass
class EncodedBatch:
    """A batch of `EncodedItem`s in a few tensors, cheap to pass between processes."""

    data: torch.Tensor  # uint8, every payload back to back
    offsets: torch.Tensor  # int64, N + 1
    kinds: torch.Tensor  # int8: JPEG or PIXELS
    shapes: torch.Tensor  # int32 (N, 2): height, width
    plans: torch.Tensor  # int32 (N, 5): left, top, width, height, flip
    labels: torch.Tensor  # int64
    positions: torch.Tensor  # int64: record positions, for error messages

    def __len__(self) -> int:
        return len(self.labels)

    def payload(self, index: int) -> torch.Tensor:
        return self.data[int(self.offsets[index]) : int(self.offsets[index + 1])]


def collate_encoded(items: Sequence[EncodedItem]) -> EncodedBatch:
    sizes = [len(item.payload) for item in items]
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    data = torch.frombuffer(bytearray().join(item.payload for item in items), dtype=torch.uint8)
    return EncodedBatch(
        data=data,
        offsets=torch.from_numpy(offsets),
        kinds=torch.tensor([item.kind for item in items], dtype=torch.int8),
        shapes=torch.tensor([(item.height, item.width) for item in items], dtype=torch.int32),
        plans=torch.tensor([item.plan.as_tuple() for item in items], dtype=torch.int32),
        labels=torch.tensor([item.label for item in items], dtype=torch.int64),
        positions=torch.tensor([item.position for item in items], dtype=torch.int64),
    )


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
    """The loader of one split. Once DALI is loaded in this process (a DALI run, or `auto`
    probing it), the workers start from a fresh interpreter (forkserver) instead of a fork: a
    fork copies DALI's native state mid-flight and the child crashes (seen as a segmentation
    fault in the worker). Workers start at the first batch, after run_start; so that this costs
    a fork and not an interpreter importing torch (seconds, in the first epoch's time), the fork
    server starts here, during initialisation, with this module and torch already imported."""
    encoded = isinstance(dataset, EncodedRecordDataset)
    fresh = workers > 0 and "nvidia.dali" in sys.modules
    if fresh:
        _start_fork_server()
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        multiprocessing_context="forkserver" if fresh else None,
        persistent_workers=workers > 0,
        pin_memory=pin_memory and not encoded,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_quiet_worker,
        collate_fn=collate_encoded if encoded else None,
    )


def _start_fork_server() -> None:
    """The forkserver, running now with the workers' modules imported; it reads no data."""
    import multiprocessing.forkserver

    multiprocessing.set_forkserver_preload([__name__])
    multiprocessing.forkserver.ensure_running()


def _quiet_worker(_: int) -> None:
    # Decoding is Pillow's work; one intra-op thread per worker keeps workers from fighting.
    torch.set_num_threads(1)
