"""Slurm states, sacct/squeue parsing and poll back-off, without a cluster."""

from __future__ import annotations

import statistics

import pytest

from hpcrepro.errors import UserError
from hpcrepro.scheduler import states
from hpcrepro.scheduler.base import Backoff
from hpcrepro.scheduler.slurm import (
    Slurm,
    SubmitError,
    _parse_sacct,
    _parse_squeue,
    checked_job_ids,
    from_slurm,
)

# Every state sacct(1)/squeue(1) document for Slurm 22.05-24.x, with what a campaign makes of it.
EVERY_SLURM_STATE = {
    "BOOT_FAIL": "failed",
    "CANCELLED": "cancelled",
    "COMPLETED": "completed",
    "CONFIGURING": "pending",
    "COMPLETING": "running",
    "DEADLINE": "failed",
    "FAILED": "failed",
    "NODE_FAIL": "node_fail",
    "OUT_OF_MEMORY": "out_of_memory",
    "PENDING": "pending",
    "PREEMPTED": "preempted",
    "RUNNING": "running",
    "RESV_DEL_HOLD": "pending",
    "REQUEUE_FED": "pending",
    "REQUEUE_HOLD": "pending",
    "REQUEUED": "requeued",
    "RESIZING": "running",
    "REVOKED": "cancelled",
    "SIGNALING": "running",
    "SPECIAL_EXIT": "pending",
    "STAGE_OUT": "running",
    "STOPPED": "suspended",
    "SUSPENDED": "suspended",
    "TIMEOUT": "timeout",
    "LAUNCH_FAILED": "failed",
}


@pytest.mark.parametrize(("raw", "ours"), sorted(EVERY_SLURM_STATE.items()))
def test_every_slurm_state_is_mapped(raw: str, ours: str) -> None:
    assert from_slurm(raw) == ours


@pytest.mark.parametrize(
    ("raw", "ours"),
    [
        ("CANCELLED by 1000", "cancelled"),
        ("CD", "completed"),
        ("PD", "pending"),
        ("OOM", "out_of_memory"),
        ("RUNNING+", "running"),
        (" TIMEOUT ", "timeout"),
        ("SOMETHING_NEW", "unknown"),
    ],
)
def test_sacct_suffixes_and_squeue_short_codes(raw: str, ours: str) -> None:
    assert from_slurm(raw) == ours


def test_void_states_are_exactly_those_that_spoil_time_to_train() -> None:
    void = {raw for raw, ours in EVERY_SLURM_STATE.items() if states.is_void(ours)}
    assert void == {"PREEMPTED", "REQUEUED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT"}
    for ours in set(EVERY_SLURM_STATE.values()):
        assert states.is_active(ours) != states.is_finished(ours)


def test_sacct_lines_are_parsed_field_by_field() -> None:
    text = (
        "41|hpcrepro.c.ab12cd.run-01.1|CANCELLED by 0|2026-11-28T10:00:01|2026-11-28T10:05:00"
        "|00:04:59|2|node[1-2]|None|0:15\n"
        "42|hpcrepro.c.ab12cd.collect.1|PENDING|Unknown|Unknown|00:00:00|1|None assigned"
        "|Dependency|0:0\n"
        "garbage line\n"
    )
    jobs = _parse_sacct(text)
    assert set(jobs) == {"41", "42"}
    run, collect = jobs["41"], jobs["42"]
    assert (run.state, run.scheduler_state, run.nodes, run.nodelist) == (
        "cancelled",
        "CANCELLED by 0",
        2,
        "node[1-2]",
    )
    assert run.start == "2026-11-28T10:00:01" and run.exit_code == "0:15" and run.reason is None
    assert (collect.state, collect.start, collect.nodelist, collect.reason) == (
        "pending",
        None,
        None,
        "Dependency",
    )


def test_squeue_lines_hide_times_that_do_not_apply() -> None:
    text = (
        "7|name|PENDING|2026-11-28T11:00:00|2026-11-28T12:00:00|0:00|1||Priority|c\n"
        "8|name|RUNNING|2026-11-28T10:00:00|2026-11-28T12:00:00|5:00|2|node[1-2]|None|c\n"
    )
    jobs = _parse_squeue(text)
    assert jobs["7"].start is None and jobs["7"].reason == "Priority"  # expected start, not real
    assert jobs["8"].start == "2026-11-28T10:00:00" and jobs["8"].end is None


