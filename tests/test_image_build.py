"""Real image builds: enroot and podman from a small Debian base, with NVIDIA's real code.

NVIDIA's own Dockerfile cannot run here (its pip step needs GitHub, its make the NGC base's CUDA
and MXNet headers), so the builds use a Dockerfile of NVIDIA's shape (ARG FROM_IMAGE_NAME,
RUN before WORKDIR, COPY requirements.txt, RUN, COPY . ., RUN, ENV) on NVIDIA's real folder.
Apptainer cannot be installed here: the lock test runs through its strict stand-in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import NVIDIA_CODE, require_shared
from image_env import debian_base, enroot_env, enroot_program, podman_base

FAKES = Path(__file__).resolve().parent / "fakes"
SHAPE = """\
ARG FROM_IMAGE_NAME=nvcr.io/nvidia/mxnet:24.04-py3
FROM ${FROM_IMAGE_NAME}
RUN echo "first step in $(pwd)" > /step1
WORKDIR /workspace/image_classification
COPY requirements.txt .
RUN grep mlperf-common requirements.txt > pinned.txt && test ! -e run_and_time.sh
COPY . .
RUN test -x run_and_time.sh && echo "built in $(pwd) ${MXNET_UPDATE_ON_KVSTORE:-unset}" >built.txt
ENV MXNET_UPDATE_ON_KVSTORE=0 \\
    OMPI_MCA_btl=^openib \\
    HPCREPRO_SPACES="a b"
