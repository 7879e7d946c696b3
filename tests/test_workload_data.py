"""The RecordIO image pipeline: labels, crops, sharding across ranks, worker determinism."""

from __future__ import annotations

import io
import os
import random

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

from hpcrepro.errors import UserError  # noqa: E402
from hpcrepro.recordio import IndexedReader  # noqa: E402
from hpcrepro.workload.augment import (  # noqa: E402
    apply_pillow,
    eval_plan,
    normalise,
    random_crop_box,
    train_plan,
)
from hpcrepro.workload.data import RecordImageDataset, ShardedBatches, make_loader  # noqa: E402
from hpcrepro.workload.synthetic import (  # noqa: E402
    class_wnids,
    pack_dataset,
    write_synthetic_imagenet,
)


@pytest.fixture(scope="module")
def recordio_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_imagenet(root / "raw", num_classes=4, train_per_class=12, val_per_class=5)
    return pack_dataset(root / "raw", root / "rec")


def test_records_carry_sorted_wnid_labels_and_original_jpeg_bytes(recordio_dir):
    raw = recordio_dir.parent / "raw" / "val"
    with IndexedReader(recordio_dir / "val.rec", recordio_dir / "val.idx") as reader:
        assert len(reader) == 20
        for position in range(len(reader)):
            record = reader.read_position(position)
            wnid = class_wnids(4)[int(record.label)]
            files = sorted((raw / wnid).iterdir())
            assert record.image in {path.read_bytes() for path in files}


def test_dataset_items_are_uint8_chw_of_the_crop_size(recordio_dir):
    train = RecordImageDataset(recordio_dir / "train.rec", recordio_dir / "train.idx", 24, True, 5)
    image, label = train[(3, 0)]
    assert image.dtype == torch.uint8 and image.shape == (3, 24, 24) and 0 <= label < 4
    again, _ = train[(3, 0)]
    other_epoch, _ = train[(3, 1)]
    assert torch.equal(image, again)
    assert not torch.equal(image, other_epoch)


def test_random_crop_box_stays_inside_the_image_and_respects_area_bounds():
    rng = random.Random(1)
    for _ in range(500):
        width, height = rng.randint(20, 900), rng.randint(20, 900)
        left, top, crop_w, crop_h = random_crop_box(width, height, rng)
        assert left >= 0 and left + crop_w <= width and top >= 0 and top + crop_h <= height
        assert crop_w * crop_h >= 0.04 * width * height or (crop_w, crop_h) == (width, height)


def test_large_jpeg_crop_uses_reduced_decoding_and_keeps_output_size():
    pixels = np.zeros((800, 1000, 3), dtype=np.uint8)
    pixels[:, 500:] = (200, 30, 30)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    source = Image.open(io.BytesIO(buffer.getvalue()))
    out = apply_pillow(source, train_plan(1000, 800, random.Random(0)), 64)
    assert source.size != (1000, 800), "the JPEG decoder was not asked to scale down"
    assert out.size == (64, 64) and out.mode == "RGB"
    centre = apply_pillow(Image.open(io.BytesIO(buffer.getvalue())), eval_plan(1000, 800), 64)
    assert centre.size == (64, 64)
    array = np.asarray(centre)
    # Centre crop of a half-black, half-red image: left half dark, right half red.
    assert array[:, :20].mean() < 20 and array[:, -20:, 0].mean() > 150


def test_training_shards_are_disjoint_equal_and_drop_the_partial_global_batch():
    shards = [ShardedBatches(50, 4, rank, 3, seed=9, train=True, epoch=2) for rank in range(3)]
    batches = [list(shard) for shard in shards]
    assert [len(b) for b in batches] == [4, 4, 4] == [len(s) for s in shards]
    seen = [position for b in batches for batch in b for position, _ in batch]
    assert len(seen) == len(set(seen)) == 48
    assert all(epoch == 2 for b in batches for batch in b for _, epoch in batch)
    shards[0].epoch = 3
    assert [p for batch in shards[0] for p, _ in batch] != [
        p for batch in batches[0] for p, _ in batch
    ]


