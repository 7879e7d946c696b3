"""Campaign rules that need no cluster: manifest and lock, verdicts, resume planning, dry run,
the missing-Slurm message, and the local backend running the whole graph on this machine."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    write_replayed_log,
)
from hpcrepro.campaign import engine, verdict
from hpcrepro.campaign import manifest as manifest_io
from hpcrepro.campaign import state as st
from hpcrepro.errors import UserError
from hpcrepro.image.cache import file_name

MLLOG = (
    ':::MLLOG {{"namespace": "", "time_ms": 1, "event_type": "{kind}", "key": "{key}", '
    '"value": {value}, "metadata": {meta}}}\n'
)


def mllog(key: str, value: object = None, **meta: object) -> str:
    return MLLOG.format(
        kind="POINT_IN_TIME", key=key, value=json.dumps(value), meta=json.dumps(meta)
    )


# --- manifest and lock


def _bump(lock: str, path: str, times: int) -> None:
    for _ in range(times):
        with manifest_io.locked(Path(lock)):
            data = manifest_io.load(Path(path))
            data.extra["count"] += 1  # a key this version does not know is kept
            manifest_io.save(Path(path), data)


def test_locked_read_modify_write_loses_no_update(tmp_path: Path) -> None:
    path, lock = tmp_path / "campaign.json", tmp_path / ".lock"
    manifest_io.save(path, st.from_json({**sample_manifest(), "count": 0}))
    workers = [
        multiprocessing.Process(target=_bump, args=(str(lock), str(path), 25)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert manifest_io.load(path).extra["count"] == 100
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_lock_left_by_a_killed_process_is_broken(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    code = (
        "import os, sys; from pathlib import Path; from hpcrepro.campaign import manifest as m\n"
        f"held = m.locked(Path({str(lock)!r})); held.__enter__(); os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert lock.exists()
    with manifest_io.locked(lock, timeout=10):
        pass


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": 1, "stages": [', "invalid JSON"),
        ("[]", "not a campaign manifest"),
        ('{"format": 1, "name": "c"}', "damaged manifest: id is missing"),
    ],
)
def test_damaged_manifest_is_a_user_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "campaign.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        manifest_io.load(path)


# --- verdicts from the MLPerf log


def _log(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "run-01.log"
    path.write_text("hpcrepro: run-01 starting\n" + "".join(lines))
    return path


def test_verdict_comes_from_the_log_not_the_exit_code(tmp_path: Path) -> None:
    good = tmp_path / "good.log"
    write_replayed_log(good, "r4.0", cache_clear=True)
    assert verdict.judge(good, "failed", "4.0.0")[0] == verdict.VALID  # a later step failed
    uncleared = tmp_path / "uncleared.log"
    write_replayed_log(uncleared, "r4.0", cache_clear=False)
    outcome, reason = verdict.judge(uncleared, "completed", "4.0.0")
    assert outcome == verdict.INVALID and "cache_clear" in reason  # what collect would say
    aborted = _log(
        tmp_path,
        mllog("run_start"),
        mllog("eval_accuracy", 0.7612, epoch_num=37),
        mllog("run_stop", status="aborted"),
    )
    assert verdict.judge(aborted, "completed", "4.0.0") == (
        verdict.INVALID,
        "run_stop status aborted",
    )
    short = _log(
        tmp_path,
        mllog("run_start"),
        mllog("eval_accuracy", 0.74, epoch_num=37),
        mllog("run_stop", status="success"),
    )
    assert verdict.judge(short, "completed", "4.0.0")[0] == verdict.INVALID


@pytest.mark.parametrize("state", ["timeout", "node_fail", "out_of_memory", "cancelled", "failed"])
def test_a_run_cut_short_is_void(tmp_path: Path, state: str) -> None:
    cut = _log(
        tmp_path,
        mllog("run_start"),
        mllog("eval_accuracy", 0.5, epoch_num=4),
        '::MLLOG {"namespace": "", "time_ms"',
    )
    assert verdict.judge(cut, state, "4.0.0")[0] == verdict.VOID


@pytest.mark.parametrize("state", ["preempted", "requeued"])
def test_preempted_or_requeued_is_void_even_with_a_good_log(tmp_path: Path, state: str) -> None:
    good = _log(
        tmp_path,
        mllog("run_start"),
        mllog("eval_accuracy", 0.77, epoch_num=37),
        mllog("run_stop", status="success"),
    )
    assert verdict.judge(good, state, "4.0.0")[0] == verdict.VOID


def test_progress_reads_a_growing_log(tmp_path: Path) -> None:
    log = _log(tmp_path, mllog("run_start"), mllog("eval_accuracy", 0.61, epoch_num=12))
    outcome = verdict.live_progress(log)
    assert (outcome.started, outcome.stopped, outcome.epoch, outcome.last_accuracy) == (
        True,
        False,
        12.0,
        0.61,
    )
    assert verdict.judge(tmp_path / "missing.log", "blocked", "4.0.0")[0] == verdict.NOT_RUN


# --- planning a resume


def _campaign(runs: list[tuple[str, str]], collect_state: str = "completed") -> st.Manifest:
    """A manifest with finished training stages given as (job state, verdict)."""
    manifest = st.Manifest(
        name="c",
        id="abc123",
        created=st.now(),
        backend="slurm",
        inputs=st.Inputs(system="dgxa100_1x8", version="r2.1"),
        fingerprint="0123456789abcdef",
        runs_required=len(runs),
        runs_per_job=1,
    )
    for index, (state, outcome) in enumerate(runs, start=1):
        stage_ = st.Stage.new(f"run-{index:02d}", st.TRAIN, runs=[index])
        job = manifest.plan_attempt(stage_)
        job.state, job.job_id = state, str(100 + index)
        stage_.verdicts[index] = st.Verdict(verdict=outcome, reason="", job_id=job.job_id)
        manifest.stages.append(stage_)
    collect = st.Stage.new(
        "collect", "collect", after=[s.name for s in manifest.stages], dependency=st.AFTER_ANY
    )
    job = manifest.plan_attempt(collect)
    job.state, job.job_id = collect_state, "200"
    manifest.stages.append(collect)
    return manifest


def test_resume_replaces_only_lost_runs_with_fresh_indices() -> None:
    manifest = _campaign(
        [
            ("completed", "valid"),
            ("timeout", "void"),
            ("completed", "valid"),
            ("completed", "invalid"),
            ("completed", "valid"),
        ]
    )
    assert engine.plan_resume(manifest) == ["run-06", "run-07", "collect"]
    by = manifest.by_name()
    assert by["run-06"].replaces == ["run-02"] and by["run-07"].replaces == ["run-04"]
    assert [s.name for s in manifest.stages][-1] == "collect"
    assert by["collect"].after == [f"run-{i:02d}" for i in range(1, 8)]
    assert len(by["collect"].jobs) == 2 and len(by["run-01"].jobs) == 1
    assert engine.plan_resume(manifest) == []  # replacements are planned: nothing more to do


def test_resume_with_enough_valid_runs_does_nothing() -> None:
    manifest = _campaign([("completed", "valid"), ("completed", "valid")])
    assert engine.plan_resume(manifest) == []


def test_resume_groups_replacements_by_runs_per_job() -> None:
    manifest = _campaign([("timeout", "void"), ("failed", "void"), ("failed", "void")])
    manifest.runs_per_job = 2
    assert engine.plan_resume(manifest) == ["runs-04-05", "run-06", "collect"]


def test_blocked_dependents_are_not_submitted() -> None:
    manifest = _campaign([("completed", "valid")])
    prep = st.Stage.new("prep", "prep")
    job = manifest.plan_attempt(prep)
    job.state, job.job_id = "failed", "99"
    manifest.stages.insert(0, prep)
    run = manifest.by_name()["run-01"]
    run.after = ["prep"]
    assert manifest.dependency_ids(run) == ([], "prep ended failed")
    job.state = "running"
    assert manifest.dependency_ids(run) == (["99"], None)
    job.state = "completed"
    assert manifest.dependency_ids(run) == ([], None)  # done: no dependency on a gone job


# --- command line without Slurm


SLURM_TOOLS = {"sbatch", "srun", "salloc", "squeue", "sacct", "scancel", "scontrol", "sinfo"}


def _no_slurm_env(tmp_path: Path) -> dict[str, str]:
    """This machine's tools minus Slurm's: a PATH of links to /usr/bin and /bin without them."""
    tools = tmp_path / "bin"
    if not tools.exists():
        tools.mkdir()
        for folder in (Path(sys.executable).parent, Path("/usr/bin"), Path("/bin")):
            for tool in folder.iterdir():
                link = tools / tool.name
                if tool.name not in SLURM_TOOLS and not link.exists():
                    link.symlink_to(tool)
    env = cli_env(tmp_path)
    env["PATH"] = str(tools)
    env.pop("SLURM_CONF", None)
    return env


def test_submit_without_slurm_says_so_in_one_line(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    done = hpcrepro(
        "submit", *SYSTEM, "--site", str(site), env=_no_slurm_env(tmp_path), check=False
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    first, hint = done.stderr.splitlines()
    assert first == "error: no Slurm here: 'sbatch' is not on PATH"
    assert "--backend local" in hint


def test_dry_run_prints_the_graph_and_exact_sbatch_lines(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    done = hpcrepro(
        "submit",
        *SYSTEM,
        "--site",
        str(site),
        "--runs",
        "2",
        "--name",
        "dry",
        "--dry-run",
        env=_no_slurm_env(tmp_path),
    )
    lines = done.stdout.splitlines()
    assert "sbatch --test-only" in lines[0]  # it says the check was skipped, and why
    assert lines[2] == "# graph: run-01; run-02; collect (afterany run-01, run-02)"
    assert lines[3] == f"# dataset: {str(tmp_path / 'data')!r} is prepared: no prep stage"
    folder = tmp_path / "logs" / "dry"
    # only the attempt's name and the dependency are on the command line: the script carries the
    # rest, so the reviewed script submitted by hand is the same job
    assert lines[4].startswith("job_run_01=$(sbatch --parsable --job-name=hpcrepro.dry.")
    assert lines[4].endswith(f".run-01.1 {folder}/scripts/run-01.sbatch)")
    run_script = (folder / "scripts" / "run-01.sbatch").read_text()
    for option in (f"--output={folder}/jobs/run-01-%j.out", "--no-requeue", "--export=NONE"):
        assert f"#SBATCH {option}\n" in run_script
    assert lines[6].endswith(
        '"--dependency=afterany:$job_run_01:$job_run_02" --kill-on-invalid-dep=yes '
        f"{folder}/scripts/collect.sbatch)"
    )
    assert not (folder / "campaign.json").exists()  # nothing submitted, no campaign recorded
    assert (folder / "scripts" / "run-02.sbatch").is_file()  # the scripts are there to review
    assert "no campaigns yet" in hpcrepro("status", env=_no_slurm_env(tmp_path)).stdout


def test_missing_dataset_files_are_named(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    (tmp_path / "data" / "val.idx").unlink()
    done = hpcrepro(
        "submit",
        *SYSTEM,
        "--site",
        str(site),
        "--backend",
        "local",
        env=_no_slurm_env(tmp_path),
        check=False,
    )
    assert done.returncode == 2 and "val.idx is missing" in done.stderr


def test_unknown_campaign_lists_close_names(tmp_path: Path) -> None:
    done = hpcrepro("status", "nosuch", env=_no_slurm_env(tmp_path), check=False)
    assert done.returncode == 2 and "no campaign 'nosuch'" in done.stderr


# --- local backend


def test_local_backend_runs_the_same_graph_without_slurm(tmp_path: Path) -> None:
    site = make_site(tmp_path, env={"FAKE_TRAIN_MARKERS": str(tmp_path)})
    env = _no_slurm_env(tmp_path)
    out = hpcrepro(
        "submit",
        *SYSTEM,
        "--site",
        str(site),
        "--runs",
        "2",
        "--name",
        "here",
        "--set",
        "nodes=1",
        "--set",
        "gpus_per_node=2",
        "--backend",
        "local",
        env=env,
    ).stdout
    assert "submitted 3 job(s)" in out
    status = wait_for(all_finished("here", env), 60, "the local campaign")
    assert [row["state"] for row in status["stages"]] == ["completed"] * 3
    assert status["runs"] == {"valid": 2, "coming": 0, "lost": 0, "required": 2}
    assert stage(status, "run-01")["job_id"].startswith("local:")
    summary = json.loads((tmp_path / "logs" / "here" / "results" / "summary.json").read_text())
    assert [run["verdict"] for run in summary["runs"]] == ["valid", "valid"]
    text = hpcrepro("status", "here", env=env).stdout
    assert "runs: 2/2 valid" in text and "run 01 valid" in text
    # a second submit is idempotent, for the local backend too
    again = hpcrepro(
        "submit",
        *SYSTEM,
        "--site",
        str(site),
        "--runs",
        "2",
        "--name",
        "here",
        "--set",
        "nodes=1",
        "--set",
        "gpus_per_node=2",
        "--backend",
        "local",
        env=env,
    ).stdout
    assert "already submitted" in again
    # a campaign whose manifest was damaged is named in a warning and hides no other campaign
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "campaign.json").write_text("[]")
    (Path(env["HPCREPRO_STATE_DIR"]) / "campaigns" / "broken").write_text(f"{broken}\n")
    listed = hpcrepro("status", env=env)
    assert "runs: 2/2 valid" in listed.stdout
    assert "warning: campaign broken is left out" in listed.stderr
    assert "not a campaign manifest" in listed.stderr
    only_broken = {**env, "HPCREPRO_STATE_DIR": str(tmp_path / "other-state")}
    (tmp_path / "other-state" / "campaigns").mkdir(parents=True)
    (tmp_path / "other-state" / "campaigns" / "broken").write_text(f"{broken}\n")
    alone = hpcrepro("status", env=only_broken)
    assert "campaign broken is left out" in alone.stderr and "no campaigns yet" not in alone.stdout


def test_local_cancel_stops_the_runner_and_resume_finishes(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.write_text("")
    site = make_site(tmp_path, env={"FAKE_TRAIN_HOLD": str(hold)})
    env = _no_slurm_env(tmp_path)
    hpcrepro(
        "submit",
        *SYSTEM,
        "--site",
        str(site),
        "--runs",
        "2",
        "--name",
        "stop",
        "--set",
        "nodes=1",
        "--set",
        "gpus_per_node=1",
        "--backend",
        "local",
        env=env,
    )
    wait_for(
        lambda: "epoch 1" in stage(status_json("stop", env), "run-01")["note"],
        60,
        "run-01 to start",
    )
    assert "cancelled 3 job(s)" in hpcrepro("cancel", "stop", env=env).stdout
    status = status_json("stop", env)
    assert [row["state"] for row in status["stages"]] == ["cancelled"] * 3
    assert stage(status, "run-01")["verdicts"]["1"]["verdict"] == "void"
    hold.unlink()
    # the cancelled run is void, the one that never started is replaced too
    assert "submitted run-03, run-04, collect" in hpcrepro("resume", "stop", env=env).stdout
    final = wait_for(all_finished("stop", env), 60, "the resumed local campaign")
    assert final["runs"]["valid"] == 2


# --- image stage, watch, start-up


def test_registry_image_gets_one_import_stage_and_runs_use_the_cached_file(tmp_path: Path) -> None:
    site = make_site(
        tmp_path,
        runtime="pyxis",
        image="nvcr.io/nvidia/mxnet:23.04-py3",
        image_cache_dir=str(tmp_path / "cache"),
        train_command=None,
    )
    done = hpcrepro(
        "submit",
        "--system",
        "dgxa100_8x8",
        "--version",
        "r3.0",
        "--site",
        str(site),
        "--name",
        "img",
        "--dry-run",
        env=_no_slurm_env(tmp_path),
    )
    assert "# graph: image; run-01 (afterok image);" in done.stdout
    assert '"--dependency=afterok:$job_image" --kill-on-invalid-dep=yes' in done.stdout
    scripts = tmp_path / "logs" / "img" / "scripts"
    source = "nvcr.io#nvidia/mxnet:23.04-py3"  # what pyxis pulls; hashed into the cache name
    cached = tmp_path / "cache" / file_name(source, f"registry pyxis {source}", ".sqsh")
    assert cached.name.startswith("nvcr.io_nvidia_mxnet_23.04-py3-")
    image_script = (scripts / "image.sbatch").read_text()
    assert "enroot import --output \"$PARTIAL\" 'docker://nvcr.io#nvidia/mxnet:23.04-py3'" in (
        image_script
    )
    assert f"readonly TARGET={cached}" in image_script and "--exclusive" not in image_script
    assert f"readonly IMAGE={cached}" in (scripts / "run-05.sbatch").read_text()
    for script in scripts.iterdir():
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
    # the stage scripts of this area pass shellcheck (Debian package shellcheck)
    check = subprocess.run(
        ["shellcheck", str(scripts / "image.sbatch"), str(scripts / "collect.sbatch")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout
    # once the image is cached, a new campaign has no image stage
    cached.parent.mkdir()
    cached.write_bytes(b"sqsh")
    again = hpcrepro(
        "submit",
        "--system",
        "dgxa100_8x8",
        "--version",
        "r3.0",
        "--site",
        str(site),
        "--name",
        "img2",
        "--dry-run",
        env=_no_slurm_env(tmp_path),
    )
    assert (
        "# graph: run-01; run-02;" in again.stdout
        and "image" not in again.stdout.split("# graph:")[1].splitlines()[0]
    )


def test_watch_ends_when_every_job_has_ended(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    env = _no_slurm_env(tmp_path)
    hpcrepro(
        "submit",
        *SYSTEM,
        "--site",
        str(site),
        "--runs",
        "1",
        "--name",
        "w",
        "--set",
        "nodes=1",
        "--set",
        "gpus_per_node=1",
        "--backend",
        "local",
        env=env,
    )
    out = hpcrepro("status", "w", "--watch", env=env, timeout=90).stdout
    # piped, the watch prints what changed, one line each, ending with the runs judged
    assert "w  runs: 1/1 valid" in out and "w run 01 valid" in out and "(updated" not in out


@pytest.mark.parametrize("argv", [["--help"], ["status"]])
def test_fast_commands_import_no_heavy_module(tmp_path: Path, argv: list[str]) -> None:
    """`hpcrepro --help` and `status` must start in well under 0.3 s: run them for real (the CLI
    framework's own per-option machinery included) and list the heavy modules they loaded."""
    code = (
        "import sys\n"
        "from hpcrepro import cli\n"
        f"sys.argv = ['hpcrepro', *{argv!r}]\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "heavy = {'pydantic', 'jinja2', 'yaml', 'mlperf_logging', 'submitit', 'filelock'}\n"
        "print(sorted(heavy & set(sys.modules)), file=sys.stderr)"
    )
    env = {**os.environ, "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr


def test_a_prep_manifest_that_disagrees_with_the_files_stops_submit(tmp_path: Path) -> None:
    """With the prep area installed, its manifest is the judge of a prepared data set."""
    prep_verify = pytest.importorskip("hpcrepro.prep.verify")
    site = make_site(tmp_path)
    data = tmp_path / "data"
    files = {name: prep_verify.file_entry(data / name) for name in ("train.rec", "val.rec")}
    prep_verify.write_manifest(data, {}, files, {"kind": "test"})
    (data / "val.rec").write_bytes(b"\0" * 3)  # truncated after prep
    done = hpcrepro("submit", *SYSTEM, "--site", str(site), "--backend", "local",
                    env=_no_slurm_env(tmp_path), check=False)  # fmt: skip
    assert done.returncode == 2
    assert "val.rec has 3 bytes, the manifest says 16" in done.stderr
