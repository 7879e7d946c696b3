"""Packing, framing, image checks, listing order and resume, in-process on real files."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pytest

from hpcrepro.errors import UserError
from hpcrepro.prep import pack as pack_module
from hpcrepro.prep.imagecheck import image_problem
from hpcrepro.prep.listing import build_list, walk_key
from hpcrepro.prep.pack import (
    RECORD_HEADER,
    Loaded,
    ShardFiles,
    contains_magic,
    frame_in_place,
    pack,
)
from hpcrepro.prep.shards import JoinFiles, Shard, join, shard_files
from hpcrepro.prep.sources import read_val_labels, scan_folder
from hpcrepro.recordio import MAGIC_BYTES, encode_record, iter_records, pack_image, unpack_image
from prep_data import jpeg_bytes, magic_jpeg, make_imagenet, png_bytes


def frame_image(label: int, index: int, data: bytes) -> bytes:
    """The record the packer writes for one image, framed in a buffer of its own."""
    storage = bytearray(b"\xee" * (RECORD_HEADER + len(data) + 3))  # stale bytes to overwrite
    image = Loaded(RECORD_HEADER, RECORD_HEADER + len(data))
    storage[image.start : image.end] = data
    split = frame_in_place(storage, image, label, index)
    return split if split is not None else bytes(storage[: (image.end + 3) & ~3])


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 64, 101])
@pytest.mark.parametrize("magic_at", [None, 0, 4, 6, 8, 40])
def test_frame_image_matches_recordio_and_reads_back(size: int, magic_at: int | None) -> None:
    rng = random.Random(size * 100 + (magic_at or 0))
    data = bytearray(rng.randbytes(max(size, 48)))
    if magic_at is not None:
        data[magic_at : magic_at + 4] = MAGIC_BYTES
    data = bytes(data)
    framed = frame_image(7, 1234, data)
    assert framed == encode_record(pack_image(7.0, 1234, data))
    assert len(framed) % 4 == 0


@pytest.mark.parametrize("length", [3, 4, 7, 8, 33, 4096])
def test_contains_magic_sees_only_whole_aligned_words(length: int) -> None:
    """dmlc splits a record only at a word-aligned magic number: the fast search must agree."""
    for at in range(length - 3):
        buffer = bytearray(length + 8)  # writable: the vectorised path; bytes: the fallback
        buffer[at : at + 4] = MAGIC_BYTES
        expected = at % 4 == 0
        assert contains_magic(memoryview(buffer)[:length]) == expected, at
        assert contains_magic(memoryview(bytes(buffer[:length]))) == expected, at
    tail = bytearray(length + 4)
    tail[length - 2 : length + 2] = MAGIC_BYTES  # crosses the end of the view
    assert not contains_magic(memoryview(tail)[:length])


def test_image_problem_finds_corrupt_images() -> None:
    rng = random.Random(1)
    good = jpeg_bytes(rng, 50, 40)
    assert image_problem(good) is None
    assert image_problem(jpeg_bytes(rng, 50, 40, mode="CMYK")) is None
    assert image_problem(jpeg_bytes(rng, 50, 40, mode="L")) is None
    assert image_problem(magic_jpeg(rng)) is None
    assert image_problem(png_bytes(rng, 20, 20)) is None
    assert "truncated JPEG" in (image_problem(good[: len(good) // 2]) or "")
    assert "truncated JPEG" in (image_problem(good[:30]) or "")
    assert "truncated PNG" in (image_problem(png_bytes(rng, 20, 20)[:-20]) or "")
    assert image_problem(b"") == "empty file"
    assert "not a JPEG or PNG" in (image_problem(b"hello world, not an image") or "")


def test_walk_key_orders_like_os_walk(tmp_path: Path) -> None:
    names = ["b/x.jpg", "a/Z.JPEG", "a/b.png", "a/sub/c.jpg", "a/sub/deeper/d.jpg", "A/e.jpg",
             "top.jpg", "a_b/f.jpg", "a/sub2/g.jpeg", "a/zz.jpg"]  # fmt: skip
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    walked = []
    for path, dirs, files in os.walk(tmp_path):
        dirs.sort()
        walked += [os.path.relpath(os.path.join(path, f), tmp_path) for f in sorted(files)]
    assert sorted(names, key=walk_key) == walked
    entries = build_list(scan_folder("train", tmp_path).images, shuffle=False)
    labels = {e.relpath: e.label for e in entries}
    assert labels["top.jpg"] == 0 and labels["A/e.jpg"] == 1 and labels["a/Z.JPEG"] == 2
    assert labels["a/sub/c.jpg"] == 3 and labels["a/sub/deeper/d.jpg"] == 4


def test_val_label_formats(tmp_path: Path) -> None:
    names = ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"]
    expected = dict(zip(names, ["n01751748", "n09193705"], strict=True))
    formats = {
        "valprep.sh": "mkdir -p n01751748\nmv ILSVRC2012_val_00000001.JPEG n01751748/\n"
        "mv ILSVRC2012_val_00000002.JPEG n09193705/\n",
        "LOC_val_solution.csv": "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000002,n09193705 1 2 3 4 n09193705 5 6 7 8\n"
        "ILSVRC2012_val_00000001,n01751748 1 2 3 4\n",
        "pairs.txt": "ILSVRC2012_val_00000001.JPEG n01751748\nILSVRC2012_val_00000002 n09193705\n",
        "synsets.txt": "n01751748\nn09193705\n",
    }
    for name, text in formats.items():
        (tmp_path / name).write_text(text)
        assert read_val_labels(tmp_path / name, names) == expected, name
    (tmp_path / "bad.txt").write_text("ILSVRC2012_val_00000001.JPEG dog\n")
    with pytest.raises(UserError, match=r"bad.txt:1.*WordNet id"):
        read_val_labels(tmp_path / "bad.txt", names)


def test_val_labels_that_are_no_labels_file_are_refused_without_hanging(tmp_path: Path) -> None:
    """Read whole before: /dev/zero never ended and a FIFO waited for a writer."""
    os.mkfifo(tmp_path / "fifo")
    with open(tmp_path / "huge.txt", "wb") as handle:
        handle.truncate(65 << 20)
    (tmp_path / "latin.txt").write_bytes(b"ILSVRC2012_val_00000001.JPEG n0144076\xe9\n")
    cases = {
        Path("/dev/zero"): "a device, not a regular file",
        tmp_path / "fifo": "a FIFO, not a regular file",
        tmp_path / "huge.txt": "more than the 65536 KiB",
        tmp_path / "latin.txt": "not UTF-8 text: byte 0xe9",
        tmp_path / "gone.txt": "file not found",
    }
    for path, needle in cases.items():
        with pytest.raises(UserError) as raised:
            read_val_labels(path, ["ILSVRC2012_val_00000001.JPEG"])
        assert needle in str(raised.value) and str(path) in str(raised.value), raised.value


def _entries(tmp_path: Path):  # type: ignore[no-untyped-def]
    data = make_imagenet(tmp_path / "data", classes=3, train_per_class=12, val_per_class=1,
                         tars=False)  # fmt: skip
    return data, build_list(scan_folder("train", data.extracted / "train").images)


def test_resume_after_failure_continues_from_checkpoint(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _, entries = _entries(tmp_path)
    reference = ShardFiles(tmp_path / "reference")
    pack(entries, reference, workers=2)

    monkeypatch.setattr(pack_module, "CHUNK", 4)
    victim = Path(entries[22].source.file)
    original = victim.read_bytes()
    victim.write_bytes(original[: len(original) // 2])
    files = ShardFiles(tmp_path / "resumed")
    with pytest.raises(UserError, match=r"corrupt image .*truncated"):
        pack(entries, files, workers=2, segment_bytes=1)
    saved = pack_module.PackState.from_json(__import__("json").loads(files.checkpoint.read_text()))
    assert saved.position == 20 and saved.records == 20 and len(saved.segments) == 5
    # A crash after the checkpoint leaves extra bytes behind: the resume must cut them off.
    with open(files.rec, "ab") as rec, open(files.idx, "ab") as idx:
        rec.write(b"garbage" * 100)
        idx.write(b"99\t12345\n")
    victim.write_bytes(original)
    state = pack(entries, files, workers=2, segment_bytes=1)
    assert files.rec.read_bytes() == reference.rec.read_bytes()
    assert files.idx.read_bytes() == reference.idx.read_bytes()
    assert state.records == len(entries) and not files.checkpoint.exists()
    offsets = [o for o, _ in iter_records(files.rec)]
    assert [s["offset"] for s in state.segments] == [offsets[i] for i in range(0, 36, 4)]


def test_source_changed_after_its_read_does_not_reach_the_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records are written from the bytes read, checked and checksummed, not reread from the
    source: an image rewritten after its read leaves the output (and its CRC) consistent."""
    _, entries = _entries(tmp_path)
    reference = ShardFiles(tmp_path / "reference")
    pack(entries, reference, workers=2)
    victim = Path(entries[9].source.file)
    original = victim.read_bytes()
    real_write = pack_module._write_all

    def write_after_a_change(fd: int, buffers) -> None:  # type: ignore[no-untyped-def]
        if victim.read_bytes() == original:
            changed = bytearray(original)
            changed[len(changed) // 2] ^= 0xFF
            victim.write_bytes(changed)
        real_write(fd, buffers)

    monkeypatch.setattr(pack_module, "_write_all", write_after_a_change)
    files = ShardFiles(tmp_path / "out")
    state = pack(entries, files, workers=2)
    assert files.rec.read_bytes() == reference.rec.read_bytes()
    assert state.segments == pack(entries, reference, workers=2).segments


def test_skip_corrupt_leaves_the_record_out(tmp_path: Path) -> None:
    _, entries = _entries(tmp_path)
    victim = Path(entries[5].source.file)
    victim.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 10)
    state = pack(entries, ShardFiles(tmp_path / "out"), workers=2, on_corrupt="skip")
    assert state.records == len(entries) - 1
    assert state.skipped == [{"path": entries[5].relpath, "reason": state.skipped[0]["reason"]}]
    ids = [unpack_image(p).id for _, p in iter_records(tmp_path / "out.rec")]
    assert entries[5].index not in ids and len(ids) == len(entries) - 1


