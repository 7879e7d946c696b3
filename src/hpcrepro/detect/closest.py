"""Choose the closest NVIDIA config for a detected node and derive a system YAML from it.

The base is a catalog system of the same GPU family (architecture: H100, H200 and GH200 are one
family; NVIDIA itself ran H200 with the DGX H100 config) with the nearest total GPU count; on a
tie the exact GPU model wins, then the system with the newest version. Each version of the base
becomes a version of the new system, rescaled to the new GPU count:

* Keep NVIDIA's global batch when it divides evenly over the GPUs and the per-GPU batch fits in
  memory: same global batch, same hyperparameters, same RCP point, nothing to tune.
* Otherwise pick the per-GPU batch whose global batch is nearest to NVIDIA's while staying inside
  the batch sizes the RCP data covers (read from the installed mlperf-logging for that ruleset),
  and scale LR by the square root of the batch ratio, the rule NVIDIA's own LARS configs follow
  (global batch 1600 → LR 7.4, 3200 → 11.0).
* The per-GPU batch never exceeds the largest one NVIDIA ran on a GPU with no more memory.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcrepro.detect.model import NodeDescription
from hpcrepro.detect.targets import write_text
from hpcrepro.errors import UserError

if TYPE_CHECKING:
    from hpcrepro.catalog import Catalog, SystemEntry, SystemVersion

# Compute capability of each GPU model NVIDIA published ResNet configs for (and close kin).
ARCHITECTURE = {
    "H100": "9.0",
    "H200": "9.0",
    "GH200": "9.0",
    "H800": "9.0",
    "H20": "9.0",
    "A100": "8.0",
    "A800": "8.0",
    "A30": "8.0",
    "L40S": "8.9",
    "L40": "8.9",
    "L4": "8.9",
}
ARCHITECTURE_NAMES = {"9.0": "Hopper", "8.0": "Ampere (GA100)", "8.9": "Ada Lovelace"}
# Memory sizes as GPU names state them; NVML reports a little less (ECC, reserved memory).
_MARKETED_GB = (16, 20, 24, 32, 40, 48, 64, 80, 94, 96, 141, 144, 188, 192)
_MEMORY_SLACK = 1.10


def gpu_family(name: str) -> str | None:
    """'NVIDIA H100 80GB HBM3' → 'H100', 'H200-SXM5-141GB' → 'H200', 'NVIDIA L40S' → 'L40S'."""
    match = re.search(
        r"\b(G?[A-Z]{1,2}\d{1,3}[A-Z]?)(?=\b|-|_)", name.upper().replace("NVIDIA", "")
    )
    return match.group(1) if match else None


def marketed_memory_gb(memory_mib: int) -> int:
    gib = memory_mib / 1024
    return min(_MARKETED_GB, key=lambda gb: abs(gb - gib))


def catalog_gpu_model(node: NodeDescription) -> str:
    """The detected GPU in the catalog's spelling: family, form factor when named, memory."""
    gpu = node.gpus[0]
    family = gpu_family(gpu.name) or re.sub(r"[^A-Za-z0-9]+", "-", gpu.name).strip("-")
    upper = gpu.name.upper()
    form = "-NVL" if " NVL" in upper else ("-PCIE" if "PCIE" in upper else "")
    memory = f"-{marketed_memory_gb(gpu.memory_total_mib)}GB" if gpu.memory_total_mib else ""
    return f"{family}{form}{memory}"


def _catalog_memory_gb(gpu_model: str) -> int | None:
    match = re.search(r"(\d+)GB", gpu_model.upper())
    return int(match.group(1)) if match else None


@dataclass
class RcpPoints:
    """Global batch sizes with a reference convergence point in mlperf-logging, for one ruleset."""

    ruleset: str
    batch_sizes: list[int]
    source: str

    def covers(self, global_batch: int) -> bool:
        return self.batch_sizes[0] <= global_batch <= self.batch_sizes[-1]

    def describe(self, global_batch: int) -> str:
        if global_batch in self.batch_sizes:
            return f"an RCP point of ruleset {self.ruleset}"
        if global_batch > self.batch_sizes[-1]:
            return (
                f"above every RCP of ruleset {self.ruleset} (largest {self.batch_sizes[-1]}): "
                "the RCP check fails"
            )
        if global_batch < self.batch_sizes[0]:
            return (
                f"below every RCP of ruleset {self.ruleset} (smallest {self.batch_sizes[0]}): "
                "the RCP checker compares against the smallest, which a small batch may converge "
                "too fast for"
            )
        low = max(bs for bs in self.batch_sizes if bs < global_batch)
        high = min(bs for bs in self.batch_sizes if bs > global_batch)
        return (
            f"between RCP points {low} and {high} of ruleset {self.ruleset} "
            "(the checker interpolates)"
        )


