"""The DALI data path: the planned crops of an `EncodedBatch` decoded and resized by DALI.

The loader workers still read the records and draw the plans (`EncodedRecordDataset`), so every
decode path crops the same boxes and mirrors the same images. DALI then does, in its own native
threads and on the GPU, what the `nvjpeg` path does in Python: decode the box of each JPEG
(`decoders.image_slice`, NVIDIA's mixed decoder: the hardware JPEG engines where the GPU has
them), resize it to size x size with an antialiased linear filter and mirror and standardise it
(`crop_mirror_normalize`, which writes NHWC: channels_last as the model wants it). The host work
left in Python is a few list operations a batch, which is why this path can keep up with the
compiled step where the `nvjpeg` path cannot (benchmarks/RESULTS.md, issue 16).

Images that are not JPEGs (a PNG, CMYK JPEGs: the loader workers hand them over as pixels) are
resized by `augment` and written over their rows. On a CPU the same pipeline runs with DALI's CPU
operators: that is how the tests check it against the Pillow path. DALI is imported here only,
when this path is chosen or probed.
"""

from __future__ import annotations

import functools
import io
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from hpcrepro.errors import UserError
from hpcrepro.workload.augment import (
    MEAN,
    STD,
    crop_resize_batched,
    eval_plan,
    flip_where,
    normalise,
)
from hpcrepro.workload.data import JPEG, EncodedBatch, EncodedItem, collate_encoded

_HINT = (
    "check the data set with `hpcrepro prep verify`, or train with --data-backend cpu to see "
    "Pillow's verdict on the same record"
)
_STAND_IN: np.ndarray | None = None  # what DALI decodes in a pixel item's place (then replaced)
WARM_UP_SIZE = (500, 375)  # width, height: ImageNet's most common photo shape


