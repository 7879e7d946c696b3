"""The site YAML: what a user's cluster needs that NVIDIA's DGX SuperPOD did not.

Partition, account, how GPUs are requested, the container runtime and image, where the dataset and
logs live (and the raw ImageNet a campaign may prepare), the cache-drop command and so on.
Everything here has a default except the two folders, so that a first site file can be three
lines long.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from hpcrepro.shell import is_env_name

SITE_ENV_VAR = "HPCREPRO_SITE"
DEFAULT_SITE_PATH = Path("~/.config/hpcrepro/site.yaml")
# Runs in one campaign or job: logs are named run-01 .. run-99.
MAX_RUNS = 99

# Values that land inside '#SBATCH' lines: sbatch stops reading a directive at white space and
# treats an unquoted '#' as the start of a comment, so such values would be silently cut.
_SBATCH_SAFE = re.compile(r"[^\s#'\"\\\x00-\x1f\x7f]+")
_SBATCH_KEYS = ("partition", "account", "qos", "reservation", "constraint", "cluster_name")
# Paths that reach '#SBATCH --output=': the job script quotes spaces, but no quoting survives
# '#', '"', '\' or a line break there.
_SBATCH_PATH_UNSAFE = re.compile(r"[#\"\\]")
_MPI_PLUGIN = re.compile(r"[A-Za-z0-9_.-]+")
# C0 control characters and DEL: a NUL cuts a C string (bash drops it or stops), the others are
# invisible in a script under review. Env values may hold tabs and line breaks: they are quoted.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENV_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
IMAGE_FILE_SUFFIXES = (".sqsh", ".sif", ".squashfs")


def image_is_file(image: str) -> bool:
    """True for a container image file (a path), False for a registry reference to pull.

    Paths: absolute, ./ ../ ~ prefixes, or a .sqsh/.sif/.squashfs name without a scheme or
    enroot's '#' registry separator (nvcr.io#nvidia/mxnet:23.04-py3 is a registry reference).
    """
    if image.startswith(("/", "./", "../", "~")) or image in (".", ".."):
        return True
    if "://" in image or "#" in image:
        return False
    return image.endswith(IMAGE_FILE_SUFFIXES)


def _control_problem(text: str, pattern: re.Pattern[str] = _CONTROL) -> str | None:
    match = pattern.search(text)
    if match is None:
        return None
    char = match.group()
    name = (
        "a NUL byte"
        if char == "\0"
        else "a line break"
        if char in "\r\n"
        else (f"the control character {char!r}")
    )
    return f"{text!r} contains {name}, which cannot be written into a job script"


def _no_control(value: Any) -> Any:
    """Refuse control characters in every string of a value (lists and mappings included)."""
    if isinstance(value, str):
        problem = _control_problem(value)
        if problem:
            raise ValueError(problem)
    elif isinstance(value, list | tuple):
        for item in value:
            _no_control(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_control(key)
            _no_control(item)
    return value


def _mount_path(value: Any) -> Any:
    text = str(value)
    _no_control(text)
    if not text.startswith("/") or "," in text or ":" in text:
        raise ValueError(
            f"'{text}' must be an absolute path without ',' or ':' (the container mount "
            "syntax has no way to write them)"
        )
    return value


class Mount(BaseModel):
    """A host folder bound into the container: `SRC:DST[:ro|rw]` or {source, target, read_only}."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    source: Annotated[Path, BeforeValidator(_mount_path)]
    target: Annotated[str, BeforeValidator(_mount_path)]
    read_only: bool = False

    @classmethod
    def split(cls, text: str) -> dict[str, Any]:
        """The mapping form of `SRC:DST[:ro|rw]`; the paths are checked by the model."""
        _no_control(text)
        parts = text.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise ValueError(
                f"mount '{text}' is not 'HOST_PATH:CONTAINER_PATH[:ro|rw]' with two absolute "
                "paths (commas and colons are not allowed inside the paths)"
            )
        return {"source": parts[0], "target": parts[1], "read_only": parts[2:] == ["ro"]}

    def spec(self) -> str:
        """`src:dst[:ro]`, the syntax shared by pyxis' --container-mounts and apptainer's -B."""
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


