"""The GPU decode paths: JPEG bytes from the loader workers, decoded and cropped on the GPU.

Loader workers only read records and plan the crops (`EncodedRecordDataset`), so a GPU needs one
or two CPU cores instead of a dozen Pillow decoders. A lane of the `prefetch` module takes each
`EncodedBatch`, decodes its JPEGs in one batched call (torchvision's `decode_jpeg(device="cuda")`,
nvJPEG's CUDA decoder, for the `nvjpeg` backend; nvImageCodec on the GPU's hardware JPEG engines
for `nvimgcodec`), resizes the planned boxes of the whole batch at once with the antialiased
bilinear filter the CPU path uses (`augment.crop_resize_batched`), mirrors and normalises the
batch, all on its own CUDA stream, and queues it while the training step runs. `BatchAssembler`
takes the decoder as an argument so that the same code runs on the CPU, with Pillow decoding, in
the tests.

Measured on one H200 (benchmarks/RESULTS.md): the nvjpeg path alone delivers about 6,500 images/s
with two loader workers and the compiled step alone runs at about 6,900, but together they reach
4,900: the decode thread's host-side work (about 25 ms of CPU per 400 images in either decoder,
plus the batch's assembly) runs beside the training thread in one process.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from hpcrepro.errors import UserError
from hpcrepro.workload.augment import crop_resize_batched, flip_where, normalise
from hpcrepro.workload.data import JPEG, EncodedBatch

Decoder = Callable[[list[torch.Tensor]], list[torch.Tensor]]
"""JPEG byte tensors (uint8, 1-D, on the CPU) -> uint8 CHW RGB images on the target device."""


def nvjpeg_decoder(device: torch.device) -> Decoder:
    """torchvision's batched GPU decode; raises ImportError where torchvision is missing."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(jpegs: list[torch.Tensor]) -> list[torch.Tensor]:
        return decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)

    return decode


def nvimgcodec_decoder(device: torch.device) -> Decoder:
    """nvImageCodec's batched decode, on the GPU's hardware JPEG engines first.

    The engines take baseline JPEGs and need no multiprocessor time, which the training step
    then has to itself. What they cannot decode goes to nvImageCodec's CUDA or hybrid nvJPEG
    decoder where the installation has one, else to torchvision's nvJPEG. EXIF orientation is
    ignored, as Pillow and torchvision do, so that plans drawn from the stored size fit.
    Raises ImportError where nvImageCodec is missing.
    """
    import nvidia.nvimgcodec as nvimgcodec

    index = torch.device(device).index
    kinds = nvimgcodec.BackendKind
    decoder = nvimgcodec.Decoder(
        device_id=torch.cuda.current_device() if index is None else index,
        backends=[
            nvimgcodec.Backend(kind)
            for kind in (kinds.HW_GPU_ONLY, kinds.GPU_ONLY, kinds.HYBRID_CPU_GPU)
        ],
    )
    params = nvimgcodec.DecodeParams(
        apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.SRGB
    )
    held: list[object] = []  # the last batch's images: their memory must outlive our copies
    fallback: list[Decoder] = []

    def decode(jpegs: list[torch.Tensor]) -> list[torch.Tensor]:
        stream = torch.cuda.current_stream(device)
        sources = [nvimgcodec.CodeStream(jpeg.numpy()) for jpeg in jpegs]
        images = decoder.decode(sources, params=params, cuda_stream=stream.cuda_stream)
        held[:] = images
        # DLPack hands each HWC image over with the stream order kept, for a few microseconds.
        out = [None if image is None else torch.from_dlpack(image).permute(2, 0, 1)
               for image in images]
        missing = [i for i, image in enumerate(out) if image is None]
        if missing:
            if not fallback:
                try:
                    fallback.append(nvjpeg_decoder(device))
                except ImportError:
                    raise RuntimeError("nvImageCodec could not decode an image") from None
            for i, image in zip(missing, fallback[0]([jpegs[i] for i in missing]), strict=True):
                out[i] = image
        return out  # type: ignore[return-value]

    return decode


def gpu_decoder(backend: str, device: torch.device) -> Decoder:
    """The decoder of a GPU data backend chosen by `fastpath` ("nvimgcodec" or "nvjpeg")."""
    return nvimgcodec_decoder(device) if backend == "nvimgcodec" else nvjpeg_decoder(device)


def pillow_decoder(jpegs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The CPU stand-in for nvJPEG (full-size libjpeg decode): the tests run the GPU path's code."""
    decoded = []
    for jpeg in jpegs:
        image = Image.open(io.BytesIO(jpeg.numpy().tobytes())).convert("RGB")
        decoded.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
    return decoded


@dataclass
class BatchAssembler:
    """An `EncodedBatch` -> (normalised NCHW images, labels) on `device`."""

    device: torch.device
    size: int
    decode: Decoder
    channels_last: bool
    dtype: torch.dtype
    resize: Callable[[list[torch.Tensor], list[list[int]], int], torch.Tensor] = (
        crop_resize_batched
    )

    def images(self, batch: EncodedBatch) -> list[torch.Tensor]:
        payloads = list(torch.split(batch.data, batch.offsets.diff().tolist()))
        kinds = batch.kinds.tolist()
        jpegs = [i for i, kind in enumerate(kinds) if kind == JPEG]
        images: list[torch.Tensor] = [torch.empty(0)] * len(batch)
        decoded = self._decode([payloads[i] for i in jpegs], batch, jpegs)
        for index, image in zip(jpegs, decoded, strict=True):
            images[index] = image
        for index, kind in enumerate(kinds):
            if kind != JPEG:
                height, width = batch.shapes[index].tolist()
                pixels = payloads[index].view(height, width, 3).permute(2, 0, 1)
                images[index] = pixels.to(self.device, non_blocking=True)
        return images

    def _decode(
        self, jpegs: list[torch.Tensor], batch: EncodedBatch, where: list[int]
    ) -> list[torch.Tensor]:
        if not jpegs:
            return []
        try:
            return self.decode(jpegs)
        except RuntimeError:
            pass
        # One bad image fails the whole batched call: find it, and name its record.
        decoded = []
        for jpeg, index in zip(jpegs, where, strict=True):
            try:
                decoded.extend(self.decode([jpeg]))
            except RuntimeError as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise UserError(
                    f"record {int(batch.positions[index])} cannot be decoded on the GPU ({reason})",
                    hint="check the data set with `hpcrepro prep verify`, or train with "
                    "--data-backend cpu to see Pillow's verdict on the same record",
                ) from None
        return decoded

    def __call__(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = self.resize(self.images(batch), batch.plans.tolist(), self.size)
        flips = batch.plans[:, 4].to(torch.bool).to(self.device, non_blocking=True)
        out = normalise(flip_where(boxes, flips), self.channels_last, self.dtype)
        return out, batch.labels.to(self.device, non_blocking=True)
