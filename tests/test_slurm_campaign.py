"""Campaigns on the real two-node test Slurm cluster (tests/slurm/start.sh)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from campaign_helpers import (
    CACHE_CLEAR_LINE,
    FAKE_TRAIN,
    SYSTEM,
    all_finished,
    cli_env,
    hpcrepro,
    make_site,
    stage,
    status_json,
    wait_for,
    write_replayed_log,
)
from hpcrepro.campaign import engine, layout
from hpcrepro.campaign import manifest as manifest_io
from hpcrepro.campaign import state as st
from hpcrepro.errors import UserError
from hpcrepro.scheduler.slurm import Slurm

pytestmark = pytest.mark.slurm
ONE_NODE = ["--set", "nodes=1", "--set", "gpus_per_node=2"]


def sacct_times(env: dict[str, str], job_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """job id -> (state, start, end) from accounting, waiting until slurmdbd has the end times."""

    def ask() -> dict[str, tuple[str, str, str]] | None:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "JobIDRaw,State,Start,End"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = {line.split("|")[0]: tuple(line.split("|")[1:4]) for line in out.splitlines()}
        done = len(rows) == len(job_ids) and all(r[2] not in ("Unknown", "") for r in rows.values())
        return rows if done else None  # type: ignore[return-value]

    return wait_for(ask, 60, "sacct end times")


def sacct_nodes(env: dict[str, str], job_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "NNodes,NodeList"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip()


def _train_line(log: Path) -> str:
    """The fake trainer writing a compliant run log, after the job's own cache_clear line."""
    clear = shlex.quote(CACHE_CLEAR_LINE)
    return f"printf '%s' {clear} > {log}\n{sys.executable} {FAKE_TRAIN} >> {log}\n"


def hand_made_campaign(
    root: Path, name: str, prep_exit: int
) -> tuple[layout.CampaignPaths, st.Manifest]:
    """prep -> run-01, run-02 (afterok) -> collect (afterany), with hand-written scripts."""
    paths = layout.CampaignPaths(root / name)
    paths.make()
    scripts = {
        "prep": f"sleep 1\nexit {prep_exit}\n",
        "run-01": _train_line(paths.run_log(1)),
        "run-02": _train_line(paths.run_log(2)),
        "collect": "sleep 1\n",
    }
    for stage_name, body in scripts.items():
        (paths.scripts / f"{stage_name}.sbatch").write_text(
            f"#!/bin/bash\n#SBATCH --time=5\n#SBATCH --ntasks=1\n"
            f"#SBATCH --output={paths.job_output}/{stage_name}-%j.out\nset -e\n{body}"
        )
    stages = [
        st.Stage.new("prep", "prep"),
        st.Stage.new("run-01", st.TRAIN, after=["prep"], runs=[1]),
        st.Stage.new("run-02", st.TRAIN, after=["prep"], runs=[2]),
        st.Stage.new("collect", "collect", after=["run-01", "run-02"], dependency=st.AFTER_ANY),
    ]
    manifest = st.Manifest(
        name=name,
        id=st.new_id(),
        created=st.now(),
        backend="slurm",
        system="dgxa100_1x8",
        version="r2.1",
        inputs=st.Inputs(system="dgxa100_1x8", version="r2.1"),
        fingerprint="0123456789abcdef",
        runs_required=2,
        runs_per_job=1,
        stages=stages,
    )
    for item in stages:
        manifest.plan_attempt(item)
    manifest_io.save(paths.manifest, manifest)
    return paths, manifest


def finish(paths: layout.CampaignPaths, manifest: st.Manifest, slurm: Slurm) -> dict:
    def settled() -> bool:
        engine.refresh(paths, manifest, slurm)
        return not manifest.active_job_ids()

    wait_for(settled, 90, "the campaign's jobs to end")
    return {s.name: s.current for s in manifest.stages}


