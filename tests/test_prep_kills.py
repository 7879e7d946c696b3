"""A prep killed at any step, then run again as before, finishes with the same files.

No timing: the killed run is a forked child that counts the file-system changes it makes
(renames, deletions, syncs, writes, truncations, new files and folders, from any thread) and
exits on the spot, as SIGKILL would, just before the k-th one. k goes from 1 until a run
survives, so every step of the plan, pack, join and finish is a kill point exactly once.
The issue this guards against: a kill between the single shard's clean-up and the join's
marker left "the shard (0 of 1) is not finished; run without --join" on every rerun.
"""

from __future__ import annotations

import itertools
import os
import shutil
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcrepro.errors import UserError
from hpcrepro.prep.imagenet import Request, prepare
from hpcrepro.prep.shards import parse_shard
from prep_data import make_imagenet

KILLED = 137
OUTPUTS = ("train.lst", "train.rec", "train.idx", "val.lst", "val.rec", "val.idx")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
# what changes files: the kill lands just before one of these
_MUTATIONS: dict[str, Callable[..., bool]] = {
    name: (lambda *args, **kwargs: True)
    for name in (
        "replace", "rename", "unlink", "rmdir", "mkdir", "fsync", "fdatasync", "ftruncate",
        "truncate", "write", "writev", "pwrite", "copy_file_range",
    )
}  # fmt: skip
_MUTATIONS["open"] = lambda path, flags, *args, **kwargs: bool(flags & _WRITE_FLAGS)


def _kill_before_step(step: int) -> None:
    """Make this process exit just before its `step`-th file-system change."""
    counter = itertools.count(1)
    for name, changes in _MUTATIONS.items():
        real = getattr(os, name)

        def hook(*args: Any, _real: Any = real, _changes: Any = changes, **kwargs: Any) -> Any:
            if _changes(*args, **kwargs) and next(counter) == step:
                os._exit(KILLED)
            return _real(*args, **kwargs)

        setattr(os, name, hook)


def run_prep(request: Request, kill_before: int | None, log: Path) -> int:
    """Run `prepare` in a forked child; its exit status (KILLED when the kill struck)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            if kill_before is not None:
                _kill_before_step(kill_before)
            prepare(request, log=lambda message: None)
            code = 0
        except UserError as error:
            log.write_text(str(error))
            code = 2
        except BaseException:
            log.write_text(traceback.format_exc())
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def request(raw: Path, out: Path, **options: Any) -> Request:
    return Request(raw=raw, out=out, workers=2, **options)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("kills")
    raw = make_imagenet(root / "raw", classes=2, train_per_class=5, val_per_class=1,
                        tars=False).extracted  # fmt: skip
    reference = root / "reference"
    assert run_prep(request(raw, reference), None, root / "log") == 0
    yield raw, reference


def finished_like(out: Path, reference: Path, log: Path, step: int) -> None:
    assert (out / "manifest.json").is_file(), (step, log.read_text() if log.exists() else "")
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), (step, name)
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, "manifest.json"]), step


def test_a_plain_rerun_finishes_after_a_kill_at_any_step(
    data: tuple[Path, Path], tmp_path: Path
) -> None:
    raw, reference = data
    log = tmp_path / "log"
    for step in itertools.count(1):
        out = tmp_path / f"out-{step}"
        status = run_prep(request(raw, out), step, log)
        if status != KILLED:
            assert status == 0, log.read_text()
            break
        rerun = run_prep(request(raw, out), None, log)
        assert rerun == 0, (step, log.read_text())
        finished_like(out, reference, log, step)
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
        assert not leftovers, (step, leftovers)  # nothing beside --out either
        shutil.rmtree(out)
    assert step > 50  # every step of plan, pack, join and finish was a kill point


def test_a_join_rerun_finishes_after_a_kill_at_any_step(
    data: tuple[Path, Path], tmp_path: Path
) -> None:
    """An array of two shards, then `--join` killed at each step and run again."""
    raw, reference = data
    log = tmp_path / "log"
    packed = tmp_path / "packed"
    for spec in ("1/2", "0/2"):
        assert run_prep(request(raw, packed, shard=parse_shard(spec)), None, log) == 0
    for step in itertools.count(1):
        out = tmp_path / f"out-{step}"
        shutil.copytree(packed, out)
        status = run_prep(request(raw, out, join_only=True), step, log)
        if status != KILLED:
            assert status == 0, log.read_text()
            break
        assert run_prep(request(raw, out, join_only=True), None, log) == 0, (step, log.read_text())
        finished_like(out, reference, log, step)
        shutil.rmtree(out)
    assert step > 20
