"""`hpcrepro demo`: the whole pipeline on one machine, through the same commands a user runs.

synthetic JPEG tree -> `hpcrepro prep imagenet` -> `hpcrepro submit --backend local` (5 tiny
training runs of the reference workload) -> `hpcrepro status --watch` (waits for the detached local
runner) -> `hpcrepro collect`. Each step is a subprocess of
`python -m hpcrepro`, so the demo exercises exactly the documented CLI; the demo system and site
are YAML files written into the demo folder, the system found through `$HPCREPRO_SYSTEMS`.
Standard library only at import time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hpcrepro.errors import UserError

SYSTEM = "demo_cpu"
VERSION = "r4.0"
TAIL_LINES = 20
MAX_RUNS = 99  # what `hpcrepro submit` accepts (hpcrepro.site.MAX_RUNS)
# The first line of every file the demo writes: a file without it is the user's, never replaced.
WRITTEN_BY = "# Written by `hpcrepro demo`"
# Marks a raw/ folder whose generation finished; raw/ only appears once it is complete.
RAW_COMPLETE = "hpcrepro-demo-complete"
RAW_PARTIAL_PREFIX = ".hpcrepro-demo-raw-"

# The tiny recipe as a catalog entry (schema of systems/*.yaml). One task per node on CPU.
SYSTEM_YAML = f"""\
{WRITTEN_BY}: the tiny reference workload on this machine's CPU.
system: demo_cpu
title: hpcrepro demo, tiny ResNet-50 on CPU (1 node x 1 task)
gpu_model: none
versions:
  r4.0:
    provenance: derived
    source: hpcrepro demo (hpcrepro.workload tiny profile)
    derived_from: NVIDIA r4.0 config_DGXH100.sh recipe (LARS, poly decay), scaled down
    note: >-
      Synthetic 10-class data at 32 pixels, quarter-width ResNet-50, target top-1 0.80;
      open division by construction.
    dgxsystem: DEMO_CPU_1x1x32
    nodes: 1
    gpus_per_node: 1
    batch_per_gpu: 32
    minutes_per_run: 3
    walltime_overhead_minutes: 1
    implementation: reference
    container_base: none
    ruleset: "4.0.0"
    sbatch_network: null
    published: null
    hparams:
      OPTIMIZER: sgdwfastlars
      LR: 2.0
      WARMUP_EPOCHS: 1
      NUMEPOCHS: 16
      EVAL_OFFSET: 1
      EVAL_PERIOD: 1
      WD: "5.0e-05"
      MOM: 0.9
      LARSETA: 0.001
      LABELSMOOTHING: 0.1
      LRSCHED: pow2
      NETWORK: resnet-v1b-fl
      KVSTORE: horovod
      BN_GROUP: null
      INPUT_BATCH_MULTIPLIER: null
    env:
      HPCREPRO_WORKLOAD_PROFILE: tiny
