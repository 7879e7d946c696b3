"""Helpers shared by the campaign tests: a site file for the fake trainer, CLI calls, waiting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

TESTS = Path(__file__).resolve().parent
FAKE_TRAIN = TESTS / "fake_train.py"
DATASET_FILES = ("train.rec", "train.idx", "val.rec", "val.idx")
# A small system: one node, two tasks; `nodes`/`gpus_per_node` are overridden per test.
SYSTEM = ["--system", "dgxa100_1x8", "--version", "r2.1"]


def make_site(root: Path, *, env: dict[str, str] | None = None, **extra: Any) -> Path:
    """A site file with runtime none and the fake trainer as training command."""
    data_dir, log_dir = root / "data", root / "logs"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    for name in DATASET_FILES:
        (data_dir / name).write_bytes(b"\0" * 16)
    site = {
        "runtime": "none",
        "partition": "debug",
        "exclusive": False,
        "mpi": "none",
        "dataset_dir": str(data_dir),
        "log_dir": str(log_dir),
        # a stand-in for NVIDIA's `sudo sysctl vm.drop_caches=3`: the job logs cache_clear after it
        "drop_caches_command": "true",
        "check_compliance": False,
        "train_command": f"{sys.executable} {FAKE_TRAIN}",
        "env": {"FAKE_TRAIN_SLEEP": "0.3", **(env or {})},
        **extra,
    }
    path = root / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path


CACHE_CLEAR_LINE = (
    ':::MLLOG {"namespace": "", "time_ms": 1, "event_type": "POINT_IN_TIME", "key": '
    '"cache_clear", "value": true, "metadata": {"file": "hpcrepro-job", "lineno": 0}}\n'
)


def write_replayed_log(path: Path, version: str, *, cache_clear: bool, **env: str) -> Path:
    """A run log as a job of `version` writes it: the fake trainer's replay of a published run,
    after the job's own `cache_clear` line when `cache_clear` (without it, no run complies)."""
    run_env = {"PATH": os.environ["PATH"], "HPCREPRO_VERSION": version, "FAKE_TRAIN_SLEEP": "0",
               **env}  # fmt: skip
    with path.open("w") as log:
        if cache_clear:
            log.write(CACHE_CLEAR_LINE)
            log.flush()
        subprocess.run([sys.executable, str(FAKE_TRAIN)], stdout=log, env=run_env, check=True)
    return path


def cli_env(root: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(base if base is not None else os.environ)
    env["HPCREPRO_STATE_DIR"] = str(root / "state")
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def hpcrepro(
    *args: str, env: dict[str, str], check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "hpcrepro", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"hpcrepro {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def status_json(campaign: str, env: dict[str, str]) -> dict[str, Any]:
    """The campaign's status; `status` exits 1 while runs are lost (resume replaces them)."""
    done = hpcrepro("status", campaign, "--json", env=env, check=False)
    if done.returncode not in (0, 1):
        raise AssertionError(
            f"hpcrepro status {campaign} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return json.loads(done.stdout)[0]  # type: ignore[no-any-return]


def wait_for(condition: Callable[[], Any], timeout: float = 90, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stage(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(row for row in status["stages"] if row["stage"] == name)


def all_finished(campaign: str, env: dict[str, str]) -> Callable[[], dict[str, Any] | None]:
    active = {"planned", "submitting", "pending", "running", "suspended"}

    def check() -> dict[str, Any] | None:
        status = status_json(campaign, env)
        return None if any(row["state"] in active for row in status["stages"]) else status

    return check


def sample_manifest(name: str = "sample", backend: str = "local") -> dict[str, Any]:
    """A finished campaign's manifest, as JSON, with every field hpcrepro writes: image, two runs
    (one valid, one void), collection; built with the campaign state's own types."""
    from hpcrepro.campaign import state as st

    manifest = st.Manifest(
        name=name,
        id="a1b2c3",
        created="2026-01-31T12:00:00Z",
        backend=backend,
        system="dgxa100_1x8",
        version="r2.1",
        inputs=st.Inputs(system="dgxa100_1x8", version="r2.1", site=None, overrides=[]),
        fingerprint="0123456789abcdef",
        runs_required=2,
        runs_per_job=1,
        target_epoch=35,
        target_accuracy=0.759,
        cancelled=False,
        stages=[
            st.Stage.new("image", "image"),
            st.Stage.new("run-01", st.TRAIN, after=["image"], runs=[1]),
            st.Stage.new("run-02", st.TRAIN, after=["image"], runs=[2]),
            st.Stage.new("collect", "collect", after=["run-01", "run-02"], dependency=st.AFTER_ANY),
        ],
    )
    for number, item in enumerate(manifest.stages, start=1):
        job = manifest.plan_attempt(item)
        local_id = "local:" + job.token.removeprefix("hpcrepro.")
        job.job_id = local_id if backend == "local" else str(4200 + number)
        job.state, job.scheduler_state, job.submitted = (
            "completed",
            "COMPLETED",
            "2026-01-31T12:00:01Z",
        )
        job.start, job.end, job.exit_code = "2026-01-31T12:00:02Z", "2026-01-31T12:01:00Z", "0:0"
        job.nodes, job.nodelist, job.pid = 1, "node1", 1000 + number
    run1, run2 = manifest.stages[1], manifest.stages[2]
    run1.verdicts[1] = st.Verdict(
        verdict="valid", reason="reached 0.7600", job_id=run1.jobs[0].job_id
    )
    run2.verdicts[2] = st.Verdict(verdict="void", reason="job timeout", job_id=run2.jobs[0].job_id)
    return {"format": st.FORMAT, **manifest.to_json()}