def rcp_points(ruleset: str) -> RcpPoints:
    """Read `rcp_checker/training_<ruleset>/rcps_resnet.json` from the installed mlperf-logging."""
    relative = f"rcp_checker/training_{ruleset}/rcps_resnet.json"
    try:
        text = (resources.files("mlperf_logging") / relative).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise UserError(
            f"mlperf-logging has no ResNet RCP data for ruleset {ruleset} ({exc})",
            hint="install mlperf-logging>=4.1.52 (pip install mlperf-logging)",
        ) from None
    sizes = sorted({int(record["BS"]) for record in json.loads(text).values()})
    return RcpPoints(ruleset, sizes, f"mlperf_logging/{relative}")


@dataclass
class Scaled:
    batch_per_gpu: int
    global_batch: int
    lr: float
    notes: list[str] = field(default_factory=list)


def scale_batch(base: SystemVersion, total_gpus: int, cap: int, rcp: RcpPoints) -> Scaled:
    """Per-GPU batch and LR for `total_gpus`, keeping the global batch where RCP data covers it."""
    base_batch = base.global_batch
    lr = base.hparams.LR
    if base_batch % total_gpus == 0 and base_batch // total_gpus <= cap:
        return Scaled(
            base_batch // total_gpus,
            base_batch,
            lr,
            [
                f"global batch {base_batch} kept from the base, hyperparameters unchanged: "
                f"{rcp.describe(base_batch)}"
            ],
        )
    if total_gpus > rcp.batch_sizes[-1]:
        raise UserError(
            f"{total_gpus} GPUs need a global batch above {rcp.batch_sizes[-1]}, the largest "
            f"ResNet RCP of ruleset {rcp.ruleset}",
            hint="use fewer nodes (--nodes)",
        )
    in_range = [b for b in range(1, cap + 1) if rcp.covers(b * total_gpus)]
    nearest = min(in_range, key=lambda b: (abs(b * total_gpus - base_batch), -b), default=None)
    batch = cap if nearest is None else nearest
    new_global = batch * total_gpus
    new_lr = round(lr * math.sqrt(new_global / base_batch), 3)
    notes = [
        f"global batch {base_batch} does not fit {total_gpus} GPUs at <= {cap} per GPU: "
        f"{batch} per GPU gives {new_global}, {rcp.describe(new_global)}",
        f"LR {lr} x sqrt({new_global}/{base_batch}) = {new_lr} (square-root scaling, as NVIDIA's "
        "LARS configs do between global batch 1600 and 3200)",
    ]
    return Scaled(batch, new_global, new_lr, notes)


def per_gpu_batch_cap(catalog: Catalog, memory_mib: int | None, base_model: str) -> tuple[int, str]:
    """The largest per-GPU batch NVIDIA ran on a GPU with no more memory than this one."""
    proven = [
        (version.batch_per_gpu, f"{name} {key} ({entry.gpu_model})", entry.gpu_model)
        for name, entry in catalog.systems.items()
        for key, version in entry.versions.items()
    ]
    if memory_mib is None:
        batch, where, _ = max(p for p in proven if p[2] == base_model)
        return batch, f"GPU memory unknown: the largest per-GPU batch on {base_model} ({where})"
    limit = memory_mib / 1024 * _MEMORY_SLACK
    sized = [(p, _catalog_memory_gb(p[2])) for p in proven]
    fitting = [p for p, gb in sized if gb is not None and gb <= limit]
    if fitting:
        batch, where, _ = max(fitting)
        return batch, f"the largest per-GPU batch NVIDIA ran on a GPU with no more memory: {where}"
    (batch, where, _), gigabytes = min(
        ((p, gb) for p, gb in sized if gb is not None), key=lambda item: (item[1], -item[0][0])
    )
    estimate = max(1, int(batch * (memory_mib / 1024) / gigabytes))
    return (
        estimate,
        f"estimate: {where} ran {batch} per GPU in {gigabytes} GB, scaled to {memory_mib} MiB",
    )


