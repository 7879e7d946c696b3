"""Every Slurm job state mapped to the few states a campaign reasons about.

Slurm reports about twenty states (sacct and squeue use the same names; sacct adds suffixes such as
"CANCELLED by 1000"). A campaign only needs to know: is the job still going (active), did it end
well (completed), did it end badly (failed, cancelled), or did it end in a way that makes a
training run void for time-to-train (timeout, preempted, node failure, out of memory, requeue).
"""

from __future__ import annotations

# Our states. "planned" and "submitting" exist only in the manifest (no job yet; sbatch in flight).
PLANNED = "planned"
SUBMITTING = "submitting"
PENDING = "pending"
RUNNING = "running"
SUSPENDED = "suspended"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
BLOCKED = "blocked"  # never started: a stage it depends on failed
TIMEOUT = "timeout"
PREEMPTED = "preempted"
NODE_FAIL = "node_fail"
OUT_OF_MEMORY = "out_of_memory"
REQUEUED = "requeued"
UNKNOWN = "unknown"  # the scheduler no longer knows the job (accounting off and job purged)

ACTIVE = frozenset({SUBMITTING, PENDING, RUNNING, SUSPENDED})
# A run that ended in one of these did not measure time-to-train, whatever its log says so far.
VOID = frozenset({TIMEOUT, PREEMPTED, NODE_FAIL, OUT_OF_MEMORY, REQUEUED})
FINISHED = frozenset({COMPLETED, FAILED, CANCELLED, BLOCKED, UNKNOWN}) | VOID

SLURM_STATES: dict[str, str] = {
    "PENDING": PENDING,
    "CONFIGURING": PENDING,  # nodes allocated, still booting
    "REQUEUE_HOLD": PENDING,
    "REQUEUE_FED": PENDING,
    "RESV_DEL_HOLD": PENDING,
    "SPECIAL_EXIT": PENDING,  # held after a special exit code, waits for the user
    "RUNNING": RUNNING,
    "COMPLETING": RUNNING,
    "RESIZING": RUNNING,
    "SIGNALING": RUNNING,
    "STAGE_OUT": RUNNING,
    "SUSPENDED": SUSPENDED,
    "STOPPED": SUSPENDED,
    "COMPLETED": COMPLETED,
    "FAILED": FAILED,
    "BOOT_FAIL": FAILED,
    "DEADLINE": FAILED,
    "LAUNCH_FAILED": FAILED,
    "CANCELLED": CANCELLED,
    "REVOKED": CANCELLED,  # a federated sibling ran it instead
    "TIMEOUT": TIMEOUT,
    "PREEMPTED": PREEMPTED,
    "NODE_FAIL": NODE_FAIL,
    "OUT_OF_MEMORY": OUT_OF_MEMORY,
    "REQUEUED": REQUEUED,
}

# squeue's compact codes (%t) for completeness; sacct and `squeue -o %T` print the long names.
SLURM_SHORT: dict[str, str] = {
    "PD": "PENDING",
    "CF": "CONFIGURING",
    "RH": "REQUEUE_HOLD",
    "RF": "REQUEUE_FED",
    "RD": "RESV_DEL_HOLD",
    "SE": "SPECIAL_EXIT",
    "R": "RUNNING",
    "CG": "COMPLETING",
    "RS": "RESIZING",
    "SI": "SIGNALING",
    "SO": "STAGE_OUT",
    "S": "SUSPENDED",
    "ST": "STOPPED",
    "CD": "COMPLETED",
    "F": "FAILED",
    "BF": "BOOT_FAIL",
    "DL": "DEADLINE",
    "CA": "CANCELLED",
    "RV": "REVOKED",
    "TO": "TIMEOUT",
    "PR": "PREEMPTED",
    "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY",
    "RQ": "REQUEUED",
}


def from_slurm(raw: str) -> str:
    """Map a Slurm state string ('CANCELLED by 0', 'RUNNING', 'CD', 'PENDING+') to our state."""
    word = raw.strip().split(" ", 1)[0].rstrip("+*")
    word = SLURM_SHORT.get(word, word)
    return SLURM_STATES.get(word, UNKNOWN)


def is_active(state: str) -> bool:
    return state in ACTIVE


def is_void(state: str) -> bool:
    return state in VOID


def is_finished(state: str) -> bool:
    return state in FINISHED