"""

SITE_YAML = f"""\
{WRITTEN_BY}: this machine, no container, the reference workload.
runtime: none
workload: reference
python: {{python}}
dataset_dir: {{data}}
log_dir: {{logs}}
drop_caches_command: null
"""


def _missing_packages() -> list[str]:
    return [name for name in ("torch", "numpy", "PIL") if importlib.util.find_spec(name) is None]


def _hpcrepro(
    args: Sequence[str],
    env: dict[str, str],
    step: str,
    *,
    may_fail: bool = False,
    shown: bool = False,
) -> str:
    """Run `python -m hpcrepro ARGS`; a failure becomes a UserError that says which step broke.

    With `may_fail`, a command that ran but exited non-zero (collect without a valid score) still
    returns its output; a missing command is always an error. `shown` lets the command write
    to the demo's own stdout and stderr as it goes (the prep's bars, the watch's live view on a
    terminal, its change lines when piped), so the long steps are never silent.
    """
    command = [sys.executable, "-m", "hpcrepro", *args]
    if shown:
        sys.stdout.flush()
        done = subprocess.run(command, env=env, check=False)
        if done.returncode != 0 and not may_fail:
            raise UserError(
                f"demo step '{step}' failed (exit {done.returncode}): {' '.join(command)}",
                hint="the output above is what the command printed",
            )
        return ""
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0 and not (may_fail and "No such command" not in result.stderr):
        output = (result.stderr + result.stdout).strip()
        tail = "\n".join(output.splitlines()[-TAIL_LINES:])
        if "No such command" in output:
            raise UserError(
                f"demo step '{step}' needs `hpcrepro {args[0]}`, which this installation lacks",
                hint="install an hpcrepro version that has the prep, submit and collect commands",
            )
        raise UserError(
            f"demo step '{step}' failed (exit {result.returncode}): {' '.join(command)}\n{tail}",
            hint="the output above is the end of what the command printed",
        )
    return result.stdout


def _newest_campaign(logs: Path, before: set[Path]) -> Path:
    created = [path for path in logs.iterdir() if path.is_dir() and path not in before]
    if not created:
        raise UserError(
            f"`hpcrepro submit` finished but made no campaign folder under {logs}",
            hint="check the site's log_dir setting in the demo site.yaml",
        )
    return max(created, key=lambda path: path.stat().st_mtime)


def _refuse_foreign_files(paths: Sequence[Path], directory: Path) -> None:
    """The demo rewrites its own config files on every run, but never a file it did not write."""
    for path in paths:
        try:
            first_line = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        except (FileNotFoundError, NotADirectoryError):
            continue  # nothing there to replace; creating the folders will say what is wrong
        except OSError as exc:
            raise UserError(
                f"cannot read {path}: {exc.strerror or exc}",
                hint="choose another --dir for the demo",
            ) from None
        if not first_line.startswith(WRITTEN_BY):
            raise UserError(
                f"{path} exists and was not written by the demo; the demo would replace it",
                hint=f"choose another --dir (the demo writes site.yaml, systems/, raw/, data/ "
                f"and campaigns/ in it), or move {path.name} away from {directory}",
            )


def _make_folders(folders: Sequence[Path]) -> None:
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create the demo folder {folder}: {exc.strerror or exc}",
                hint="choose another --dir: a folder you can write to (it is created if missing)",
            ) from None


def _write_own(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(
            f"cannot write {path}: {exc.strerror or exc}", hint="choose another --dir"
        ) from None


def _ensure_raw(raw: Path, step: Callable[[str], None]) -> None:
    """The synthetic JPEG tree, whole or not at all.

    It is written into a hidden sibling folder and renamed to `raw` once complete, so an
    interrupted generation leaves no `raw/` that a later run would trust.
    """
    from hpcrepro.workload.synthetic import write_synthetic_imagenet

    if (raw / RAW_COMPLETE).is_file():
        return
    if raw.exists():
        raise UserError(
            f"{raw} exists but the demo did not finish writing it (an interrupted run of an "
            "older hpcrepro, or a folder that is not the demo's)",
            hint=f"delete {raw} if it is the demo's and run again, or choose another --dir",
        )
    for leftover in raw.parent.glob(f"{RAW_PARTIAL_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)  # an interrupted generation's half
    step(f"writing a synthetic ImageNet-shaped set to {raw}")
    partial = raw.parent / f"{RAW_PARTIAL_PREFIX}{os.getpid()}"
    try:
        write_synthetic_imagenet(partial)
        (partial / RAW_COMPLETE).write_text(f"{WRITTEN_BY}\n", encoding="utf-8")
        partial.rename(raw)
    except OSError as exc:
        raise UserError(
            f"cannot write the synthetic data set to {raw}: {exc.strerror or exc}",
            hint="free some space (about 3 MB) or choose another --dir",
        ) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def run_demo(directory: Path, runs: int, say: Callable[[str], None] = print) -> Path:
    """Build and run the demo in `directory`; returns the campaign folder."""
    if not 1 <= runs <= MAX_RUNS:
        raise UserError(
            f"--runs {runs} is out of range", hint=f"give 1 to {MAX_RUNS} (MLPerf scores 5)"
        )
    missing = _missing_packages()
    if missing:
        raise UserError(
            f"the demo needs the workload extra; missing: {', '.join(missing)}",
            hint="pip install 'hpcrepro[workload]'",
        )
    directory = directory.resolve()
    raw, data = directory / "raw", directory / "data"
    systems, logs, site = directory / "systems", directory / "campaigns", directory / "site.yaml"
    system_file = systems / f"{SYSTEM}.yaml"
    if directory.exists() and not directory.is_dir():
        raise UserError(
            f"cannot use {directory} as the demo folder: it is not a folder",
            hint="choose another --dir: a folder you can write to (it is created if missing)",
        )
    _refuse_foreign_files([site, system_file], directory)
    _make_folders([systems, logs])
    env = dict(os.environ)
    env["HPCREPRO_SYSTEMS"] = os.pathsep.join(
        [str(systems), *filter(None, [os.environ.get("HPCREPRO_SYSTEMS")])]
    )
    # The job scripts call `python3`: make it this interpreter, which has torch.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])

    started = time.monotonic()

    def step(text: str) -> None:
        say(f"[{time.monotonic() - started:6.1f} s] {text}")

    _ensure_raw(raw, step)
    step(f"hpcrepro prep imagenet --raw {raw} --out {data}")
    _hpcrepro(
        ["prep", "imagenet", "--raw", str(raw), "--out", str(data)], env, "prep", shown=True
    )
    _write_own(system_file, SYSTEM_YAML)
    _write_own(
        site,
        SITE_YAML.format(
            python=json.dumps(sys.executable),
            data=json.dumps(str(data)),
            logs=json.dumps(str(logs)),
        ),
    )
    name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    before = set(logs.iterdir())
    step(f"hpcrepro submit --backend local --system {SYSTEM} --version {VERSION} --runs {runs}")
    _hpcrepro(
        [
            "submit",
            "--backend",
            "local",
            "--system",
            SYSTEM,
            "--version",
            VERSION,
            "--site",
            str(site),
            "--set",
            "workload=reference",
            "--runs",
            str(runs),
            "--name",
            name,
        ],
        env,
        "submit",
    )
    campaign = logs / name if (logs / name).is_dir() else _newest_campaign(logs, before)
    # The local backend runs the stages in a detached runner; `status --watch` returns when
    # every job of the campaign has ended.
    step(f"hpcrepro status {campaign} --watch  (training runs in the background)")
    _hpcrepro(["status", str(campaign), "--watch"], env, "status", shown=True)
    say(_hpcrepro(["status", str(campaign)], env, "status").rstrip())
    step(f"hpcrepro collect {campaign}")
    # Fewer than 5 runs cannot be scored; the report still shows each run.
    report = _hpcrepro(["collect", str(campaign)], env, "collect", may_fail=runs < 5)
    say(report.rstrip())
    step("done")
    return campaign