@functools.cache
def _warm_up_jpeg() -> bytes:
    """A generated photo-sized JPEG (a gradient with noise): no training data. Made once for
    all of a process's pipelines."""
    width, height = WARM_UP_SIZE
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, width)[None, :, None].repeat(height, 0)
    pixels = np.clip(gradient + rng.normal(0, 12, size=(height, width, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _stand_in_jpeg() -> np.ndarray:
    global _STAND_IN
    if _STAND_IN is None:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
        _STAND_IN = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
    return _STAND_IN


def pipeline_threads(local_ranks: int, loader_workers: int, pipelines: int = 1) -> int:
    """DALI's host threads for each of a rank's pipelines: the rank's share of the cores it may
    use, less its loaders, between 2 and 8, split between its pipelines (at least 1 each).

    Where the launcher bound each task to its own cores (Slurm's --cpu-bind), the cores this
    process sees are its share already; otherwise the node's ranks share them.
    """
    visible = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    total = os.cpu_count() or 2
    share = (visible or total) // max(1, local_ranks) if visible in (0, total) else visible
    return max(1, max(2, min(8, share - loader_workers)) // max(1, pipelines))


# NVIDIA's v4.0 H100/H200 setting (--dali-hw-decoder-load): nearly every JPEG to the hardware
# decoder engines, which leaves the SMs to the training step; DALI's default is 0.65.
HW_DECODER_LOAD = 0.99


def build_pipeline(
    device: torch.device, batch_size: int, size: int, threads: int, half: bool = False
) -> Any:
    """The DALI pipeline of one split: inputs fed per batch by name, one NHWC output (float16
    where `half`: half the bytes written and read again, as NVIDIA's pipeline outputs)."""
    from nvidia.dali import fn, pipeline_def, types

    on_gpu = device.type == "cuda"
    decoder_options: dict[str, Any] = {"hw_decoder_load": HW_DECODER_LOAD} if on_gpu else {}
    options: dict[str, Any] = {
        "batch_size": batch_size,
        "num_threads": threads,
        "device_id": (device.index or 0) if on_gpu else None,  # None: DALI's CPU operators only
        "prefetch_queue_depth": 1,  # each batch is fed just before it is run
        "exec_async": False,  # the prefetch lanes keep several batches in flight
        "exec_pipelined": False,
    }

    @pipeline_def(**options)
    def planned_crops() -> Any:
        jpegs = fn.external_source(name="jpegs", dtype=types.DALIDataType.UINT8, ndim=1)
        anchors = fn.external_source(name="anchors", dtype=types.DALIDataType.FLOAT, ndim=1)
        shapes = fn.external_source(name="shapes", dtype=types.DALIDataType.FLOAT, ndim=1)
        flips = fn.external_source(name="flips", dtype=types.DALIDataType.INT32, ndim=0)
        images: Any = fn.decoders.image_slice(
            jpegs,
            anchors,
            shapes,
            device="mixed" if on_gpu else "cpu",
            output_type=types.DALIImageType.RGB,
            axis_names="WH",
            normalized_anchor=False,
            normalized_shape=False,
            **decoder_options,
        )
        linear = types.DALIInterpType.INTERP_LINEAR
        images = fn.resize(images, resize_x=size, resize_y=size, interp_type=linear, antialias=True)
        return fn.crop_mirror_normalize(
            images,
            dtype=types.DALIDataType.FLOAT16 if half else types.DALIDataType.FLOAT,
            output_layout="HWC",
            mean=list(MEAN),
            std=list(STD),
            mirror=flips,
        )

    pipe = planned_crops()
    pipe.build()
    return pipe


def _undecodable(batch: EncodedBatch, exc: RuntimeError) -> UserError:
    """The record that made DALI fail a batch: the sample DALI names, else the first JPEG that
    Pillow cannot decode either."""
    text = str(exc)
    said = re.search(r"Failed to decode sample #(\d+)[ \t]*:?[ \t]*([^\n]*)", text)
    reason = said.group(0).strip(" :") if said else text.splitlines()[0]
    suspects = [int(said.group(1))] if said and int(said.group(1)) < len(batch) else []
    suspects += [i for i, kind in enumerate(batch.kinds.tolist()) if kind == JPEG]
    for index in suspects:
        try:
            with Image.open(io.BytesIO(batch.payload(index).numpy().tobytes())) as image:
                image.load()
        except (OSError, SyntaxError, ValueError) as bad:
            return UserError(
                f"record {int(batch.positions[index])} cannot be decoded (DALI: {reason}; "
                f"Pillow: {bad})",
                hint=_HINT,
            )
    first, last = int(batch.positions.min()), int(batch.positions.max())
    return UserError(
        f"DALI could not decode a batch of records {first}..{last}, which Pillow decodes: {reason}",
        hint="train with --data-backend nvjpeg or cpu, and report the DALI version with this "
        "message",
    )


@dataclass
class DaliAssembler:
    """An `EncodedBatch` -> (normalised NCHW images, labels) on `device`, through DALI."""

    device: torch.device
    size: int
    channels_last: bool
    dtype: torch.dtype
    batch_size: int
    threads: int = 4
    _pipe: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._pipe = self._build()
        self._warm_up()

    def _warm_up(self) -> None:
        """One full batch of a generated JPEG through the pipeline, during initialisation: the
        decoder's set-up on first use and the first allocation of its buffers then fall before
        run_start, not in the first epoch, and no training data is read for it."""
        width, height = WARM_UP_SIZE
        item = EncodedItem(_warm_up_jpeg(), JPEG, height, width, eval_plan(width, height), 0, 0)
        self._run(collate_encoded([item] * self.batch_size))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def _half(self) -> bool:
        return self.dtype in (torch.float16, torch.bfloat16)

    def _build(self) -> Any:
        return build_pipeline(self.device, self.batch_size, self.size, self.threads, self._half)

    def _inputs(self, batch: EncodedBatch) -> dict[str, list[np.ndarray] | np.ndarray]:
        """The pipeline's inputs: a list of JPEGs (they differ in length), and the boxes and
        flips as dense arrays, which DALI takes as a batch without a Python step per sample."""
        data = batch.data.numpy()
        offsets = batch.offsets.tolist()
        plans = batch.plans.numpy()
        jpegs = []
        for index, kind in enumerate(batch.kinds.tolist()):
            jpegs.append(
                data[offsets[index] : offsets[index + 1]] if kind == JPEG else _stand_in_jpeg()
            )
        pixel_items = batch.kinds.numpy() != JPEG
        boxes = plans[:, :4].astype(np.float32)
        boxes[pixel_items] = (0, 0, 8, 8)  # the stand-in's whole 8 x 8 image
        return {
            "jpegs": jpegs,
            "anchors": np.ascontiguousarray(boxes[:, :2]),
            "shapes": np.ascontiguousarray(boxes[:, 2:4]),
            "flips": plans[:, 4].astype(np.int32),
        }

    def _run(self, batch: EncodedBatch) -> torch.Tensor:
        """The batch as NHWC on the device (float16 or float32), every row a JPEG's planned
        crop."""
        try:
            (images,) = self._pipe.run(**self._inputs(batch))
        except RuntimeError as exc:  # DALI's error for the whole batch: name the record
            # A pipeline that failed is "no longer valid": a fresh one for whoever goes on.
            self._pipe = self._build()
            raise _undecodable(batch, exc) from None
        if self.device.type != "cuda":
            return torch.from_numpy(images.as_array())
        from nvidia.dali.plugin.pytorch import feed_ndarray

        # A list of samples on the GPU; feed_ndarray copies only one dense tensor, which a list
        # of equal shapes (every row is size x size x 3) becomes without a copy.
        dense = images.as_tensor()
        dtype = torch.float16 if self._half else torch.float32
        out = torch.empty(dense.shape(), dtype=dtype, device=self.device)
        return feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(self.device))

    def _pixels(self, batch: EncodedBatch, index: int) -> torch.Tensor:
        """Pixel item `index` planned, mirrored and standardised as DALI's rows (1 x H x W x 3)."""
        height, width = batch.shapes[index].tolist()
        payload = batch.data[int(batch.offsets[index]) : int(batch.offsets[index + 1])]
        image = payload.view(height, width, 3).permute(2, 0, 1).to(self.device)
        plan = batch.plans[index].tolist()
        crop = crop_resize_batched([image], [plan], self.size)
        flipped = flip_where(crop, torch.tensor([bool(plan[4])], device=self.device))
        return normalise(flipped, False, torch.float32).permute(0, 2, 3, 1)

    def __call__(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        nhwc = self._run(batch)
        for index in np.flatnonzero(batch.kinds.numpy() != JPEG).tolist():
            nhwc[index] = self._pixels(batch, index)[0]
        nchw = nhwc.permute(0, 3, 1, 2)  # channels_last in memory
        out = nchw.to(self.dtype) if self.channels_last else nchw.contiguous().to(self.dtype)
        return out, batch.labels.to(self.device, non_blocking=True)
