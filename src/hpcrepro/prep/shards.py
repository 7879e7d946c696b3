"""Split a list into contiguous shards (one per Slurm array task) and join the packed shards.

Shard `i` of `n` packs list positions `[total*i//n, total*(i+1)//n)`, so concatenating the shards
in order gives exactly the file one process would write. The join appends each shard's records
(with `copy_file_range`, in the kernel where the file system allows), adds the shard's start offset
to its index lines and segment offsets, and deletes the shard once it is safely appended: a killed
join resumes after the last appended shard and never needs more free space than one shard.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hpcrepro.errors import UserError
from hpcrepro.prep.files import read_json, require_space, write_json
from hpcrepro.prep.pack import STATE_SHAPE, PackState, ShardFiles

_SHARD_SPEC = re.compile(r"^(\d{1,9})/(\d{1,9})$")
# Shard files are named `<split>.IIIII-of-NNNNN.*`: five digits. Slurm's own MaxArraySize
# defaults to 1001, so this is far above any array a cluster runs.
MAX_SHARDS = 99_999


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def range(self, total: int) -> tuple[int, int]:
        return total * self.index // self.count, total * (self.index + 1) // self.count

    def stem(self, work: Path, split: str) -> Path:
        return work / f"{split}.{self.index:05d}-of-{self.count:05d}"


def parse_shard(spec: str) -> Shard:
    """'I/N' with 0 <= I < N <= MAX_SHARDS (Slurm array task ids start at 0)."""
    match = _SHARD_SPEC.match(spec.strip())
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)) <= MAX_SHARDS:
        raise UserError(
            f"--shard {spec if len(spec) <= 40 else spec[:37] + '...'!r} is not 'I/N' with "
            f"0 <= I < N <= {MAX_SHARDS}",
            hint='in a Slurm array use --shard "${SLURM_ARRAY_TASK_ID}/N" with --array=0-(N-1)',
        )
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_files(work: Path, split: str, shard: Shard) -> ShardFiles:
    return ShardFiles(shard.stem(work, split))


def find_shard_count(work: Path, split: str) -> int:
    """The N of the shards on disk; refuses a mix of runs with different N."""
    counts = {
        int(m.group(1))
        for p in work.glob(f"{split}.*-of-*.*")
        if (m := re.search(r"-of-(\d{5})\.", p.name))
    }
    if len(counts) > 1:
        raise UserError(
            f"{work} holds {split} shards of runs with different shard counts {sorted(counts)}",
            hint="rerun with --restart and one shard count for every task",
        )
    return counts.pop() if counts else 1


@dataclass
class JoinFiles:
    """Where a split's join writes: records, index, progress checkpoint and the done marker.

    The done marker (`joined`) is the join's commit point: it holds the joined state and is
    written before the last shard files are deleted, so at every moment either the shards'
    own markers or the join's files say how far the join got.
    """

    rec: Path
    idx: Path
    checkpoint: Path
    joined: Path

    @classmethod
    def of(cls, work: Path, split: str) -> JoinFiles:
        names = ("rec", "idx", "join.json", "joined.json")
        return cls(*(work / f"{split}.{name}" for name in names))

    def started(self) -> bool:
        return any(p.exists() for p in (self.rec, self.idx, self.checkpoint, self.joined))


def join(work: Path, split: str, target: JoinFiles) -> PackState:
    """Concatenate the packed shards of `split` into `target`; returns the joined state.

    Safe to kill at any point and to call again: it continues from where the last call stopped.
    """
    if target.joined.is_file():
        _remove_shards(work, split)  # a kill after the commit, before the clean-up
        return PackState.load(target.joined)
    state = PackState()
    joined = 0
    if target.checkpoint.is_file():
        saved = read_json(target.checkpoint, {"joined": int, "count?": int, "state": STATE_SHAPE})
        joined, state = saved["joined"], PackState.from_json(saved["state"])
        # an older version's checkpoint has no count: the shards left on disk still tell
        count = saved.get("count") or max(joined, find_shard_count(work, split))
        if not joined <= count <= MAX_SHARDS:
            raise UserError(
                f"{target.checkpoint} is damaged: {joined} of {count} shards joined",
                hint="rerun with --restart",
            )
    else:
        count = find_shard_count(work, split)
    shards = [shard_files(work, split, Shard(i, count)) for i in range(count)]
    if count == 1 and joined == 0:
        state = _move_single(shards[0], target)
    else:
        state = _append_shards(work, split, shards, joined, state, target)
    write_json(target.joined, state.to_json())
    _remove_shards(work, split)
    target.checkpoint.unlink(missing_ok=True)
    return state


def _remove_shards(work: Path, split: str) -> None:
    for path in work.glob(f"{split}.*-of-*.*"):
        path.unlink(missing_ok=True)


def _append_shards(
    work: Path,
    split: str,
    shards: list[ShardFiles],
    joined: int,
    state: PackState,
    target: JoinFiles,
) -> PackState:
    """Append shards `joined`.. to the target, checkpointing after each (then deleting it)."""
    count = len(shards)
    missing = [i for i in range(joined, count) if shards[i].finished() is None]
    if missing:
        listed = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise UserError(
            f"{split}: shards {listed} of {count} are not finished",
            hint="run (or rerun) those array tasks with --shard I/N, then --join again",
        )
    largest = max((s.rec.stat().st_size for s in shards[joined:]), default=0)
    require_space(work, largest, f"joining the {split} shards")
    # Not O_APPEND: copy_file_range refuses an append-mode target.
    rec_fd = os.open(target.rec, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(rec_fd, "r+b", buffering=0) as rec, open(target.idx, "ab") as idx:
        rec.truncate(state.rec_size)
        idx.truncate(state.idx_size)
        for number in range(joined, count):
            part = shards[number].finished()
            assert part is not None
            base = rec.seek(0, os.SEEK_END)
            _append(shards[number].rec, rec)
            idx.seek(0, os.SEEK_END)
            with open(shards[number].idx, encoding="ascii") as lines:
                idx.write("".join(_shift(line, base) for line in lines).encode("ascii"))
            rec.flush()
            idx.flush()
            os.fsync(rec.fileno())
            os.fsync(idx.fileno())
            state.segments += [{**s, "offset": s["offset"] + base} for s in part.segments]
            state.skipped += part.skipped
            state.records += part.records
            state.position += part.position
            state.rec_size, state.idx_size = rec.tell(), idx.tell()
            saved = {"joined": number + 1, "count": count, "state": state.to_json()}
            write_json(target.checkpoint, saved)
            shards[number].remove()
    return state


def _move_single(shard: ShardFiles, target: JoinFiles) -> PackState:
    """One shard is already the whole file: rename it. The shard's done marker stays until the
    join's own marker is written, so a kill between any two steps leaves a state to resume."""
    if not shard.done.is_file():
        raise UserError(
            f"{shard.done.name} is missing: the {target.rec.stem} set was never fully packed",
            hint="pack it: run the same command without --join (a sharded prep: run the array "
            "task --shard 0/1 again); if the files were deleted by hand, rerun with --restart",
        )
    done = PackState.load(shard.done)
    for source, destination, size in (
        (shard.idx, target.idx, done.idx_size),
        (shard.rec, target.rec, done.rec_size),
    ):
        if source.exists() and source.stat().st_size == size:
            os.replace(source, destination)
        if not destination.exists() or destination.stat().st_size != size:
            raise UserError(
                f"{source.name} is incomplete",
                hint="rerun with --restart: the packed files were changed by hand",
            )
    return done


def _shift(line: str, base: int) -> str:
    key, offset = line.split("\t")
    return f"{key}\t{int(offset) + base}\n"


def _append(source: Path, target: BinaryIO) -> None:
    """Append a file's bytes, in the kernel when possible (NFS 4.2, XFS, Btrfs, Lustre...)."""
    size = source.stat().st_size
    with open(source, "rb") as handle:
        copied = 0
        try:
            while copied < size:
                step = os.copy_file_range(handle.fileno(), target.fileno(), size - copied)
                if step == 0:
                    break
                copied += step
        except OSError:
            if copied:
                raise
        if copied < size:
            handle.seek(copied)
            target.seek(0, os.SEEK_END)
            shutil.copyfileobj(handle, target, 8 << 20)
