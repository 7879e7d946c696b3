"""The same campaign scenarios on every scheduler backend (`scheduler.registry.names()`).

Each scenario goes through the command line only (submit, status, cancel, resume, and the
collect stage every campaign ends with), so what it shows holds for any backend the registry
lists: Slurm on the real two-node test cluster (marked `slurm`), local on this machine. A
backend added to the registry runs here once `ENVIRONMENTS` says how to reach it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from campaign_helpers import (
    FAKE_TRAIN,
    SYSTEM,
    all_finished,
    cli_env,
    hpcrepro,
    make_site,
    stage,
    status_json,
    wait_for,
)
from hpcrepro.scheduler import registry


def _slurm(request: pytest.FixtureRequest, root: Path) -> dict[str, str]:
    return cli_env(root, request.getfixturevalue("slurm_cluster").env)


def _local(request: pytest.FixtureRequest, root: Path) -> dict[str, str]:
    return cli_env(root)


# How a test reaches each backend: the environment its commands run in.
ENVIRONMENTS: dict[str, Callable[[pytest.FixtureRequest, Path], dict[str, str]]] = {
    "slurm": _slurm,
    "local": _local,
}
BACKENDS = [
    pytest.param(name, marks=[pytest.mark.slurm] if name == "slurm" else [], id=name)
    for name in registry.names()
]
ONE_NODE = ["--set", "nodes=1", "--set", "gpus_per_node=1"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _env(request: pytest.FixtureRequest, backend: str, root: Path) -> dict[str, str]:
    if backend not in ENVIRONMENTS:
        pytest.fail(f"backend {backend!r} is registered but tests/test_backends.py cannot reach it")
    return ENVIRONMENTS[backend](request, root)


def _submit(env: dict[str, str], site: Path, backend: str, name: str, runs: int) -> str:
    return hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", str(runs), "--name", name,
                    *ONE_NODE, "--backend", backend, env=env).stdout  # fmt: skip


def _summary(root: Path, name: str) -> dict[str, Any]:
    return json.loads((root / "logs" / name / "results" / "summary.json").read_text())


def test_submit_status_and_collect(request: pytest.FixtureRequest, backend: str,
                                   tmp_path: Path) -> None:  # fmt: skip
    env = _env(request, backend, tmp_path)
    site = make_site(tmp_path)
    assert "submitted 3 job(s)" in _submit(env, site, backend, "plain", runs=2)
    status = wait_for(all_finished("plain", env), 120, f"the campaign on {backend}")
    assert [row["state"] for row in status["stages"]] == ["completed"] * 3
    assert status["runs"] == {"valid": 2, "coming": 0, "lost": 0, "required": 2}
    form = registry.job_id_form(backend)
    assert all(form.pattern.fullmatch(row["job_id"]) for row in status["stages"])
    assert "runs: 2/2 valid" in hpcrepro("status", "plain", env=env).stdout
    summary = _summary(tmp_path, "plain")
    assert [run["verdict"] for run in summary["runs"]] == ["valid", "valid"]
    assert summary["complete"] is True
    # a second submit of the same campaign changes nothing
    assert "already submitted" in _submit(env, site, backend, "plain", runs=2)


def test_a_failing_run_is_lost_and_resume_replaces_it(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    env = _env(request, backend, tmp_path)
    fail_once = tmp_path / "fail-once"
    fail_once.write_text("")
    trainer = tmp_path / "train.sh"  # the first run to start takes the mark and fails
    trainer.write_text(
        "#!/bin/bash\n"
        f"if mv {fail_once} {fail_once}.taken 2>/dev/null; then exit 3; fi\n"
        f"exec {sys.executable} {FAKE_TRAIN}\n"
    )
    site = make_site(tmp_path, train_command=f"bash {trainer}")
    _submit(env, site, backend, "flaky", runs=2)
    status = wait_for(all_finished("flaky", env), 120, f"the campaign on {backend}")
    states = sorted(stage(status, run)["state"] for run in ("run-01", "run-02"))
    assert states == ["completed", "failed"]
    assert stage(status, "collect")["state"] == "completed"  # afterany: collect runs anyway
    assert status["runs"] == {"valid": 1, "coming": 0, "lost": 1, "required": 2}
    assert _summary(tmp_path, "flaky")["complete"] is False
    resumed = hpcrepro("resume", "flaky", env=env).stdout
    assert "submitted run-03, collect" in resumed
    final = wait_for(all_finished("flaky", env), 120, "the replacement run")
    assert [row["stage"] for row in final["stages"]] == ["run-01", "run-02", "run-03", "collect"]
    assert final["runs"]["valid"] == 2
    assert _summary(tmp_path, "flaky")["complete"] is True
    assert "nothing to resubmit" in hpcrepro("resume", "flaky", env=env).stdout


def test_cancel_stops_every_job_and_resume_finishes(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    env = _env(request, backend, tmp_path)
    hold = tmp_path / "hold"
    hold.write_text("")
    site = make_site(tmp_path, env={"FAKE_TRAIN_HOLD": str(hold)})
    _submit(env, site, backend, "stop", runs=2)
    wait_for(lambda: "epoch 1" in stage(status_json("stop", env), "run-01")["note"], 90,
             "run-01 to reach epoch 1")  # fmt: skip
    assert "cancelled 3 job(s)" in hpcrepro("cancel", "stop", env=env).stdout
    status = wait_for(all_finished("stop", env), 60, "the cancelled jobs to end")
    assert [row["state"] for row in status["stages"]] == ["cancelled"] * 3
    assert stage(status, "run-01")["verdicts"]["1"]["verdict"] == "void"
    hold.unlink()
    # the cancelled runs are void (or never ran): both are replaced, and collect runs again
    assert "submitted run-03, run-04, collect" in hpcrepro("resume", "stop", env=env).stdout
    final = wait_for(all_finished("stop", env), 120, "the resumed campaign")
    assert final["runs"]["valid"] == 2
    assert stage(final, "collect")["attempts"] == 2
