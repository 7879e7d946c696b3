"""The shared MLPerf preprocessing: plans, and the Pillow and tensor paths agreeing on the pixels.

Tolerances (mean absolute difference in uint8 levels, 16 synthetic JPEGs of 120-420 px, one
training and one evaluation plan each, 96 px output):
- Pillow's box resize vs torch's antialiased `interpolate` on the same decoded pixels: at most
  0.5 overall and per image (measured 0.18 and 0.23 at worst; the few larger single-pixel
  differences sit on the box edges, where Pillow's filter reads pixels just outside the box);
- the CPU path as it runs (DCT-domain draft decoding) vs the same: at most 1.5 overall and 5.0
  for any image (measured 0.83 and 3.3: drafting is a coarser downscale).
The GPU decoder's own difference from libjpeg is measured on the GPU (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import io
import random

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

from hpcrepro.workload.augment import (  # noqa: E402
    EVAL_CROP_FRACTION,
    apply_pillow,
    crop_resize_all,
    denormalise,
    eval_plan,
    flip_where,
    normalise,
    train_plan,
)
from hpcrepro.workload.nvjpeg import pillow_decoder  # noqa: E402
from hpcrepro.workload.synthetic import encode_jpeg, render_image  # noqa: E402

SIZE = 96


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    rng = np.random.default_rng(3)
    return [encode_jpeg(render_image(i % 10, 10, rng, 120, 420)) for i in range(16)]


def test_train_plans_stay_inside_the_image_and_flip_about_half_the_time():
    rng = random.Random(4)
    plans = [train_plan(rng.randint(20, 900), rng.randint(20, 900), rng) for _ in range(400)]
    assert 150 < sum(plan.flip for plan in plans) < 250
    rng = random.Random(4)
    for plan in plans:
        width, height = rng.randint(20, 900), rng.randint(20, 900)
        train_plan(width, height, rng)  # keep the draws in step with the list above
        assert plan.left >= 0 and plan.top >= 0 and plan.width > 0 and plan.height > 0


def test_the_eval_plan_is_the_centred_square_resize_and_centre_crop_keep():
    plan = eval_plan(500, 375)
    side = round(EVAL_CROP_FRACTION * 375)
    assert (plan.width, plan.height, plan.flip) == (side, side, False)
    assert (plan.left, plan.top) == ((500 - side) // 2, (375 - side) // 2)
    assert eval_plan(1, 1).width == 1


def _torch_path(jpeg: bytes, plan) -> np.ndarray:
    image = pillow_decoder([torch.frombuffer(bytearray(jpeg), dtype=torch.uint8)])[0]
    out = crop_resize_all([image], [list(plan.as_tuple())], SIZE)
    out = flip_where(out, torch.tensor([plan.flip]))
    return out[0].round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.int16)


@pytest.mark.parametrize(
    ("draft", "mean_limit", "image_limit"), [(False, 0.5, 0.5), (True, 1.5, 5.0)]
)
def test_pillow_and_tensor_paths_agree_on_the_same_plans(jpegs, draft, mean_limit, image_limit):
    per_image = []
    for index, jpeg in enumerate(jpegs):
        width, height = Image.open(io.BytesIO(jpeg)).size
        for plan in (train_plan(width, height, random.Random(index)), eval_plan(width, height)):
            pillow = apply_pillow(Image.open(io.BytesIO(jpeg)), plan, SIZE, draft=draft)
            difference = np.abs(np.asarray(pillow, dtype=np.int16) - _torch_path(jpeg, plan))
            per_image.append(difference.mean())
    assert np.mean(per_image) <= mean_limit
    assert max(per_image) <= image_limit


def test_a_flipped_plan_mirrors_the_output(jpegs):
    width, height = Image.open(io.BytesIO(jpegs[0])).size
    plan = eval_plan(width, height)
    mirrored = type(plan)(plan.left, plan.top, plan.width, plan.height, True)
    plain = np.asarray(apply_pillow(Image.open(io.BytesIO(jpegs[0])), plan, SIZE, draft=False))
    flipped = _torch_path(jpegs[0], mirrored)
    assert np.abs(plain[:, ::-1].astype(np.int16) - flipped).mean() < 0.5


def test_normalise_and_denormalise_round_trip_in_both_layouts():
    pixels = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    for channels_last in (False, True):
        out = normalise(pixels, channels_last, torch.float32)
        assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert torch.equal(denormalise(out), pixels)
    assert abs(float(normalise(torch.full((1, 3, 1, 1), 124), False, torch.float32)[0, 0])) < 0.01
