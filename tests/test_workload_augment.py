"""The shared MLPerf preprocessing: plans, and the Pillow and tensor paths agreeing on the pixels.

Tolerances (mean absolute difference in uint8 levels, 16 synthetic JPEGs of 120-420 px, one
training and one evaluation plan each, 96 px output):
- Pillow's box resize vs torch's antialiased `interpolate` on the same decoded pixels: at most
  0.5 overall and per image (measured 0.18 and 0.23 at worst; the few larger single-pixel
  differences sit on the box edges, where Pillow's filter reads pixels just outside the box);
- the CPU path as it runs (DCT-domain draft decoding) vs the same: at most 1.5 overall and 5.0
  for any image (measured 0.83 and 3.3: drafting is a coarser downscale);
- the batched resize of the GPU paths (`crop_resize_batched`, one pass for the whole batch) vs
  the per-image `interpolate`: at most 0.1 overall and 0.2 per image (measured 0.035 and 0.10
  at 96 px; the two differ only on box edges, where the batched one reads the pixels just
  outside the box as Pillow does), and vs Pillow at most 0.3 and 0.4 (measured 0.16 and 0.21).
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
    crop_resize_batched,
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


def _decoded_with_plans(jpegs: list[bytes]) -> tuple[list, list[list[int]]]:
    images, plans = [], []
    for index, jpeg in enumerate(jpegs):
        image = pillow_decoder([torch.frombuffer(bytearray(jpeg), dtype=torch.uint8)])[0]
        height, width = image.shape[1:]
        for plan in (train_plan(width, height, random.Random(index)), eval_plan(width, height)):
            images.append(image)
            plans.append(list(plan.as_tuple()))
    return images, plans


def _levels(batch) -> np.ndarray:
    return batch.round().clamp(0, 255).numpy().astype(np.int16)


def test_the_batched_resize_agrees_with_the_per_image_path_and_with_pillow(jpegs):
    images, plans = _decoded_with_plans(jpegs)
    batched = _levels(crop_resize_batched(images, plans, SIZE))
    per_image = _levels(crop_resize_all(images, plans, SIZE))
    to_per_image = np.abs(batched - per_image).mean(axis=(1, 2, 3))
    assert to_per_image.mean() <= 0.1 and to_per_image.max() <= 0.2
    to_pillow = []
    for index, (jpeg, plan) in enumerate(zip(np.repeat(jpegs, 2), plans, strict=True)):
        box = type(train_plan(1, 1, random.Random(0)))(*plan[:4], False)
        pillow = np.asarray(apply_pillow(Image.open(io.BytesIO(jpeg)), box, SIZE, draft=False))
        to_pillow.append(np.abs(batched[index].transpose(1, 2, 0) - pillow).mean())
    assert np.mean(to_pillow) <= 0.3 and max(to_pillow) <= 0.4


def test_the_batched_resize_is_the_same_in_parts_and_for_interleaved_images(jpegs, monkeypatch):
    from hpcrepro.workload import augment

    images, plans = _decoded_with_plans(jpegs[:6])
    whole = crop_resize_batched(images, plans, SIZE)
    # nvImageCodec's images are HWC in memory (CHW views): padded as HWC, same result.
    interleaved = [image.permute(1, 2, 0).contiguous().permute(2, 0, 1) for image in images]
    assert torch.allclose(crop_resize_batched(interleaved, plans, SIZE), whole, atol=1e-3)
    # An outsized image among small ones: the batch is done in several passes, same result.
    monkeypatch.setattr(augment, "BATCH_PIXELS", 3 * 420 * 420)
    assert torch.allclose(crop_resize_batched(images, plans, SIZE), whole, atol=1e-3)


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