@dataclass
class BaseChoice:
    system: str
    entry: SystemEntry
    reason: str


def choose_base(
    catalog: Catalog, gpu_name: str, compute_capability: str | None, total_gpus: int
) -> BaseChoice:
    family = gpu_family(gpu_name)
    arch = compute_capability or (ARCHITECTURE.get(family) if family else None)
    families = sorted({gpu_family(e.gpu_model) or e.gpu_model for e in catalog.systems.values()})
    candidates = [
        (name, entry)
        for name, entry in catalog.systems.items()
        if gpu_family(entry.gpu_model) == family
        or (arch is not None and ARCHITECTURE.get(gpu_family(entry.gpu_model) or "") == arch)
    ]
    if not candidates:
        raise UserError(
            f"no NVIDIA config in the catalog for {gpu_name} (family {family or '?'}, "
            f"compute capability {arch or '?'})",
            hint=f"the catalog covers {', '.join(families)}; start from the nearest one by hand "
            "(copy its systems/<name>.yaml)",
        )

    def rank(item: tuple[str, SystemEntry]) -> tuple[int, int, str, str]:
        name, entry = item
        any_version = next(iter(entry.versions.values()))
        distance = abs(any_version.nodes * any_version.gpus_per_node - total_gpus)
        exact = 0 if gpu_family(entry.gpu_model) == family else 1
        newest = max(entry.versions)
        return (distance, exact, _invert(newest), name)

    name, entry = min(candidates, key=rank)
    version = next(iter(entry.versions.values()))
    kind = (
        "same GPU model"
        if gpu_family(entry.gpu_model) == family
        else (f"same architecture ({ARCHITECTURE_NAMES.get(arch or '', arch)})")
    )
    reason = (
        f"{name} ({entry.gpu_model}, {version.nodes}x{version.gpus_per_node} = "
        f"{version.nodes * version.gpus_per_node} GPUs): {kind}, nearest GPU count to {total_gpus}"
    )
    return BaseChoice(name, entry, reason)


def _invert(text: str) -> str:
    """Sort key that puts the newest version ('r4.0') first."""
    return "".join(chr(0x10FFFF - ord(c)) for c in text)


@dataclass
class DerivedSystem:
    data: dict[str, Any]
    base: BaseChoice
    notes: list[str]


def derive_system(
    catalog: Catalog, node: NodeDescription, nodes: int, system_name: str
) -> DerivedSystem:
    if not node.gpus:
        raise UserError(
            f"the description of {node.hostname} has no GPU ({node.nvml.notice or 'none found'})",
            hint="run on a GPU node, use --all-nodes, or --from-json with a GPU node's capture",
        )
    if node.gpu_name is None:
        raise UserError(
            f"{node.hostname} mixes GPU models ({', '.join(sorted({g.name for g in node.gpus}))})",
            hint="a system config needs one GPU model; describe a node with identical GPUs",
        )
    if nodes < 1:
        raise UserError(f"--nodes must be at least 1, got {nodes}", where="--nodes")
    gpus_per_node = node.gpu_count
    total = nodes * gpus_per_node
    gpu = node.gpus[0]
    base = choose_base(catalog, gpu.name, gpu.compute_capability, total)
    cap, cap_reason = per_gpu_batch_cap(catalog, gpu.memory_total_mib, base.entry.gpu_model)
    versions: dict[str, Any] = {}
    notes = [f"base: {base.reason}", f"per-GPU batch limit {cap}: {cap_reason}"]
    for key, version in base.entry.versions.items():
        rcp = rcp_points(version.ruleset)
        notes.append(
            f"{key}: RCP global batches of ruleset {rcp.ruleset} ({rcp.source}): "
            + ", ".join(str(bs) for bs in rcp.batch_sizes)
        )
        scaled = scale_batch(version, total, cap, rcp)
        versions[key] = _version_block(
            version, base.system, key, nodes, gpus_per_node, scaled, node
        )
        notes.extend(f"{key}: {text}" for text in scaled.notes)
    model = catalog_gpu_model(node)
    data = {
        "system": system_name,
        "title": f"{nodes} node{'s' if nodes > 1 else ''} x {gpus_per_node} {gpu.name} "
        f"({node.hostname}), derived from {base.system}",
        "gpu_model": model,
        "versions": versions,
    }
    return DerivedSystem(data, base, notes)


