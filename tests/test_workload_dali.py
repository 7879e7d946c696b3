"""The DALI data path, run with DALI's own CPU operators against the Pillow path's pixels.

The pipeline is the one a GPU run builds; only the decoder's device differs ("cpu" instead of
"mixed"). DALI is a dependency of the test command (the `dali` extra), so under CI=true a missing
DALI fails these tests instead of skipping them. The GPU's figures are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import multiprocessing.forkserver
import os

import pytest

torch = pytest.importorskip("torch")
try:
    import nvidia.dali  # noqa: F401
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("DALI is not installed (pip install -e '.[dali]')", allow_module_level=True)

from hpcrepro.errors import UserError  # noqa: E402
from hpcrepro.workload import config  # noqa: E402
from hpcrepro.workload.augment import denormalise  # noqa: E402
from hpcrepro.workload.dali import DaliAssembler, pipeline_threads  # noqa: E402
from hpcrepro.workload.data import JPEG, ShardedBatches, collate_encoded  # noqa: E402
from hpcrepro.workload.dist import Placement  # noqa: E402
from hpcrepro.workload.loop import DeviceBatches, Runtime  # noqa: E402
from hpcrepro.workload.nvjpeg import BatchAssembler, pillow_decoder  # noqa: E402
from mixed_records import write_mixed_records  # noqa: E402
from test_workload_nvjpeg import CPU, SIZE, _corrupt, datasets  # noqa: E402


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_mixed_records(tmp_path_factory.mktemp("mixed"))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_dali_crops_the_planned_boxes_as_the_other_paths_do(records, train):
    cpu_set, encoded_set = datasets(records, train)
    positions = range(len(cpu_set))
    batch = collate_encoded([encoded_set[(p, 3)] for p in positions])
    images, labels = DaliAssembler(CPU, SIZE, True, torch.float32, batch_size=32, threads=2)(batch)
    assert images.shape == (len(cpu_set), 3, SIZE, SIZE)
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(labels, torch.tensor([cpu_set[(p, 3)][1] for p in positions]))
    torch_path, _ = BatchAssembler(CPU, SIZE, pillow_decoder, True, torch.float32)(batch)
    dali = denormalise(images).to(torch.int16)
    per_image = (dali - denormalise(torch_path).to(torch.int16)).abs().float().mean(dim=(1, 2, 3))
    # The same decoder family (libjpeg-turbo) and filter; DALI crops before filtering, so the
    # pixels along a box's edge may differ, the rest agree.
    assert float(per_image.mean()) <= 0.5 and float(per_image.max()) <= 2.0, per_image
    pillow = torch.stack([cpu_set[(p, 3)][0] for p in positions]).to(torch.int16)
    against_pillow = (dali - pillow).abs().float().mean(dim=(1, 2, 3))
    assert float(against_pillow.mean()) <= 1.5 and float(against_pillow.max()) <= 5.0


def test_a_smaller_last_batch_and_a_batch_of_pixel_items_only(records):
    _, encoded = datasets(records, False)
    assemble = DaliAssembler(CPU, SIZE, False, torch.float32, batch_size=8, threads=2)
    small, _ = assemble(collate_encoded([encoded[(p, 0)] for p in (0, 1, 2)]))
    assert small.shape == (3, 3, SIZE, SIZE) and small.is_contiguous()
    pixels_only, labels = assemble(collate_encoded([encoded[(p, 0)] for p in (21, 22)]))
    expected, _ = BatchAssembler(CPU, SIZE, pillow_decoder, False, torch.float32)(
        collate_encoded([encoded[(p, 0)] for p in (21, 22)])
    )
    assert torch.allclose(pixels_only, expected, atol=1e-4) and labels.tolist() == [1, 2]


def test_half_precision_output_matches_float32(records):
    _, encoded = datasets(records, True)
    batch = collate_encoded([encoded[(p, 0)] for p in range(8)])
    full, _ = DaliAssembler(CPU, SIZE, False, torch.float32, batch_size=8, threads=2)(batch)
    half, _ = DaliAssembler(CPU, SIZE, False, torch.bfloat16, batch_size=8, threads=2)(batch)
    assert half.dtype == torch.bfloat16 and half.shape == full.shape
    # bfloat16 keeps 8 bits of mantissa: within 1% of standardised values of at most about 2.6.
    assert float((half.float() - full).abs().max()) <= 0.02


def test_epochs_through_the_training_loop_on_dali_match_the_cpu_path(records):
    args = config.build_parser().parse_args(["--profile", "tiny", "--workers", "1"])
    args.data_dir, args.batch_size, args.num_classes, args.image_size = records, 6, 4, SIZE
    cfg = config.resolve(args, {}, "CPU")
    place = Placement(0, 1, 0, 1, "localhost", 0)
    cpu_set, encoded_set = datasets(records, True)
    on_cpu = DeviceBatches(cpu_set, ShardedBatches(len(cpu_set), 6, 0, 1, 5, True), cfg,
                           Runtime(place, CPU, False))  # fmt: skip
    on_dali = DeviceBatches(encoded_set, ShardedBatches(len(cpu_set), 6, 0, 1, 5, True), cfg,
                            Runtime(place, CPU, False, data_backend="dali"))  # fmt: skip
    # Two pipelines by default, each its own lane: two batches in flight.
    lanes = on_dali.prefetcher.assemblers
    assert len(lanes) == 2 and all(isinstance(lane, DaliAssembler) for lane in lanes)
    assert lanes[0]._pipe is not lanes[1]._pipe
    # With DALI loaded, loader workers start in a fresh interpreter: a fork of this process
    # would crash (test_workload_nvjpeg's worker test, run after this file, checks that too).
    assert on_dali.loader.multiprocessing_context.get_start_method() == "forkserver"
    # ... and that interpreter is already running, with the workers' modules imported, before
    # run_start: the first epoch pays a fork, not torch's import.
    server = multiprocessing.forkserver._forkserver
    assert server._forkserver_pid is not None and os.kill(server._forkserver_pid, 0) is None
    assert "hpcrepro.workload.data" in server._preload_modules
    for epoch in (1, 2):
        cpu_batches, dali_batches = list(on_cpu.epoch(epoch)), list(on_dali.epoch(epoch))
        assert len(cpu_batches) == len(dali_batches) == 3
        for (a, la), (b, lb) in zip(cpu_batches, dali_batches, strict=True):
            assert torch.equal(la, lb)
            assert float((denormalise(a).float() - denormalise(b).float()).abs().mean()) <= 1.5


def test_an_undecodable_record_is_named_with_dalis_and_pillows_reasons(records):
    _, encoded = datasets(records, True)
    items = [encoded[(p, 0)] for p in range(4)]
    broken = items[2]
    items[2] = type(broken)(
        _corrupt(broken.payload), JPEG, broken.height, broken.width, broken.plan, 0, 17
    )
    assemble = DaliAssembler(CPU, SIZE, True, torch.float32, batch_size=4, threads=2)
    with pytest.raises(UserError, match=r"record 17 cannot be decoded \(DALI: .*Pillow: ") as err:
        assemble(collate_encoded(items))
    assert "prep verify" in (err.value.hint or "")
    good, _ = assemble(collate_encoded(items[:2]))  # the pipeline still works afterwards
    assert good.shape == (2, 3, SIZE, SIZE)


def test_dali_threads_share_the_visible_cores_between_the_nodes_ranks(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(64)))
    assert pipeline_threads(8, 2) == 6  # 64 cores, 8 ranks: 8 each, 2 of them for loaders
    assert pipeline_threads(1, 2) == 8  # capped
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(5)))  # bound by Slurm
    assert pipeline_threads(8, 1) == 4
    assert pipeline_threads(8, 4) == 2  # at least 2
    assert pipeline_threads(8, 1, pipelines=2) == 2  # the rank's 4 split between its pipelines
    assert pipeline_threads(8, 4, pipelines=3) == 1  # at least 1 each
