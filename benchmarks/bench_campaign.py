"""Submit and track 200 jobs on the test Slurm cluster: hpcrepro beside submitit, same run.

    source /tmp/hpcrepro-slurm/env.sh   # tests/slurm/start.sh
    PYTHONPATH=src python benchmarks/bench_campaign.py [--jobs 200]

hpcrepro: one campaign of JOBS-1 training runs plus the collection job (rendered scripts,
`sbatch --test-only` checks, one sbatch per job, manifest), then one `status` pass over it.
submitit: JOBS independent `executor.submit` calls (one sbatch each), then `job.state` of all of
them (submitit batches that into sacct calls), and, for reference, the same jobs as one job array
(`executor.batch()`, one sbatch). All jobs are submitted held (`--hold`), so nothing runs, and are
cancelled at the end. Slurm commands are counted by wrappers put first on PATH that log every
sbatch/sacct/squeue/scontrol/scancel call of both tools, then exec the real command.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

TOOLS = ("sbatch", "sacct", "squeue", "scontrol", "scancel", "sinfo")


def install_counters(folder: Path, log: Path) -> None:
    folder.mkdir()
    for tool in TOOLS:
        real = shutil.which(tool)
        if real is None:
            sys.exit(f"{tool} not found: start the test cluster (tests/slurm/start.sh)")
        wrapper = folder / tool
        wrapper.write_text(f'#!/bin/sh\necho {tool} >> "{log}"\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
    os.environ["PATH"] = f"{folder}:{os.environ['PATH']}"


def counted(log: Path) -> Counter[str]:
    calls = Counter(log.read_text().split()) if log.exists() else Counter()
    log.write_text("")
    return calls


def describe(calls: Counter[str]) -> str:
    return f"{sum(calls.values())} ({', '.join(f'{k} {v}' for k, v in sorted(calls.items()))})"


def write_site(root: Path) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    for name in ("train.rec", "train.idx", "val.rec", "val.idx"):
        (data / name).write_bytes(b"\0")
    site = root / "site.yaml"
    site.write_text(
        "runtime: none\npartition: debug\nexclusive: false\nmpi: none\n"
        f"dataset_dir: {data}\nlog_dir: {root / 'logs'}\ndrop_caches_command: null\n"
        "check_compliance: false\ntrain_command: 'true'\nsbatch_args: [--hold]\n"
    )
    return site


def bench_hpcrepro(root: Path, jobs: int, log: Path) -> tuple[dict[str, float], dict[str, str]]:
    from hpcrepro.campaign import actions

    os.environ["HPCREPRO_STATE_DIR"] = str(root / "state")
    request = actions.SubmitRequest(
        system="dgxa100_1x8",
        version="r2.1",
        site=write_site(root),
        overrides=["nodes=1", "gpus_per_node=1"],
        name="bench",
        runs=jobs - 1,
    )
    counted(log)
    start = time.perf_counter()
    outcome = actions.submit(request)
    submit_s = time.perf_counter() - start
    submit_calls = counted(log)
    assert len(outcome.submitted) == jobs, outcome.submitted
    start = time.perf_counter()
    campaigns = actions.load_campaigns("bench")
    actions.refresh_all(campaigns)
    status_s = time.perf_counter() - start
    status_calls = counted(log)
    ids = [job["job_id"] for stage in campaigns[0][1]["stages"] for job in stage["jobs"]]
    subprocess.run(["scancel", *ids], check=True)
    counted(log)
    return (
        {"submit": submit_s, "status": status_s},
        {"submit": describe(submit_calls), "status": describe(status_calls)},
    )


def _noop() -> int:
    return 0


def bench_submitit(root: Path, jobs: int, log: Path) -> tuple[dict[str, float], dict[str, str]]:
    import submitit

    executor = submitit.AutoExecutor(folder=root / "submitit", cluster="slurm")
    executor.update_parameters(
        slurm_partition="debug",
        timeout_min=5,
        tasks_per_node=1,
        slurm_additional_parameters={"hold": True},
    )
    counted(log)
    start = time.perf_counter()
    submitted = [executor.submit(_noop) for _ in range(jobs)]
    submit_s = time.perf_counter() - start
    submit_calls = counted(log)
    start = time.perf_counter()
    job_states = [job.state for job in submitted]
    status_s = time.perf_counter() - start
    status_calls = counted(log)
    assert len(job_states) == jobs
    start = time.perf_counter()
    with executor.batch():
        array = [executor.submit(_noop) for _ in range(jobs)]
    array_s = time.perf_counter() - start
    array_calls = counted(log)
    ids = [job.job_id for job in submitted] + [array[0].job_id.split("_")[0]]
    subprocess.run(["scancel", *ids], check=True)
    counted(log)
    return (
        {"submit": submit_s, "status": status_s, "array": array_s},
        {
            "submit": describe(submit_calls),
            "status": describe(status_calls),
            "array": describe(array_calls),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as tmp:
        root = Path(tmp)
        log = root / "slurm-calls.log"
        install_counters(root / "bin", log)
        ours, our_calls = bench_hpcrepro(root / "hpcrepro", args.jobs, log)
        theirs, their_calls = bench_submitit(root / "submitit", args.jobs, log)
    print(f"{args.jobs} jobs on the test cluster (all held, then cancelled)")
    print(f"{'':28}{'seconds':>9}  Slurm commands")
    print(f"{'hpcrepro submit':28}{ours['submit']:9.2f}  {our_calls['submit']}")
    print(f"{'submitit submit (one by one)':28}{theirs['submit']:9.2f}  {their_calls['submit']}")
    print(f"{'submitit submit (job array)':28}{theirs['array']:9.2f}  {their_calls['array']}")
    print(f"{'hpcrepro status pass':28}{ours['status']:9.2f}  {our_calls['status']}")
    print(f"{'submitit job.state x all':28}{theirs['status']:9.2f}  {their_calls['status']}")
    print(f"ratio submit hpcrepro/submitit (one by one): {ours['submit'] / theirs['submit']:.2f}")
    print(f"ratio status hpcrepro/submitit: {ours['status'] / theirs['status']:.2f}")


if __name__ == "__main__":
    main()
