"""The GPU decode path's code, run on the CPU with Pillow standing in for nvJPEG.

Everything but the decoder call is the code a GPU run executes: records with their plans from
loader workers, the batch assembly (crop, resize, flip, normalise), the prefetch lanes
(test_workload_prefetch.py) and the training loop's per-epoch iteration. The GPU's own
figures are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

from hpcrepro.errors import UserError  # noqa: E402
from hpcrepro.workload import config  # noqa: E402
from hpcrepro.workload.augment import denormalise  # noqa: E402
from hpcrepro.workload.data import (  # noqa: E402
    JPEG,
    PIXELS,
    EncodedRecordDataset,
    RecordImageDataset,
    ShardedBatches,
    collate_encoded,
    make_loader,
)
from hpcrepro.workload.dist import Placement  # noqa: E402
from hpcrepro.workload.loop import DeviceBatches, Runtime  # noqa: E402
from hpcrepro.workload.nvjpeg import BatchAssembler, pillow_decoder  # noqa: E402
from mixed_records import write_mixed_records  # noqa: E402

SIZE = 48
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_mixed_records(tmp_path_factory.mktemp("mixed"))


def datasets(folder, train: bool):
    split = "train" if train else "val"
    args = (folder / f"{split}.rec", folder / f"{split}.idx", SIZE, train, 5)
    return RecordImageDataset(*args), EncodedRecordDataset(*args)


def test_jpegs_travel_as_bytes_and_what_nvjpeg_cannot_read_as_pixels(records):
    _, encoded = datasets(records, True)
    kinds = [encoded[(position, 0)].kind for position in range(len(encoded))]
    assert kinds == [JPEG] * 21 + [PIXELS, PIXELS]  # colour and grey JPEGs; CMYK and PNG
    cmyk = encoded[(21, 0)]
    assert len(cmyk.payload) == cmyk.height * cmyk.width * 3


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_the_gpu_path_gives_the_cpu_paths_pixels_for_the_same_records(records, train):
    cpu_set, encoded_set = datasets(records, train)
    positions = range(len(cpu_set))
    cpu = torch.stack([cpu_set[(p, 3)][0] for p in positions]).to(torch.int16)
    batch = collate_encoded([encoded_set[(p, 3)] for p in positions])
    images, labels = BatchAssembler(CPU, SIZE, pillow_decoder, True, torch.float32)(batch)
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(labels, torch.tensor([cpu_set[(p, 3)][1] for p in positions]))
    per_image = (denormalise(images).to(torch.int16) - cpu).abs().float().mean(dim=(1, 2, 3))
    # The CPU path decodes JPEGs at a reduced DCT scale where it can (test_workload_augment).
    assert float(per_image.mean()) <= 1.5 and float(per_image.max()) <= 5.0


def test_loader_workers_send_the_same_encoded_batches_as_the_main_process(records):
    _, encoded = datasets(records, True)
    runs = [
        list(make_loader(encoded, ShardedBatches(len(encoded), 5, 0, 1, 3, True), workers, True))
        for workers in (0, 2)
    ]
    assert len(runs[0]) == len(runs[1]) == 4
    for inline, forked in zip(*runs, strict=True):
        for field in ("data", "offsets", "kinds", "shapes", "plans", "labels", "positions"):
            assert torch.equal(getattr(inline, field), getattr(forked, field)), field


def test_epochs_through_the_training_loops_batches_match_the_cpu_path(records):
    args = config.build_parser().parse_args(["--profile", "tiny", "--workers", "1"])
    args.data_dir, args.batch_size, args.num_classes, args.image_size = records, 6, 4, SIZE
    cfg = config.resolve(args, {}, "CPU")
    runtime = Runtime(Placement(0, 1, 0, 1, "localhost", 0), CPU, False)
    cpu_set, encoded_set = datasets(records, True)
    sampler = ShardedBatches(len(cpu_set), 6, 0, 1, 5, True)
    on_cpu = DeviceBatches(cpu_set, sampler, cfg, runtime)
    sampler_gpu = ShardedBatches(len(cpu_set), 6, 0, 1, 5, True)
    gpu_path = DeviceBatches(encoded_set, sampler_gpu, cfg, runtime, decoder=pillow_decoder)
    assert on_cpu.waited == gpu_path.waited == 0.0
    for epoch in (1, 2):  # the second epoch must not come out empty
        cpu_batches, gpu_batches = list(on_cpu.epoch(epoch)), list(gpu_path.epoch(epoch))
        assert on_cpu.waited > 0 and gpu_path.waited > 0  # the first batch of an epoch waits
        assert len(cpu_batches) == len(gpu_batches) == 3
        for (a, la), (b, lb) in zip(cpu_batches, gpu_batches, strict=True):
            assert torch.equal(la, lb)
            assert float((denormalise(a).float() - denormalise(b).float()).abs().mean()) <= 1.5


def _corrupt(jpeg: bytes) -> bytes:
    return jpeg[: len(jpeg) // 3]  # header intact, entropy-coded data cut short


def _strict_decoder(jpegs):
    """Pillow with torchvision's contract: an undecodable image raises RuntimeError."""
    try:
        return pillow_decoder(jpegs)
    except OSError as exc:
        raise RuntimeError(f"Error while decoding JPEG images: {exc}") from None


def test_an_undecodable_record_is_named_not_the_whole_batch(records):
    _, encoded = datasets(records, True)
    items = [encoded[(p, 0)] for p in range(4)]
    broken = items[2]
    items[2] = type(broken)(
        _corrupt(broken.payload), JPEG, broken.height, broken.width, broken.plan, 0, 17
    )
    assemble = BatchAssembler(CPU, SIZE, _strict_decoder, False, torch.float32)
    with pytest.raises(UserError, match="record 17 cannot be decoded on the GPU"):
        assemble(collate_encoded(items))
