"""NVIDIA's code against the shipped SHA-256s, read in place; requirements pinning; git fetch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import NVIDIA_CODE, require_shared
from hpcrepro.catalog import load_catalog
from hpcrepro.errors import UserError
from hpcrepro.image import code, published
from hpcrepro.image.requirements import resolve

ROOT = Path(__file__).resolve().parent.parent


def implementations() -> list[tuple[str, str]]:
    pairs = []
    for path in sorted(published.DATA_DIR.glob("v*.json")):
        for folder in json.loads(path.read_text())["implementations"]:
            pairs.append((path.stem, folder))
    return pairs


@pytest.mark.parametrize(("round_name", "folder"), implementations())
def test_every_shared_copy_passes_its_manifest(round_name: str, folder: str) -> None:
    shared = (
        require_shared(NVIDIA_CODE) / round_name / folder.split("/")[0] / folder.rsplit("/", 1)[1]
    )
    data = json.loads((published.DATA_DIR / f"{round_name}.json").read_text())
    files = published._files(data["implementations"][folder]["files"])
    code.verify_tree(shared, files, folder, "--code")


def test_the_manifests_are_what_the_script_writes(tmp_path: Path) -> None:
    """The shipped data is reproducible from the shared folder by the script in the repo."""
    require_shared(NVIDIA_CODE)
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", copy / "scripts")
    subprocess.run(
        [
            sys.executable,
            str(copy / "scripts" / "image-code-manifests.py"),
            str(NVIDIA_CODE.parents[1]),
        ],
        check=True,
        capture_output=True,
    )
    for path in published.DATA_DIR.glob("*.json"):
        written = copy / "src" / "hpcrepro" / "image" / "published" / path.name
        assert written.read_text() == path.read_text(), path.name


def test_every_catalog_entry_has_its_code_recorded() -> None:
    catalog = load_catalog()
    for name in catalog.names():
        for version, entry in catalog.entry(name).versions.items():
            location = published.locate(version, entry.implementation, entry.source)
            assert location.files and location.commit, (name, version)
    coreweave = published.locate("r3.0", "mxnet", catalog.get("dgxh100_448x8", "r3.0").source)
    assert coreweave.path.startswith("NVIDIA_CoreWeave/")


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, published.CodeLocation]:
    source = require_shared(NVIDIA_CODE) / "v4.0" / "NVIDIA" / "eos_n8_ngc24.04_mxnet"
    copy = tmp_path / "code"
    shutil.copytree(source, copy)
    for directory, _, names in os.walk(copy):
        os.chmod(directory, 0o755)
        for name in names:
            Path(directory, name).chmod(Path(directory, name).stat().st_mode | 0o200)
    location = published.locate("r4.0", "eos_n8_ngc24.04_mxnet", "")
    return copy, location


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda d: (d / "common" / "fit.py").write_text("edited\n"), "changed: common/fit.py"),
        (lambda d: (d / "run_and_time.sh").unlink(), "missing: run_and_time.sh"),
        (
            lambda d: (d / "config_MINE.sh").write_text("x\n"),
            "not in NVIDIA's folder: config_MINE.sh",
        ),
        (lambda d: (d / "run_and_time.sh").chmod(0o644), "run_and_time.sh lost the executable bit"),
        (lambda d: (d / "link").symlink_to("/etc/passwd"), "links or special files"),
    ],
)
def test_a_wrong_tree_is_refused_with_the_file_named(tree, damage, fragment) -> None:  # type: ignore[no-untyped-def]
    folder, location = tree
    damage(folder)
    with pytest.raises(UserError) as error:
        code.verify_tree(folder, location.files, location.label, "--code")
    assert fragment in error.value.render()


def test_what_a_checkout_adds_is_ignored(tree) -> None:  # type: ignore[no-untyped-def]
    folder, location = tree
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref\n")
    (folder / "cuda_graphs" / "graph_lib.so").write_bytes(b"\x7fELF prebuilt")
    (folder / "common" / "__pycache__").mkdir()
    (folder / "common" / "__pycache__" / "fit.cpython-311.pyc").write_bytes(b"x")
    code.verify_tree(folder, location.files, location.label, "--code")
    staged = code.stage(folder, location, folder.parent / "staged")
    assert not (staged / "cuda_graphs" / "graph_lib.so").exists()  # make builds it against CUDA
    assert not (staged / ".git").exists() and (staged / "run_and_time.sh").is_file()


def test_git_fetch_checks_out_only_the_folder_at_the_commit(tree, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    folder, location = tree
    repo = tmp_path / "mirror" / "mlcommons" / "training_results_v4.0.git"
    work = tmp_path / "src"
    inside = work / location.path
    inside.parent.mkdir(parents=True)
    shutil.copytree(folder, inside)
    (work / "NVIDIA" / "results.txt").write_text("logs the fetch must not bring\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "x"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "config", "uploadpack.allowFilter", "true"], check=True)
    head = subprocess.run(
        ["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.setenv(code.GIT_MIRROR_ENV, f"file://{tmp_path / 'mirror'}")
    pinned = published.CodeLocation(**{**location.__dict__, "commit": head})
    fetched = code.fetch(pinned, tmp_path / "out")
    assert (fetched / "run_and_time.sh").is_file()
    assert not (tmp_path / "out" / "results-checkout" / "NVIDIA" / "results.txt").exists()
    wrong = published.CodeLocation(**{**location.__dict__, "commit": "0" * 40})
    with pytest.raises(UserError, match="failed at `git fetch`"):
        code.fetch(wrong, tmp_path / "out2")


def test_requirements_are_pinned_and_made_local(tmp_path: Path) -> None:
    shared = require_shared(NVIDIA_CODE)
    text = (shared / "v3.0" / "NVIDIA" / "mxnet" / "requirements.txt").read_text()
    location = published.locate("r3.0", "mxnet", "")
    online = resolve(text, "requirements.txt", location.mlperf_common, None)
    assert (
        f"git+https://github.com/NVIDIA/mlperf-common.git@{location.mlperf_common}"
        in online.text.splitlines()
    )
    assert "git+https://github.com/mlcommons/logging.git@3.0.0-rc1" in online.text
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    shutil.copytree(shared / "mlperf-common" / "53b6de5", wheels / "mlperf-common")
    (wheels / "mlperf_logging-4.1.0-py3-none-any.whl").write_bytes(b"x")
    with pytest.raises(UserError, match=r"not 3\.0\.0-rc1 as requirements\.txt pins"):
        resolve(text, "requirements.txt", location.mlperf_common, wheels)
    (wheels / "mlperf_logging-4.1.0-py3-none-any.whl").unlink()
    (wheels / "mlperf_logging-3.0.0rc1-py3-none-any.whl").write_bytes(b"x")
    offline = resolve(text, "requirements.txt", location.mlperf_common, wheels)
    assert (
        offline.text.splitlines()[0] == "/.hpcrepro-wheels/mlperf_logging-3.0.0rc1-py3-none-any.whl"
    )
    assert offline.text.splitlines()[-1] == "/.hpcrepro-wheels/mlperf-common"
    assert "numpy==1.18.5" in offline.text
    (wheels / "mlperf-common" / "setup.py").write_text("edited\n")
    with pytest.raises(UserError, match=r"changed: setup\.py"):
        resolve(text, "requirements.txt", location.mlperf_common, wheels)


@pytest.mark.slow
def test_the_wheel_ships_the_code_records(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("hpcrepro-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in published.DATA_DIR.glob("*.json"):
        assert f"hpcrepro/image/published/{path.name}" in names
    assert "hpcrepro/templates/image.sbatch.j2" in names
