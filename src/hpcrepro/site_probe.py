"""Ask the cluster what a site file needs to know: the edge where `site init` and `site check`
meet Slurm.

Few calls, each cheap: one `sinfo` (partitions, nodes, GRES), `srun --help` (pyxis adds
`--container-image`), `srun --mpi=list`, `sacctmgr` (the user's accounts and QOS) and one short
`srun` step on a compute node that reports which container tools it has, which folders it sees
(marker files written here, on the login node, prove a folder is shared) and whether the site's
cache-drop command works there. `ClusterProbe` holds the answers; `site_check` and `site_init`
read only it, so they are tested with a probe object made by hand.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hpcrepro.errors import UserError

PROBE_TIMEOUT_S = 120  # the srun step may wait for a node; sinfo and friends answer in seconds
CONTAINER_TOOLS = ("enroot", "apptainer", "singularity")
MARKER_PREFIX = ".hpcrepro-shared-"
_GPU_GRES = re.compile(r"(?:^|,)gpu(?::[^:,()]+)?:(\d+)")


@dataclass(frozen=True)
class Partition:
    """One partition as sinfo reports it (lines of one partition merged)."""

    name: str
    default: bool
    available: bool
    nodes: int
    gres: tuple[str, ...]
    gpus_per_node: int | None  # the most GPUs a node of it has in its GRES; None: no GPU GRES


@dataclass(frozen=True)
class NodeReport:
    """What the srun step saw on one compute node."""

    node: str
    tools: dict[str, str]  # container tool -> its path there (missing tools are absent)
    seen: dict[str, bool]  # path -> whether it exists there (marker files and folders)
    drop_caches: tuple[int, str] | None = None  # (exit status, output) of the site's command


@dataclass(frozen=True)
class ClusterProbe:
    """The cluster's answers; `None`/empty where a question was not asked or not answered."""

    partitions: list[Partition]
    pyxis: bool
    mpi_plugins: list[str]
    associations: list[tuple[str, str]]  # (account, qos) pairs of the user; qos may be ''
    node: NodeReport | None
    node_error: str = ""  # why the srun step gave no report
    markers: dict[str, str] = field(default_factory=dict)  # folder -> marker file written there
    unwritable: dict[str, str] = field(default_factory=dict)  # folder -> why no marker
    user: str = ""

    def partition(self, name: str | None) -> Partition | None:
        """`name`, or the default partition when `name` is None."""
        for part in self.partitions:
            if (name is None and part.default) or part.name == name:
                return part
        return None

    def shared(self, folder: str) -> bool | None:
        """Whether the compute node saw the marker written into `folder` (None: not tested)."""
        marker = self.markers.get(folder)
        if marker is None or self.node is None:
            return None
        return self.node.seen.get(marker, False)


def gpus_in_gres(gres: str) -> int | None:
    """'gpu:a100:8(S:0-1),nvme:1' -> 8; None when there is no GPU GRES."""
    counts = [int(count) for count in _GPU_GRES.findall(gres)]
    return max(counts) if counts else None


def parse_sinfo(text: str) -> list[Partition]:
    """Lines of `sinfo -h -o '%P|%a|%D|%G'` -> partitions (one partition may span lines)."""
    order: list[str] = []
    default: set[str] = set()
    up: set[str] = set()
    nodes: dict[str, int] = {}
    gres: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4 or not fields[0]:
            continue
        raw, avail, count, line_gres = fields
        name = raw.rstrip("*")
        if name not in order:
            order.append(name)
        if raw.endswith("*"):
            default.add(name)
        if avail == "up":
            up.add(name)
        nodes[name] = nodes.get(name, 0) + (int(count) if count.isdigit() else 0)
        if line_gres and line_gres != "(null)":
            gres.setdefault(name, []).append(line_gres)
    partitions = []
    for name in order:
        counts = [c for c in (gpus_in_gres(g) for g in gres.get(name, [])) if c is not None]
        partitions.append(
            Partition(
                name=name,
                default=name in default,
                available=name in up,
                nodes=nodes[name],
                gres=tuple(gres.get(name, [])),
                gpus_per_node=max(counts) if counts else None,
            )
        )
    return partitions


def parse_mpi_list(text: str) -> list[str]:
    """`srun --mpi=list` -> plugin names. Slurm 22.05 prints them indented under a title, then
    'specific pmix plugin versions available: pmix_v4'; older versions 'srun: mpi/pmix' lines."""
    names: list[str] = []
    for line in text.splitlines():
        if line[:1] in (" ", "\t"):
            words = [line.strip()]
        elif line.startswith("srun: mpi/"):
            words = [line.removeprefix("srun: mpi/").strip()]
        elif "versions available:" in line:
            words = [w.strip() for w in line.partition(":")[2].split(",")]
        else:
            continue
        names += [w for w in words if re.fullmatch(r"[A-Za-z0-9_.-]+", w) and w not in names]
    return names


def parse_associations(text: str) -> list[tuple[str, str]]:
    """`sacctmgr -nP show assoc user=U format=account,qos` -> (account, qos) pairs."""
    pairs = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if fields[0]:
            pairs.append((fields[0], fields[1] if len(fields) > 1 else ""))
    return pairs


# The one srun step: prints 'node NAME', 'tool NAME PATH', 'seen PATH' / 'unseen PATH', and with
# a cache-drop command its status and output. Paths arrive as arguments, never in the text.
NODE_SCRIPT = r"""
echo "node ${SLURMD_NODENAME:-$(hostname)}"
for tool in enroot apptainer singularity; do
    found="$(command -v "$tool" 2>/dev/null)" && echo "tool $tool $found"
done
drop="$1"
shift
for path in "$@"; do
    if [[ -e "$path" ]]; then echo "seen $path"; else echo "unseen $path"; fi
done
if [[ -n "$drop" ]]; then
    out="$(bash -c "$drop" 2>&1)"
    echo "drop $?"
    printf '%s\n' "$out" | head -c 2000 | sed 's/^/dropout /'
fi
"""


