"""The local backend: the same stage graph, run on this machine in dependency order.

`submit` only marks jobs pending in the manifest; a detached runner process
(`python -m hpcrepro.scheduler.local CAMPAIGN_DIR`, in its own session so the user may close the
terminal) runs them one after another with bash and writes each job's state, pid, times and exit
status into the manifest, where `hpcrepro status` reads them.

Every process is known by a mark in its environment, which its children inherit: the runner
carries `HPCREPRO_LOCAL_RUNNER=<campaign id>`, each job `HPCREPRO_LOCAL_JOB=<job id>`. A pid read
from the manifest is acted on only when the process behind it carries the right mark, so a pid
edited by hand (or reused by the system) is never signalled, and `cancel` finds a job's processes
even when one left the job's process group (a daemon that called setsid).

A job starts behind a gate: its small bash wrapper waits for one line on its stdin, which the
runner writes only after the job's pid is in the manifest. A runner killed before that closes the
pipe, and the job ends without running anything; so a job that runs is always recorded. The
wrapper writes the job's exit status next to its output (into a file the runner opened for it),
so when the runner dies later (kill -9, the OOM killer) `status` still sees the job running and
then its real end, `cancel` stops it, and the next runner (started by `resume`) waits for it
before running anything else.

`cancel` sends SIGTERM, and SIGKILL to what is left after a grace period (10 s, or
`$HPCREPRO_CANCEL_GRACE_S`); what even SIGKILL leaves is reported, not called cancelled.
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
from typing import Any

from hpcrepro.errors import UserError
from hpcrepro.scheduler import states
from hpcrepro.scheduler.slurm import JobInfo

RUNNER_LOG = "local-runner.log"
JOB_MARK = "HPCREPRO_LOCAL_JOB"
RUNNER_MARK = "HPCREPRO_LOCAL_RUNNER"
GRACE_ENV = "HPCREPRO_CANCEL_GRACE_S"
GRACE_S = 10.0
CRASH_HOOK = "HPCREPRO_TEST_LOCAL_CRASH"  # test-only fault point: "STAGE" or "STAGE:recorded"
_KILL_WAIT_S = 5.0  # how long processes may take to vanish after SIGKILL
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


def package_pythonpath() -> str:
    """PYTHONPATH that lets a child process import this very hpcrepro (checkout or install)."""
    root = str(Path(__file__).resolve().parents[2])
    current = os.environ.get("PYTHONPATH")
    return f"{root}:{current}" if current else root


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22): a pid that
    was reused has another start time. None when there is no such process."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (state first), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _marks(pid: int | str, name: str) -> str | None:
    """The value of environment variable `name` that process `pid` started with, None when it
    has none or cannot be read (another user's process, gone, a zombie)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read()
    except OSError:
        return None
    prefix = f"{name}=".encode()
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def marked_processes(name: str) -> dict[str, list[int]]:
    """Every live process carrying environment variable `name`, by its value (one pass over
    /proc; zombies left out: they have ended)."""
    found: dict[str, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        value = _marks(entry.name, name)
        if value is None:
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X"):
            found.setdefault(value, []).append(int(entry.name))
    return found


def job_id_of(token: str) -> str:
    """The id of the local job with this token: what its processes are marked with."""
    return "local:" + token.removeprefix("hpcrepro.")


def job_processes(job_id: str) -> list[int]:
    """The live processes of local job `job_id` (the wrapper, the script, and all they started)."""
    return marked_processes(JOB_MARK).get(job_id, [])


def pid_alive(pid: int | None) -> bool:
    """Whether `pid` is a live process (a zombie counts as gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    return fields is None or fields[0] not in ("Z", "X")


def _read_status(root: Path, relative: str) -> int | None:
    """The exit status the job wrapper wrote, None when it wrote none (the job was killed) or
    the file is not a plain file of a few bytes (never followed through a link, never a FIFO)."""
    from hpcrepro.safeopen import open_inside

    try:
        fd = open_inside(root, relative, os.O_RDONLY)
    except OSError:
        return None
    try:
        return int(os.read(fd, 32).strip())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def _now() -> str:
    from hpcrepro.campaign import stages as st

    return st.now()


def grace_seconds() -> float:
    """How long `cancel` waits after SIGTERM before SIGKILL (`$HPCREPRO_CANCEL_GRACE_S`)."""
    text = os.environ.get(GRACE_ENV)
    if text is None:
        return GRACE_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise UserError(
            f"{GRACE_ENV}={text[:40]!r} is not a number of seconds from 0 to 3600",
            where=f"environment variable {GRACE_ENV}",
            hint=f"unset it for the default of {GRACE_S:.0f} s",
        )
    return value


class Local:
    """Backend object with the Slurm backend's interface, for this machine."""

    name = "local"
    names_complete = True  # local jobs exist only in the manifest
    patience = 0.0  # it always answers

    def __init__(self, manifest: dict[str, Any], root: Path | None = None) -> None:
        self.manifest = manifest
        self.root = root
        self.commands: list[str] = []
        # what the last cancel had to do beyond SIGTERM, and what it could not stop
        self.notes: list[str] = []
        self.survivors: dict[str, str] = {}

    def submit(self, script: Path, args: list[str]) -> str:
        return job_id_of(next(a.split("=", 1)[1] for a in args if a.startswith("--job-name=")))

    def test_only(self, script: Path, args: list[str]) -> None:
        from hpcrepro.scheduler.slurm import SubmitError

        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SubmitError(script, done.stderr, test_only=True)

    def _runner(self) -> dict[str, Any]:
        return self.manifest.get("local_runner") or {}

    def runner_alive(self) -> bool:
        """Whether the recorded runner runs: same host, same start time, and the process carries
        this campaign's runner mark (a pid edited by hand is no runner)."""
        runner = self._runner()
        if runner.get("host") != socket.gethostname() or not pid_alive(runner.get("pid")):
            return False
        pid = int(runner["pid"])
        started = runner.get("start")
        if started is not None and process_start(pid) not in (None, started):
            return False
        return _marks(pid, RUNNER_MARK) == self.manifest["id"]

    def query(self, job_ids: list[str]) -> dict[str, JobInfo]:
        """The runner keeps the manifest current; only a runner that died is news here."""
        if self.runner_alive():
            return {}
        host = self._runner().get("host")
        if host and host != socket.gethostname():
            return {}  # another machine's runner: cannot tell from here
        found: dict[str, JobInfo] = {}
        running = marked_processes(JOB_MARK)
        for stage in self.manifest["stages"]:
            for job in stage["jobs"]:
                if job["job_id"] in job_ids:
                    info = self.left_behind(stage["name"], job, running)
                    if info is not None:
                        found[job["job_id"]] = info
        return found

    def left_behind(
        self, stage: str, job: dict[str, Any], running: dict[str, list[int]]
    ) -> JobInfo | None:
        """What became of a job whose runner is gone: None while a process of it still runs (on
        another host: cannot be told), else its end from the exit file it left, or failed."""
        if job["state"] == states.RUNNING and (
            job.get("nodelist") not in (None, socket.gethostname()) or running.get(job["job_id"])
        ):
            return None
        common = {
            "job_id": job["job_id"],
            "name": job["token"],
            "start": job.get("start"),
            "nodes": job.get("nodes"),
            "nodelist": job.get("nodelist"),
        }
        if job["state"] != states.RUNNING or not job.get("pid"):
            # never started: a job runs only once its pid is recorded (the gate)
            return JobInfo(
                **common,
                state=states.FAILED,
                slurm_state="RUNNER_GONE",
                end=job.get("end") or _now(),
                reason="the local runner process ended before this job ran",
            )
        status = None
        if self.root is not None:
            from hpcrepro.campaign.layout import CampaignPaths

            _, exit_file = CampaignPaths(self.root).job_files(stage, job["job_id"])
            status = _read_status(self.root, f"jobs/{exit_file.name}")
        if status is None:
            return JobInfo(
                **common,
                state=states.FAILED,
                slurm_state="RUNNER_GONE",
                end=job.get("end") or _now(),
                reason="the local runner and this job ended; no exit status was left",
            )
        state = states.COMPLETED if status == 0 else states.FAILED
        return JobInfo(
            **common,
            state=state,
            slurm_state=state.upper(),
            end=job.get("end") or _now(),
            exit_code=f"{status}:0",
        )

    def find_by_names(self, names: list[str], since: str) -> dict[str, list[JobInfo]]:
        return {}  # local jobs exist only in the manifest: a job left `submitting` never started

    def cancel(self, job_ids: list[str]) -> None:
        """Stop the runner (so that it starts nothing more) and every process of the given jobs:
        SIGTERM, then SIGKILL after the grace period. `notes` says what needed SIGKILL,
        `survivors` (job id -> processes) what was still alive after it."""
        self.notes, self.survivors = [], {}
        if not job_ids:
            return
        grace = grace_seconds()
        runner = [int(self._runner()["pid"])] if self.runner_alive() else []
        wanted = set(job_ids)

        def alive() -> dict[str, list[int]]:
            found = {job: pids for job, pids in marked_processes(JOB_MARK).items() if job in wanted}
            left = [pid for pid in runner if pid_alive(pid)]
            return {**found, "the local runner": left} if left else found

        self._signal(alive(), signal.SIGTERM)
        left = _wait_until_gone(alive, grace)
        if left:
            for what, pids in left.items():
                self.notes.append(
                    f"{what}: {len(pids)} process(es) ignored SIGTERM for "
                    f"{grace:g} s and were killed with SIGKILL"
                )
            self._signal(left, signal.SIGKILL)
            left = _wait_until_gone(alive, _KILL_WAIT_S)
        self.survivors = {
            what: ", ".join(_describe(pid) for pid in pids) for what, pids in left.items()
        }

    def _signal(self, targets: dict[str, list[int]], signum: int) -> None:
        for pids in targets.values():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signum)

    def start_runner(self, campaign_dir: Path) -> None:
        """Start the detached runner unless one is alive; record it in the manifest (the runner
        records itself too, first of all, in case this process dies before saving)."""
        if self.runner_alive():
            return
        from hpcrepro.safeopen import cannot_write, open_inside

        try:
            log = open_inside(
                campaign_dir, f"jobs/{RUNNER_LOG}", os.O_WRONLY | os.O_CREAT | os.O_APPEND
            )
        except OSError as error:
            raise cannot_write(campaign_dir / "jobs" / RUNNER_LOG, error) from None
        env = dict(os.environ, PYTHONPATH=package_pythonpath())
        env[RUNNER_MARK] = self.manifest["id"]
        env.pop(JOB_MARK, None)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "hpcrepro.scheduler.local", str(campaign_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=campaign_dir,
            )
        finally:
            os.close(log)
        self.manifest["local_runner"] = _identity(process.pid)


def _identity(pid: int) -> dict[str, Any]:
    return {"pid": pid, "start": process_start(pid), "host": socket.gethostname()}


def _wait_until_gone(alive: Any, seconds: float) -> dict[str, list[int]]:
    """Poll `alive()` until it finds nothing or `seconds` have passed; what it found last."""
    deadline = time.monotonic() + seconds
    left = alive()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = alive()
    return {what: pids for what, pids in left.items() if pids}


def _describe(pid: int) -> str:
    fields = _stat_fields(pid)
    try:
        with open(f"/proc/{pid}/comm") as handle:
            name = handle.read().strip()
    except OSError:
        name = "?"
    state = fields[0] if fields else "?"
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        owner = -1
    why = (
        " (uninterruptible I/O)"
        if state == "D"
        else (" (another user's: not allowed)" if owner not in (-1, os.geteuid()) else "")
    )
    return f"pid {pid} {name} state {state}{why}"


def _next_job(manifest: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    for stage in manifest["stages"]:
        if stage["jobs"] and stage["jobs"][-1]["state"] == states.PENDING:
            return stage, stage["jobs"][-1]
    return None


def run_campaign(campaign_dir: Path) -> None:
    """Run every pending job of the campaign, in graph order, until none is left; first wait for
    any job an earlier runner left running (one job at a time on this machine)."""
    from hpcrepro.campaign import engine
    from hpcrepro.campaign import manifest as manifest_io
    from hpcrepro.campaign import stages as st
    from hpcrepro.campaign.layout import CampaignPaths

    paths = CampaignPaths(campaign_dir)
    host = socket.gethostname()
    if not _take_the_runner_slot(paths):
        return
    while True:
        with manifest_io.locked(paths.lock):
            manifest = manifest_io.load(paths.manifest)
            waiting = _settle_left_behind(paths, manifest)
            found = None if manifest.get("cancelled") or waiting else _next_job(manifest)
            if found is None and not waiting:
                manifest["local_runner"] = None
                manifest_io.save(paths.manifest, manifest)
                return
            if found is not None:
                stage, job = found
                _, blocked = st.dependency_ids(manifest, stage)
                if blocked:
                    job.update(state=states.BLOCKED, reason=blocked, end=st.now())
                else:
                    try:
                        script = paths.stage_script(stage)
                    except UserError as error:  # a script changed by hand: never run
                        job.update(state=states.FAILED, reason=error.message, end=st.now())
                if job["state"] != states.PENDING:
                    engine.judge_runs(paths, manifest)
                    manifest_io.save(paths.manifest, manifest)
                    continue
                job.update(
                    state=states.RUNNING,
                    slurm_state="RUNNING",
                    start=st.now(),
                    nodes=1,
                    nodelist=host,
                    pid=None,
                )
                manifest_io.save(paths.manifest, manifest)
        if found is None:
            time.sleep(_WAIT_S)
            continue
        _run_job(paths, stage["name"], job["job_id"], script)


def _take_the_runner_slot(paths: Any) -> bool:
    """Record this process as the campaign's runner, its first act; False (and nothing done)
    when another runner of the campaign is alive."""
    from hpcrepro.campaign import manifest as manifest_io

    with manifest_io.locked(paths.lock):
        manifest = manifest_io.load(paths.manifest)
        recorded = manifest.get("local_runner") or {}
        if recorded.get("pid") != os.getpid() and Local(manifest, paths.root).runner_alive():
            return False
        manifest["local_runner"] = _identity(os.getpid())
        manifest_io.save(paths.manifest, manifest)
    return True


def _run_job(paths: Any, stage: str, job_id: str, script: Path) -> None:
    """Start one job behind its gate, record its pid, open the gate, wait, record its end."""
    from hpcrepro.campaign import engine
    from hpcrepro.campaign import manifest as manifest_io
    from hpcrepro.campaign import stages as st
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
            job = st.by_name(manifest)[stage]["jobs"][-1]
            job.update(
                state=states.FAILED,
                slurm_state="FAILED",
                end=st.now(),
                reason=f"its output {output} cannot be written "
                f"({error.strerror or error}): the job was not started",
            )
            engine.judge_runs(paths, manifest)
            manifest_io.save(paths.manifest, manifest)
        return
    gate, opener = os.pipe()
    env = dict(os.environ, HPCREPRO_LOCAL="1", PYTHONPATH=package_pythonpath())
    env.pop(RUNNER_MARK, None)
    env[JOB_MARK] = job_id
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
        job = st.by_name(manifest)[stage]["jobs"][-1]
        job.update(pid=_current.pid, pid_start=process_start(_current.pid))
        job.pop("exit_file", None)  # older versions recorded its path; it is derived now
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
        job = st.by_name(manifest)[stage]["jobs"][-1]
        if job["state"] == states.RUNNING:
            state = states.COMPLETED if status == 0 else states.FAILED
            job.update(
                state=state, slurm_state=state.upper(), end=st.now(), exit_code=f"{status}:0"
            )
            engine.judge_runs(paths, manifest)
            manifest_io.save(paths.manifest, manifest)


def _settle_left_behind(paths: Any, manifest: dict[str, Any]) -> bool:
    """Record the end of jobs an earlier runner left running (saved here); True while one of
    them still runs."""
    from hpcrepro.campaign import engine
    from hpcrepro.campaign import manifest as manifest_io

    local = Local(manifest, paths.root)
    running = marked_processes(JOB_MARK)
    infos: dict[str, JobInfo] = {}
    still_running = False
    for stage in manifest["stages"]:
        job = stage["jobs"][-1] if stage["jobs"] else None
        if job is None or job["state"] != states.RUNNING:
            continue
        info = local.left_behind(stage["name"], job, running)
        if info is None:
            still_running = True
        else:
            infos[job["job_id"]] = info
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