def test_prep_runs_and_collect_run_in_dependency_order(slurm_cluster, tmp_path: Path) -> None:
    slurm = Slurm(env=slurm_cluster.env)
    paths, manifest = hand_made_campaign(tmp_path, "order", prep_exit=0)
    assert engine.submit_planned(paths, manifest, slurm) == ["prep", "run-01", "run-02", "collect"]
    jobs = finish(paths, manifest, slurm)
    assert {name: job.state for name, job in jobs.items()} == dict.fromkeys(jobs, "completed")
    times = sacct_times(slurm_cluster.env, [job.job_id for job in jobs.values()])
    prep, run1, run2, collect = (times[jobs[n].job_id] for n in jobs)
    assert run1[1] >= prep[2] and run2[1] >= prep[2], "runs started before prep ended"
    assert collect[1] >= max(run1[2], run2[2]), "collect started before the runs ended"
    assert {s.name: s.verdict_of(s.runs[0]) for s in manifest.train_stages()} == {
        "run-01": "valid",
        "run-02": "valid",
    }


def test_failing_prep_cancels_its_dependents(slurm_cluster, tmp_path: Path) -> None:
    slurm = Slurm(env=slurm_cluster.env)
    paths, manifest = hand_made_campaign(tmp_path, "badprep", prep_exit=3)
    engine.submit_planned(paths, manifest, slurm)
    jobs = finish(paths, manifest, slurm)
    assert jobs["prep"].state == "failed"
    # --kill-on-invalid-dep=yes: the runs never start; collect (afterany) still runs.
    assert jobs["run-01"].state == jobs["run-02"].state == "cancelled"
    assert jobs["run-01"].start is None or jobs["run-01"].elapsed in ("00:00:00", None)
    assert jobs["collect"].state == "completed"
    assert engine.run_counts(manifest) == {"valid": 0, "coming": 0, "lost": 2}
    # resume: a new prep attempt and fresh runs after it, nothing else
    planned = engine.plan_resume(manifest)
    assert planned == ["prep", "run-03", "run-04", "collect"]


