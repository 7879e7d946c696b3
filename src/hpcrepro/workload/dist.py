"""torch.distributed set up from the environment Slurm (or hpcrepro's local launcher) gives a task.

One process per GPU: rank = SLURM_PROCID, world = SLURM_NTASKS, GPU = SLURM_LOCALID. The rendezvous
host is MASTER_ADDR if set, else the first host of SLURM_JOB_NODELIST (expanded here, no
`scontrol` needed); the port is MASTER_PORT if set, else derived from SLURM_JOB_ID so that two
jobs sharing a node do not collide. gloo on CPU, NCCL on GPU.

Joining is bounded: every task counts itself in on rank 0's store and waits until all have, for
at most HPCREPRO_RENDEZVOUS_TIMEOUT_S seconds (torch alone would wait 30 minutes in silence when
a task never starts), saying how many it still waits for.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from hpcrepro.errors import UserError

if TYPE_CHECKING:
    import torch.distributed

DEFAULT_PORT = 29500
PORT_BASE, PORT_SPAN = 12000, 20000  # stays below Linux's ephemeral range (32768+)
TIMEOUT_VARIABLE = "HPCREPRO_RENDEZVOUS_TIMEOUT_S"
# Long enough for tasks whose container image loads slowly, short enough to free a stuck job.
DEFAULT_RENDEZVOUS_TIMEOUT_S = 600.0
FIRST_REPORT_S, REPORT_EVERY_S = 10.0, 60.0
JOINED_KEY = "hpcrepro/joined"


@dataclass(frozen=True)
class Placement:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    rendezvous_timeout_s: float = DEFAULT_RENDEZVOUS_TIMEOUT_S


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part]


def _expand_range(spec: str, nodelist: str) -> list[str]:
    values: list[str] = []
    for item in spec.split(","):
        bounds = item.split("-")
        if len(bounds) == 1 and bounds[0].isdigit():
            values.append(bounds[0])
        elif len(bounds) == 2 and bounds[0].isdigit() and bounds[1].isdigit():
            low, high, width = int(bounds[0]), int(bounds[1]), len(bounds[0])
            values.extend(str(number).zfill(width) for number in range(low, high + 1))
        else:
            raise UserError(
                f"cannot read node list '{nodelist}': bad range '{item}'",
                hint="set MASTER_ADDR to the host name of the first task's node",
            )
    return values


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand Slurm's compressed host list ('gpu[01-03,7],login-[2-3]x') into host names."""
    hosts: list[str] = []
    for item in _split_top_level(nodelist.strip()):
        pieces = re.split(r"\[([^\]]*)\]", item)
        if any("[" in piece or "]" in piece for piece in pieces[::2]):
            raise UserError(
                f"cannot read node list '{nodelist}': unbalanced brackets",
                hint="set MASTER_ADDR to the host name of the first task's node",
            )
        choices = [
            [piece] if index % 2 == 0 else _expand_range(piece, nodelist)
            for index, piece in enumerate(pieces)
        ]
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    return hosts


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return False
    return True


def _slurm_node_addr(node: str) -> str | None:
    """NodeAddr of a Slurm node whose name is not a resolvable host name (asks `scontrol`)."""
    if shutil.which("scontrol") is None:
        return None
    try:
        shown = subprocess.run(
            ["scontrol", "show", "node", node], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\bNodeAddr=(\S+)", shown)
    return match.group(1) if match else None


def master_address(env: Mapping[str, str]) -> str:
    if env.get("MASTER_ADDR"):
        return env["MASTER_ADDR"]
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        return "localhost"
    first = expand_nodelist(nodelist)[0]
    if _resolves(first):
        return first
    # Node names need not be host names (NodeName=node1 NodeHostname=... NodeAddr=...).
    address = _slurm_node_addr(first)
    if address and _resolves(address):
        return address
    raise UserError(
        f"the first node of the job, '{first}', is not a resolvable host name",
        hint="export MASTER_ADDR with the address of that node before starting the tasks",
    )


def master_port(env: Mapping[str, str]) -> int:
    raw = env.get("MASTER_PORT") or ""
    if raw:
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise UserError(f"MASTER_PORT='{raw}' is not a port number", hint="use 1024-65535")
        return int(raw)
    job_id = env.get("SLURM_JOB_ID", "")
    if job_id.isdigit():
        return PORT_BASE + int(job_id) % PORT_SPAN
    if job_id:  # a local launcher's id such as "local8748": still one port per job
        return PORT_BASE + zlib.crc32(job_id.encode()) % PORT_SPAN
    return DEFAULT_PORT


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"{name}='{raw}' is not an integer") from None


