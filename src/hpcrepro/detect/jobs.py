"""Describe the compute nodes from a login node: one Slurm job, one task per node.

Login nodes rarely have GPUs, so `detect --all-nodes` sends the detection to the nodes. The job
goes the way every hpcrepro job goes: its #SBATCH lines come from `render.job_options` (the site's
partition, account, qos, reservation, constraint, GPU request and `sbatch_args`), it is submitted,
polled and cancelled through the Slurm backend (`scheduler.registry`), and a refusal gets the same
hints as a campaign's. Each task runs `python -m hpcrepro.detect --json -o FILE` on its node (this
very hpcrepro, through PYTHONPATH: the nodes share its file system) and the descriptions come back
as JSON files in the job's folder.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hpcrepro.detect.model import NodeDescription
from hpcrepro.errors import UserError

if TYPE_CHECKING:
    from hpcrepro.site import Site

# The site keys the detection job uses; the rest of a site file is for other commands.
_SITE_KEYS = (
    "partition",
    "account",
    "qos",
    "reservation",
    "constraint",
    "exclusive",
    "gpu_request",
    "sbatch_args",
)
JOB_NAME = "hpcrepro-detect"
SCRIPT = "detect.sbatch"


def _no_site() -> Site:
    """The site's Slurm keys at their defaults: the whole node (exclusive), no GPU request."""
    from hpcrepro.site import Site

    return Site.model_construct(runtime="none")


@dataclass
class JobOptions:
    """The detection job's settings: the site's Slurm keys (only those in `_SITE_KEYS` are read
    and checked), the GPUs to ask for, the time limit."""

    site: Site = field(default_factory=_no_site)
    gpus_per_node: int | None = None
    timeout_min: int = 10


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
    site = _no_site()
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
    return JobOptions(site=site, gpus_per_node=gpus_per_node, timeout_min=timeout_min)


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


def job_script(nodes: int, options: JobOptions, folder: Path) -> str:
    """The detection job's script, its results and output going to `folder`."""
    from hpcrepro import __version__
    from hpcrepro.render import job_options
    from hpcrepro.resources import package_root
    from hpcrepro.templating import ShellText, render_template

    header = job_options(
        options.site,
        job_name=JOB_NAME,
        nodes=nodes,
        ntasks_per_node=1,
        time_minutes=options.timeout_min,
        output=str(folder / "detect-%j.out"),
        gpus_per_node=options.gpus_per_node or 0,
    )
    return render_template(
        "detect.sbatch.j2",
        header=ShellText("\n".join(f"#SBATCH {option}" for option in header)),
        folder=str(folder),
        python=sys.executable,
        pythonpath=package_root(),
        hpcrepro_version=__version__,
    )


def describe_nodes(nodes: int, options: JobOptions, folder: Path) -> list[NodeDescription]:
    """Submit one job over `nodes` nodes, wait for it, and return each node's description."""
    from hpcrepro.scheduler import registry, states
    from hpcrepro.scheduler.base import Backoff, JobRequest

    check_job_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # one folder per detection, so that two of them never read each other's files
    job_dir = Path(tempfile.mkdtemp(prefix="detect-", dir=folder))
    script = job_dir / SCRIPT
    script.write_text(job_script(nodes, options, job_dir))
    backend = registry.make("slurm")
    backend.check_available()
    job_id = backend.submit(JobRequest(name=JOB_NAME, script=script, label="detect"))
    sys.stderr.write(f"submitted detection job {job_id} on {nodes} node(s); waiting for it\n")
    delays = Backoff(first=1.0, maximum=10.0)
    last = ""
    try:
        while True:
            info = backend.poll([job_id]).infos.get(job_id)
            if info is not None and states.is_finished(info.state):
                break
            state = info.state if info else ""
            time.sleep(delays.next(changed=state != last))
            last = state
    except KeyboardInterrupt:
        backend.cancel([job_id])
        raise
    found = sorted(job_dir.glob("node-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    if info.state != states.COMPLETED or len(found) != nodes:
        why = info.scheduler_state or info.state
        raise UserError(
            f"detection job {job_id} ended {why} with {len(found)} of {nodes} node "
            "description(s)" + (f" ({info.reason})" if info.reason else ""),
            hint=f"its output is {job_dir}/detect-{job_id}.out",
        )
    return [
        NodeDescription.from_dict(json.loads(path.read_text()), f"job {job_id} task {i}")
        for i, path in enumerate(found)
    ]