def _dgxsystem(base: SystemVersion, nodes: int, gpus: int, batch: int, family: str) -> str:
    if (nodes, gpus, batch) == (base.nodes, base.gpus_per_node, base.batch_per_gpu):
        return base.dgxsystem
    return re.sub(r"[^A-Za-z0-9_.-]", "", f"{family}_{nodes}x{gpus}x{batch}")


def _hparam_values(version: SystemVersion) -> dict[str, Any]:
    """Hyperparameters as NVIDIA spelled them ('5.0e-05' stays text), numbers as numbers."""
    values: dict[str, Any] = {}
    dumped = version.hparams.model_dump()
    texts = version.hparams.exports()
    for name, value in dumped.items():
        text = texts.get(name)
        if isinstance(value, float) and text is not None and str(value) != text:
            values[name] = text
        else:
            values[name] = value
    return values


def _version_block(
    base: SystemVersion,
    base_system: str,
    key: str,
    nodes: int,
    gpus: int,
    scaled: Scaled,
    node: NodeDescription,
) -> dict[str, Any]:
    base_gpus = base.nodes * base.gpus_per_node
    total = nodes * gpus
    minutes = base.minutes_per_run * max(1.0, base_gpus / total)
    hparams = _hparam_values(base)
    hparams["LR"] = scaled.lr
    family = gpu_family(node.gpus[0].name) or "GPU"
    note = (
        f"Written by hpcrepro detect from {node.hostname} ({node.captured_at}). "
        f"Base: {base_system} {key} ({base.nodes}x{base.gpus_per_node}x{base.batch_per_gpu}, "
        f"global batch {base.global_batch}, LR {base.hparams.LR}). "
        + "; ".join(scaled.notes)
        + ". "
        f"minutes_per_run is an estimate (base time x {base_gpus}/{total} GPUs when fewer): "
        "measure one run and adjust it."
    )
    return {
        "provenance": "derived",
        "source": f"hpcrepro detect on {node.hostname}",
        "derived_from": f"{base_system} {key}",
        "note": note,
        "dgxsystem": _dgxsystem(base, nodes, gpus, scaled.batch_per_gpu, family),
        "nodes": nodes,
        "gpus_per_node": gpus,
        "batch_per_gpu": scaled.batch_per_gpu,
        "minutes_per_run": math.ceil(minutes),
        "walltime_overhead_minutes": base.walltime_overhead_minutes,
        "implementation": base.implementation,
        "container_base": base.container_base,
        "ruleset": base.ruleset,
        "sbatch_network": base.sbatch_network,
        "published": None,
        "hparams": hparams,
        "env": dict(base.env),
    }


def system_name_for(path: Path) -> str:
    """The catalog names a system after its file: 'systems/mycluster_4x8.yaml' → 'mycluster_4x8'."""
    path = Path(path)
    if path.suffix != ".yaml":
        raise UserError(
            f"{path} does not end in .yaml",
            where="--write-system",
            hint="the catalog reads only <system>.yaml files, e.g. systems/mycluster_4x8.yaml",
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", path.stem) or path.stem.startswith("_"):
        raise UserError(
            f"'{path.stem}' is not a usable system name",
            where="--write-system",
            hint="use letters, digits, '_', '-' and '.', e.g. mycluster_4x8.yaml",
        )
    return path.stem


def write_system_yaml(path: Path, derived: DerivedSystem) -> None:
    import yaml

    header = "".join(f"# {line}\n" for line in derived.notes)
    text = "# Derived by `hpcrepro detect --write-system`; see each version's note.\n" + header
    text += yaml.safe_dump(derived.data, sort_keys=False, width=100, allow_unicode=True)
    write_text(Path(path), text, "--write-system")