def test_shards_join_to_the_single_file(tmp_path: Path) -> None:
    _, entries = _entries(tmp_path)
    single = ShardFiles(tmp_path / "single")
    pack(entries, single, workers=1)
    work = tmp_path / "work"
    work.mkdir()
    for index in (2, 0, 3, 1):
        shard = Shard(index, 4)
        start, end = shard.range(len(entries))
        pack(entries[start:end], shard_files(work, "train", shard), workers=2)
    target = JoinFiles.of(work, "train")
    state = join(work, "train", target)
    assert target.rec.read_bytes() == single.rec.read_bytes()
    assert target.idx.read_bytes() == single.idx.read_bytes()
    assert state.records == len(entries)
    assert sorted(p.name for p in work.iterdir()) == ["train.idx", "train.joined.json", "train.rec"]


def test_join_refuses_missing_shards(tmp_path: Path) -> None:
    _, entries = _entries(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    pack(entries[:10], shard_files(work, "train", Shard(0, 2)), workers=1)
    with pytest.raises(UserError, match=r"shards 1 of 2 are not finished"):
        join(work, "train", JoinFiles.of(work, "train"))


def test_split_records_in_output(tmp_path: Path) -> None:
    _, entries = _entries(tmp_path)
    files = ShardFiles(tmp_path / "out")
    pack(entries, files, workers=2)
    raw = files.rec.read_bytes()
    flags = {struct.unpack_from("<I", raw, o + 4)[0] >> 29 for o, _ in iter_records(files.rec)}
    assert 1 in flags  # the magic JPEG was split as dmlc does
    payloads = {unpack_image(p).id: unpack_image(p).image for _, p in iter_records(files.rec)}
    for entry in entries:
        assert payloads[entry.index] == Path(entry.source.file).read_bytes()


@pytest.mark.parametrize("direct", [True, False])
def test_rec_file_writes_exactly_the_appended_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool) -> None:
    """Direct writes go through a staging buffer in whole blocks, flushes pad the last block and
    resumes start inside a block: the file must hold the appended bytes and nothing else."""
    monkeypatch.setattr(pack_module, "_STAGING_BYTES", 3 * pack_module._DIRECT_ALIGN)
    if not direct:
        monkeypatch.setattr(os, "O_DIRECT", 0)
    rng = random.Random(5)
    path = tmp_path / "out.rec"
    expected = bytearray()
    rec = pack_module._RecFile(path, 0)
    # O_DIRECT works on the disks CI writes to (ext4, tmpfs since Linux 6.6); elsewhere the
    # fallback is what is checked.
    used_direct = rec._direct is not None
    for round_number in range(40):
        pieces = [rng.randbytes(rng.choice([1, 7, 4095, 4096, 5000, 13000])) for _ in range(3)]
        rec.append(pieces)
        expected += b"".join(pieces)
        if round_number % 7 == 3:
            rec.flush()
            assert path.read_bytes()[: len(expected)] == expected
        if round_number % 13 == 5:  # a resume from the checkpointed size, inside a block
            rec.close()
            rec = pack_module._RecFile(path, len(expected))
    rec.close()
    assert path.read_bytes() == expected
    if not direct:
        assert not used_direct


def test_rec_file_falls_back_when_direct_writes_are_refused(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Some file systems accept O_DIRECT at open and refuse the writes: buffered from then on."""
    monkeypatch.setattr(pack_module, "_STAGING_BYTES", pack_module._DIRECT_ALIGN)
    real_pwrite = os.pwrite
    refused = []

    def refuse(fd: int, data, offset: int) -> int:  # type: ignore[no-untyped-def]
        if fd == rec._direct:
            refused.append(offset)
            raise OSError(22, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refuse)
    rec = pack_module._RecFile(tmp_path / "out.rec", 0)
    data = random.Random(2).randbytes(10_000)
    rec.append([data[:6000]])
    rec.append([data[6000:]])
    rec.close()
    assert (tmp_path / "out.rec").read_bytes() == data
    assert len(refused) <= 1
