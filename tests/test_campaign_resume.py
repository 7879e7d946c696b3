"""Resume: replacement runs keep the campaign's stored configuration and replace each lost run
once; campaign names are registered exclusively; the local runner's jobs stay visible."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from campaign_helpers import (
    SYSTEM,
    all_finished,
    cli_env,
    hpcrepro,
    make_site,
    sample_manifest,
    stage,
    status_json,
    wait_for,
)
from hpcrepro.campaign import engine
from hpcrepro.campaign import state as st
from hpcrepro.scheduler import local
from mounts import small_filesystem

LOCAL_ONE_RUN = [
    "--runs",
    "1",
    "--set",
    "nodes=1",
    "--set",
    "gpus_per_node=1",
    "--backend",
    "local",
]


# --- which run a replacement replaces


def _lose(manifest: st.Manifest, name: str, job_id: str) -> None:
    """The planned job of `name` ran and timed out; the collection after it completed."""
    stage = manifest.by_name()[name]
    stage.jobs[-1].job_id, stage.jobs[-1].state = job_id, "timeout"
    for index in stage.runs:
        stage.verdicts[index] = st.Verdict(verdict="void", reason="timeout", job_id=job_id)
    collect = manifest.by_name()["collect"]
    collect.jobs[-1].job_id, collect.jobs[-1].state = job_id + "c", "completed"


def _sample(name: str) -> st.Manifest:
    return st.from_json(sample_manifest(name, backend="slurm"))


def test_each_resume_replaces_a_run_not_replaced_before() -> None:
    manifest = _sample("lbl")  # run-01 valid, run-02 void, 2 required
    assert engine.plan_resume(manifest) == ["run-03", "collect"]
    _lose(manifest, "run-03", "103")
    assert engine.plan_resume(manifest) == ["run-04", "collect"]
    _lose(manifest, "run-04", "104")
    assert engine.plan_resume(manifest) == ["run-05", "collect"]
    replaces = {s.name: s.replaces for s in manifest.train_stages()}
    assert replaces == {
        "run-01": [],
        "run-02": [],
        "run-03": ["run-02"],
        "run-04": ["run-03"],
        "run-05": ["run-04"],
    }


def test_successive_resumes_replace_every_lost_run_once() -> None:
    manifest = _sample("many")
    manifest.runs_required = 4
    for index in (3, 4):  # two more runs, both void: three lost, one valid
        stage = st.Stage.new(f"run-0{index}", st.TRAIN, after=["image"], runs=[index])
        manifest.stages.insert(-1, stage)
        manifest.plan_attempt(stage)
        _lose(manifest, f"run-0{index}", f"{index}")
    assert engine.plan_resume(manifest) == ["run-05", "run-06", "run-07", "collect"]
    _lose(manifest, "run-06", "106")  # run-05 and run-07 still to come
    assert engine.plan_resume(manifest) == ["run-08", "collect"]
    _lose(manifest, "run-08", "108")
    assert engine.plan_resume(manifest) == ["run-09", "collect"]
    replaced = [label for s in manifest.train_stages() for label in s.replaces]
    assert sorted(replaced) == ["run-02", "run-03", "run-04", "run-06", "run-08"]


def test_replacements_of_grouped_runs_name_the_runs() -> None:
    manifest = _sample("grp")
    manifest.runs_per_job = 2
    manifest.runs_required = 3
    _lose(manifest, "run-01", "101")  # run-01 and run-02 both lost now
    assert engine.plan_resume(manifest) == ["runs-03-04", "run-05", "collect"]
    by = manifest.by_name()
    assert by["runs-03-04"].replaces == ["run-01", "run-02"] and by["run-05"].replaces == []


# --- resume uses the configuration the campaign was submitted with


def _script_exports(campaign: Path, stage: str) -> list[str]:
    text = (campaign / "scripts" / f"{stage}.sbatch").read_text()
    return [line for line in text.splitlines() if line.startswith("export FAKE_TRAIN")]


def test_resume_ignores_later_site_file_changes_and_needs_the_stored_config(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path, env={"FAKE_TRAIN_STATUS": "aborted"})  # every run invalid
    env = cli_env(tmp_path)
    hpcrepro("submit", *SYSTEM, "--site", str(site), *LOCAL_ONE_RUN, "--name", "drift", env=env)
    wait_for(all_finished("drift", env), 60, "the first run")
    data = yaml.safe_load(site.read_text())
    data["env"]["FAKE_TRAIN_SLEEP"] = "0.7"
    site.write_text(yaml.safe_dump(data))
    campaign = tmp_path / "logs" / "drift"
    assert "submitted run-02" in hpcrepro("resume", "drift", env=env).stdout
    assert _script_exports(campaign, "run-02") == _script_exports(campaign, "run-01")
    assert "export FAKE_TRAIN_SLEEP=0.3" in _script_exports(campaign, "run-02")
    wait_for(all_finished("drift", env), 60, "the replacement run")
    site.rename(tmp_path / "moved.yaml")  # resume does not need the site file at all
    assert "submitted run-03" in hpcrepro("resume", "drift", env=env).stdout
    wait_for(all_finished("drift", env), 60, "the second replacement")
    stored = json.loads((campaign / "resolved-config.json").read_text())
    stored["site"]["env"]["FAKE_TRAIN_SLEEP"] = "0.9"
    (campaign / "resolved-config.json").write_text(json.dumps(stored))
    changed = hpcrepro("resume", "drift", env=env, check=False)
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert "resolved-config.json" in changed.stderr and "fingerprint" in changed.stderr
    (campaign / "resolved-config.json").unlink()
    missing = hpcrepro("resume", "drift", env=env, check=False)
    assert missing.returncode == 2 and "resolved-config.json is missing" in missing.stderr
    assert not (campaign / "scripts" / "run-04.sbatch").exists()


# --- one campaign name, two log folders


def _submit_named(site: str, name: str, state: str, barrier: Any, results: Any) -> None:
    os.environ["HPCREPRO_STATE_DIR"] = state
    from hpcrepro.campaign import actions
    from hpcrepro.errors import UserError

    request = actions.SubmitRequest(
        system="dgxa100_1x8",
        version="r2.1",
        site=Path(site),
        name=name,
        runs=1,
        backend="local",
        overrides=["nodes=1", "gpus_per_node=1"],
    )
    barrier.wait()
    try:
        results.put(("ok", str(actions.submit(request).paths.root)))
    except UserError as error:
        results.put(("refused", error.message))


def test_two_submits_of_one_name_from_two_log_folders_cannot_both_win(tmp_path: Path) -> None:
    sites = [make_site(tmp_path / "A"), make_site(tmp_path / "B")]
    state = str(tmp_path / "state")
    context = multiprocessing.get_context("fork")
    for trial in range(4):
        name = f"race{trial}"
        barrier, results = context.Barrier(2), context.Queue()
        workers = [
            context.Process(target=_submit_named, args=(str(site), name, state, barrier, results))
            for site in sites
        ]
        for worker in workers:
            worker.start()
        outcomes = sorted(results.get(timeout=60) for _ in workers)
        for worker in workers:
            worker.join(60)
        assert [kind for kind, _ in outcomes] == ["ok", "refused"], outcomes
        winner = Path(outcomes[0][1])
        assert f"a campaign named '{name}' already exists in {winner}" in outcomes[1][1]
        assert (tmp_path / "state" / "campaigns" / name).read_text().strip() == str(winner)
        loser = next(
            site.parent / "logs" / name for site in sites if site.parent / "logs" / name != winner
        )
        assert not loser.exists()  # the refused submit took back the folder it made


# --- local backend: a job outlives its runner


def _held_local_campaign(tmp_path: Path, name: str, hold: Path) -> tuple[dict[str, str], Path]:
    """A local campaign of two runs whose run-01 holds after epoch 1, with its runner killed
    (kill -9) there; returns the CLI environment and the campaign folder."""
    hold.write_text("")
    site = make_site(tmp_path / name, env={"FAKE_TRAIN_HOLD": str(hold)})
    env = cli_env(tmp_path)
    hpcrepro(
        "submit",
        *SYSTEM,
        "--site",
        str(site),
        *LOCAL_ONE_RUN,
        "--runs",
        "2",
        "--name",
        name,
        env=env,
    )
    campaign = tmp_path / name / "logs" / name
    wait_for(
        lambda: "epoch 1" in stage(status_json(name, env), "run-01")["note"],
        60,
        "run-01 to hold after its first epoch",
    )
    manifest = json.loads((campaign / "campaign.json").read_text())
    os.kill(manifest["local_runner"]["pid"], signal.SIGKILL)
    wait_for(lambda: not local.pid_alive(manifest["local_runner"]["pid"]), 10, "the runner to die")
    return env, campaign


def _job_of(campaign: Path, name: str) -> dict[str, Any]:
    manifest = json.loads((campaign / "campaign.json").read_text())
    return next(s for s in manifest["stages"] if s["name"] == name)["jobs"][-1]  # type: ignore[no-any-return]


def test_a_job_whose_runner_died_is_seen_waited_for_and_finishes(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    env, campaign = _held_local_campaign(tmp_path, "orphan", hold)
    assert stage(status_json("orphan", env), "run-01")["state"] == "running"
    job = _job_of(campaign, "run-01")
    assert job["pid"] in local.job_processes(job["job_id"])
    assert "submitted run-03, collect" in hpcrepro("resume", "orphan", env=env).stdout
    time.sleep(1.5)  # the new runner waits for run-01 instead of starting run-03 next to it
    assert stage(status_json("orphan", env), "run-03")["state"] == "pending"
    hold.unlink()
    final = wait_for(all_finished("orphan", env), 60, "the resumed campaign")
    assert stage(final, "run-01")["state"] == "completed"  # its exit status, read from its file
    assert final["runs"]["valid"] == 2


def test_cancel_kills_a_job_whose_runner_died(tmp_path: Path) -> None:
    env, campaign = _held_local_campaign(tmp_path, "stray", tmp_path / "hold")
    job = _job_of(campaign, "run-01")
    # run-01 is still running; run-02 and collect were lost with the runner
    assert "cancelled 1 job(s)" in hpcrepro("cancel", "stray", env=env).stdout
    wait_for(lambda: not local.job_processes(job["job_id"]), 30, "the job's processes to end")
    assert stage(status_json("stray", env), "run-01")["state"] == "cancelled"


# --- messages: local dry run, cancel when all ended, submit of a cancelled campaign, collect NAME


def test_local_dry_run_shows_what_the_runner_runs(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    out = hpcrepro(
        "submit",
        *SYSTEM,
        "--site",
        str(site),
        *LOCAL_ONE_RUN,
        "--name",
        "dry",
        "--dry-run",
        env=cli_env(tmp_path),
    ).stdout
    assert "sbatch --" not in out and "--no-requeue" not in out
    scripts = tmp_path / "logs" / "dry" / "scripts"
    assert f"bash {scripts / 'run-01.sbatch'}  # run-01" in out.splitlines()
    assert out.splitlines()[-1] == f"bash {scripts / 'collect.sbatch'}  # collect"


def test_finished_and_cancelled_campaigns_say_what_to_do(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = cli_env(tmp_path)
    submit = ["submit", *SYSTEM, "--site", str(site), *LOCAL_ONE_RUN]
    hpcrepro(*submit, "--name", "done", env=env)
    wait_for(all_finished("done", env), 60, "the campaign")
    cancel = hpcrepro("cancel", "done", env=env).stdout
    assert "nothing to cancel" in cancel
    assert "cancelled" not in hpcrepro("status", "done", env=env).stdout.splitlines()[0]
    scored = hpcrepro(
        "collect", "done", "--no-official-check", "--format", "json", env=env, check=False
    )  # a campaign name, like status, cancel and resume take
    assert scored.returncode in (0, 1) and "Traceback" not in scored.stderr
    assert "run-01_" in scored.stdout

    hold = tmp_path / "hold"
    hold.write_text("")
    held = make_site(tmp_path / "held", env={"FAKE_TRAIN_HOLD": str(hold)})
    again = ["submit", *SYSTEM, "--site", str(held), *LOCAL_ONE_RUN, "--name", "stopped"]
    hpcrepro(*again, env=env)
    assert "cancelled" in hpcrepro("cancel", "stopped", env=env).stdout
    hold.unlink()
    out = hpcrepro(*again, env=env).stdout
    assert "was cancelled: nothing submitted" in out and "hpcrepro resume stopped" in out
    assert "--watch" not in out


def test_a_log_dir_on_a_read_only_file_system_is_a_user_error(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "ro", "1m", "ro") as readonly:
        site = make_site(tmp_path, log_dir=str(readonly / "logs"))
        done = hpcrepro(
            "submit",
            *SYSTEM,
            "--site",
            str(site),
            *LOCAL_ONE_RUN,
            "--name",
            "ro",
            "--dry-run",
            env=cli_env(tmp_path),
            check=False,
        )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"cannot create the campaign folder {readonly / 'logs' / 'ro'}" in done.stderr
    assert "site key 'log_dir'" in done.stderr
