"""What the training job checks on its nodes before the first timed run (pure: config in).

A run that starts on a node with a GPU missing, an InfiniBand port down or a slow fabric wastes
its allocation and gives a time that says nothing about the system. The job checks these first
and stops with `EXIT_CODE`, writing the reason to `preflight_<JOBID>.failed` in its log folder,
where `hpcrepro status` finds it (`failure_reason`). The checks are in templates/train.sbatch.j2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpcrepro.errors import UserError

if TYPE_CHECKING:  # `hpcrepro status` reads failure_reason: no pydantic at import
    from hpcrepro.config import ResolvedConfig

EXIT_CODE = 3  # the job's exit status when a preflight check failed (2: the job could not start)
FAILED_FILE = "preflight_{job_id}.failed"


@dataclass(frozen=True)
class PreflightPlan:
    """The checks one job makes; the template reads these fields."""

    gpus: bool
    gpu_model: str  # what every GPU's nvidia-smi name must contain (case ignored)
    infiniband: bool
    topology: bool
    min_busbw_gbps: str  # "" when the NCCL test's bandwidth is not checked

    @property
    def any(self) -> bool:
        return self.gpus or self.infiniband or self.topology or bool(self.min_busbw_gbps)


def gpu_family(model: str) -> str:
    """'A100-SXM4-80GB' -> 'A100': the part nvidia-smi's name ('NVIDIA A100-SXM4-80GB') holds
    whatever the board's memory or form factor is called there ('NVIDIA H100 80GB HBM3')."""
    return re.split(r"[-\s]", model.strip(), maxsplit=1)[0]


def _runs_a_benchmark(cfg: ResolvedConfig) -> bool:
    return cfg.site.train_command is None


def plan(cfg: ResolvedConfig, nccl_test: bool) -> PreflightPlan:
    """The site's `preflight` settings with "auto" (None) decided for this job."""
    from hpcrepro.catalog import load_catalog

    settings = cfg.site.preflight
    benchmark = _runs_a_benchmark(cfg)
    gpus = benchmark if settings.gpus is None else settings.gpus
    infiniband = (
        benchmark and cfg.spec.nodes > 1 if settings.infiniband is None else settings.infiniband
    )
    topology = benchmark if settings.topology is None else settings.topology
    if settings.min_busbw_gbps is not None and not nccl_test:
        raise UserError(
            "preflight.min_busbw_gbps needs the NCCL test, which this job does not run",
            where="site key 'preflight.min_busbw_gbps'",
            hint="set nccl_test: true, or remove min_busbw_gbps",
        )
    model = settings.gpu_model or gpu_family(load_catalog().systems[cfg.system].gpu_model)
    return PreflightPlan(
        gpus=gpus,
        gpu_model=model,
        infiniband=infiniband,
        topology=topology,
        min_busbw_gbps=(
            f"{settings.min_busbw_gbps:g}" if settings.min_busbw_gbps is not None else ""
        ),
    )


def failure_reason(log_dir: Path, job_id: str) -> str | None:
    """The reason a job's preflight gave for stopping it, or None when it did not stop it."""
    path = log_dir / FAILED_FILE.format(job_id=job_id)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return " ".join(text.split())[:500] or "no reason recorded"
