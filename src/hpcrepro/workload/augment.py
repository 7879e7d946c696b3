"""The MLPerf ResNet-50 preprocessing, planned once and applied by every decode path.

A `Plan` names the box of the source image that becomes the output and whether it is mirrored.
Training draws a random-resized crop (area 5-100 %, aspect 3/4-4/3, as NVIDIA's DALI pipeline) and
a coin for the flip; evaluation takes the centred square that "resize the short side to
size/0.875, then centre-crop size" keeps. A plan depends only on the image's size and a seeded RNG,
so the CPU path (Pillow) and the GPU path (nvJPEG) crop the same pixels of the same image. Both
resize the box to size x size with antialiased bilinear filtering: Pillow's filter, which torch's
`interpolate(..., antialias=True)` reproduces. Normalisation (ImageNet mean and std) is shared too.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

import torch
from PIL import Image

MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
MIN_AREA, MAX_AREA = 0.05, 1.0
MIN_RATIO, MAX_RATIO = 3 / 4, 4 / 3
EVAL_CROP_FRACTION = 0.875


@dataclass(frozen=True)
class Plan:
    """Integer box (left, top, width, height) of the source, and whether to mirror the output."""

    left: int
    top: int
    width: int
    height: int
    flip: bool

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.left, self.top, self.width, self.height, int(self.flip))


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


def train_plan(width: int, height: int, rng: random.Random) -> Plan:
    left, top, crop_w, crop_h = random_crop_box(width, height, rng)
    return Plan(left, top, crop_w, crop_h, rng.random() < 0.5)


def eval_plan(width: int, height: int) -> Plan:
    """The centred square of side 0.875 x the short side: what resize-then-centre-crop keeps."""
    side = max(1, round(EVAL_CROP_FRACTION * min(width, height)))
    return Plan((width - side) // 2, (height - side) // 2, side, side, False)


def apply_pillow(source: Image.Image, plan: Plan, size: int, draft: bool = True) -> Image.Image:
    """The planned box of `source` (a just-opened, not yet decoded image) as size x size RGB.

    With `draft`, a JPEG is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain whenever the box
    keeps at least `size` pixels a side: most of the CPU decode time on full-size ImageNet.
    """
    width, height = source.size
    if draft:
        source.draft(
            "RGB", (math.ceil(width * size / plan.width), math.ceil(height * size / plan.height))
        )
    scale_x, scale_y = source.size[0] / width, source.size[1] / height
    box = (
        plan.left * scale_x,
        plan.top * scale_y,
        (plan.left + plan.width) * scale_x,
        (plan.top + plan.height) * scale_y,
    )
    image = source.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, box=box)
    if plan.flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def crop_resize_all(images: list[torch.Tensor], plans: list[list[int]], size: int) -> torch.Tensor:
    """The planned boxes of uint8 CHW images (any device) as one float Nx3xsize x size batch.

    Not mirrored: `flip_where` mirrors the whole batch at once.
    """
    boxes = []
    for image, (left, top, width, height, *_) in zip(images, plans, strict=True):
        box = image[:, top : top + height, left : left + width].unsqueeze(0).float()
        boxes.append(
            torch.nn.functional.interpolate(
                box, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        )
    return torch.cat(boxes)


def flip_where(batch: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror the images of an NCHW batch whose `flips` entry is set."""
    return torch.where(flips.view(-1, 1, 1, 1), batch.flip(3), batch)


@functools.cache
def _statistics(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: building them per batch would copy to the GPU and wait each time.
    mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1).to(device)
    std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1).to(device)
    return mean, std


def normalise(batch: torch.Tensor, channels_last: bool, dtype: torch.dtype) -> torch.Tensor:
    """uint8 or float NCHW pixels (0-255) -> ImageNet-standardised `dtype`, optionally NHWC."""
    mean, std = _statistics(batch.device)
    out = (batch.float() - mean) / std
    if channels_last:
        out = out.contiguous(memory_format=torch.channels_last)
    return out.to(dtype)


def denormalise(batch: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalise`, rounded to uint8: for comparing the paths pixel by pixel."""
    mean, std = _statistics(batch.device)
    return (batch.float() * std + mean).round().clamp(0, 255).to(torch.uint8)
