"""Container images for the real pyxis/enroot test cluster, made in the test run and cached.

- `base_image()`: a small Debian 12 root file system (`mmdebstrap`) with what NVIDIA's launch runs
  inside its image besides NVIDIA's own code: bash, python3 (`python` too), OpenMPI's mpi4py,
  util-linux's lscpu, ibverbs' ibv_devinfo, and upstream MXNet 1.9.1 with numpy. Two hardware
  stand-ins replace what needs GPUs or a DGX's cores: `nvidia-smi` and `numactl`
  (`tests/runtime/stand-ins/`). A `.sqsh` of it, plus the folder for further layers.
- `nvidia_image(round)`: built by `hpcrepro image build --builder enroot` itself, from NVIDIA's
  real implementation folder of the round (read from the shared research folder and checked
  file by file against the shipped hashes) and NVIDIA's own Dockerfile with its RUN steps left
  out: `apt-get` and `make` of cuda_graphs need the NGC base (CUDA, NGC MXNet headers), and
  `pip install -r requirements.txt` needs GitHub. What that pip step installs — mlperf-common
  at the commit of the round and a released mlperf-logging — goes into the base instead (a
  "round base"), as does what the NGC base's environment names. Only `train_imagenet.py` is
  replaced at run time, by a bind mount of the replay in `stand-ins/`.

Both are cached under $HPCREPRO_TEST_CACHE/images by the hash of everything they are made of;
a build happens under a file lock into a temporary folder, so an interrupted one leaves nothing
that looks finished. Every failure names the step and shows its output.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

HERE = Path(__file__).resolve().parent
STAND_INS = HERE / "stand-ins"
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))
from shared_dir import shared_dir  # noqa: E402

SHARED = shared_dir()
NVIDIA_CODE = SHARED / "research" / "nvidia-resnet-code"
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"  # Debian's python3 reads it

BASE_PACKAGES = (
    "bash", "python3", "python-is-python3", "python3-mpi4py", "procps", "util-linux",
    "ibverbs-utils", "libgomp1", "libquadmath0",
)  # fmt: skip
BASE_PIP = ("mxnet==1.9.1", "numpy==1.23.5", "requests<3", "graphviz<0.9")


@dataclass(frozen=True)
class Round:
    """What NVIDIA's image of one round holds (its Dockerfile and requirements.txt)."""

    version: str
    system: str  # the catalog entry whose image this is
    implementation: str  # folder under nvidia-resnet-code/v<X.Y>/NVIDIA/
    mlperf_common: str | None  # commit folder under nvidia-resnet-code/mlperf-common/
    mlperf_logging: str  # a released mlperf-logging (the rc tags NVIDIA pins are not on PyPI)

    @property
    def code(self) -> Path:
        return NVIDIA_CODE / f"v{self.version.removeprefix('r')}" / "NVIDIA" / self.implementation


# mlperf-logging 3.0.0 knows the rules of 2.1.0 and 3.0.0 but not 3.1.0 or 4.0.0: the r3.1 and
# r4.0 images are "stale", as NVIDIA's pinned release candidates can be, so the job must check
# compliance with hpcrepro's own mlperf-logging there.
ROUNDS = {
    "r2.1": Round("r2.1", "dgxh100_1x8", "mxnet-preview", "53b6de5", "3.0.0"),
    "r3.0": Round("r3.0", "dgxh100_1x8", "mxnet", "53b6de5", "3.0.0"),
    "r3.1": Round("r3.1", "dgxh100_1x8", "mxnet", "aa76b42", "3.0.0"),
    "r4.0": Round("r4.0", "h200_1x8", "h200_ngc24.04_mxnet", "68cf1d0", "3.0.0"),
}


class ImageBuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    base = os.environ.get("HPCREPRO_TEST_CACHE") or os.path.expanduser("~/.cache/hpcrepro-test")
    return Path(base) / "images"


def _run(step: str, argv: list[str], **kwargs: object) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise ImageBuildError(
            f"{step} failed (exit {done.returncode}): {' '.join(argv)}\n"
            f"{(done.stdout + done.stderr)[-3000:]}"
        )


