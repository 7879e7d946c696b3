"""A sharded prep on Slurm: a job array packs the shards, a dependent job joins them.

Two job scripts (pure: parameters in, text out, through the strict template environment of
`templating`), each carrying all its options in its #SBATCH lines, and `submit` sends them through
the scheduler backend every hpcrepro job goes through (`scheduler.registry`): the join waits for
the whole array (`afterok`). The scripts are plain job scripts, so `sbatch prep-pack.sbatch` and
`sbatch --dependency=afterok:ID prep-join.sbatch` by hand make the same jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hpcrepro import __version__
from hpcrepro.errors import UserError

if TYPE_CHECKING:
    from hpcrepro.scheduler.base import JobRequest, Scheduler

TEMPLATE = "prep.sbatch.j2"
PACK_SCRIPT = "prep-pack.sbatch"
JOIN_SCRIPT = "prep-join.sbatch"
MAX_WORKERS = 4096  # reader threads of one task; the site's prep_workers has the same bound


@dataclass(frozen=True)
class PrepJob:
    """What the prep job array needs; paths as the compute nodes see them. `sbatch_options` go
    to both jobs (site options such as --partition; the ones hpcrepro sets itself are refused)."""

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


@dataclass(frozen=True)
class PrepScripts:
    pack: str
    join: str


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


def _header(job: PrepJob, *, join: bool) -> str:
    from hpcrepro import slurm_args
    from hpcrepro.render import sbatch_output, sbatch_token

    role = "join" if join else "pack"
    output = job.log_dir + ("/prep-join-%j.out" if join else "/prep-pack-%A_%a.out")
    options = [f"--job-name={job.job_name}-{role}"]
    if not join:
        options.append(f"--array=0-{job.shards - 1}")
    options += [
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={2 if join else job.workers}",
        f"--time={job.join_time if join else job.pack_time}",
        f"--output={sbatch_output(output)}",
        *slurm_args.check(slurm_args.SBATCH, job.sbatch_options),
    ]
    return "\n".join(f"#SBATCH {sbatch_token(option)}" for option in options)


def render_prep_scripts(job: PrepJob) -> PrepScripts:
    """The pack array's job script and the join job's."""
    from hpcrepro.templating import ShellText, render_template

    _check(job)

    def script(join: bool) -> str:
        return render_template(
            TEMPLATE,
            header=ShellText(_header(job, join=join)),
            join=join,
            version=__version__,
            shards=job.shards,
            workers=job.workers,
            command=job.command,
            prep_args=job.prep_args(),
        )

    return PrepScripts(pack=script(False), join=script(True))


def write_jobs(job: PrepJob, folder: Path) -> list[JobRequest]:
    """Write both scripts into `folder` (made if missing, along with the log folder as the nodes
    see it when it is the same path here) and return their job requests, the join after the
    pack array."""
    from hpcrepro.safeopen import cannot_write, replace_file
    from hpcrepro.scheduler.base import Dependency, JobRequest

    scripts = render_prep_scripts(job)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        Path(job.log_dir).mkdir(parents=True, exist_ok=True)
        for name, text in ((PACK_SCRIPT, scripts.pack), (JOIN_SCRIPT, scripts.join)):
            replace_file(folder / name, text.encode(), mode=0o755)
    except OSError as error:
        raise cannot_write(folder, error) from None
    pack = JobRequest(name=f"{job.job_name}-pack", script=folder / PACK_SCRIPT, label="prep-pack")
    join = JobRequest(
        name=f"{job.job_name}-join",
        script=folder / JOIN_SCRIPT,
        label="prep-join",
        # the pack's label until it has an id (`submit`), as `Scheduler.dry_run` reads it
        dependency=Dependency("afterok", ("prep-pack",)),
    )
    return [pack, join]


def submit(requests: list[JobRequest], backend: Scheduler | None = None) -> tuple[str, str]:
    """Submit the pack array, then the join after it (Slurm unless `backend` is given); return
    both job ids. Chain later jobs on the join's id (afterok)."""
    from dataclasses import replace

    from hpcrepro.scheduler import registry
    from hpcrepro.scheduler.base import Dependency

    scheduler = backend or registry.make("slurm")
    scheduler.check_available()
    pack, join = requests
    array_id = scheduler.submit(pack)
    join_id = scheduler.submit(replace(join, dependency=Dependency("afterok", (array_id,))))
    return array_id, join_id