def parse_node_report(text: str) -> NodeReport | None:
    node = ""
    tools: dict[str, str] = {}
    seen: dict[str, bool] = {}
    status: int | None = None
    output: list[str] = []
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "node":
            node = rest
        elif word == "tool":
            name, _, path = rest.partition(" ")
            tools[name] = path
        elif word in ("seen", "unseen"):
            seen[rest] = word == "seen"
        elif word == "drop" and rest.lstrip("-").isdigit():
            status = int(rest)
        elif word == "dropout":
            output.append(rest)
    if not node:
        return None
    drop = (status, "\n".join(output).strip()) if status is not None else None
    return NodeReport(node=node, tools=tools, seen=seen, drop_caches=drop)


def _run(args: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(args), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(args), 124, "", f"no answer in {timeout:.0f} s")
    except OSError as exc:
        return subprocess.CompletedProcess(list(args), 127, "", str(exc))


def require_slurm() -> None:
    """A UserError (exit 2) unless Slurm's commands are here and the controller answers."""
    missing = [name for name in ("sinfo", "srun") if shutil.which(name) is None]
    if missing:
        raise UserError(
            f"no Slurm here: {' and '.join(missing)} not found on PATH",
            where="site probe",
            hint="run this on a login node of the cluster (or load its Slurm module); "
            "without Slurm, write the site file by hand (docs/site.md)",
        )


def _nearest_folder(path: Path) -> Path | None:
    """`path` or its nearest existing parent folder (a log folder submit will create)."""
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return candidate
    return None


@contextmanager
def markers(folders: Sequence[Path]) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """Write a marker file into each folder (or its nearest existing parent) on this node and
    remove them afterwards: ({folder: marker}, {folder: why none could be written})."""
    written: dict[str, str] = {}
    failed: dict[str, str] = {}
    token = uuid.uuid4().hex[:12]
    try:
        for folder in folders:
            base = _nearest_folder(folder)
            if base is None:
                failed[str(folder)] = "neither it nor a parent folder exists here"
                continue
            marker = base / f"{MARKER_PREFIX}{token}"
            try:
                marker.write_text("hpcrepro site probe\n")
            except OSError as exc:
                failed[str(folder)] = f"cannot write {marker}: {exc.strerror}"
                continue
            written[str(folder)] = str(marker)
        yield written, failed
    finally:
        for path in written.values():
            Path(path).unlink(missing_ok=True)


def probe(
    *,
    partition: str | None,
    scheduling: Sequence[str] = (),
    folders: Sequence[Path] = (),
    paths: Sequence[Path] = (),
    drop_caches: str | None = None,
    node_step: bool = True,
) -> ClusterProbe:
    """Ask the cluster. `folders` are tested for being shared (a marker from here must be seen on
    the node), `paths` only for being visible there; `scheduling` are srun options of the site
    (account, qos, reservation) so the step runs where the jobs will."""
    require_slurm()
    info = _run(["sinfo", "-h", "-o", "%P|%a|%D|%G"])
    if info.returncode != 0:
        raise UserError(
            f"sinfo failed: {(info.stderr or info.stdout).strip() or info.returncode}",
            where="site probe",
            hint="check that the Slurm controller answers (scontrol ping)",
        )
    partitions = parse_sinfo(info.stdout)
    help_text = _run(["srun", "--help"]).stdout
    mpi = _run(["srun", "--mpi=list"])
    user = getpass.getuser()
    assoc = (
        _run(["sacctmgr", "-nP", "show", "assoc", f"user={user}", "format=account,qos"])
        if shutil.which("sacctmgr")
        else None
    )
    report: NodeReport | None = None
    error = ""
    with markers(folders) as (written, failed):
        if node_step:
            args = ["srun", "--nodes=1", "--ntasks=1", "--time=5", "--job-name=hpcrepro-probe"]
            if partition:
                args.append(f"--partition={partition}")
            args += list(scheduling)
            args += ["bash", "-c", NODE_SCRIPT, "probe", drop_caches or ""]
            args += list(written.values()) + [str(path) for path in paths]
            done = _run(args, timeout=PROBE_TIMEOUT_S)
            report = parse_node_report(done.stdout)
            if report is None:
                error = (done.stderr or done.stdout).strip() or f"srun exited {done.returncode}"
                error = f"{shlex.join(args[:6])} ...: {error.splitlines()[-1]}"
    return ClusterProbe(
        partitions=partitions,
        pyxis="--container-image" in help_text,
        mpi_plugins=parse_mpi_list(mpi.stdout + mpi.stderr) if mpi.returncode == 0 else [],
        associations=parse_associations(assoc.stdout) if assoc and assoc.returncode == 0 else [],
        node=report,
        node_error=error,
        markers=written,
        unwritable=failed,
        user=user,
    )


def candidate_folders(explicit: Path | None) -> list[Path]:
    """Where a shared log folder may be: the one given, then $SCRATCH, $WORK, the current
    folder and the home folder, in that order (each is tested, none is assumed)."""
    found: list[Path] = []
    if explicit is not None:
        found.append(explicit.expanduser().absolute())
    for name in ("SCRATCH", "WORK"):
        value = os.environ.get(name)
        if value and os.path.isabs(value):
            found.append(Path(value))
    found += [Path.cwd(), Path.home()]
    unique: list[Path] = []
    for folder in found:
        if folder not in unique:
            unique.append(folder)
    return unique
