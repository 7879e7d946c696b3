"""prep's own state files, damaged or edited by hand, are checked like user input: each is a
UserError naming the file and the place, with how to start over, never a KeyError or TypeError."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hpcrepro.errors import UserError
from hpcrepro.prep.imagenet import Request, prepare
from hpcrepro.prep.shards import parse_shard
from hpcrepro.prep.verify import quick_check
from prep_data import make_imagenet

WORK = ".hpcrepro-prep"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(raw, a folder with shard 0 of 2 packed, a finished data set)."""
    root = tmp_path_factory.mktemp("state")
    raw = make_imagenet(root / "raw", classes=2, train_per_class=4, val_per_class=1,
                        tars=False).extracted  # fmt: skip
    half = root / "half"
    prepare(Request(raw, half, 2, shard=parse_shard("0/2")), log=lambda _: None)
    done = root / "done"
    prepare(Request(raw, done, 2), log=lambda _: None)
    return raw, half, done


def edit(path: Path, change: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def put(data: Any, key: str, value: Any) -> Any:
    data[key] = value
    return data


PLAN = f"{WORK}/plan.json"
DONE = f"{WORK}/train.00000-of-00002.done.json"


@pytest.mark.parametrize(
    ("name", "change", "needle"),
    [
        (PLAN, lambda d: {}, "is not an object with"),
        (PLAN, lambda d: put(d, "splits", []), "splits is not an object"),
        (PLAN, lambda d: put(d["splits"]["train"], "images", -1) and d, "splits.train.images"),
        (PLAN, lambda d: put(d["splits"]["val"], "kind", 3) and d, "splits.val.kind is not text"),
        (PLAN, lambda d: [d], "the file is not an object"),
        (DONE, lambda d: [], "the file is not an object"),
        (DONE, lambda d: put(d, "records", "12"), "records is not a count"),
        (DONE, lambda d: put(d, "rec_size", 10**30), "rec_size is not a count (0 to 2**63-1)"),
        (DONE, lambda d: put(d, "segments", [{"offset": 0}]), "segments[0] is not an object"),
        (DONE, lambda d: put(d, "evil", 1), "is not an object with"),
        (DONE, lambda d: put(d, "skipped", [{"path": 1, "reason": "x"}]), "skipped[0].path"),
    ],
)
def test_a_damaged_state_file_is_named(
    prepared: tuple[Path, Path, Path], tmp_path: Path, name: str, change: Any, needle: str
) -> None:
    raw, half, _ = prepared
    out = tmp_path / "out"
    shutil.copytree(half, out)
    edit(out / name, change)
    with pytest.raises(UserError) as raised:
        prepare(Request(raw, out, 2, shard=parse_shard("0/2")), log=lambda _: None)
    shown = str(raised.value)
    assert f"{out / name} is damaged" in shown and needle in shown, shown
    assert "delete it and run the prep again" in shown


def test_a_damaged_join_checkpoint_is_named(
    prepared: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    raw, half, _ = prepared
    out = tmp_path / "out"
    shutil.copytree(half, out)
    prepare(Request(raw, out, 2, shard=parse_shard("1/2")), log=lambda _: None)
    checkpoint = out / WORK / "train.join.json"
    state = json.loads((out / WORK / DONE.split("/")[1]).read_text())
    for saved, needle in (
        ({"joined": 5, "count": 2, "state": state}, "5 of 2 shards joined"),
        ({"joined": 1, "state": {}}, "state is not an object"),
        ({"count": 2, "state": state}, "is not an object with"),
    ):
        checkpoint.write_text(json.dumps(saved))
        with pytest.raises(UserError, match=r"train\.join\.json is damaged") as raised:
            prepare(Request(raw, out, 2, join_only=True), log=lambda _: None)
        assert needle in str(raised.value)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: put(d, "files", []), "'files' is not an object"),
        (lambda d: put(d["files"], "train.rec", {"size": "1"}) and d, "files.train.rec"),
        (lambda d: put(d, "splits", None), "'splits' is not an object"),
    ],
)
def test_a_damaged_manifest_is_named(
    prepared: tuple[Path, Path, Path], tmp_path: Path, change: Any, needle: str
) -> None:
    raw, _, done = prepared
    out = tmp_path / "out"
    shutil.copytree(done, out)
    edit(out / "manifest.json", change)
    for call in (
        lambda: quick_check(out),  # what campaigns ask to skip the prep
        lambda: prepare(Request(raw, out, 2), log=lambda _: None),
    ):
        with pytest.raises(UserError) as raised:
            call()
        assert f"{out / 'manifest.json'} is damaged" in str(raised.value)
        assert needle in str(raised.value), raised.value
