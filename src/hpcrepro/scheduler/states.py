"""hpcrepro's own job states: the few a campaign reasons about, whatever the scheduler.

Slurm reports about twenty states (each backend maps its own: `slurm.from_slurm`). A campaign
only needs to know: is the job still going (active), did it end well (completed), did it end
badly (failed, cancelled), or did it end in a way that makes a training run void for
time-to-train (timeout, preempted, node failure, out of memory, requeue).
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


def is_active(state: str) -> bool:
    return state in ACTIVE


def is_void(state: str) -> bool:
    return state in VOID


def is_finished(state: str) -> bool:
    return state in FINISHED
