"""What `hpcrepro detect` knows about one node, as plain dataclasses with a strict JSON round-trip.

A description captured on a compute node (or brought back from a real H200 machine) must load again
on a login node without NVML, so every field is plain data and loading checks each key and type:
a hand-edited or truncated file fails with the key path that is wrong, not with a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcrepro.errors import UserError
from hpcrepro.jsonio import read_json

SCHEMA = "hpcrepro.node/1"


@dataclass
class NvLink:
    """One active NVLink of a GPU and what sits at its other end."""

    link: int
    version: str | None = None  # "4.0" for Hopper, "3.1" for A100
    peer_bus_id: str | None = None
    peer_type: str | None = None  # "gpu", "switch", "ibmnpu" or "unknown"


@dataclass
class Gpu:
    """One GPU as NVML reports it; None means NVML could not tell (not supported on this GPU)."""

    index: int
    name: str
    uuid: str | None = None
    bus_id: str | None = None
    memory_total_mib: int | None = None
    compute_capability: str | None = None
    max_sm_clock_mhz: int | None = None
    max_memory_clock_mhz: int | None = None
    power_limit_w: float | None = None
    pcie_gen_current: int | None = None
    pcie_gen_max: int | None = None
    pcie_width_current: int | None = None
    pcie_width_max: int | None = None
    mig_enabled: bool | None = None
    mig_pending: bool | None = None
    ecc_enabled: bool | None = None
    ecc_pending: bool | None = None
    nvlinks: list[NvLink] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class NvmlInfo:
    """Driver-level facts, or why there are none (`notice`)."""

    available: bool
    notice: str | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    nvml_version: str | None = None


@dataclass
class CpuCache:
    level: int
    type: str  # "Data", "Instruction" or "Unified"
    size_kib: int
    shared_by_cpus: int | None = None


@dataclass
class Cpu:
    model: str | None = None
    architecture: str | None = None
    sockets: int | None = None
    cores: int | None = None  # physical cores on the node
    threads: int | None = None  # logical CPUs on the node
    max_mhz: float | None = None
    caches: list[CpuCache] = field(default_factory=list)


@dataclass
class IbPort:
    port: int
    state: str | None = None  # "ACTIVE", "DOWN", ...
    phys_state: str | None = None  # "LinkUp", "Disabled", ...
    rate: str | None = None  # as the kernel writes it, e.g. "400 Gb/sec (4X NDR)"
    rate_gbps: float | None = None
    link_layer: str | None = None  # "InfiniBand" or "Ethernet"


@dataclass
class IbDevice:
    name: str
    hca_type: str | None = None
    board_id: str | None = None
    fw_version: str | None = None
    netdevs: list[str] = field(default_factory=list)
    ports: list[IbPort] = field(default_factory=list)


@dataclass
class NodeDescription:
    """Everything detected on one node."""

    hostname: str
    captured_at: str
    cpu: Cpu
    nvml: NvmlInfo
    memory_bytes: int | None = None
    os_name: str | None = None
    kernel: str | None = None
    slurm_version: str | None = None
    slurm_node: str | None = None  # $SLURMD_NODENAME when captured inside a Slurm job
    infiniband: list[IbDevice] = field(default_factory=list)
    gpus: list[Gpu] = field(default_factory=list)
    hpcrepro_version: str | None = None
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "<description>") -> NodeDescription:
        if isinstance(data, dict) and data.get("schema", SCHEMA) != SCHEMA:
            raise UserError(
                f"unknown description schema {data.get('schema')!r}",
                where=f"{source} key 'schema'",
                hint=f"this hpcrepro reads '{SCHEMA}'; capture the node again with this version",
            )
        return _build(cls, data, source, ())

    # Facts derived from the GPU list, used by closest/mlperf_json/compare.

    @property
    def label(self) -> str:
        """The Slurm node name where known (several slurmd may share a host), else the hostname."""
        return self.slurm_node or self.hostname

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def gpu_name(self) -> str | None:
        """The GPU model when all GPUs agree, else None."""
        names = {gpu.name for gpu in self.gpus}
        return names.pop() if len(names) == 1 else None


# The catalog's own limit (hpcrepro.catalog.MAX_GPUS_PER_NODE; not imported: it needs pydantic).
MAX_GPUS_PER_NODE = 64
# Plausible values of numeric facts: anything outside is a damaged or hand-edited file, and would
# come out as nonsense in the derived files ('-141GB' GPUs, 'nan MHz') or a YAML the catalog
# refuses. Current PCIe generation and width may read 0 on a link that is down.
VALUE_RANGES: dict[tuple[type, str], tuple[float, float]] = {
    (NodeDescription, "memory_bytes"): (1, 2**60),
    (Cpu, "sockets"): (1, 64),
    (Cpu, "cores"): (1, 2**20),
    (Cpu, "threads"): (1, 2**20),
    (Cpu, "max_mhz"): (1, 100_000),
    (CpuCache, "level"): (1, 5),
    (CpuCache, "size_kib"): (1, 2**30),
    (CpuCache, "shared_by_cpus"): (1, 2**20),
    (Gpu, "index"): (0, MAX_GPUS_PER_NODE - 1),
    (Gpu, "memory_total_mib"): (1, 2**24),
    (Gpu, "max_sm_clock_mhz"): (1, 100_000),
    (Gpu, "max_memory_clock_mhz"): (1, 100_000),
    (Gpu, "power_limit_w"): (1, 100_000),
    (Gpu, "pcie_gen_current"): (0, 16),
    (Gpu, "pcie_gen_max"): (1, 16),
    (Gpu, "pcie_width_current"): (0, 64),
    (Gpu, "pcie_width_max"): (1, 64),
    (NvLink, "link"): (0, 255),
    (IbPort, "port"): (0, 255),
    (IbPort, "rate_gbps"): (0, 100_000),
}
# Text facts the derived files are named or keyed by: an empty one makes a nameless GPU model.
NON_EMPTY = {(NodeDescription, "hostname"), (Gpu, "name")}


def load_descriptions(path: Path) -> list[NodeDescription]:
    """Read one description, or the list `detect --all-nodes --json` writes, from a JSON file."""
    data = _read_json(Path(path))
    if isinstance(data, list):
        if not data:
            raise UserError(
                "the file holds an empty list of nodes",
                where=str(path),
                hint="give the file written by 'hpcrepro detect --json'",
            )
        return [NodeDescription.from_dict(item, f"{path} [{i}]") for i, item in enumerate(data)]
    return [NodeDescription.from_dict(data, str(path))]


def load_description(path: Path) -> NodeDescription:
    """Read one description written by `hpcrepro detect --json` or `python3 -m hpcrepro.detect`."""
    return NodeDescription.from_dict(_read_json(Path(path)), str(path))


def _read_json(path: Path) -> Any:
    return read_json(path, hint="give the file written by 'hpcrepro detect --json'")


def _where(source: str, path: tuple[str | int, ...]) -> str:
    dotted = ".".join(str(part) for part in path)
    return f"{source} key '{dotted}'" if dotted else source


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))


def _build(kind: Any, value: Any, source: str, path: tuple[str | int, ...]) -> Any:
    """Turn JSON data into `kind` (a dataclass, list, dict, optional or scalar), checking types."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if value is None:
            return None
        return _build(options[0], value, source, path)
    if origin is list:
        if not isinstance(value, list):
            raise UserError("expected a list", where=_where(source, path))
        (item_kind,) = typing.get_args(kind)
        return [_build(item_kind, item, source, (*path, i)) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError("expected a mapping", where=_where(source, path))
        _, value_kind = typing.get_args(kind)
        return {str(k): _build(value_kind, v, source, (*path, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(kind):
        return _build_dataclass(kind, value, source, path)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise UserError(f"expected a finite number, got {value}", where=_where(source, path))
        return float(value)
    if kind is int and isinstance(value, bool):
        raise UserError(f"expected int, got {value!r}", where=_where(source, path))
    if not isinstance(value, kind):
        raise UserError(
            f"expected {_type_name(kind)}, got {type(value).__name__} {value!r}",
            where=_where(source, path),
        )
    return value


def _build_dataclass(kind: Any, value: Any, source: str, path: tuple[str | int, ...]) -> Any:
    if not isinstance(value, dict):
        raise UserError(f"expected a mapping for {kind.__name__}", where=_where(source, path))
    hints = typing.get_type_hints(kind)
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise UserError(
            f"unknown key '{unknown[0]}'",
            where=_where(source, (*path, unknown[0])),
            hint=f"known keys here: {', '.join(fields)}",
        )
    gpus = value.get("gpus") if kind is NodeDescription else None
    if isinstance(gpus, list) and len(gpus) > MAX_GPUS_PER_NODE:
        raise UserError(
            f"{len(gpus)} GPUs in one node; the catalog takes at most {MAX_GPUS_PER_NODE} per node",
            where=_where(source, (*path, "gpus")),
            hint="describe each node as its own entry (a list of nodes for several)",
        )
    kwargs = {}
    for name, spec in fields.items():
        if name not in value:
            required = (
                spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
            )
            if required:
                raise UserError(f"missing key '{name}'", where=_where(source, path))
            continue
        kwargs[name] = _build(hints[name], value[name], source, (*path, name))
        _check_value(kind, name, kwargs[name], _where(source, (*path, name)))
    return kind(**kwargs)


def _check_value(kind: Any, name: str, value: Any, where: str) -> None:
    if value is None:
        return
    if (kind, name) in NON_EMPTY and not value.strip():
        raise UserError("must not be empty", where=where)
    if (kind, name) == (Gpu, "compute_capability") and not re.fullmatch(r"\d{1,2}\.\d{1,2}", value):
        raise UserError(f"expected a compute capability such as '9.0', got {value!r}", where=where)
    bounds = VALUE_RANGES.get((kind, name))
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        low, high = (f"{bound:g}" if bound < 1e6 else f"{bound:.0f}" for bound in bounds)
        raise UserError(f"must be between {low} and {high}, got {value}", where=where)