def test_backoff_grows_to_a_cap_restarts_on_change_and_jitters() -> None:
    backoff = Backoff(first=2, factor=2, maximum=10, jitter=0.2)
    waits = [backoff.next(changed=False) for _ in range(6)]
    assert 3.2 <= waits[0] <= 4.8 and all(8 <= w <= 12 for w in waits[3:])
    assert 1.6 <= backoff.next(changed=True) <= 2.4
    spread = [Backoff(first=10, jitter=0.2).next(changed=True) for _ in range(200)]
    assert min(spread) >= 8 and max(spread) <= 12 and statistics.pstdev(spread) > 0.5


def test_submit_errors_name_the_script_and_hint_at_the_fix(tmp_path) -> None:
    error = SubmitError(
        tmp_path / "run-01.sbatch",
        "sbatch: error: invalid partition specified: gpu\n",
        test_only=True,
    )
    text = error.render()
    assert "run-01.sbatch" in text and "invalid partition specified: gpu" in text
    assert "sinfo" in text
    refused = SubmitError(
        tmp_path / "run-01.sbatch", "sbatch: error: Invalid network specification (sharp)\n"
    ).render()
    assert "sbatch_network=null" in refused


# Slurm's own refusal texts (slurm_errno.c, sbatch's option parser) -> a word the right hint has,
# and a word only a wrong hint would have.
REFUSALS = [
    (
        "sbatch: error: Batch job submission failed: Invalid account or account/partition "
        "combination specified",
        "--set account=NAME",
        "sinfo -s",
    ),
    (
        "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
        "(job submit limit, user's size and/or time limits)",
        "MaxSubmitJobs",
        "time_margin_minutes",
    ),
    (
        "Invalid time specification (pos=0): garbage\nsbatch: error: Invalid --begin specification",
        "--begin=now+1hour",
        "time_margin_minutes",
    ),
    (
        "sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or "
        "exceeds some limit)",
        "time_margin_minutes",
        "sacctmgr",
    ),
    ("sbatch: error: invalid partition specified: gpu", "sinfo -s", "sacctmgr"),
    (
        "sbatch: error: Batch job submission failed: Invalid partition name specified",
        "sinfo -s",
        "sacctmgr",
    ),
    (
        "sbatch: error: Batch job submission failed: Invalid qos specification",
        "--set qos=NAME",
        "sinfo -s",
    ),
    (
        "sbatch: error: Batch job submission failed: Requested node configuration is not available",
        "gpu_request",
        "sacctmgr",
    ),
]


@pytest.mark.parametrize(("output", "right", "wrong"), REFUSALS)
def test_each_sbatch_refusal_gets_the_hint_that_fits(tmp_path, output, right, wrong) -> None:
    hint = SubmitError(tmp_path / "run-01.sbatch", output).hint or ""
    assert right in hint and wrong not in hint


@pytest.mark.parametrize("job_id", ["--user=root", "-u", "1 2", "1,2", "", "1;ls"])
def test_scancel_never_gets_what_is_not_a_job_id(job_id: str) -> None:
    slurm = Slurm(env={"PATH": "/nonexistent"})
    with pytest.raises(UserError, match="not a job id"):
        slurm.cancel(["4211", job_id])
    with pytest.raises(UserError, match="not a job id"):
        slurm.poll([job_id])
    assert slurm.commands == []  # refused before any command line was built


def test_every_form_of_slurm_job_id_passes() -> None:
    assert checked_job_ids(["4211", "4211_3", "4211+1"]) == ["4211", "4211_3", "4211+1"]


def test_watch_counts_a_change_of_state_but_not_of_elapsed_time() -> None:
    """A running job's elapsed time and progress change on every poll; only a state change may
    bring `status --watch` back to short polls."""
    from campaign_helpers import sample_manifest
    from hpcrepro.campaign.state import from_json
    from hpcrepro.commands.campaign import _job_states

    before = from_json(sample_manifest())
    later = from_json(sample_manifest())
    later.stages[1].jobs[0].elapsed, later.stages[1].jobs[0].reason = "00:09:59", "epoch 3/35"
    assert _job_states([(None, before)]) == _job_states([(None, later)])
    later.stages[1].jobs[0].state = "failed"
    assert _job_states([(None, before)]) != _job_states([(None, later)])
