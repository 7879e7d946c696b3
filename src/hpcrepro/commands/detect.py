"""`hpcrepro detect`: describe real nodes; derive a system YAML and an MLPerf system JSON.

Only typer and the standard library load here; NVML, the catalog (pydantic), the Slurm backend
and YAML load inside the command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from hpcrepro.detect.model import NodeDescription


def register(app: typer.Typer) -> None:
    """Add `detect` to the main app."""
    app.command("detect")(detect)


def detect(
    as_json: bool = typer.Option(False, "--json", help="Print the full description as JSON."),
    all_nodes: bool = typer.Option(
        False, "--all-nodes", help="Run the detection on --nodes compute nodes as a Slurm job."
    ),
    site: Path | None = typer.Option(
        None,
        "--site",
        help="Site YAML with partition/account/qos (default $HPCREPRO_SITE or "
        "~/.config/hpcrepro/site.yaml).",
    ),
    nodes: int | None = typer.Option(
        None, "--nodes", min=1, help="Number of nodes: to describe (--all-nodes) and of the system."
    ),
    gpus_per_node: int | None = typer.Option(
        None, "--gpus-per-node", min=1, help="GPUs to request per node when the site requests GPUs."
    ),
    timeout_min: int = typer.Option(10, "--timeout-min", min=1, help="Time limit of the job."),
    job_folder: Path = typer.Option(
        Path("~/.cache/hpcrepro/detect"),
        "--job-folder",
        help="Shared folder for the detection job's files (must be visible from the nodes).",
    ),
    write_system: Path | None = typer.Option(
        None,
        "--write-system",
        help="Write a catalog system YAML derived from the closest NVIDIA config.",
    ),
    mlperf_json: Path | None = typer.Option(
        None, "--mlperf-json", help="Write an MLPerf system description JSON."
    ),
    from_json: Path | None = typer.Option(
        None,
        "--from-json",
        help="Use a captured description (one node or a list) instead of detecting.",
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Also write the JSON description here."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace existing --write-system / --mlperf-json files."
    ),
) -> None:
    """Describe this node (GPUs through NVML, CPU, memory, OS, InfiniBand, Slurm), or every node
    of a job, and derive a system config and an MLPerf system description from it."""
    from hpcrepro.errors import UserError

    if from_json is not None and all_nodes:
        raise UserError(
            "--from-json and --all-nodes exclude each other",
            hint="use --from-json for a captured description, --all-nodes to capture anew",
        )
    _check_targets(write_system, mlperf_json, force)
    say = _Printer(quiet_stdout=as_json)
    described = _gather(all_nodes, from_json, site, nodes, gpus_per_node, timeout_min, job_folder)
    for node in described:
        if node.nvml.notice:
            sys.stderr.write(f"notice: {node.label}: {node.nvml.notice}\n")
    reference = _reference_node(described, say)
    system_nodes = nodes or (len(described) if (all_nodes or len(described) > 1) else 1)
    if write_system is not None:
        _write_system(reference, system_nodes, write_system, say)
    if mlperf_json is not None:
        _write_mlperf_json(reference, system_nodes, mlperf_json, say)
    text = _json_text(described)
    if output is not None:
        _write_text(output, text, "--output")
    if as_json:
        sys.stdout.write(text)
    elif write_system is None and mlperf_json is None:
        from hpcrepro.detect.summary import summary_text

        sys.stdout.write(summary_text(reference))


def _check_targets(write_system: Path | None, mlperf_json: Path | None, force: bool) -> None:
    """Before any detection (which may be a Slurm job): refuse targets that must not be written."""
    if write_system is None and mlperf_json is None:
        return
    from hpcrepro.detect.closest import system_name_for
    from hpcrepro.detect.targets import check_target
    from hpcrepro.resources import systems_dir

    try:
        shipped: Path | None = systems_dir()
    except FileNotFoundError:  # an installation without its catalog has nothing to protect
        shipped = None
    if write_system is not None:
        system_name_for(write_system)
        check_target(write_system, "--write-system", force, shipped)
    if mlperf_json is not None:
        check_target(mlperf_json, "--mlperf-json", force, shipped)


class _Printer:
    """Messages for people: stdout normally, stderr when stdout carries JSON."""

    def __init__(self, quiet_stdout: bool) -> None:
        self.stream = sys.stderr if quiet_stdout else sys.stdout

    def __call__(self, line: str) -> None:
        self.stream.write(line + "\n")


def _gather(
    all_nodes: bool,
    from_json: Path | None,
    site: Path | None,
    nodes: int | None,
    gpus_per_node: int | None,
    timeout_min: int,
    job_folder: Path,
) -> list[NodeDescription]:
    from hpcrepro.errors import UserError

    if from_json is not None:
        from hpcrepro.detect.model import load_descriptions

        return load_descriptions(from_json)
    if all_nodes:
        from hpcrepro.detect.jobs import JobOptions, describe_nodes, job_options_from_site

        if nodes is None:
            raise UserError(
                "--all-nodes needs the number of nodes to describe",
                where="--nodes",
                hint="add --nodes N",
            )
        site_file = _site_file(site)
        options = (
            job_options_from_site(site_file, gpus_per_node, timeout_min)
            if site_file is not None
            else JobOptions(timeout_min=timeout_min)
        )
        return describe_nodes(nodes, options, job_folder.expanduser().absolute())
    from hpcrepro.detect.describe import describe_node

    return [describe_node()]


def _site_file(site: Path | None) -> Path | None:
    """--site, else $HPCREPRO_SITE, else ~/.config/hpcrepro/site.yaml when it exists."""
    from hpcrepro.config import find_site_file
    from hpcrepro.errors import UserError

    found = find_site_file(site)
    if found is not None and not found.is_file():
        origin = "--site" if site is not None else "$HPCREPRO_SITE"
        raise UserError(f"site file not found: {found}", where=origin, hint="check the path")
    return found


def _reference_node(described: list[NodeDescription], say: _Printer) -> NodeDescription:
    """The node the configs are derived from: the one with the most common values."""
    if len(described) == 1:
        return described[0]
    from hpcrepro.detect.compare import differences, most_common_node, name_list

    found = differences(described)
    if not found:
        say(f"all {len(described)} nodes are alike ({name_list([n.label for n in described])})")
        return described[0]
    say(f"{len(described)} nodes differ in {len(found)} fact(s):")
    for difference in found:
        say(f"  {difference.text()}")
    reference = described[most_common_node(described, found)]
    say(f"using {reference.label} (the most common configuration) for derived files")
    return reference


def _write_system(node: NodeDescription, nodes: int, path: Path, say: _Printer) -> None:
    from hpcrepro.catalog import load_catalog
    from hpcrepro.detect.closest import derive_system, system_name_for, write_system_yaml

    derived = derive_system(load_catalog(), node, nodes, system_name_for(path))
    write_system_yaml(path, derived)
    say(f"wrote {path}: system '{derived.data['system']}', {nodes} node(s) x {node.gpu_count} GPUs")
    for note in derived.notes:
        say(f"  {note}")


def _write_mlperf_json(node: NodeDescription, nodes: int, path: Path, say: _Printer) -> None:
    from hpcrepro.detect.mlperf_json import FILL_HINTS, system_description

    description, missing = system_description(node, nodes)
    _write_text(path, json.dumps(description, indent=4) + "\n", "--mlperf-json")
    say(f"wrote {path}: {len(description) - len(missing)} of {len(description)} fields detected")
    if missing:
        say("fill these fields by hand (they cannot be detected on the node):")
        for key in missing:
            say(f"  {key}: {FILL_HINTS.get(key, 'not detected on this node')}")
        from hpcrepro.rounds import LAST, ROUNDS

        checker = "python3 -m mlperf_logging.system_desc_checker"
        say(f"then check it: {checker} {path} training {ROUNDS[LAST].ruleset}")


def _json_text(described: list[NodeDescription]) -> str:
    if len(described) == 1:
        return described[0].to_json()
    return json.dumps([node.to_dict() for node in described], indent=2) + "\n"


def _write_text(path: Path, text: str, option: str) -> None:
    from hpcrepro.detect.targets import write_text

    write_text(path, text, option)
