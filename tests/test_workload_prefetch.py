"""The prefetch lanes: order, errors at the batch they belong to, concurrency, clean stops.

Run on the CPU with the GPU path's own batch assembly (Pillow standing in for nvJPEG) where the
pixels matter, and with small assemblers where the timing of the lanes is the point.
"""

from __future__ import annotations

import threading
import time

import pytest

torch = pytest.importorskip("torch")

from hpcrepro.errors import UserError  # noqa: E402
from hpcrepro.workload.data import EncodedRecordDataset, collate_encoded  # noqa: E402
from hpcrepro.workload.nvjpeg import BatchAssembler, pillow_decoder  # noqa: E402
from hpcrepro.workload.prefetch import Prefetcher  # noqa: E402
from mixed_records import write_mixed_records  # noqa: E402

SIZE = 48
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    folder = write_mixed_records(tmp_path_factory.mktemp("mixed"))
    encoded = EncodedRecordDataset(folder / "train.rec", folder / "train.idx", SIZE, True, 5)
    return [collate_encoded([encoded[(p, 0)] for p in range(i, i + 2)]) for i in range(6)]


def _assembler() -> BatchAssembler:
    return BatchAssembler(CPU, SIZE, pillow_decoder, False, torch.float32)


class _Fails:
    """The loader's iteration, raising after `good` batches (a damaged record, say)."""

    def __init__(self, batches, good: int) -> None:
        self.batches, self.good = batches, good

    def __iter__(self):
        yield from self.batches[: self.good]
        raise UserError("record 3 is damaged")


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_batches_come_back_in_the_loaders_order_with_the_loaders_error_last(batches, lanes):
    assemblers = [_assembler() for _ in range(lanes)]
    labels = [labels for _, labels in Prefetcher(batches, assemblers, CPU, depth=2)]
    assert [t.tolist() for t in labels] == [b.labels.tolist() for b in batches]

    seen = []
    with pytest.raises(UserError, match="record 3 is damaged"):
        for _, labels in Prefetcher(_Fails(batches, 4), assemblers, CPU):
            seen.append(labels.tolist())
    assert seen == [b.labels.tolist() for b in batches[:4]]


def test_a_slow_lane_does_not_reorder_and_each_lane_takes_its_turn():
    handled: list[tuple[int, int]] = []

    def lane(number: int, delay: float):
        def assemble(batch):
            time.sleep(delay)
            handled.append((number, batch))
            return torch.tensor([batch]), torch.tensor([batch])

        return assemble

    prefetcher = Prefetcher(range(9), [lane(0, 0.03), lane(1, 0.0), lane(2, 0.01)], CPU)
    assert [int(images) for images, _ in prefetcher] == list(range(9))
    assert sorted(handled) == sorted((batch % 3, batch) for batch in range(9))


def test_two_lanes_assemble_two_batches_at_once():
    """Each assembler waits for the other: one lane at a time would never get past batch 0."""
    both = threading.Barrier(2, timeout=5)

    def assemble(batch):
        both.wait()
        return torch.tensor([batch]), torch.tensor([batch])

    received = [int(images) for images, _ in Prefetcher(range(4), [assemble, assemble], CPU)]
    assert received == [0, 1, 2, 3]


def test_a_lanes_error_is_raised_at_its_batch_after_the_ones_before_it():
    def assemble(batch):
        if batch == 3:
            raise UserError("record 7 cannot be decoded")
        return torch.tensor([batch]), torch.tensor([batch])

    seen = []
    with pytest.raises(UserError, match="record 7 cannot be decoded"):
        for images, _ in Prefetcher(range(8), [assemble, assemble], CPU):
            seen.append(int(images))
    assert seen == [0, 1, 2]


@pytest.mark.parametrize("lanes", [1, 2])
def test_a_consumer_that_stops_early_leaves_no_thread_behind(batches, lanes):
    before = threading.active_count()
    for _ in Prefetcher(batches, [_assembler() for _ in range(lanes)], CPU, depth=1):
        break
    assert threading.active_count() == before


def test_a_prefetcher_needs_an_assembler():
    with pytest.raises(ValueError, match="at least one assembler"):
        Prefetcher([], [], CPU)
