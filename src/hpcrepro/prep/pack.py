"""Pack a run of `.lst` entries into `.rec`/`.idx`, byte-identical to `im2rec.py --pass-through`.

Reader threads load and check images in chunks (file reads and `pread` release the GIL); the calling
thread writes the framed chunks in list order with `writev`, so the JPEG bytes are copied once from
the page cache to the output and never joined in memory. Every `segment_bytes` the output is synced
and a checkpoint records how far the run got plus a CRC-32 of the finished segment: a killed run
truncates back to its last checkpoint and continues there, and the segment checksums become the
manifest's.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcrepro.errors import UserError
from hpcrepro.prep.files import read_json, write_json
from hpcrepro.prep.imagecheck import image_problem
from hpcrepro.prep.listing import ListEntry
from hpcrepro.prep.sources import SourceImage
from hpcrepro.recordio import IR_HEADER, MAGIC, MAGIC_BYTES, encode_record

CHUNK = 64
SEGMENT_BYTES = 1 << 30
_LREC_HEADER = struct.Struct("<II")
_PADDING = (b"", b"\0", b"\0\0", b"\0\0\0")
_IOV_MAX = 1024


@dataclass
class PackState:
    """How far a pack got: persisted as the checkpoint while running and the done marker after."""

    position: int = 0
    rec_size: int = 0
    idx_size: int = 0
    records: int = 0
    segments: list[dict[str, int]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PackState:
        return cls(**data)


class SourceReader:
    """Reads image bytes from files or from inside tars; safe to share between threads."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def _tar_fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            with self._lock:
                fd = self._fds.get(path)
                if fd is None:
                    fd = os.open(path, os.O_RDONLY)
                    self._fds[path] = fd
        return fd

    def read(self, image: SourceImage) -> bytes:
        if image.offset >= 0:
            data = os.pread(self._tar_fd(image.file), image.size, image.offset)
            if len(data) != image.size:
                raise OSError(0, f"tar ends early ({len(data)} of {image.size} bytes)")
            return data
        fd = os.open(image.file, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            parts = [os.read(fd, size)] if size else []
            while parts and sum(map(len, parts)) < size:
                more = os.read(fd, size - sum(map(len, parts)))
                if not more:
                    break
                parts.append(more)
            return b"".join(parts) if len(parts) != 1 else parts[0]
        finally:
            os.close(fd)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


@dataclass
class _Chunk:
    count: int
    buffers: list[bytes]
    offsets: list[tuple[int, int]]  # (record id, offset inside this chunk)
    skipped: list[dict[str, str]]
    size: int


def frame_image(label: int, index: int, data: bytes, out: list[bytes]) -> int:
    """Append the framed record's pieces to `out` and return its size (im2rec's exact bytes)."""
    header = IR_HEADER.pack(0, float(label), index, 0)
    if MAGIC_BYTES in data or MAGIC_BYTES in header:
        # Rare: the magic number inside the payload forces dmlc's split-record framing.
        framed = encode_record(header + data)
        out.append(framed)
        return len(framed)
    length = IR_HEADER.size + len(data)
    out.append(_LREC_HEADER.pack(MAGIC, length) + header)
    out.append(data)
    pad = -length % 4
    if pad:
        out.append(_PADDING[pad])
    return 8 + length + pad


def _load_chunk(entries: Sequence[ListEntry], reader: SourceReader) -> _Chunk:
    buffers: list[bytes] = []
    offsets = []
    skipped = []
    size = 0
    for entry in entries:
        try:
            data = reader.read(entry.source)
        except OSError as error:
            skipped.append({"path": entry.relpath, "reason": f"cannot read: {error.strerror}"})
            continue
        problem = image_problem(data)
        if problem:
            skipped.append({"path": entry.relpath, "reason": problem})
            continue
        offsets.append((entry.index, size))
        size += frame_image(entry.label, entry.index, data, buffers)
    return _Chunk(len(entries), buffers, offsets, skipped, size)


def _write_all(fd: int, buffers: list[bytes]) -> None:
    for start in range(0, len(buffers), _IOV_MAX):
        batch = buffers[start : start + _IOV_MAX]
        written = os.writev(fd, batch)
        total = sum(map(len, batch))
        if written < total:  # a short write: finish it piece by piece
            rest = b"".join(batch)[written:]
            while rest:
                rest = rest[os.write(fd, rest) :]


class ShardFiles:
    """The files of one packed run: records, index, checkpoint and done marker."""

    def __init__(self, stem: Path) -> None:
        self.rec = stem.with_name(stem.name + ".rec")
        self.idx = stem.with_name(stem.name + ".idx")
        self.checkpoint = stem.with_name(stem.name + ".ckpt.json")
        self.done = stem.with_name(stem.name + ".done.json")

    def finished(self) -> PackState | None:
        """The done marker's state if the shard is complete and its files still match it."""
        if not self.done.is_file():
            return None
        state = PackState.from_json(read_json(self.done))
        try:
            ok = (
                self.rec.stat().st_size == state.rec_size
                and self.idx.stat().st_size == state.idx_size
            )
        except FileNotFoundError:
            ok = False
        return state if ok else None

    def remove(self) -> None:
        for path in (self.rec, self.idx, self.checkpoint, self.done):
            path.unlink(missing_ok=True)


ProgressFn = Callable[[int, int, int], None]


def pack(
    entries: Sequence[ListEntry],
    files: ShardFiles,
    *,
    workers: int,
    on_corrupt: str = "fail",
    segment_bytes: int = SEGMENT_BYTES,
    progress: ProgressFn | None = None,
) -> PackState:
    """Pack `entries` in order into `files`, resuming from its checkpoint; return the end state."""
    done = files.finished()
    if done is not None:
        return done
    state = PackState()
    if files.checkpoint.is_file():
        state = PackState.from_json(read_json(files.checkpoint))
    if not files.rec.exists() or files.rec.stat().st_size < state.rec_size:
        state = PackState()  # the checkpoint refers to data that is gone: start over
    reader = SourceReader()
    rec_fd = os.open(files.rec, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(rec_fd, state.rec_size)
        os.lseek(rec_fd, state.rec_size, os.SEEK_SET)
        with open(files.idx, "ab") as idx:
            idx.truncate(state.idx_size)
            idx.seek(state.idx_size)
            _pack_loop(
                entries,
                reader,
                rec_fd,
                idx,
                files,
                state,
                workers,
                on_corrupt,
                segment_bytes,
                progress,
            )
    finally:
        os.close(rec_fd)
        reader.close()
    write_json(files.done, state.to_json())
    files.checkpoint.unlink(missing_ok=True)
    return state


def _pack_loop(
    entries: Sequence[ListEntry],
    reader: SourceReader,
    rec_fd: int,
    idx: Any,
    files: ShardFiles,
    state: PackState,
    workers: int,
    on_corrupt: str,
    segment_bytes: int,
    progress: ProgressFn | None,
) -> None:
    crc = 0
    segment_start = state.rec_size
    idx_lines: list[str] = []

    def checkpoint() -> None:
        nonlocal crc, segment_start
        idx.write("".join(idx_lines).encode("ascii"))
        idx_lines.clear()
        idx.flush()
        os.fdatasync(idx.fileno())
        os.fdatasync(rec_fd)
        if state.rec_size > segment_start:
            state.segments.append(
                {"offset": segment_start, "length": state.rec_size - segment_start, "crc32": crc}
            )
        state.idx_size = idx.tell()
        write_json(files.checkpoint, state.to_json())
        crc, segment_start = 0, state.rec_size

    workers = max(1, workers)
    starts = iter(range(state.position, len(entries), CHUNK))
    pending: deque[Future[_Chunk]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prep-read")
    started = time.monotonic()
    last_report = started
    try:
        for start in starts:
            pending.append(pool.submit(_load_chunk, entries[start : start + CHUNK], reader))
            if len(pending) >= workers * 4:
                break
        while pending:
            chunk = pending.popleft().result()
            following = next(starts, None)
            if following is not None:
                pending.append(
                    pool.submit(_load_chunk, entries[following : following + CHUNK], reader)
                )
            for bad in chunk.skipped:
                if on_corrupt == "fail":
                    checkpoint()
                    raise UserError(
                        f"corrupt image {bad['path']}: {bad['reason']}",
                        hint="replace the file, or pass --on-corrupt skip to leave it out "
                        "(it is then listed in the manifest); the prep resumes where it stopped",
                    )
                sys.stderr.write(f"warning: skipped {bad['path']}: {bad['reason']}\n")
                state.skipped.append(bad)
            _write_all(rec_fd, chunk.buffers)
            for buffer in chunk.buffers:
                crc = zlib.crc32(buffer, crc)
            base = state.rec_size
            idx_lines.extend(f"{rid}\t{base + offset}\n" for rid, offset in chunk.offsets)
            state.rec_size += chunk.size
            state.records += len(chunk.offsets)
            state.position += chunk.count
            if state.rec_size - segment_start >= segment_bytes:
                checkpoint()
            now = time.monotonic()
            if progress and now - last_report >= 5:
                progress(state.position, len(entries), state.rec_size)
                last_report = now
        checkpoint()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
