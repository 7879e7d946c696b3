"""The local backend's runner: a detached process that runs a campaign's jobs on this machine.

`python -m hpcrepro.campaign.runner CAMPAIGN_DIR`, in its own session so the user may close the
terminal, runs the pending jobs one after another in graph order with bash and writes each job's
state, pid, times and exit status into the manifest, where `hpcrepro status` reads them. Its
first act is to record itself; a runner that finds another live runner of the campaign exits, so
two never run one campaign. What it leaves behind when it dies is judged by the local backend
(`scheduler.local.Local.left_behind`); `CampaignLink` is what that backend knows of the campaign.

A job starts behind a gate: its small bash wrapper waits for one line on its stdin, which the
runner writes only after the job's pid is in the manifest. A runner killed before that closes the
pipe, and the job ends without running anything; so a job that runs is always recorded. The
wrapper writes the job's exit status next to its output (into a file the runner opened for it),
so when the runner dies later (kill -9, the OOM killer) `status` still sees the job running and
then its real end, `cancel` stops it, and the next runner (started by `resume`) waits for it
before running anything else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hpcrepro.campaign import engine
from hpcrepro.campaign import manifest as manifest_io
from hpcrepro.campaign import state as st
from hpcrepro.campaign.layout import CampaignPaths
from hpcrepro.campaign.state import Job, Manifest, Runner, Stage
from hpcrepro.errors import UserError
from hpcrepro.resources import package_pythonpath
from hpcrepro.scheduler import local, states

RUNNER_LOG = "local-runner.log"
CRASH_HOOK = "HPCREPRO_TEST_LOCAL_CRASH"  # test-only fault point: "STAGE" or "STAGE:recorded"
_WAIT_S = 1.0  # how often a runner looks whether a job left by an earlier runner has ended
_current: subprocess.Popen[bytes] | None = None  # the job this runner process runs now
# The job's first act: wait for the runner's go (its pid is recorded), then run the script and
# write its exit status into the file the runner opened for it (descriptor $2, closed for the
# script), so that nothing planted on the way to that file later can redirect the write.
_WRAPPER = (
    "status_fd=$2\n"
    'IFS= read -r gate && [ "$gate" = go ] || exit 125\n'
    "exec </dev/null\n"
    'bash "$1" {status_fd}>&-; status=$?; echo "$status" >&"$status_fd"; exit "$status"\n'
)


def _identity(pid: int) -> Runner:
    return Runner(pid=pid, start=local.process_start(pid), host=socket.gethostname())


class CampaignLink:
    """The campaign as the local backend sees it (`scheduler.local.LocalCampaign`); `manifest`
    is the object the caller changes and saves (None while a submit has not built it yet)."""

    def __init__(self, paths: CampaignPaths, manifest: Manifest | None) -> None:
        self.paths, self.manifest = paths, manifest

    @property
    def folder(self) -> Path:
        return self.paths.root

    @property
    def mark(self) -> str:
        return self.manifest.id if self.manifest else ""

    def runner(self) -> Runner | None:
        return self.manifest.local_runner if self.manifest else None

    def jobs(self) -> dict[str, local.LocalJob]:
        found: dict[str, local.LocalJob] = {}
        for stage, job in self.manifest.jobs() if self.manifest else ():
            if job.job_id:
                _, exit_file = self.paths.job_files(stage.name, job.job_id)
                found[job.job_id] = local.LocalJob(
                    job_id=job.job_id,
                    token=job.token,
                    state=job.state,
                    exit_file=f"jobs/{exit_file.name}",
                    start=job.start,
                    end=job.end,
                    nodes=job.nodes,
                    nodelist=job.nodelist,
                    pid=job.pid,
                )
        return found

    def start_runner(self) -> None:
        """Start the detached runner; record it in the manifest (the runner records itself too,
        first of all, in case this process dies before saving)."""
        from hpcrepro.safeopen import cannot_write, open_inside

        assert self.manifest is not None  # a runner is started for jobs that were submitted
        root = self.paths.root
        try:
            log = open_inside(root, f"jobs/{RUNNER_LOG}", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        except OSError as error:
            raise cannot_write(root / "jobs" / RUNNER_LOG, error) from None
        env = dict(os.environ, PYTHONPATH=package_pythonpath())
        env[local.RUNNER_MARK] = self.manifest.id
        env.pop(local.JOB_MARK, None)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "hpcrepro.campaign.runner", str(root)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=root,
            )
        finally:
            os.close(log)
        self.manifest.local_runner = _identity(process.pid)


def _next_job(manifest: Manifest) -> tuple[Stage, Job] | None:
    for stage in manifest.stages:
        if stage.current and stage.current.state == states.PENDING:
            return stage, stage.current
    return None


def run_campaign(campaign_dir: Path) -> None:
    """Run every pending job of the campaign, in graph order, until none is left; first wait for
    any job an earlier runner left running (one job at a time on this machine)."""
    paths = CampaignPaths(campaign_dir)
    host = socket.gethostname()
    if not _take_the_runner_slot(paths):
        return
    while True:
        with manifest_io.locked(paths.lock):
            manifest = manifest_io.load(paths.manifest)
            waiting = _settle_left_behind(paths, manifest)
            found = None if manifest.cancelled or waiting else _next_job(manifest)
            if found is None and not waiting:
                manifest.local_runner = None
                manifest_io.save(paths.manifest, manifest)
                return
            if found is not None:
                stage, job = found
                _, blocked = manifest.dependency_ids(stage)
                if blocked:
                    job.state, job.reason, job.end = states.BLOCKED, blocked, st.now()
                else:
                    try:
                        script = paths.stage_script(stage)
                    except UserError as error:  # a script changed by hand: never run
                        job.state, job.reason, job.end = states.FAILED, error.message, st.now()
                if job.state != states.PENDING:
                    engine.judge_runs(paths, manifest)
                    manifest_io.save(paths.manifest, manifest)
                    continue
                job.state, job.start, job.nodes, job.nodelist = states.RUNNING, st.now(), 1, host
                job.pid = None
                manifest_io.save(paths.manifest, manifest)
        if found is None:
            time.sleep(_WAIT_S)
            continue
        assert job.job_id is not None  # pending: submitted, so it has its id
        _run_job(paths, stage.name, job.job_id, script)


def _take_the_runner_slot(paths: CampaignPaths) -> bool:
    """Record this process as the campaign's runner, its first act; False (and nothing done)
    when another runner of the campaign is alive."""
    with manifest_io.locked(paths.lock):
        manifest = manifest_io.load(paths.manifest)
        recorded = manifest.local_runner
        if (recorded is None or recorded.pid != os.getpid()) and local.runner_alive(
            recorded, manifest.id
        ):
            return False
        manifest.local_runner = _identity(os.getpid())
        manifest_io.save(paths.manifest, manifest)
    return True


def _current_job(manifest: Manifest, stage: str) -> Job:
    job = manifest.by_name()[stage].current
    assert job is not None  # the runner only runs a stage that has a job
    return job


def _run_job(paths: CampaignPaths, stage: str, job_id: str, script: Path) -> None:
    """Start one job behind its gate, record its pid, open the gate, wait, record its end."""
    from hpcrepro.safeopen import open_inside

    global _current
    output, status_file = paths.job_files(stage, job_id)
    writing = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        out = open_inside(paths.root, f"jobs/{output.name}", writing)
        try:
            done = open_inside(paths.root, f"jobs/{status_file.name}", writing)
        except OSError:
            os.close(out)
            raise
    except OSError as error:  # jobs/ replaced by a link, a folder at the file's name, no room
        with manifest_io.locked(paths.lock):
            manifest = manifest_io.load(paths.manifest)
            job = _current_job(manifest, stage)
            job.state, job.end = states.FAILED, st.now()
            job.reason = (
                f"its output {output} cannot be written "
                f"({error.strerror or error}): the job was not started"
            )
            engine.judge_runs(paths, manifest)
            manifest_io.save(paths.manifest, manifest)
        return
    gate, opener = os.pipe()
    env = dict(os.environ, HPCREPRO_LOCAL="1", PYTHONPATH=package_pythonpath())
    env.pop(local.RUNNER_MARK, None)
    env[local.JOB_MARK] = job_id
    try:
        _current = subprocess.Popen(
            ["bash", "-c", _WRAPPER, "hpcrepro-job", str(script), str(done)],
            stdin=gate,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(done,),
            env=env,
            cwd=paths.root,
            start_new_session=True,  # its own process group, which cancel can kill
        )
    finally:
        for fd in (gate, out, done):
            os.close(fd)
    crash = os.environ.get(CRASH_HOOK, "")
    if crash == stage:
        os._exit(75)
    with manifest_io.locked(paths.lock):
        manifest = manifest_io.load(paths.manifest)
        job = _current_job(manifest, stage)
        job.pid, job.pid_start = _current.pid, local.process_start(_current.pid)
        manifest_io.save(paths.manifest, manifest)
    if crash == f"{stage}:recorded":
        os._exit(75)
    with contextlib.suppress(BrokenPipeError):
        os.write(opener, b"go\n")
    os.close(opener)
    status = _current.wait()
    _current = None
    with manifest_io.locked(paths.lock):
        manifest = manifest_io.load(paths.manifest)
        job = _current_job(manifest, stage)
        if job.state == states.RUNNING:
            job.state = states.COMPLETED if status == 0 else states.FAILED
            job.end, job.exit_code = st.now(), f"{status}:0"
            engine.judge_runs(paths, manifest)
            manifest_io.save(paths.manifest, manifest)


def _settle_left_behind(paths: CampaignPaths, manifest: Manifest) -> bool:
    """Record the end of jobs an earlier runner left running (saved here); True while one of
    them still runs."""
    backend = local.Local(CampaignLink(paths, manifest))
    recorded = CampaignLink(paths, manifest).jobs()
    running = local.marked_processes(local.JOB_MARK)
    infos = {}
    still_running = False
    for stage in manifest.stages:
        job = stage.current
        if job is None or job.state != states.RUNNING or not job.job_id:
            continue
        info = backend.left_behind(recorded[job.job_id], running)
        if info is None:
            still_running = True
        else:
            infos[job.job_id] = info
    if infos:
        engine.apply_infos(paths, manifest, infos)
        manifest_io.save(paths.manifest, manifest)
    return still_running


def _on_terminate(signum: int, frame: object) -> None:
    """Cancel: stop the job being run (its own process group) with the runner."""
    if _current is not None and _current.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(_current.pid, signal.SIGTERM)
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_terminate)
    try:
        run_campaign(Path(sys.argv[1]))
    except UserError as error:  # a full disk, a damaged manifest: said in the runner's log
        print(f"hpcrepro local runner: {error.render()}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"hpcrepro local runner: {error}", file=sys.stderr)
        sys.exit(2)
