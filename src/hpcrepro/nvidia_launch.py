"""How NVIDIA's own launch script of each implementation folder runs a job.

NVIDIA ships a `run.sub` (and, for A30, `a30.sub` with `a30-run_and_time.sh`) beside each
implementation. Rounds differ in what they log and how: v2.1's `mlperf_log_utils` exposes module
functions, later rounds an `mllogger` object from mlperf-common; v3.1 and later write the cluster
and system into the `:::DLPAL` line; the v4.0 eos/h200/l40s folders print `:::SYSJSON`; v3.0 and
later run NVIDIA's NCCL all-reduce test by default. The train template follows the profile of the
entry's implementation folder, so a job logs what NVIDIA's job of that round logged.
`tests/test_nvidia_launch.py` checks every profile against the real `run.sub` text.
"""

from __future__ import annotations

from dataclasses import dataclass

# The Python programs NVIDIA's run.sub passes to `python -c` inside the container.
SUBMISSION_LOG_V21 = """
import mlperf_log_utils
from mlperf_logging.mllog import constants
mlperf_log_utils.mlperf_submission_log(constants.RESNET)"""
CACHE_CLEAR_LOG_V21 = """
from mlperf_logging.mllog import constants
from mlperf_log_utils import mx_resnet_print_event
mx_resnet_print_event(key=constants.CACHE_CLEAR, val=True)"""
SUBMISSION_LOG_MLLOGGER = """
from mlperf_log_utils import mllogger
mllogger.mlperf_submission_log(mllogger.constants.RESNET)"""
CACHE_CLEAR_LOG_MLLOGGER = """
from mlperf_log_utils import mllogger
mllogger.event(key=mllogger.constants.CACHE_CLEAR, value=True)"""


@dataclass(frozen=True)
class LaunchProfile:
    """What one NVIDIA launch script does around the training runs."""

    script: str  # the launch script it mirrors (run.sub or a30.sub)
    run_script: str  # what each task runs in the container's workdir
    submission_log: str  # `python -c` program logging submission_benchmark/org/division/...
    cache_clear_log: str  # `python -c` program logging cache_clear after a cache drop
    dlpal_cluster_system: bool  # :::DLPAL ends with MLPERF_CLUSTER_NAME and DGXSYSTEM
    sysjson: bool  # a :::SYSJSON line from mlperf-common's mlperf-sysjson.sh in each run
    diagnostics: bool  # `ibv_devinfo --list` and `nvidia-smi topo -m` in the job log
    nccl_test: bool  # NCCL_TEST's default: NVIDIA's all_reduce_perf_mpi before the runs


_V21 = LaunchProfile(
    script="run.sub",
    run_script="./run_and_time.sh",
    submission_log=SUBMISSION_LOG_V21,
    cache_clear_log=CACHE_CLEAR_LOG_V21,
    dlpal_cluster_system=False,
    sysjson=False,
    diagnostics=False,
    nccl_test=False,
)
_V21_PREVIEW = LaunchProfile(**{**_V21.__dict__, "diagnostics": True})
_V30 = LaunchProfile(
    script="run.sub",
    run_script="./run_and_time.sh",
    submission_log=SUBMISSION_LOG_MLLOGGER,
    cache_clear_log=CACHE_CLEAR_LOG_MLLOGGER,
    dlpal_cluster_system=False,
    sysjson=False,
    diagnostics=True,
    nccl_test=True,
)
_V31 = LaunchProfile(**{**_V30.__dict__, "dlpal_cluster_system": True})
_V40 = LaunchProfile(**{**_V31.__dict__, "sysjson": True})
_A30 = LaunchProfile(
    script="a30.sub",
    run_script="./a30-run_and_time.sh",
    submission_log=SUBMISSION_LOG_V21,
    cache_clear_log=CACHE_CLEAR_LOG_V21,
    dlpal_cluster_system=False,
    sysjson=False,
    diagnostics=False,
    nccl_test=False,
)

# (round, implementation folder) -> profile. The v4.0 CoreWeave folder carries the v3.0 launch.
PROFILES: dict[tuple[str, str], LaunchProfile] = {
    ("r2.1", "mxnet-22.04"): _V21,
    ("r2.1", "mxnet-preview"): _V21_PREVIEW,
    ("r3.0", "mxnet"): _V30,
    ("r3.1", "mxnet"): _V31,
    ("r4.0", "coreweave_hgxh100_n448_ngc23.04_mxnet"): _V30,
    ("r4.0", "eos_ngc24.04_mxnet"): _V40,
    ("r4.0", "eos_n8_ngc24.04_mxnet"): _V40,
    ("r4.0", "eos_n316_ngc24.04_mxnet"): _V40,
    ("r4.0", "h200_ngc24.04_mxnet"): _V40,
    ("r4.0", "l40s_n2_ngc24.04_mxnet"): _V40,
    ("r4.0", "l40s_n16_ngc24.04_mxnet"): _V40,
}
# NVIDIA's README for its A30 configs (README_2xa30_ngc22.04_mxnet.md) launches them with a30.sub.
A30_PROFILES: dict[tuple[str, str], LaunchProfile] = {("r2.1", "mxnet-22.04"): _A30}


def profile_for(version: str, implementation: str, dgxsystem: str) -> LaunchProfile:
    """The launch of `implementation` in `version`; an A30 config takes NVIDIA's A30 launcher.

    An implementation folder this table does not know (a site's own catalog entry) gets the
    launch of the newest round whose folders it resembles: the round's own default.
    """
    key = (version, implementation)
    if dgxsystem.upper().startswith("A30_") and key in A30_PROFILES:
        return A30_PROFILES[key]
    if key in PROFILES:
        return PROFILES[key]
    return {"r2.1": _V21, "r3.0": _V30, "r3.1": _V31}.get(version, _V40)
