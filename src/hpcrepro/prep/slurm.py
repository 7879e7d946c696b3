"""Render the Slurm script of a sharded prep: a job array packs the shards, a dependent job joins.

Pure: parameters in, script text out, through the training script's strict Jinja environment
(`templating.render_template`): a plain string printed without the `q` filter is a render error. The
job scripts are fed to `sbatch` through quoted here-documents, so values are never expanded twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hpcrepro import __version__
from hpcrepro.errors import UserError

TEMPLATE = "prep.sbatch.j2"
MAX_WORKERS = 4096  # reader threads of one task; the site's prep_workers has the same bound


@dataclass(frozen=True)
class PrepJob:
    """What the prep job array needs; paths as the compute nodes see them."""

    raw: str
    out: str
    log_dir: str
    shards: int = 1
    workers: int = 8
    pack_time: str = "04:00:00"
    join_time: str = "02:00:00"
    job_name: str = "hpcrepro-prep"
    command: tuple[str, ...] = ("hpcrepro",)
    val_labels: str | None = None
    on_corrupt: str = "fail"
    sbatch_options: tuple[str, ...] = field(default_factory=tuple)

    def prep_args(self) -> list[str]:
        args = ["--raw", self.raw, "--out", self.out, "--on-corrupt", self.on_corrupt]
        if self.val_labels:
            args += ["--val-labels", self.val_labels]
        return args


def _check(job: PrepJob) -> None:
    from hpcrepro.prep.shards import MAX_SHARDS

    if not (1 <= job.shards <= MAX_SHARDS and 1 <= job.workers <= MAX_WORKERS):
        raise UserError(
            f"prep needs 1 to {MAX_SHARDS} shards and 1 to {MAX_WORKERS} workers, "
            f"got {job.shards} and {job.workers}"
        )
    if job.on_corrupt not in ("fail", "skip"):
        raise UserError(f"on_corrupt '{job.on_corrupt}' is not 'fail' or 'skip'")
    values = [job.raw, job.out, job.log_dir, job.pack_time, job.join_time, job.job_name,
              *job.command, *job.sbatch_options, job.val_labels or ""]  # fmt: skip
    for value in values:
        if "\n" in value or "\r" in value or "\0" in value:
            raise UserError(
                f"prep job value {value!r} contains a line break",
                hint="paths and options on a job script line cannot hold line breaks",
            )
    if not job.command:
        raise UserError(
            "the prep command is empty", hint="use ['hpcrepro'] or a container launcher"
        )


def render_prep_script(job: PrepJob) -> str:
    """The bash script that submits the pack array and the join job, and prints the join job id."""
    from hpcrepro.templating import render_template

    _check(job)
    return render_template(
        TEMPLATE,
        version=__version__,
        shards=job.shards,
        workers=job.workers,
        pack_time=job.pack_time,
        join_time=job.join_time,
        job_name=job.job_name,
        log_dir=job.log_dir,
        command=job.command,
        prep_args=job.prep_args(),
        sbatch_options=job.sbatch_options,
    )