def test_evaluation_shards_count_every_image_once():
    shards = [ShardedBatches(23, 4, rank, 2, seed=0, train=False) for rank in range(2)]
    seen = sorted(p for shard in shards for batch in shard for p, _ in batch)
    assert seen == list(range(23))
    assert [len(shard) for shard in shards] == [3, 3]


def test_worker_processes_give_the_same_batches_as_the_main_process(recordio_dir):
    dataset = RecordImageDataset(
        recordio_dir / "train.rec", recordio_dir / "train.idx", 16, True, 3
    )
    inline = list(make_loader(dataset, ShardedBatches(len(dataset), 8, 0, 1, 3, True), 0, False))
    workers = list(make_loader(dataset, ShardedBatches(len(dataset), 8, 0, 1, 3, True), 2, False))
    assert len(inline) == len(workers) == 6
    for (a, la), (b, lb) in zip(inline, workers, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_normalise_gives_imagenet_standardised_floats():
    batch = torch.full((1, 3, 2, 2), 124, dtype=torch.uint8)
    out = normalise(batch, channels_last=True, dtype=torch.float32)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert abs(float(out[0, 0, 0, 0])) < 0.01


def test_a_forked_worker_reads_through_its_own_file_handle(recordio_dir):
    """Loader workers are forked after the main process has read (the inline pass above): a
    shared handle would share one file offset, and two workers' seek+read pairs would interleave
    into 'bad magic' errors."""
    import multiprocessing

    reader = IndexedReader(recordio_dir / "train.rec", recordio_dir / "train.idx")
    first = reader.read_position(0)
    fd = reader._file().fileno()
    offset = os.lseek(fd, 0, os.SEEK_CUR)
    child = multiprocessing.get_context("fork").Process(
        target=reader.read_position, args=(len(reader) - 1,)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert os.lseek(fd, 0, os.SEEK_CUR) == offset  # the child moved no offset of ours
    assert reader.read_position(0) == first
    reader.close()


def damaged_copy(recordio_dir, tmp_path, index: bytes):
    (tmp_path / "train.rec").write_bytes((recordio_dir / "train.rec").read_bytes())
    (tmp_path / "train.idx").write_bytes(index)
    return tmp_path / "train.rec", tmp_path / "train.idx"


@pytest.mark.parametrize(
    ("make_index", "where", "message"),
    [
        (lambda good: b"0\t0\n\x00\xff garbage\n", ":2", "non-ASCII bytes"),
        (lambda good: b"abc\tdef\n", ":1", "not integers"),
        (lambda good: b"0\t0\n1\n", ":2", "expected 'id<TAB>offset'"),
        # a copy cut mid-line: the last line '<id>\t<first digits>' still parses
        (lambda good: good[: good.index(b"\t", 200) + 2], "", "does not follow the previous"),
        (lambda good: good + b"48\t99999999\n", ":49", "beyond the end of"),
    ],
    ids=["binary", "text", "one-field", "cut-short", "past-the-end"],
)
def test_a_damaged_index_is_blamed_by_line(recordio_dir, tmp_path, make_index, where, message):
    good = (recordio_dir / "train.idx").read_bytes()
    rec, idx = damaged_copy(recordio_dir, tmp_path, make_index(good))
    with pytest.raises(UserError, match=message) as caught:
        RecordImageDataset(rec, idx, 32, True, 0)
    assert f"{idx}{where}:" in caught.value.render()
    assert "hpcrepro prep verify" in (caught.value.hint or "")
    assert "train.rec" not in caught.value.render().split(str(idx))[0]


def test_an_intact_index_opens_with_every_record(recordio_dir):
    dataset = RecordImageDataset(
        recordio_dir / "train.rec", recordio_dir / "train.idx", 32, True, 0
    )
    assert len(dataset) == 48