def test_two_node_job_runs_tasks_on_both_nodes(slurm_cluster, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    site = make_site(tmp_path, env={"FAKE_TRAIN_MARKERS": str(markers)})
    env = cli_env(tmp_path, slurm_cluster.env)
    hpcrepro(
        "submit",
        *SYSTEM,
        "--site",
        str(site),
        "--runs",
        "1",
        "--name",
        "twonode",
        "--set",
        "nodes=2",
        "--set",
        "gpus_per_node=2",
        env=env,
    )
    status = wait_for(all_finished("twonode", env), 90, "the two-node campaign")
    run = stage(status, "run-01")
    assert run["state"] == "completed"
    # NNodes is final at once; slurmdbd may show the node list of the first node for a moment
    assert sacct_nodes(slurm_cluster.env, run["job_id"]).split("|")[0] == "2"
    seen = sorted(path.name.split("-", 1)[1] for path in markers.iterdir())
    assert seen == ["0-node1", "1-node1", "2-node2", "3-node2"]
    assert run["verdicts"]["1"]["verdict"] == "valid"
    summary = json.loads((tmp_path / "logs" / "twonode" / "results" / "summary.json").read_text())
    assert summary["valid_runs"] == 1 and summary["complete"] is True
    report = (tmp_path / "logs" / "twonode" / "results" / "report.md").read_text()
    assert "logs/run-01_" in report  # the results area scored the campaign's log


def test_status_follows_real_states_and_resume_replaces_only_the_killed_run(
    slurm_cluster, tmp_path: Path
) -> None:
    hold = tmp_path / "hold"
    hold.write_text("")
    site = make_site(tmp_path, env={"FAKE_TRAIN_HOLD": str(hold)})
    env = cli_env(tmp_path, slurm_cluster.env)
    hpcrepro(
        "submit", *SYSTEM, "--site", str(site), "--runs", "2", "--name", "kill", *ONE_NODE, env=env
    )
    first = status_json("kill", env)
    assert stage(first, "collect")["state"] == "pending"
    running = wait_for(
        lambda: (
            (s := status_json("kill", env))
            and all(
                stage(s, r)["state"] == "running" and "epoch 1/" in stage(s, r)["note"]
                for r in ("run-01", "run-02")
            )
            and s
        ),
        60,
        "both runs running at epoch 1",
    )
    assert "Dependency" in stage(running, "collect")["note"]
    text = hpcrepro("status", "kill", env=env).stdout
    assert "running" in text and "pending" in text
    subprocess.run(
        ["scancel", stage(running, "run-02")["job_id"]], env=slurm_cluster.env, check=True
    )
    time.sleep(1)
    hold.unlink()
    done = wait_for(all_finished("kill", env), 90, "the campaign to end")
    assert stage(done, "run-01")["verdicts"]["1"]["verdict"] == "valid"
    run2 = stage(done, "run-02")
    assert run2["state"] == "cancelled" and run2["verdicts"]["2"]["verdict"] == "void"
    assert done["runs"] == {"valid": 1, "coming": 0, "lost": 1, "required": 2}

    resumed = hpcrepro("resume", "kill", env=env).stdout
    assert "submitted run-03, collect" in resumed
    final = wait_for(all_finished("kill", env), 90, "the replacement run")
    names = [row["stage"] for row in final["stages"]]
    assert names == ["run-01", "run-02", "run-03", "collect"]
    assert stage(final, "run-01")["attempts"] == 1  # the valid run was not touched
    assert stage(final, "run-03")["verdicts"]["3"]["verdict"] == "valid"
    assert stage(final, "collect")["attempts"] == 2
    assert final["runs"]["valid"] == 2
    assert "nothing to resubmit" in hpcrepro("resume", "kill", env=env).stdout


def _jobs_of(env: dict[str, str], root: Path, name: str) -> list[str]:
    """'stage.attempt' of every job Slurm knows for the campaign (by its unique token prefix)."""
    manifest = manifest_io.load(layout.CampaignPaths(root / "logs" / name).manifest)
    prefix = f"hpcrepro.{manifest.key}."
    out = subprocess.run(
        ["squeue", "-h", "--me", "-t", "all", "-o", "%j"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(line.removeprefix(prefix) for line in out.split() if line.startswith(prefix))


def test_concurrent_submits_make_one_set_of_jobs(slurm_cluster, tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = cli_env(tmp_path, slurm_cluster.env)
    results: list[Any] = [None] * 3

    def submit(slot: int) -> None:
        results[slot] = hpcrepro(
            "submit",
            *SYSTEM,
            "--site",
            str(site),
            "--runs",
            "2",
            "--name",
            "twice",
            *ONE_NODE,
            env=env,
            check=False,
        )

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    outputs = sorted(r.stdout.splitlines()[0] for r in results)
    assert outputs.count("campaign twice: already submitted: nothing to do") == 2
    assert _jobs_of(slurm_cluster.env, tmp_path, "twice") == ["collect.1", "run-01.1", "run-02.1"]
    wait_for(all_finished("twice", env), 90, "the campaign to end")


def test_crash_right_after_sbatch_leaves_no_duplicate(slurm_cluster, tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = cli_env(tmp_path, slurm_cluster.env)
    crashed = hpcrepro(
        "submit",
        *SYSTEM,
        "--site",
        str(site),
        "--runs",
        "2",
        "--name",
        "crash",
        *ONE_NODE,
        env=env | {engine.CRASH_HOOK: "run-02"},
        check=False,
    )
    assert crashed.returncode == 75
    left = manifest_io.load(layout.CampaignPaths(tmp_path / "logs" / "crash").manifest)
    assert [s.state for s in left.stages] == ["submitting"] * 3
    assert _jobs_of(slurm_cluster.env, tmp_path, "crash") == ["run-01.1", "run-02.1"]
    hpcrepro("resume", "crash", env=env)
    assert _jobs_of(slurm_cluster.env, tmp_path, "crash") == ["collect.1", "run-01.1", "run-02.1"]
    final = wait_for(all_finished("crash", env), 90, "the repaired campaign")
    assert final["runs"]["valid"] == 2


def test_sbatch_test_only_problems_are_clear_user_errors(slurm_cluster, tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = cli_env(tmp_path, slurm_cluster.env)
    # the site check (submit's first step) finds the unknown partition before sbatch does
    checked = hpcrepro("submit", *SYSTEM, "--site", str(site), "--name", "bad", *ONE_NODE,
                       "--set", "partition=nosuch", env=env, check=False)  # fmt: skip
    assert checked.returncode == 2 and "partition 'nosuch' is not one sinfo lists" in (
        checked.stderr
    )
    # without it, sbatch --test-only's refusal is the error (the site check is skipped so
    # that these reach sbatch)
    bad = hpcrepro(
        "submit",
        *SYSTEM,
        "--site",
        str(site),
        "--name",
        "bad",
        *ONE_NODE,
        "--set",
        "partition=nosuch",
        "--no-site-check",
        env=env,
        check=False,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "invalid partition specified: nosuch" in bad.stderr
    assert "sinfo" in bad.stderr  # the hint says where to look
    many = hpcrepro(
        "submit",
        *SYSTEM,
        "--site",
        str(site),
        "--name",
        "many",
        "--set",
        "nodes=3",
        "--set",
        "gpus_per_node=1",
        "--no-site-check",
        env=env,
        check=False,
    )
    assert many.returncode == 2 and "Node count specification invalid" in many.stderr
    long = hpcrepro(
        "submit",
        *SYSTEM,
        "--site",
        str(site),
        "--name",
        "long",
        *ONE_NODE,
        "--set",
        "partition=batch",
        "--set",
        "time_margin_minutes=500",
        env=env,
        check=False,
    )
    assert long.returncode == 2 and "time limit" in long.stderr.lower()
    assert not (tmp_path / "logs" / "bad" / "campaign.json").exists()


def test_sbatch_refusing_midway_keeps_what_was_submitted(slurm_cluster, tmp_path: Path) -> None:
    """A refusal after some jobs were queued (a per-user submit limit, which `sbatch --test-only`
    does not see, or here a partition) says how many jobs wait and what to do next."""
    slurm = Slurm(env=slurm_cluster.env)
    paths, manifest = hand_made_campaign(tmp_path, "midway", prep_exit=0)
    script = paths.scripts / "run-02.sbatch"
    script.write_text(script.read_text().replace("#SBATCH --time=5", "#SBATCH --partition=nosuch"))
    with pytest.raises(UserError) as caught:
        engine.submit_planned(paths, manifest, slurm)
    text = caught.value.render()
    assert "Invalid partition name specified" in text and "sinfo -s" in text
    assert "2 job(s) of campaign midway are already queued; run-02 and the stages after" in text
    assert "`hpcrepro resume midway`" in text and "`hpcrepro cancel midway`" in text
    saved = manifest_io.load(paths.manifest)
    assert [s.state for s in saved.stages] == [
        "pending",
        "pending",
        "submitting",
        "submitting",
    ]
    assert engine.repair(saved, slurm, paths)  # nothing under run-02's token: planned again
    assert [s.state for s in saved.stages][2:] == ["planned", "planned"]
    slurm.cancel(saved.active_job_ids())


def test_a_controller_that_does_not_answer_is_one_line(slurm_cluster, tmp_path: Path) -> None:
    dead = tmp_path / "dead.conf"
    dead.write_text(
        "\n".join(
            "SlurmctldPort=17999" if line.startswith("SlurmctldPort=") else line
            for line in slurm_cluster.conf.read_text().splitlines()
        )
    )
    site = make_site(tmp_path)
    env = cli_env(tmp_path, slurm_cluster.env) | {"SLURM_CONF": str(dead)}
    done = hpcrepro("submit", *SYSTEM, "--site", str(site), *ONE_NODE, env=env, check=False)
    assert done.returncode == 2
    first, hint = done.stderr.splitlines()
    assert first == "error: no Slurm controller answers: Slurmctld(primary) at vm is DOWN".replace(
        "vm", subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    )
    assert "--backend local" in hint


def test_runs_per_job_puts_several_runs_in_one_job(slurm_cluster, tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = cli_env(tmp_path, slurm_cluster.env)
    hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "3", "--runs-per-job", "2",
             "--name", "grouped", *ONE_NODE, env=env)  # fmt: skip
    status = wait_for(all_finished("grouped", env), 90, "the grouped campaign")
    assert [row["stage"] for row in status["stages"]] == ["runs-01-02", "run-03", "collect"]
    assert stage(status, "runs-01-02")["verdicts"].keys() == {"1", "2"}
    assert status["runs"] == {"valid": 3, "coming": 0, "lost": 0, "required": 3}
    script = (tmp_path / "logs" / "grouped" / "scripts" / "runs-01-02.sbatch").read_text()
    assert "readonly RUN_INDICES=(1 2)" in script


def test_hostile_log_folder_arrives_intact_and_never_runs(slurm_cluster, tmp_path: Path) -> None:
    hostile = tmp_path / "we ird 100% $(touch pwned) `touch pwned2`"
    site = make_site(tmp_path, log_dir=str(hostile))
    env = cli_env(tmp_path, slurm_cluster.env)
    hpcrepro("submit", *SYSTEM, "--site", str(site), "--runs", "1", "--name", "odd", *ONE_NODE,
             env=env)  # fmt: skip
    status = wait_for(all_finished("odd", env), 90, "the campaign in an odd folder")
    assert status["folder"] == str(hostile / "odd")
    assert status["runs"]["valid"] == 1
    outputs = sorted(p.name.split("-")[0] for p in (hostile / "odd" / "jobs").iterdir())
    assert outputs == ["collect", "run"]  # '%' reached sbatch as a literal percent sign
    assert not list(tmp_path.rglob("pwned*")) and not Path("pwned").exists()


def _conf_with(cluster, tmp_path: Path, name: str, **settings: str) -> dict[str, str]:
    """The test cluster's environment with some slurm.conf settings changed (a copy of the file):
    a controller port nobody listens on, or a slurmdbd port nobody listens on (accounting
    unavailable, as on a cluster without slurmdbd: sacct fails, squeue works)."""
    lines = [
        line
        for line in cluster.conf.read_text().splitlines()
        if line.split("=", 1)[0] not in settings
    ]
    conf = tmp_path / name
    conf.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in settings.items())]) + "\n")
    return cluster.env | {"SLURM_CONF": str(conf)}


def _bystander(env: dict[str, str], tmp_path: Path) -> str:
    """A job that belongs to no campaign (what a hostile job id must never reach)."""
    return subprocess.run(
        ["sbatch", "--parsable", "--job-name=bystander", "--time=2", f"--chdir={tmp_path}",
         "--output=/dev/null", "--wrap", "sleep 60"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip().split(";")[0]  # fmt: skip


def _squeue_state(env: dict[str, str], job_id: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], env=env, capture_output=True, text=True
    ).stdout.strip()


def test_a_job_id_that_is_an_option_never_reaches_scancel(slurm_cluster, tmp_path: Path) -> None:
    other = _bystander(slurm_cluster.env, tmp_path)
    paths, manifest = hand_made_campaign(tmp_path, "hostile", prep_exit=0)
    data = {"format": st.FORMAT, **manifest.to_json()}
    data["stages"][0]["jobs"][0].update(state="running", job_id="--user=root")
    paths.manifest.write_text(json.dumps(data))
    env = cli_env(tmp_path, slurm_cluster.env)
    done = hpcrepro("cancel", str(paths.root), env=env, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "stages[0].jobs[0].job_id should be a Slurm job id" in done.stderr
    assert _squeue_state(slurm_cluster.env, other) in ("PENDING", "RUNNING")
    subprocess.run(["scancel", other], env=slurm_cluster.env, check=True)


def test_cancel_that_slurm_does_not_carry_out_fails_and_changes_nothing(
    slurm_cluster, tmp_path: Path
) -> None:
    slurm = Slurm(env=slurm_cluster.env)
    paths, manifest = hand_made_campaign(tmp_path, "nocancel", prep_exit=0)
    script = paths.scripts / "prep.sbatch"
    script.write_text(script.read_text().replace("sleep 1", "sleep 60"))
    engine.submit_planned(paths, manifest, slurm)
    prep_id = manifest.stages[0].jobs[0].job_id or ""
    # A real controller that does not answer: nobody listens on its port (MessageTimeout=1 keeps
    # scancel's retries short). slurmdbd still answers, so the jobs are known to be active.
    dead = _conf_with(slurm_cluster, tmp_path, "dead.conf", SlurmctldPort="1", MessageTimeout="1")
    env = cli_env(tmp_path, dead)
    done = hpcrepro("cancel", str(paths.root), env=env, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "Slurm did not cancel the jobs: scancel: error: Kill job error on job id" in done.stderr
    assert "Unable to contact slurm controller" in done.stderr
    assert "cancelled" not in done.stdout
    left = manifest_io.load(paths.manifest)
    assert not left.cancelled
    assert _squeue_state(slurm_cluster.env, prep_id) in ("PENDING", "RUNNING")
    # the same command, once Slurm answers, cancels them; an id that already ended is fine
    again = hpcrepro("cancel", str(paths.root), env=cli_env(tmp_path, slurm_cluster.env))
    assert "cancelled 4 job(s)" in again.stdout
    assert manifest_io.load(paths.manifest).cancelled is True
    slurm.cancel(["999999", prep_id])  # Slurm never had 999999: nothing left to cancel


def _finished_run_log(path: Path) -> None:
    write_replayed_log(path, "r2.1", cache_clear=True)


def test_without_accounting_a_forgotten_job_becomes_unknown_and_watch_ends(
    slurm_cluster, tmp_path: Path
) -> None:
    """A job that ended and was purged (MinJobAge) is, for squeue, a job id it does not list;
    with accounting unavailable nothing else knows it. 888888 + the index stands for such jobs."""
    paths, manifest = hand_made_campaign(tmp_path, "forgot", prep_exit=0)
    prep, run1, run2, _ = (item.jobs[0] for item in manifest.stages)
    prep.state, prep.job_id = "completed", "888801"
    run1.state, run1.job_id, run1.scheduler_state = "running", "888802", "RUNNING"
    run1.elapsed, run1.nodes = "00:00:42", 1
    run2.state, run2.job_id = "pending", "888803"
    manifest_io.save(paths.manifest, manifest)
    _finished_run_log(paths.run_log(1))  # run 1 ran to run_stop; run 2 left no log
    env = cli_env(tmp_path, _conf_with(slurm_cluster, tmp_path, "noacct.conf",
                                       AccountingStoragePort="1"))  # fmt: skip
    done = hpcrepro(
        "status", str(paths.root), "--watch", "--json", env=env, timeout=30, check=False
    )
    assert done.returncode == 1, done.stderr  # run 2 is lost: `resume` must replace it
    lines = done.stdout.splitlines()
    assert len(lines) == 1  # nothing active after the first pass: watch ends at once
    (status,) = json.loads(lines[0])  # one compact JSON document per line
    assert stage(status, "run-01")["state"] == stage(status, "run-02")["state"] == "unknown"
    assert stage(status, "run-01")["verdicts"]["1"]["verdict"] == "valid"
    assert stage(status, "run-02")["verdicts"]["2"]["verdict"] == "not_run"
    saved = manifest_io.load(paths.manifest)
    job = saved.stages[1].jobs[0]
    assert job.elapsed == "00:00:42" and "ended, outcome unknown" in (job.reason or "")
    assert job.scheduler_state is None  # no longer RUNNING
    assert engine.plan_resume(saved) == ["run-03", "collect"]  # what resume replaces


def test_without_accounting_repair_resubmits_only_what_never_ran(
    slurm_cluster, tmp_path: Path
) -> None:
    """A submit killed right after sbatch leaves jobs `submitting`; without accounting a job
    that ran and was purged cannot be found by its token, so the campaign's files decide."""
    paths, manifest = hand_made_campaign(tmp_path, "repairoff", prep_exit=0)
    for item in manifest.stages:
        item.jobs[0].state = "submitting"
    (paths.job_output / "prep-777001.out").write_text("prep ran\n")
    _finished_run_log(paths.run_log(1))
    noacct = _conf_with(slurm_cluster, tmp_path, "noacct.conf", AccountingStoragePort="1")
    slurm = Slurm(env=noacct)
    assert engine.repair(manifest, slurm, paths)
    assert not slurm.names_complete
    prep, run1, run2, collect = (item.jobs[0] for item in manifest.stages)
    assert prep.state == "unknown" and prep.job_id == "777001"
    assert "prep-777001.out shows it ran" in (prep.reason or "")
    assert run1.state == "unknown" and "run-01.log shows it ran" in (run1.reason or "")
    assert run2.state == collect.state == "planned"  # no trace: sbatch never ran
    # with accounting answering, "not found" is trusted: everything is planned again
    manifest = hand_made_campaign(tmp_path, "repairon", prep_exit=0)[1]
    for item in manifest.stages:
        item.jobs[0].state = "submitting"
    repaired = Slurm(env=slurm_cluster.env)
    assert engine.repair(manifest, repaired, layout.CampaignPaths(tmp_path / "repairon"))
    assert repaired.names_complete
    assert {item.jobs[0].state for item in manifest.stages} == {"planned"}
