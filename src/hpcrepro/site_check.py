"""Check a site file against what the cluster says (pure: a `ClusterProbe` in, findings out).

`hpcrepro site check` and the first step of `submit` use it. Every finding names the site key,
what is wrong and how to fix it; errors stop `submit`, warnings are shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from hpcrepro.errors import did_you_mean
from hpcrepro.site_probe import ClusterProbe

if TYPE_CHECKING:
    from hpcrepro.site import Site

DATASET_FILES = ("train.rec", "train.idx", "val.rec", "val.idx")
PLACEHOLDER_ROOT = "/PLACEHOLDER/"


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    key: str  # the site key it is about
    problem: str
    fix: str

    def text(self) -> str:
        return f"{self.level}: {self.key}: {self.problem}\n  fix: {self.fix}"

    def to_json(self) -> dict[str, str]:
        return {"level": self.level, "key": self.key, "problem": self.problem, "fix": self.fix}


@dataclass(frozen=True)
class Needs:
    """What the system to run asks of the cluster (from the catalog entry)."""

    label: str  # 'dgxa100_8x8 r3.0'
    nodes: int
    gpus_per_node: int


def shared_folders(site: Site) -> list[Path]:
    """Folders every node must see as the login node does: the logs and the image cache."""
    folders = [site.log_dir]
    if site.image_cache_dir is not None and site.image_cache_dir != site.log_dir / "images":
        folders.append(site.image_cache_dir)
    return folders


def node_paths(site: Site) -> list[Path]:
    """Paths the compute nodes must see: the data set and its files, the raw ImageNet."""
    paths = [site.dataset_dir, *(site.dataset_dir / name for name in DATASET_FILES)]
    return paths + ([site.imagenet_dir] if site.imagenet_dir is not None else [])


def check_site(site: Site, probe: ClusterProbe, needs: Needs | None = None) -> list[Finding]:
    """Every problem the probe shows with `site`, errors first."""
    found: list[Finding] = []
    error = lambda key, problem, fix: found.append(Finding("error", key, problem, fix))  # noqa: E731
    warn = lambda key, problem, fix: found.append(Finding("warning", key, problem, fix))  # noqa: E731

    part = probe.partition(site.partition)
    names = [p.name for p in probe.partitions]
    if part is None and site.partition is not None:
        error(
            "partition",
            f"partition '{site.partition}' is not one sinfo lists",
            did_you_mean(site.partition, names, f"partitions: {', '.join(names) or 'none'}"),
        )
    elif part is None:
        error(
            "partition",
            "no partition is set and the cluster has no default partition",
            f"set partition: one of {', '.join(names) or '(sinfo lists none)'}",
        )
    elif not part.available:
        warn(
            "partition",
            f"partition '{part.name}' is not up (sinfo)",
            "jobs will wait until it is; ask the admins, or choose another partition",
        )

    if part is not None and needs is not None:
        if part.nodes < needs.nodes:
            error(
                "partition",
                f"partition '{part.name}' has {part.nodes} node(s), "
                f"{needs.label} needs {needs.nodes}",
                "choose a larger partition, or a system with fewer nodes (hpcrepro systems)",
            )
        if part.gpus_per_node is not None and part.gpus_per_node < needs.gpus_per_node:
            error(
                "partition",
                f"nodes of '{part.name}' have {part.gpus_per_node} GPU(s) "
                f"(GRES {', '.join(part.gres)}), {needs.label} needs {needs.gpus_per_node} "
                "per node",
                "choose a partition with larger nodes, or a system of as many "
                "GPUs per node as yours (hpcrepro systems)",
            )
    if part is not None and site.gpu_request != "none" and part.gpus_per_node is None:
        error(
            "gpu_request",
            f"gpu_request is '{site.gpu_request}' but partition '{part.name}' "
            "has no GPU GRES (sinfo), so sbatch would refuse the job",
            "set gpu_request: none when GPUs come with the node",
        )
    elif part is not None and site.gpu_request == "none" and part.gpus_per_node is not None:
        warn(
            "gpu_request",
            f"partition '{part.name}' has GPU GRES ({', '.join(part.gres)}) but "
            "gpu_request is 'none': the job may get no GPUs",
            "set gpu_request: gpus-per-node (or gres)",
        )

    if site.account and probe.associations:
        accounts = sorted({account for account, _ in probe.associations})
        if site.account not in accounts:
            error(
                "account",
                f"account '{site.account}' is not one of {probe.user}'s (sacctmgr)",
                did_you_mean(site.account, accounts, f"your accounts: {', '.join(accounts)}"),
            )
    if site.qos and probe.associations:
        allowed = sorted({q for _, qos in probe.associations for q in qos.split(",") if q})
        if allowed and site.qos not in allowed:
            error(
                "qos",
                f"QOS '{site.qos}' is not allowed for {probe.user} (sacctmgr)",
                f"allowed: {', '.join(allowed)}",
            )

    if probe.mpi_plugins and site.mpi not in probe.mpi_plugins:
        error(
            "mpi",
            f"srun has no MPI plugin '{site.mpi}'",
            f"set mpi: one of {', '.join(probe.mpi_plugins)} (srun --mpi=list)",
        )

    if site.runtime == "pyxis" and not probe.pyxis:
        error(
            "runtime",
            "runtime is 'pyxis' but srun has no --container-image (pyxis is not installed)",
            "set runtime: apptainer or none, or ask the admins for pyxis",
        )

    node = probe.node
    if node is None:
        error(
            "partition",
            f"no compute node answered the probe step: {probe.node_error}",
            "check the partition, account and qos; `srun -N1 true` must work",
        )
        return _ordered(found)
    if site.runtime == "pyxis" and "enroot" not in node.tools:
        error(
            "runtime",
            f"enroot is not on {node.node} (pyxis runs it on the nodes)",
            "ask the admins to install enroot on the compute nodes, or set runtime: apptainer",
        )
    if site.runtime == "apptainer" and not {"apptainer", "singularity"} & set(node.tools):
        error(
            "runtime",
            f"neither apptainer nor singularity is on {node.node}",
            "load the module that provides it (site key modules), or set runtime: pyxis",
        )

    data = str(site.dataset_dir)
    if data.startswith(PLACEHOLDER_ROOT):
        error(
            "dataset_dir",
            f"dataset_dir is the placeholder {data}",
            "set dataset_dir to the prepared ImageNet (hpcrepro prep imagenet)",
        )
    elif site.imagenet_dir is not None and not node.seen.get(data, False):
        raw = str(site.imagenet_dir)  # the prep stage makes dataset_dir from it
        if not node.seen.get(raw, False):
            error(
                "imagenet_dir",
                f"{raw} is not visible on {node.node}, and dataset_dir {data} "
                "is not there yet for the prep stage to skip",
                "put the raw ImageNet on a file system every compute node mounts",
            )
    elif not node.seen.get(data, False):
        error(
            "dataset_dir",
            f"{data} is not visible on {node.node}",
            "put the data set on a file system every compute node mounts",
        )
    else:
        missing = [n for n in DATASET_FILES if not node.seen.get(str(site.dataset_dir / n), False)]
        if missing and site.imagenet_dir is None:
            error(
                "dataset_dir",
                f"{data} has no {', '.join(missing)} on {node.node}",
                "prepare it (hpcrepro prep imagenet), or set imagenet_dir so submit adds a "
                "prep stage",
            )

    for folder in shared_folders(site):
        key = "log_dir" if folder == site.log_dir else "image_cache_dir"
        text = str(folder)
        shared = probe.shared(text)
        if text.startswith(PLACEHOLDER_ROOT):
            error(
                key,
                f"{key} is the placeholder {text}",
                f"set {key} to a folder on a file system every node mounts",
            )
        elif text in probe.unwritable:
            error(
                key,
                f"cannot test whether {text} is shared: {probe.unwritable[text]}",
                f"create {text} (or fix its permissions) on a shared file system",
            )
        elif shared is False:
            error(
                key,
                f"{text} is not shared: a file written there on this node is not seen "
                f"on {node.node}",
                "use a folder of a file system every node mounts (not /tmp or a local disk)",
            )

    if site.drop_caches_command and node.drop_caches is not None:
        status, output = node.drop_caches
        if status != 0:
            said = f": {output.splitlines()[-1]}" if output else ""
            error(
                "drop_caches_command",
                f"'{site.drop_caches_command}' failed on {node.node} (exit {status}{said})",
                "ask the admins for a sudo rule for it, set the "
                "command your cluster allows, or drop_caches_command: null (runs are then "
                "not closed-division compliant)",
            )
    return _ordered(found)


def _ordered(found: list[Finding]) -> list[Finding]:
    return sorted(found, key=lambda f: f.level != "error")


def probe_and_check(site: Site, needs: Needs | None = None) -> list[Finding]:
    """The edge: one probe of the cluster for `site` (its scheduling options, folders, data set
    and cache-drop command, run on a node as the job runs it), then `check_site`."""
    from hpcrepro import site_probe

    scheduling = [
        f"--{key}={value}"
        for key in ("account", "qos", "reservation", "constraint")
        if (value := getattr(site, key))
    ]
    probe = site_probe.probe(
        partition=site.partition,
        scheduling=scheduling,
        folders=shared_folders(site),
        paths=node_paths(site),
        drop_caches=site.drop_caches_command,
    )
    return check_site(site, probe, needs)
