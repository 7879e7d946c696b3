"""Write a first site file from a `ClusterProbe` (pure: the probe in, YAML text out).

Every value carries where it came from as a comment on its line; what the cluster could not tell
is written as a commented line, or for the two required folders as a `/PLACEHOLDER/` path that
`site check` and `submit` refuse, with a note saying what to put there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hpcrepro.site_probe import ClusterProbe, Partition

PLACEHOLDER = "/PLACEHOLDER/set-{key}-in-site.yaml"
LOG_SUBFOLDER = "hpcrepro"


@dataclass(frozen=True)
class Line:
    key: str
    value: str | None  # None: written commented out
    origin: str

    def text(self) -> str:
        shown = json.dumps(self.value) if self.value is not None else "VALUE"
        return f"{'' if self.value is not None else '# '}{self.key}: {shown}  # {self.origin}"


def _partition(probe: ClusterProbe, asked: str | None) -> tuple[Partition | None, Line]:
    if asked is not None:
        part = probe.partition(asked)
        assert part is not None  # the command refuses an unknown --partition
        return part, Line("partition", part.name, f"--partition; sinfo: {_describe(part)}")
    part = probe.partition(None)
    if part is not None:
        return part, Line(
            "partition", part.name, f"sinfo: the default partition, {_describe(part)}"
        )
    names = ", ".join(p.name for p in probe.partitions) or "none"
    return None, Line(
        "partition",
        None,
        f"not determined: sinfo shows no default partition; "
        f"pick one of {names} (or run site init --partition P)",
    )


def _describe(part: Partition) -> str:
    gres = f"GRES {', '.join(part.gres)}" if part.gres else "no GPU GRES"
    return f"{part.nodes} node(s), {gres}"


def _gpu_request(part: Partition | None) -> Line:
    if part is None:
        return Line("gpu_request", None, "not determined: no partition")
    if part.gpus_per_node is not None:
        return Line(
            "gpu_request",
            "gpus-per-node",
            f"sinfo: partition {part.name} has "
            f"{part.gpus_per_node} GPU(s) per node as GRES, which jobs must request",
        )
    return Line(
        "gpu_request",
        "none",
        f"sinfo: partition {part.name} has no GPU GRES, so GPUs come with the node",
    )


def _runtime(probe: ClusterProbe) -> Line:
    tools = probe.node.tools if probe.node else {}
    where = probe.node.node if probe.node else "the node"
    if probe.pyxis and "enroot" in tools:
        return Line(
            "runtime",
            "pyxis",
            f"srun --help lists --container-image (pyxis); enroot on {where}: {tools['enroot']}",
        )
    for tool in ("apptainer", "singularity"):
        if tool in tools:
            return Line(
                "runtime",
                "apptainer",
                f"{tool} on {where}: {tools[tool]}"
                + ("" if probe.pyxis else "; srun has no pyxis"),
            )
    if probe.node is None:
        return Line("runtime", None, f"not determined: no node answered ({probe.node_error})")
    why = "srun has no pyxis" if not probe.pyxis else f"pyxis without enroot on {where}"
    return Line(
        "runtime",
        "none",
        f"{why}, and no apptainer or singularity on {where}: tasks run without a container",
    )


def _mpi(probe: ClusterProbe) -> Line:
    listed = ", ".join(probe.mpi_plugins)
    for name in ("pmix", "pmi2"):
        if name in probe.mpi_plugins:
            return Line("mpi", name, f"srun --mpi=list: {listed}")
    if probe.mpi_plugins:
        return Line("mpi", "none", f"srun --mpi=list has neither pmix nor pmi2: {listed}")
    return Line("mpi", None, "not determined: srun --mpi=list gave no plugins")


def _accounts(probe: ClusterProbe) -> list[Line]:
    if not probe.associations:
        return [
            Line(
                "account",
                None,
                "not determined: sacctmgr shows no association for "
                f"{probe.user or 'you'} (no accounting, or none needed)",
            )
        ]
    accounts = sorted({account for account, _ in probe.associations})
    if len(accounts) > 1:
        return [
            Line(
                "account",
                None,
                f"not determined: sacctmgr lists several accounts for "
                f"{probe.user}: {', '.join(accounts)}; pick one",
            )
        ]
    account = accounts[0]
    lines = [Line("account", account, f"sacctmgr: {probe.user}'s only account")]
    qos = sorted({q for a, qs in probe.associations if a == account for q in qs.split(",") if q})
    if len(qos) == 1:
        lines.append(Line("qos", qos[0], f"sacctmgr: the only QOS of account {account}"))
    elif qos:
        lines.append(
            Line(
                "qos",
                None,
                f"not determined: account {account} has the QOS "
                f"{', '.join(qos)}; pick one, or leave it to Slurm's default",
            )
        )
    return lines


def _folders(probe: ClusterProbe, candidates: list[Path]) -> list[Line]:
    node = probe.node.node if probe.node else "a compute node"
    tried = []
    for folder in candidates:
        shared = probe.shared(str(folder))
        if shared:
            logs = folder / LOG_SUBFOLDER
            return [
                Line(
                    "log_dir",
                    str(logs),
                    f"shared: a marker written into {folder} here was seen on {node}",
                ),
                Line("image_cache_dir", str(logs / "images"), "inside log_dir, so shared too"),
            ]
        why = probe.unwritable.get(str(folder)) or (
            "not seen on " + node if shared is False else "not tested"
        )
        tried.append(f"{folder} ({why})")
    return [
        Line(
            "log_dir",
            PLACEHOLDER.format(key="log_dir"),
            f"not determined: no folder tried is shared: {'; '.join(tried)}; set a folder "
            "every node mounts",
        )
    ]


def _drop_caches(probe: ClusterProbe, command: str) -> Line:
    """The default cache drop, as the probe step ran it on a node."""
    result = probe.node.drop_caches if probe.node else None
    if result is None:
        return Line("drop_caches_command", None, "not determined: not run on a node")
    status, output = result
    node = probe.node.node if probe.node else "the node"
    if status == 0:
        return Line("drop_caches_command", command, f"the default; it ran on {node}")
    said = output.splitlines()[-1] if output else f"exit {status}"
    return Line(
        "drop_caches_command",
        None,
        f"not determined: the default {command!r} failed "
        f"on {node} ({said}); write the command your cluster allows, or null (runs are "
        "then not closed-division compliant)",
    )


def site_text(
    probe: ClusterProbe,
    *,
    partition: str | None,
    candidates: list[Path],
    dataset_dir: Path | None,
    drop_caches: str,
    stamp: str,
) -> str:
    """The site file: a header, then one line per key with its origin."""
    part, part_line = _partition(probe, partition)
    lines = [part_line, _gpu_request(part), _runtime(probe), _mpi(probe), *_accounts(probe)]
    lines += _folders(probe, candidates)
    lines.append(_drop_caches(probe, drop_caches))
    if dataset_dir is not None:
        seen = probe.node.seen.get(str(dataset_dir)) if probe.node else None
        lines.append(
            Line(
                "dataset_dir",
                str(dataset_dir),
                "--dataset-dir"
                + (
                    f"; seen on {probe.node.node}"
                    if seen and probe.node
                    else "; NOT seen on the compute node: check it"
                    if seen is False
                    else ""
                ),
            )
        )
    else:
        lines.append(
            Line(
                "dataset_dir",
                PLACEHOLDER.format(key="dataset_dir"),
                "not determined: give the prepared ImageNet folder (hpcrepro prep "
                "imagenet makes it; site init --dataset-dir DIR)",
            )
        )
    header = [
        f"# hpcrepro site file, written by `hpcrepro site init` at {stamp} from what the",
        "# cluster said. Each line says where its value came from; lines starting with '#'",
        "# and /PLACEHOLDER/ paths could not be determined: fill them in. Every key: docs/site.md.",
        "# Then check it against the cluster: hpcrepro site check --site THIS_FILE",
    ]
    return "\n".join([*header, *(line.text() for line in lines)]) + "\n"
