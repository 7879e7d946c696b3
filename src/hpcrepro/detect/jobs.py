"""Describe the compute nodes from a login node: one Slurm job, one task per node, via submitit.

Login nodes rarely have GPUs, so `detect --all-nodes` sends the detection to the nodes: submitit
pickles `capture()` (by reference: hpcrepro must be importable there, as on any shared install),
runs it once per node under srun, and brings each node's description back as plain data.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcrepro.detect.model import NodeDescription
from hpcrepro.errors import UserError

# The site keys the detection job uses; the rest of a site file is for other commands.
_SITE_KEYS = (
    "partition",
    "account",
    "qos",
    "reservation",
    "constraint",
    "exclusive",
    "gpu_request",
)


@dataclass
class JobOptions:
    """The Slurm settings of the detection job (from the site file and the command line)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    constraint: str | None = None
    exclusive: bool = True  # the whole node: every GPU visible, nothing else running
    gpu_request: str = "none"
    gpus_per_node: int | None = None
    timeout_min: int = 10

    def submitit_parameters(self, nodes: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "nodes": nodes,
            "ntasks_per_node": 1,
            "time": self.timeout_min,
            "job_name": "hpcrepro-detect",
        }
        if self.exclusive:
            params["exclusive"] = True
        for name in ("partition", "account", "qos", "constraint"):
            if getattr(self, name):
                params[name] = getattr(self, name)
        if self.reservation:  # submitit has no parameter of its own for it
            params["additional_parameters"] = {"reservation": self.reservation}
        if self.gpus_per_node and self.gpu_request == "gpus-per-node":
            params["gpus_per_node"] = self.gpus_per_node
        elif self.gpus_per_node and self.gpu_request == "gres":
            params["gres"] = f"gpu:{self.gpus_per_node}"
        return params


def job_options_from_site(path: Path, gpus_per_node: int | None, timeout_min: int) -> JobOptions:
    """The Slurm keys of a site file, checked by the site model's own rules (hpcrepro.site)."""
    from pydantic import ValidationError

    from hpcrepro.config import load_site_file
    from hpcrepro.site import Site
    from hpcrepro.validation import user_error

    data, doc = load_site_file(Path(path), "--site")
    assert doc is not None  # a path was given, so there is a document
    if set(data) - set(Site.model_fields):
        # A misspelt key ('partiton') would silently send the job elsewhere: named first.
        try:
            Site.model_validate(data)
        except ValidationError as exc:
            raise user_error(exc, Site, doc.where, docs="docs/site.md") from None
    # Only these keys are validated here: no dataset, image or runtime is needed to detect.
    site = Site.model_construct(runtime="none")
    for key in _SITE_KEYS:
        if key in data:
            try:
                setattr(site, key, data[key])
            except ValidationError as exc:
                raise user_error(exc, Site, doc.where, docs="docs/site.md") from None
    if site.gpu_request != "none" and gpus_per_node is None:
        raise UserError(
            f"the site requests GPUs with {site.gpu_request}: say how many each node has",
            where="--gpus-per-node",
            hint="add --gpus-per-node N (e.g. 8)",
        )
    return JobOptions(
        partition=site.partition,
        account=site.account,
        qos=site.qos,
        reservation=site.reservation,
        constraint=site.constraint,
        exclusive=site.exclusive,
        gpu_request=site.gpu_request,
        gpus_per_node=gpus_per_node,
        timeout_min=timeout_min,
    )


def capture() -> dict[str, Any]:
    """Runs on each compute node: its description as plain data (pickles across versions)."""
    from hpcrepro.detect.describe import describe_node

    return describe_node().to_dict()


def check_job_folder(folder: Path) -> Path:
    """The folder lands in `#SBATCH --output=` and srun lines: no line breaks, '#' or '%'."""
    text = str(folder)
    if any(ch in text for ch in "#%") or any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise UserError(
            f"job folder {text!r} has a line break, control character, '#' or '%'",
            where="--job-folder",
            hint="Slurm reads '#' as a comment and '%' as a file-name pattern; pick a plain path",
        )
    return folder


def describe_nodes(nodes: int, options: JobOptions, folder: Path) -> list[NodeDescription]:
    """Submit one job over `nodes` nodes, wait for it, and return each node's description."""
    check_job_folder(folder)
    import submitit
    from submitit.core.utils import FailedJobError, UncompletedJobError

    executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=0)
    executor.update_parameters(**options.submitit_parameters(nodes))
    try:
        job = executor.submit(capture)
    except Exception as exc:  # sbatch refused: message comes from Slurm
        raise UserError(
            f"sbatch refused the detection job: {str(exc).strip()}",
            hint="check partition/account/qos in the site file (`sinfo -s` lists partitions)",
        ) from None
    sys.stderr.write(f"submitted detection job {job.job_id} on {nodes} node(s); waiting for it\n")
    try:
        results = job.results()
    except KeyboardInterrupt:
        job.cancel(check=False)
        raise
    except (FailedJobError, UncompletedJobError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"detection job {job.job_id} failed: {first_line}",
            hint=f"its logs are in {folder}",
        ) from None
    return [
        NodeDescription.from_dict(item, f"job {job.job_id} task {i}")
        for i, item in enumerate(results)
    ]
