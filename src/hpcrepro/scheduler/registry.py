"""The schedulers a campaign can run on, by the name its manifest records (`--backend`).

Each entry says how to make the backend for a campaign and what its job ids look like. Adding a
backend (PBS, say) is one module implementing `hpcrepro.scheduler.base.Scheduler` and one entry
here; nothing else in hpcrepro names a backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpcrepro.errors import UserError
from hpcrepro.scheduler import local, slurm
from hpcrepro.scheduler.base import JobIdForm, Scheduler


@dataclass(frozen=True)
class Backend:
    # the backend for one campaign; `campaign` is what a backend may ask of the campaign whose
    # jobs it runs (see `scheduler.local.LocalCampaign`), which a cluster's backend ignores
    make: Callable[[Any], Scheduler]
    job_ids: JobIdForm
    title: str  # for messages: "Slurm did not answer"


BACKENDS: dict[str, Backend] = {
    "slurm": Backend(lambda campaign: slurm.Slurm(), slurm.JOB_IDS, slurm.Slurm.title),
    "local": Backend(local.Local, local.JOB_IDS, local.Local.title),
}


def names() -> tuple[str, ...]:
    return tuple(BACKENDS)


def _entry(name: str) -> Backend:
    found = BACKENDS.get(name)
    if found is None:
        raise UserError(
            f"unknown backend '{name}'",
            hint="use " + " or ".join(f"--backend {known}" for known in BACKENDS),
        )
    return found


def job_id_form(name: str) -> JobIdForm:
    return _entry(name).job_ids


def title(name: str) -> str:
    return _entry(name).title


def make(name: str, campaign: Any = None) -> Scheduler:
    """The backend `name` for `campaign` (a `campaign.runner.CampaignLink`)."""
    return _entry(name).make(campaign)
