"""The site YAML: what a user's cluster needs that NVIDIA's DGX SuperPOD did not.

Partition, account, how GPUs are requested, the container runtime and image, where the dataset and
logs live (and the raw ImageNet a campaign may prepare), the cache-drop command and so on.
Everything here has a default except the two folders, so that a first site file can be three
lines long.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hpcrepro.shell import is_env_name

SITE_ENV_VAR = "HPCREPRO_SITE"
DEFAULT_SITE_PATH = Path("~/.config/hpcrepro/site.yaml")

# Values that land inside '#SBATCH' lines: sbatch stops reading a directive at white space and
# treats an unquoted '#' as the start of a comment, so such values would be silently cut.
_SBATCH_SAFE = re.compile(r"^[^\s#'\"\\]+$")
_MOUNT = re.compile(r"^(?P<src>/[^:,]*):(?P<dst>/[^:,]*)(?::(?P<opts>ro|rw))?$")


class Mount(BaseModel):
    """A host folder bound into the container."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    source: Path
    target: str
    read_only: bool = False

    @classmethod
    def parse(cls, text: str) -> Mount:
        match = _MOUNT.match(text)
        if not match:
            raise ValueError(
                f"mount '{text}' is not 'HOST_PATH:CONTAINER_PATH[:ro]' with two absolute paths "
                "(commas and colons are not allowed inside the paths)"
            )
        return cls(source=Path(match["src"]), target=match["dst"], read_only=match["opts"] == "ro")

    def spec(self) -> str:
        """`src:dst[:ro]`, the syntax shared by pyxis' --container-mounts and apptainer's -B."""
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


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
    time_margin_minutes: int = Field(default=15, ge=0)
    runs: int = Field(default=5, ge=1, le=99)

    # Container
    runtime: Literal["pyxis", "apptainer", "none"] = "pyxis"
    image: str | None = None
    image_cache_dir: Path | None = None
    workdir: str = "/workspace/image_classification"
    mounts: list[Mount] = Field(default_factory=list)

    # Data and logs
    dataset_dir: Path
    log_dir: Path
    imagenet_dir: Path | None = None  # raw ILSVRC2012: a campaign's prep stage makes dataset_dir
    prep_workers: int | None = Field(default=None, ge=1, le=4096)

    # Launch
    mpi: str = "pmix"
    srun_args: list[str] = Field(default_factory=list)
    modules: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    drop_caches_command: str | None = "sudo /sbin/sysctl vm.drop_caches=3"
    nccl_test: bool = False
    check_compliance: bool = True
    cluster_name: str | None = None

    # What runs in each task
    workload: Literal["nvidia", "reference"] = "nvidia"
    train_command: str | None = None
    python: str = "python3"

    @field_validator("mounts", mode="before")
    @classmethod
    def _parse_mounts(cls, value: object) -> object:
        if isinstance(value, list):
            return [Mount.parse(item) if isinstance(item, str) else item for item in value]
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_values(cls, value: object) -> object:
        if isinstance(value, dict):
            for name in value:
                if not isinstance(name, str) or not is_env_name(name):
                    raise ValueError(
                        f"'{name}' is not a valid environment variable name "
                        "(letters, digits and underscores, not starting with a digit)"
                    )
            return {
                name: ("1" if v is True else "0" if v is False else str(v))
                for name, v in value.items()
            }
        return value

    @field_validator("partition", "account", "qos", "reservation", "constraint", "cluster_name")
    @classmethod
    def _sbatch_value(cls, value: str | None) -> str | None:
        if value is not None and not _SBATCH_SAFE.match(value):
            raise ValueError(
                f"'{value}' cannot go into an '#SBATCH' line: sbatch cuts it at white space, "
                "quotes or an unquoted '#'"
            )
        return value

    @field_validator("sbatch_args")
    @classmethod
    def _sbatch_args(cls, value: list[str]) -> list[str]:
        for arg in value:
            if not arg.startswith("-") or not _SBATCH_SAFE.match(arg):
                raise ValueError(
                    f"'{arg}' cannot go into an '#SBATCH' line: each entry must be one option "
                    "such as '--mem=0', without spaces, quotes or '#' (a registry URI with '#' "
                    "belongs in 'image', not here)"
                )
        return value

    @field_validator("dataset_dir", "log_dir", "image_cache_dir", "imagenet_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"'{value}' must be an absolute path")
        return value

    @field_validator("mpi")
    @classmethod
    def _mpi(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.-]+$", value):
            raise ValueError(f"'{value}' is not an MPI plugin name such as pmix, pmi2 or none")
        return value

    @model_validator(mode="after")
    def _image_for_runtime(self) -> Site:
        if self.runtime != "none" and not self.image:
            raise ValueError(
                f"runtime '{self.runtime}' needs 'image': a registry URI "
                "(nvcr.io/nvidia/mxnet:23.04-py3), a .sqsh file (pyxis) or a .sif file (apptainer)"
            )
        if self.image and "\n" in self.image:
            raise ValueError("'image' must be one line")
        return self

    def image_kind(self) -> Literal["registry", "file", "none"]:
        """Whether the image must be pulled (registry URI) or already exists as a file."""
        if not self.image:
            return "none"
        if self.image.startswith("/") or self.image.endswith((".sqsh", ".sif", ".squashfs")):
            return "file"
        return "registry"