"""


def code() -> Path:
    return require_shared(NVIDIA_CODE) / "v4.0" / "NVIDIA" / "eos_n8_ngc24.04_mxnet"


def image_build(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "hpcrepro",
        "image",
        "build",
        "--system",
        "dgxh100_8x8",
        "--version",
        "r4.0",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)


def inside(enroot: Path, env: dict[str, str], image: Path, script: str) -> str:
    """Run `script` in a container made from `image`, as pyxis does (create, then start)."""
    subprocess.run(
        [str(enroot), "create", "--name", "check", str(image)],
        env=env,
        check=True,
        capture_output=True,
    )
    try:
        return subprocess.run(
            [str(enroot), "start", "check", "sh", "-c", script],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        subprocess.run([str(enroot), "remove", "--force", "check"], env=env, capture_output=True)


def assert_nvidia_shape(enroot: Path, env: dict[str, str], image: Path) -> None:
    out = inside(
        enroot,
        env,
        image,
        "pwd; cat built.txt pinned.txt /step1; ls -l run_and_time.sh;"
        " env | sort; ls -d /.hpcrepro-* 2>/dev/null || echo no-mount-points",
    )
    lines = out.splitlines()
    assert lines[0] == "/workspace/image_classification"  # WORKDIR, where pyxis starts tasks
    assert "built in /workspace/image_classification unset" in lines  # ENV after that RUN
    assert (
        "git+https://github.com/NVIDIA/mlperf-common.git@68cf1d0d5e3de3351e66abb696d0e2d011aabf47"
    ) in lines
    assert "first step in /" in lines
    assert any(line.startswith("-rwx") and "run_and_time.sh" in line for line in lines)
    for variable in ("MXNET_UPDATE_ON_KVSTORE=0", "OMPI_MCA_btl=^openib", "HPCREPRO_SPACES=a b"):
        assert variable in lines
    assert "no-mount-points" in lines


@pytest.fixture
def dockerfile(tmp_path: Path) -> Path:
    path = tmp_path / "Dockerfile"
    path.write_text(SHAPE)
    return path


@pytest.mark.slow
def test_real_enroot_build_from_a_local_base(tmp_path: Path, dockerfile: Path) -> None:
    enroot = enroot_program()
    base = debian_base() / "base.sqsh"
    env = enroot_env(tmp_path, enroot)
    out = tmp_path / "cache" / "rn50.sqsh"
    args = [
        "--code",
        str(code()),
        "--dockerfile",
        str(dockerfile),
        "--base",
        str(base),
        "--builder",
        "enroot",
        "-o",
        str(out),
    ]
    result = image_build(*args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(out)
    # piped, the numbered steps are plain lines between the builder's own output
    assert "[3/4] building rn50.sqsh with enroot" in result.stderr and "\x1b[" not in result.stderr
    assert "  [6/6] Dockerfile line 8 (RUN test -x" in result.stderr
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["builder"] == "enroot" and record["code"].endswith("eos_n8_ngc24.04_mxnet")
    assert_nvidia_shape(enroot, env, out)
    assert os.listdir(env["ENROOT_DATA_PATH"]) == []  # the build container is gone
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "rn50.sqsh",
        "rn50.sqsh.json",
        "rn50.sqsh.lock",
    ]
    again = image_build(*args, env=env)  # same key: reused, not rebuilt
    assert again.returncode == 0 and "already built from this recipe" in again.stderr


@pytest.mark.slow
def test_real_podman_build_imported_into_enroot(tmp_path: Path, dockerfile: Path) -> None:
    enroot = enroot_program()
    base = podman_base()
    env = enroot_env(tmp_path, enroot)
    out = tmp_path / "rn50-podman.sqsh"
    result = image_build(
        "--code",
        str(code()),
        "--dockerfile",
        str(dockerfile),
        "--base",
        base,
        "--builder",
        "podman",
        "-o",
        str(out),
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_nvidia_shape(enroot, env, out)
    images = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "hpcrepro-build" not in images  # the intermediate image is removed


@pytest.mark.slow
def test_a_failing_step_stops_with_its_line_and_leaves_nothing(tmp_path: Path) -> None:
    enroot = enroot_program()
    env = enroot_env(tmp_path, enroot)
    failing = tmp_path / "Dockerfile"
    failing.write_text(SHAPE.replace("RUN grep mlperf-common", "RUN exit 7 && grep mlperf-common"))
    out = tmp_path / "cache" / "rn50.sqsh"
    result = image_build(
        "--code",
        str(code()),
        "--dockerfile",
        str(failing),
        "--base",
        str(debian_base() / "base.sqsh"),
        "--builder",
        "enroot",
        "-o",
        str(out),
        env=env,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Dockerfile line 6 (RUN exit 7" in result.stderr and "exit code 7" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["rn50.sqsh.lock"]
    assert os.listdir(env["ENROOT_DATA_PATH"]) == []


def test_a_wrong_code_tree_is_refused_before_any_build(tmp_path: Path, dockerfile: Path) -> None:
    import shutil

    copy = tmp_path / "code"
    shutil.copytree(code(), copy)
    (copy / "mlperf_log_utils.py").chmod(0o644)
    (copy / "mlperf_log_utils.py").write_text("# edited\n")
    out = tmp_path / "cache" / "rn50.sif"
    env = {
        **os.environ,
        "PATH": f"{FAKES}:{os.environ['PATH']}",
        "FAKE_SRUN_LOG": str(tmp_path / "calls.jsonl"),
    }
    result = image_build(
        "--code", str(copy), "--builder", "apptainer", "--format", "sif", "-o", str(out), env=env
    )
    assert result.returncode == 2
    assert "changed: mlperf_log_utils.py" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "calls.jsonl").exists()


def test_a_missing_builder_names_what_to_install(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare)}
    for args, fragment in (
        ([], "no image builder found on this node"),
        (["--builder", "podman"], "the podman builder needs `podman`"),
        (["--builder", "enroot"], "install enroot"),
        (["--builder", "apptainer", "--format", "sif"], "install Apptainer"),
        (["--builder", "apptainer", "--format", "sqsh"], "makes .sif files, not .sqsh"),
    ):
        result = image_build("--code", str(code()), "-o", str(tmp_path / "x.img"), *args, env=env)
        assert result.returncode == 2 and fragment in result.stderr, (args, result.stderr)
        assert not (tmp_path / "x.img").exists()


def test_two_builds_of_one_key_build_once(tmp_path: Path) -> None:
    """Two campaigns at once: one builds, the other waits for the lock and reuses the file."""
    log = tmp_path / "calls.jsonl"
    env = {
        **os.environ,
        "PATH": f"{FAKES}:{os.environ['PATH']}",
        "FAKE_SRUN_LOG": str(log),
        "FAKE_APPTAINER_BUILD_SECONDS": "3",
    }
    out = tmp_path / "cache" / "rn50.sif"
    command = [
        sys.executable,
        "-m",
        "hpcrepro",
        "image",
        "build",
        "--system",
        "dgxh100_8x8",
        "--version",
        "r4.0",
        "--code",
        str(code()),
        "--builder",
        "apptainer",
        "--format",
        "sif",
        "-o",
        str(out),
    ]
    first = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    second = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    results = [(*p.communicate(timeout=120), p.returncode) for p in (first, second)]
    assert [r[2] for r in results] == [0, 0], results
    builds = [json.loads(line) for line in log.read_text().splitlines()]
    assert len([b for b in builds if b["apptainer"][0] == "build"]) == 1
    assert "waiting for it" in results[1][1] and "already built" in results[1][1]
    definition = json.loads(out.read_text())["fake sif from definition"]
    assert "pip install --no-cache-dir -r requirements.txt" in definition
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "rn50.sif",
        "rn50.sif.json",
        "rn50.sif.lock",
    ]