class Submission(BaseModel):
    """Who ran the results, as the MLPerf logs and the submission package name them.

    NVIDIA's mlperf-common (rounds r3.0 on) logs `submission_org` and `submission_platform` from
    MLPERF_SUBMISSION_ORG / MLPERF_SUBMISSION_PLATFORM, and its mlperf-sysjson.sh (r4.0) reads
    MLPERF_SUBMITTER, MLPERF_SYSTEM_NAME, MLPERF_STATUS and MLPERF_DIVISION.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    org: str | None = Field(default=None, min_length=1, max_length=200)
    platform: str | None = Field(default=None, min_length=1, max_length=200)
    status: Literal["onprem", "cloud", "preview", "research"] = "onprem"
    division: Literal["closed", "open"] = "closed"

    def exports(self) -> dict[str, str]:
        values = {
            "MLPERF_SUBMISSION_ORG": self.org,
            "MLPERF_SUBMITTER": self.org,
            "MLPERF_SUBMISSION_PLATFORM": self.platform,
            "MLPERF_SYSTEM_NAME": self.platform,
            "MLPERF_STATUS": self.status,
            "MLPERF_DIVISION": self.division,
        }
        return {name: value for name, value in values.items() if value is not None}


class Preflight(BaseModel):
    """What the training job checks on its nodes before the first timed run (docs/launch.md).

    `None` is "auto": the GPU, InfiniBand and topology checks run when the tasks run NVIDIA's
    code or hpcrepro's reference workload (a site's own `train_command` decides for itself), the
    InfiniBand check only on jobs of more than one node (NVIDIA's multi-node systems use it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    gpus: bool | None = None  # count and model of every node's GPUs (nvidia-smi, in the step)
    gpu_model: str | None = Field(default=None, min_length=1, max_length=100)  # name must hold it
    infiniband: bool | None = None  # every node has an ACTIVE port in /sys/class/infiniband
    topology: bool | None = None  # `nvidia-smi topo -m` of every node into the log folder
    min_busbw_gbps: float | None = Field(default=None, gt=0, le=100000)  # NCCL test's average


def _env_name(name: str) -> str:
    if not is_env_name(name):
        raise ValueError(
            f"{name!r} is not a valid environment variable name "
            "(letters, digits and underscores, not starting with a digit)"
        )
    return name


def _env_value(value: Any) -> Any:
    """Env values are text as written; YAML booleans become 1/0 as in NVIDIA's configs."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        raise ValueError('has no value: write "" for an empty string, or remove the line')
    if isinstance(value, bytes):
        raise ValueError("must be text: tags such as !!binary are not allowed here")
    if not isinstance(value, str):
        kind = type(value).__name__
        if isinstance(value, list | dict):
            kind = "a list" if isinstance(value, list) else "a mapping"
        raise ValueError(
            f'must be text, not {kind}: quote the whole value (e.g. "[a, b]") if it was '
            "meant as text"
        )
    problem = _control_problem(value, _ENV_CONTROL)
    if problem:
        raise ValueError(problem)
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]
EnvValue = Annotated[str, BeforeValidator(_env_value)]


class Site(BaseModel):
    """Cluster settings; see docs/site.md for every key."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, coerce_numbers_to_str=True, allow_inf_nan=False
    )

    # Scheduling
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    constraint: str | None = None
    exclusive: bool = True
    gpu_request: Literal["none", "gpus-per-node", "gres"] = "none"
    sbatch_args: list[str] = Field(default_factory=list)
    time_margin_minutes: int = Field(default=15, ge=0, le=7 * 24 * 60)
    runs: int = Field(default=5, ge=1, le=MAX_RUNS)

    # Container
    runtime: Literal["pyxis", "apptainer", "none"] = "pyxis"
    image: str | None = Field(default=None, validate_default=True)
    image_cache_dir: Path | None = None
    workdir: str = "/workspace/image_classification"
    mounts: list[Mount] = Field(default_factory=list)
    # Building NVIDIA's image when `image` is unset (docs/image.md)
    image_builder: Literal["auto", "enroot", "apptainer", "podman", "docker"] = "auto"
    image_code_dir: Path | None = None  # offline copy of NVIDIA's implementation folder
    image_base: str | None = None  # instead of the catalog's container_base (mirror, .sqsh, .sif)
    image_dockerfile: Path | None = None  # the site's own Dockerfile instead of NVIDIA's
    image_wheels_dir: Path | None = None  # mlperf-logging / mlperf-common wheels or sources

    # Data and logs
    dataset_dir: Path
    log_dir: Path
    imagenet_dir: Path | None = None  # raw ILSVRC2012: a campaign's prep stage makes dataset_dir
    prep_workers: int | None = Field(default=None, ge=1, le=4096)

    # Launch
    mpi: str = "pmix"
    srun_args: list[str] = Field(default_factory=list)
    modules: list[str] = Field(default_factory=list)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    drop_caches_command: str | None = "sudo /sbin/sysctl vm.drop_caches=3"
    nccl_test: bool | None = None  # None: as NVIDIA's launch of the entry's round does
    preflight: Preflight = Field(default_factory=Preflight)
    check_compliance: bool = True
    cluster_name: str | None = None
    submission: Submission = Field(default_factory=Submission)

    # What runs in each task
    workload: Literal["nvidia", "reference"] = "nvidia"
    train_command: str | None = None
    python: str = "python3"

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: object, info: ValidationInfo) -> object:
        # env checks its own values (they may hold tabs and line breaks) with the name in `loc`;
        # '#SBATCH' values have their own, stricter rule
        if info.field_name in ("env", "sbatch_args", *_SBATCH_KEYS):
            return value
        return _no_control(value)

    @field_validator("mounts", mode="before")
    @classmethod
    def _parse_mounts(cls, value: object) -> object:
        if isinstance(value, list):
            return [Mount.split(item) if isinstance(item, str) else item for item in value]
        return value

    @field_validator(*_SBATCH_KEYS)
    @classmethod
    def _sbatch_value(cls, value: str | None) -> str | None:
        if value is not None and not _SBATCH_SAFE.fullmatch(value):
            raise ValueError(
                f"{value!r} cannot go into an '#SBATCH' line: sbatch cuts it at white space, "
                "quotes, line breaks or an unquoted '#' (control characters are refused too)"
            )
        return value

    @field_validator("sbatch_args")
    @classmethod
    def _sbatch_args(cls, value: list[str]) -> list[str]:
        for arg in value:
            if not arg.startswith("-") or not _SBATCH_SAFE.fullmatch(arg):
                raise ValueError(
                    f"{arg!r} cannot go into an '#SBATCH' line: each entry must be one option "
                    "such as '--mem=0', without spaces, quotes, control characters or '#' (a "
                    "registry URI with '#' "
                    "belongs in 'image', not here)"
                )
        return value

    @field_validator("dataset_dir", "log_dir", "image_cache_dir", "imagenet_dir",
                     "image_code_dir", "image_dockerfile", "image_wheels_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"'{value}' must be an absolute path")
        return value

    @field_validator("dataset_dir", "log_dir")
    @classmethod
    def _mountable(cls, value: Path, info: ValidationInfo) -> Path:
        if info.data.get("runtime", "pyxis") != "none" and any(c in str(value) for c in ",:"):
            raise ValueError(
                f"'{value}' contains ',' or ':', which container mount syntax cannot express "
                f"(it is mounted into the container); use a path without them (a symlink works)"
            )
        return value

    @field_validator("log_dir")
    @classmethod
    def _log_dir_in_sbatch(cls, value: Path) -> Path:
        if _SBATCH_PATH_UNSAFE.search(str(value)):
            raise ValueError(
                f"'{value}' cannot be written into '#SBATCH --output=': sbatch would cut it at "
                "'#' or misread '\"' and '\\'; choose a folder without these characters"
            )
        return value

    @field_validator("mpi")
    @classmethod
    def _mpi(cls, value: str) -> str:
        if not _MPI_PLUGIN.fullmatch(value):
            raise ValueError(f"'{value}' is not an MPI plugin name such as pmix, pmi2 or none")
        return value

    @field_validator("workload")
    @classmethod
    def _image_for_reference_workload(cls, value: str, info: ValidationInfo) -> str:
        # No image means "build NVIDIA's" (hpcrepro image build); the reference workload is
        # hpcrepro's own PyTorch code, which NVIDIA's image does not hold.
        runtime = info.data.get("runtime")
        if value == "reference" and runtime not in (None, "none") and not info.data.get("image"):
            raise ValueError(
                f"workload 'reference' under runtime '{runtime}' needs 'image': an image with "
                "PyTorch and hpcrepro (only NVIDIA's image is built when image is unset)"
            )
        return value

    def image_kind(self) -> Literal["registry", "file", "none"]:
        """Whether the image must be pulled (registry URI), exists as a file, or (none, under a
        container runtime) is NVIDIA's image that `hpcrepro image build` makes."""
        if not self.image:
            return "none"
        return "file" if image_is_file(self.image) else "registry"