def rendezvous_timeout(env: Mapping[str, str]) -> float:
    raw = env.get(TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_RENDEZVOUS_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserError(
            f"{TIMEOUT_VARIABLE}='{raw}' is not a positive number of seconds",
            hint=f"unset it for the default of {DEFAULT_RENDEZVOUS_TIMEOUT_S:g} s",
        )
    return seconds


def placement_from_env(env: Mapping[str, str] | None = None) -> Placement:
    """This task's rank, world size and rendezvous point from SLURM_* (single process without)."""
    env = os.environ if env is None else env
    world = _int_env(env, "SLURM_NTASKS", 1)
    rank = _int_env(env, "SLURM_PROCID", 0)
    local_rank = _int_env(env, "SLURM_LOCALID", 0)
    # SLURM_TASKS_PER_NODE looks like "4(x2)" or "4,3"; the first node's count is what matters
    # for sharing cores, and NVIDIA's launcher falls back to DGXNGPU the same way.
    per_node = env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or ""
    per_node = re.split(r"[(,]", per_node)[0]
    local_world = int(per_node) if per_node.isdigit() else _int_env(env, "DGXNGPU", world)
    if not 0 <= rank < world:
        raise UserError(f"SLURM_PROCID={rank} is outside 0..SLURM_NTASKS-1 ({world} tasks)")
    address = master_address(env) if world > 1 else "localhost"
    return Placement(
        rank,
        world,
        local_rank,
        max(1, min(local_world, world)),
        address,
        master_port(env),
        rendezvous_timeout(env),
    )


_TIMEOUT_HINT = (
    "start all SLURM_NTASKS tasks together (srun does; a plain `python` starts one), check that "
    f"MASTER_ADDR/MASTER_PORT reach task 0, or raise {TIMEOUT_VARIABLE} when tasks start slowly"
)


class _Clock:
    """One time limit for the whole join, and a progress line at growing intervals."""

    def __init__(self, place: Placement, say: Callable[[str], None]) -> None:
        self.place, self.say = place, say
        self.started = time.monotonic()
        self.next_report = self.started + FIRST_REPORT_S

    def tick(self, awaited: str, timed_out: str) -> None:
        """Raise `timed_out` once the limit has passed; at report times, say what is awaited."""
        now = time.monotonic()
        limit = self.place.rendezvous_timeout_s
        if now - self.started >= limit:
            raise UserError(timed_out, hint=_TIMEOUT_HINT)
        if now >= self.next_report:
            self.say(f"hpcrepro.workload: rank {self.place.rank} waiting for {awaited} "
                     f"({now - self.started:.0f} s of {limit:g} s)")
            self.next_report = now + REPORT_EVERY_S


def _wait_for_listener(place: Placement, clock: _Clock) -> None:
    """Wait until task 0's store accepts connections: torch's own connect loop would print a
    C++ stack trace when it gives up, and says nothing while it waits."""
    where = f"{place.master_addr}:{place.master_port}"
    while True:
        try:
            with socket.create_connection((place.master_addr, place.master_port), timeout=2):
                return
        except OSError as exc:
            reason = exc.strerror or str(exc)
        clock.tick(f"task 0 at {where}",
                   f"task {place.rank} could not reach task 0's rendezvous at {where} "
                   f"within {place.rendezvous_timeout_s:g} s ({reason})")
        time.sleep(0.2)


def join(place: Placement, say: Callable[[str], None]) -> torch.distributed.TCPStore:
    """Rank 0's store, once every task has counted itself in; a UserError when the time is up."""
    import torch.distributed as dist

    where = f"{place.master_addr}:{place.master_port}"
    limit = place.rendezvous_timeout_s
    clock = _Clock(place, say)
    if place.rank != 0:
        _wait_for_listener(place, clock)
    try:
        store = dist.TCPStore(
            place.master_addr,
            place.master_port,
            place.world_size,
            is_master=place.rank == 0,
            timeout=timedelta(seconds=limit),
            wait_for_workers=False,
        )
        joined = store.add(JOINED_KEY, 1)
    except RuntimeError as exc:  # torch's DistNetworkError / DistStoreError
        if place.rank == 0:
            raise UserError(
                f"task 0 cannot open the rendezvous at {where}: {exc}",
                hint="set MASTER_PORT to a free port of that node",
            ) from None
        raise UserError(
            f"task {place.rank} could not reach task 0's rendezvous at {where} "
            f"within {limit:g} s: {str(exc).splitlines()[0]}",
            hint=_TIMEOUT_HINT,
        ) from None
    while joined < place.world_size:
        missing = place.world_size - joined
        clock.tick(f"{missing} of {place.world_size} tasks at {where}",
                   f"rendezvous at {where} timed out after {limit:g} s: still waiting for "
                   f"{missing} of {place.world_size} tasks")
        time.sleep(0.1)
        try:
            joined = store.add(JOINED_KEY, 0)
        except RuntimeError as exc:
            raise UserError(
                f"task {place.rank} lost the rendezvous at {where} while waiting for "
                f"{missing} of {place.world_size} tasks (did task 0 end?): "
                f"{str(exc).splitlines()[0]}",
                hint="see task 0's output for why it ended",
            ) from None
    return store


def init_process_group(
    place: Placement, use_gpu: bool, say: Callable[[str], None] | None = None
) -> None:
    """Join the job's process group (nothing to do for a single process)."""
    import torch.distributed as dist

    if place.world_size == 1:
        return
    os.environ["MASTER_ADDR"] = place.master_addr
    os.environ["MASTER_PORT"] = str(place.master_port)
    store = join(place, say or (lambda text: print(text, file=sys.stderr, flush=True)))
    dist.init_process_group(
        backend="nccl" if use_gpu else "gloo",
        store=store,
        rank=place.rank,
        world_size=place.world_size,
    )


def gpu_index(place: Placement, visible: int) -> int:
    """The GPU of this task: its local rank, or 0 when Slurm binds one GPU per task."""
    if place.local_rank < visible:
        return place.local_rank
    if visible == 1:
        return 0
    raise UserError(
        f"task {place.rank} has local rank {place.local_rank} but sees only {visible} GPUs",
        hint="start one task per GPU: srun --ntasks-per-node=<GPUs per node>",
    )


def cpu_threads(place: Placement, loader_workers: int) -> int:
    """Intra-op threads for a CPU run: this task's share of the node's cores, less its loaders.

    Oversubscribing cores is far worse than idling one: OpenMP threads spin waiting for a
    descheduled peer, and a 2-core run slowed 20-fold that way.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // place.local_world_size - loader_workers)
