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
import warnings
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


# `crop_resize_batched` pads with a nested tensor, whose strided layout warns once that it is a
# prototype; it is used for one copy only, which has worked the same since torch 2.1.
warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype")

BATCH_PIXELS = 1 << 27  # padded pixels of one `crop_resize_batched` pass (1.5 GiB as float)


def _axis_weights(
    box_start: torch.Tensor, box_length: torch.Tensor, length: torch.Tensor, padded: int, size: int
) -> torch.Tensor:
    """(N, size, padded) rows of Pillow's antialiased bilinear filter along one axis.

    Pillow's `precompute_coeffs`: output pixel i is centred at box_start + (i + 0.5) * scale of
    the source, its triangle filter reaches max(scale, 1) source pixels each side, is clipped to
    the image (`length`: not to the box) and normalised. Column k stands for source pixel k.
    """
    scale = (box_length / size).view(-1, 1, 1)
    stretch = scale.clamp(min=1.0)
    out = torch.arange(size, device=scale.device, dtype=torch.float32).view(1, -1, 1)
    centre = box_start.view(-1, 1, 1) + (out + 0.5) * scale
    source = torch.arange(padded, device=scale.device, dtype=torch.float32).view(1, 1, -1)
    weights = (1 - ((source + 0.5 - centre) / stretch).abs()).clamp(min=0)
    weights = weights * (source < length.view(-1, 1, 1))
    return weights / weights.sum(dim=2, keepdim=True)


def crop_resize_batched(
    images: list[torch.Tensor], plans: list[list[int]], size: int
) -> torch.Tensor:
    """`crop_resize_all` in a few batched operations instead of 2 kernels (and calls) an image.

    The images are padded into one batch by a nested tensor (one copy, not one an image), and
    the resize is out = Wy @ image @ Wx^T with Pillow's antialiased bilinear weights
    (`_axis_weights`), zero past each image's edge. So it follows Pillow's `resize(box=...)`,
    which also reads the image's pixels just outside the box, a little more closely than
    `crop_resize_all`. Images whose padded batch would exceed `BATCH_PIXELS` (a few outsized
    ones among ImageNet's) are done in further passes, largest first.
    """
    order = sorted(range(len(images)), key=lambda i: -images[i].shape[1] * images[i].shape[2])
    parts: list[list[int]] = []
    tallest = widest = 0
    for index in order:
        height, width = int(images[index].shape[1]), int(images[index].shape[2])
        grown = (len(parts[-1]) + 1 if parts else 1) * max(tallest, height) * max(widest, width)
        if parts and grown <= BATCH_PIXELS:
            parts[-1].append(index)
        else:
            parts.append([index])
            tallest = widest = 0
        tallest, widest = max(tallest, height), max(widest, width)
    if len(parts) == 1:
        return _resize_part(images, plans, size)
    out = torch.empty((len(images), 3, size, size), device=images[0].device)
    for part in parts:
        chosen = torch.tensor(part, device=out.device)
        out[chosen] = _resize_part([images[i] for i in part], [plans[i] for i in part], size)
    return out


def _resize_part(images: list[torch.Tensor], plans: list[list[int]], size: int) -> torch.Tensor:
    device = images[0].device
    # A decoder's HWC images (nvImageCodec's) pad as HWC; CHW ones (torchvision's) as CHW.
    interleaved = all(image.permute(1, 2, 0).is_contiguous() for image in images)
    parts = [image.permute(1, 2, 0) if interleaved else image for image in images]
    # As float before padding: CUDA's padding kernel takes floating types only, and for uint8
    # torch pads image by image (measured: 22 ms of CPU a batch of 400 on an H200's host).
    padded = torch.nested.as_nested_tensor(parts).to(torch.float32).to_padded_tensor(0.0)
    batch = padded.permute(0, 3, 1, 2) if interleaved else padded
    rows = [(*p[:4], im.shape[2], im.shape[1]) for p, im in zip(plans, images, strict=True)]
    geometry = torch.tensor(rows, dtype=torch.float32).to(device)
    left, top, width, height, image_w, image_h = geometry.unbind(1)
    across = _axis_weights(left, width, image_w, batch.shape[3], size)  # (N, size, W)
    down = _axis_weights(top, height, image_h, batch.shape[2], size)  # (N, size, H)
    narrow = torch.matmul(batch, across.transpose(1, 2).unsqueeze(1))  # (N, 3, H, size)
    return torch.matmul(down.unsqueeze(1), narrow)  # (N, 3, size, size)
