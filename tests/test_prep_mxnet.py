"""MXNet itself judges the format: its readers, and its own im2rec.py byte for byte.

Builds (once, cached) a venv with mxnet 1.9.1 from PyPI; see tests/mxnet_env.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mxnet_env
from hpcrepro.prep.listing import build_list, write_lst
from hpcrepro.prep.sources import scan_folder
from prep_data import SyntheticSet, make_imagenet

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
OUTPUTS = ("train.lst", "train.rec", "train.idx", "val.lst", "val.rec", "val.idx")
pytestmark = pytest.mark.slow


def hpcrepro(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run([sys.executable, "-m", "hpcrepro", *map(str, args)],
                            capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def mxnet_python() -> Path:
    return mxnet_env.ensure_venv()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSet:
    return make_imagenet(tmp_path_factory.mktemp("imagenet"), classes=5, train_per_class=6,
                         val_per_class=3, max_side=120)  # fmt: skip


@pytest.fixture(scope="module")
def prepared(synthetic: SyntheticSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made from the nested ILSVRC tars, so the tar path is what MXNet judges."""
    out = tmp_path_factory.mktemp("prepared") / "out"
    hpcrepro("prep", "imagenet", "--raw", synthetic.tars, "--out", out, "--workers", "2")
    return out


def im2rec(python: Path, cwd: Path, *args: str | Path) -> None:
    script = mxnet_env.im2rec_script(python)
    subprocess.run([str(python), str(script), *map(str, args)], cwd=cwd, check=True,
                   capture_output=True, timeout=300)  # fmt: skip


def test_identical_to_mxnet_im2rec(
    mxnet_python: Path, synthetic: SyntheticSet, prepared: Path, tmp_path: Path
) -> None:
    for split in ("train", "val"):
        root = synthetic.extracted / split
        im2rec(mxnet_python, tmp_path, "--list", "--recursive", split, root)
        im2rec(mxnet_python, tmp_path, "--pass-through", "--num-thread", "2", split, root)
    for name in OUTPUTS:
        assert (tmp_path / name).read_bytes() == (prepared / name).read_bytes(), name
    # A data set made by im2rec can be adopted: verified, then given a manifest.
    hpcrepro("prep", "verify", tmp_path, "--write-manifest")
    report = json.loads(hpcrepro("prep", "verify", tmp_path, "--json", "--checksums").stdout)
    assert report["ok"] and report["manifest"] and report["checksums_checked"]


def test_listing_matches_im2rec_on_odd_trees(mxnet_python: Path, tmp_path: Path) -> None:
    """Nested folders, images at the root, mixed-case extensions, ignored files, symlinks."""
    root = tmp_path / "tree"
    names = ["b/x.jpg", "a/Z.JPEG", "a/b.png", "a/sub/c.jpg", "a/sub/deeper/d.jpg", "A/e.jpg",
             "top.jpg", "a_b/f.jpg", "a/sub2/g.jpeg", "a/zz.jpg", "a/readme.txt", "c/.jpg",
             "c/h.Jpg", "empty/.keep", "b/y.gif"]  # fmt: skip
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    os.symlink(root / "b", root / "linked")
    os.symlink(root / "missing.jpg", root / "a" / "dangling.jpg")
    im2rec(mxnet_python, tmp_path, "--list", "--recursive", "odd", root)
    write_lst(tmp_path / "ours.lst", build_list(scan_folder("train", root).images))
    assert (tmp_path / "ours.lst").read_text() == (tmp_path / "odd.lst").read_text()


def test_mxnet_readers_read_every_record(
    mxnet_python: Path, synthetic: SyntheticSet, prepared: Path, tmp_path: Path
) -> None:
    out = tmp_path / "mxnet.json"
    subprocess.run([str(mxnet_python), str(HERE / "mxnet_read.py"), str(prepared),
                    str(synthetic.extracted), str(out)], check=True, capture_output=True,
                   timeout=300)  # fmt: skip
    report = json.loads(out.read_text())
    assert report["problems"] == []
    assert report["splits"]["train"] == {"listed": 30, "indexed": 30, "sequential": 30}
    assert report["splits"]["val"] == {"listed": 15, "indexed": 15, "sequential": 15}