def _need(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise ImageBuildError(
            f"{', '.join(missing)} missing: tests/runtime/build.sh installs the Debian packages "
            "(mmdebstrap, squashfs-tools) as root"
        )


def _digest(*parts: object) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = sorted(p for p in part.rglob("*") if p.is_file()) if part.is_dir() else [part]
            for file in files:
                hasher.update(str(file.relative_to(part) if part.is_dir() else file.name).encode())
                hasher.update(file.read_bytes())
        else:
            hasher.update(repr(part).encode())
    return hasher.hexdigest()[:16]


def _cached(name: str, key: str, make: callable) -> Path:  # type: ignore[valid-type]
    """`cache/<name>-<key>/`, made by `make(tmp_folder)` once, under a lock."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{name}-{key}"
    with FileLock(str(root / f".{name}-{key}.lock")):
        if (final / "READY").is_file():
            return final
        work = root / f".{name}-{key}.building"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            make(work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        (work / "READY").write_text(key + "\n")
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
    return final


def _squash(rootfs: Path, out: Path) -> None:
    _run("mksquashfs", ["mksquashfs", str(rootfs), str(out), "-comp", "lz4", "-noappend",
                        "-quiet", "-no-progress"])  # fmt: skip


def _pip_into(rootfs: Path, *requirements: str, binary: bool = True) -> None:
    """Install packages for the image's Python 3.11 into its site-packages, from the host.

    pip puts their scripts into `<target>/bin` (and skips them when that folder exists), so
    they are moved to /usr/local/bin, where the container's PATH finds them."""
    target = rootfs / SITE_PACKAGES
    target.mkdir(parents=True, exist_ok=True)
    wheels_only = ["--only-binary=:all:", "--python-version", "3.11", "--platform",
                   "manylinux2014_x86_64", "--implementation", "cp"] if binary else []
    _run("pip install into the image", [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-compile", *wheels_only, "--target", str(target), *requirements,
    ])  # fmt: skip
    scripts = target / "bin"
    if scripts.is_dir():
        for script in scripts.iterdir():
            shutil.move(str(script), rootfs / "usr" / "local" / "bin" / script.name)
        scripts.rmdir()


def base_image() -> Path:
    """The cached base folder: `rootfs/` and `base.sqsh`."""
    _need("mmdebstrap", "mksquashfs")
    key = _digest(BASE_PACKAGES, BASE_PIP, STAND_INS / "nvidia-smi", STAND_INS / "numactl",
                  STAND_INS / "mxnet_cuda_utils.py", "v2")  # fmt: skip

    def make(work: Path) -> None:
        rootfs = work / "rootfs"
        _run(
            "mmdebstrap",
            [
                "mmdebstrap",
                "--variant=minbase",
                "--mode=root",
                "--quiet",
                f"--include={','.join(BASE_PACKAGES)}",
                "bookworm",
                str(rootfs),
            ],
        )
        _pip_into(rootfs, *BASE_PIP)
        mxnet = rootfs / SITE_PACKAGES / "mxnet"
        shutil.copy(STAND_INS / "mxnet_cuda_utils.py", mxnet / "cuda_utils.py")
        for tool in ("nvidia-smi", "numactl"):
            shutil.copy(STAND_INS / tool, rootfs / "usr/local/bin" / tool)
            (rootfs / "usr/local/bin" / tool).chmod(0o755)
        _squash(rootfs, work / "base.sqsh")

    return _cached("base", key, make)


def _without_run_steps(dockerfile: Path) -> str:
    """NVIDIA's Dockerfile minus its RUN instructions (continuation lines included)."""
    kept: list[str] = []
    skipping = False
    for line in dockerfile.read_text().splitlines():
        if not skipping and line.lstrip().upper().startswith("RUN "):
            skipping = True
        if not skipping:
            kept.append(line)
        elif not line.rstrip().endswith("\\"):
            skipping = False
    return "\n".join(kept) + "\n"


def _enroot() -> Path:
    build = HERE / "build.sh"
    done = subprocess.run(["bash", str(build)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageBuildError(f"tests/runtime/build.sh failed:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1]) / "prefix" / "bin"


def nvidia_image(version: str) -> Path:
    """The cached `.sqsh` of NVIDIA's image of `version`, made on the base image."""
    spec = ROUNDS[version]
    if not spec.code.is_dir():
        raise ImageBuildError(f"{spec.code} is missing (the shared research folder)")
    base = base_image()
    common = NVIDIA_CODE / "mlperf-common" / spec.mlperf_common if spec.mlperf_common else None
    key = _digest(base.name, spec, spec.code, common or "", REPO / "src" / "hpcrepro" / "image",
                  "v4")  # fmt: skip

    def make(work: Path) -> None:
        rootfs = work / "rootfs"
        _run("copy the base", ["cp", "-a", str(base / "rootfs"), str(rootfs)])
        # what NVIDIA's `pip install -r requirements.txt` adds (with what the checker imports)
        _pip_into(rootfs, f"mlperf-logging=={spec.mlperf_logging}", "pyyaml", "--no-deps")
        if common is not None:  # pip builds in its source folder: build from a copy
            source = work / "mlperf-common"
            shutil.copytree(common, source)
            _run("chmod", ["chmod", "-R", "u+w", str(source)])
            _pip_into(rootfs, "--no-deps", str(source), binary=False)  # bindpcie, sysjson...
            for script in ("bindpcie", *(["mlperf-sysjson.sh"] if version == "r4.0" else [])):
                if not (rootfs / "usr/local/bin" / script).is_file():
                    raise ImageBuildError(f"mlperf-common did not install {script}")
        # what the NGC MXNet base's environment says of itself (mlperf-sysjson.sh reads it)
        with open(rootfs / "etc/environment", "a") as environment:
            environment.write("NVIDIA_PRODUCT_NAME=MXNet\nNVIDIA_MXNET_VERSION=stand-in\n")
        _squash(rootfs, work / "round-base.sqsh")
        shutil.rmtree(rootfs)
        dockerfile = work / "Dockerfile"
        dockerfile.write_text(_without_run_steps(spec.code / "Dockerfile"))
        env = dict(os.environ, PATH=f"{_enroot()}{os.pathsep}{os.environ['PATH']}")
        for name in ("DATA", "CACHE", "RUNTIME", "TEMP"):
            folder = work / f"enroot-{name.lower()}"
            folder.mkdir()
            env[f"ENROOT_{name}_PATH"] = str(folder)
        env["PYTHONPATH"] = str(REPO / "src")
        _run("hpcrepro image build", [
            sys.executable, "-m", "hpcrepro", "image", "build", "--no-site",
            "--system", spec.system, "--version", version, "--code", str(spec.code),
            "--dockerfile", str(dockerfile), "--base", str(work / "round-base.sqsh"),
            "--builder", "enroot", "--format", "sqsh", "-o", str(work / "image.sqsh"),
        ], env=env)  # fmt: skip
        for leftover in ("round-base.sqsh", "enroot-data", "enroot-cache", "enroot-runtime",
                         "enroot-temp"):  # fmt: skip
            path = work / leftover
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    return _cached(f"nvidia-{version}", key, make) / "image.sqsh"
