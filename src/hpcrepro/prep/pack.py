"""Pack a run of `.lst` entries into `.rec`/`.idx`, byte-identical to `im2rec.py --pass-through`.

Reader threads load and check images in chunks (file reads and `pread` release the GIL), each
image read straight to where its record goes in the chunk's buffer, its header filled in before
it: a chunk's records then lie back to back in memory, and the calling thread writes them in list
order with one `writev` per chunk (64 images), with the GIL released for the whole copy. The
bytes written are the bytes checked and checksummed. Every `segment_bytes` the output is synced
and a checkpoint records how far the run got plus a CRC-32 of the finished segment: a killed run
truncates back to its last checkpoint and continues there, and the segment checksums become the
manifest's.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import mmap
import os
import queue
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
# magic, lrec, then im2rec's IRHeader (flag, label, id, id2): what precedes every image
_RECORD_HEAD = struct.Struct("<IIIfQQ")
RECORD_HEADER = _RECORD_HEAD.size
_PADDING = (b"", b"\0", b"\0\0", b"\0\0\0")
_IOV_MAX = 1024
# O_DIRECT offsets and lengths: a page (4 KiB, or 64 KiB on some ARM kernels), which the file
# systems that take O_DIRECT accept; one that wants more refuses the write and gets buffered ones.
_DIRECT_ALIGN = max(4096, mmap.PAGESIZE)
_STAGING_BYTES = 8 << 20


def _libc_wmemchr() -> Callable[[int, int], int | None] | None:
    """glibc's wmemchr: a vectorised search for one 4-byte word (20 GB/s), without the GIL."""
    path = ctypes.util.find_library("c")
    if not path:
        return None
    wmemchr = ctypes.CDLL(path).wmemchr
    wmemchr.restype = ctypes.c_void_p
    wmemchr.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_size_t]
    if ctypes.sizeof(ctypes.c_wchar) != 4:
        return None
    return lambda address, words: wmemchr(address, MAGIC, words)


_wmemchr = _libc_wmemchr()


def contains_magic(view: memoryview) -> bool:
    """Whether the RecordIO magic number sits at a 4-byte-aligned offset of `view`.

    dmlc's writer looks for it only there (whole words of the payload), so only there does it
    force a split record. Callers pass image bytes, which start 24 bytes (aligned) into the payload.
    """
    words = len(view) // 4
    if _wmemchr is not None and words and not view.readonly:
        address = ctypes.addressof(ctypes.c_char.from_buffer(view))
        if address % 4 == 0:  # wmemchr counts words from an aligned start
            return _wmemchr(address, words) is not None
    data = view.tobytes()
    found = data.find(MAGIC_BYTES, 0, words * 4)
    while found >= 0 and found % 4:
        found = data.find(MAGIC_BYTES, found + 1, words * 4)
    return found >= 0


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

    @classmethod
    def load(cls, path: Path) -> PackState:
        """A checkpoint or done marker from disk, its shape checked (a damaged one is a
        UserError saying how to start over)."""
        return cls.from_json(read_json(path, STATE_SHAPE))


_SEGMENT = {"offset": int, "length": int, "crc32": int}
STATE_SHAPE = {
    "position": int, "rec_size": int, "idx_size": int, "records": int,
    "segments": [_SEGMENT], "skipped": [{"path": str, "reason": str}],
}  # fmt: skip


@dataclass
class Loaded:
    """An image read into a chunk's buffer: `storage[start:end]`, with room for its header
    (`RECORD_HEADER` bytes) just before it and for its padding just after it."""

    start: int
    end: int


class SourceReader:
    """Reads images from files or from inside tars into reusable buffers; shared by threads."""

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

    def read_many(
        self, images: Sequence[SourceImage], storage: bytearray
    ) -> tuple[bytearray, list[Loaded | OSError]]:
        """Read images into `storage` (or a larger replacement, returned) where their records go.

        Each image lands `RECORD_HEADER` bytes after the end of the previous record, so once the
        headers are filled in, the chunk's records lie back to back in the buffer exactly as in
        the `.rec`: one write puts them all out, and the bytes written are the bytes checked
        and checksummed. All reads are announced first (POSIX_FADV_WILLNEED) so the disk can
        overlap them; the buffer is reused because fresh memory's page faults cost more than
        the copy itself. Each image becomes a `Loaded`, or the error it raised.
        """
        opened: list[int | OSError] = []
        for image in images:
            try:
                fd = (
                    self._tar_fd(image.file)
                    if image.offset >= 0
                    else os.open(image.file, os.O_RDONLY)
                )
            except OSError as error:
                opened.append(error)
                continue
            opened.append(fd)
            with contextlib.suppress(OSError):  # only a hint; some file systems refuse it
                os.posix_fadvise(fd, max(image.offset, 0), image.size, os.POSIX_FADV_WILLNEED)
        needed = sum(RECORD_HEADER + image.size + 3 for image in images)
        if len(storage) < needed:
            storage = bytearray(needed + needed // 4)
        loaded: list[Loaded | OSError] = []
        cursor = 0
        for image, handle in zip(images, opened, strict=True):
            if isinstance(handle, OSError):
                loaded.append(handle)
                continue
            own = image.offset < 0
            try:
                size = os.fstat(handle).st_size if own else image.size
                start = cursor + RECORD_HEADER
                if start + size + 3 > len(storage):  # the file grew since it was listed
                    storage = storage[:cursor] + bytearray(RECORD_HEADER + size + 3 + len(storage))
                _read_into(handle, image, memoryview(storage)[start : start + size])
            except OSError as error:
                loaded.append(error)
                continue
            finally:
                if own:
                    os.close(handle)
            loaded.append(Loaded(start, start + size))
            cursor = (start + size + 3) & ~3  # records, and so images, stay word-aligned
        return storage, loaded

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _read_into(fd: int, image: SourceImage, target: memoryview) -> None:
    done = 0
    while done < len(target):
        part = target[done:]
        if image.offset >= 0:
            got = os.preadv(fd, [part], image.offset + done)
        else:
            got = os.readv(fd, [part])
        if got == 0:
            raise OSError(0, f"file ends early ({done} of {len(target)} bytes)")
        done += got


@dataclass
class _Chunk:
    count: int
    buffers: list[bytes | memoryview]  # the chunk's records, in order: what is written and CRC'd
    offsets: list[tuple[int, int]]  # (record id, offset inside this chunk)
    skipped: list[dict[str, str]]
    size: int
    storage: bytearray


def frame_in_place(storage: bytearray, image: Loaded, label: int, index: int) -> bytes | None:
    """Make `storage[image.start - RECORD_HEADER : align4(image.end)]` im2rec's exact record.

    Fills in the magic, length and image header before the image and zeroes its padding.
    Returns None when that span is the record, or the record's bytes when the magic number
    inside the payload forces dmlc's split-record framing (rare), which cannot be done in place.
    """
    head = image.start - RECORD_HEADER
    length = IR_HEADER.size + image.end - image.start
    _RECORD_HEAD.pack_into(storage, head, MAGIC, length, 0, float(label), index, 0)
    view = memoryview(storage)
    if contains_magic(view[image.start : image.end]) or MAGIC_BYTES in view[head + 8 : image.start]:
        return encode_record(bytes(view[head + 8 : image.end]))
    pad = -length % 4
    storage[image.end : image.end + pad] = _PADDING[pad]
    return None


def _load_chunk(
    entries: Sequence[ListEntry], reader: SourceReader, spare: queue.Queue[bytearray]
) -> _Chunk:
    """Read and check a chunk's images and frame them in their buffer: what the writer writes.

    Records framed in place lie back to back, so the chunk is usually one buffer; a corrupt
    image leaves a gap and a split record is its own buffer.
    """
    storage, loaded = reader.read_many([e.source for e in entries], spare.get())
    buffers: list[bytes | memoryview] = []
    offsets = []
    skipped = []
    size = 0
    whole = memoryview(storage)
    run_start = run_end = 0  # the records framed in place since the last gap

    def end_run() -> None:
        if run_end > run_start:
            buffers.append(whole[run_start:run_end])

    for entry, image in zip(entries, loaded, strict=True):
        if isinstance(image, OSError):
            skipped.append({"path": entry.relpath, "reason": f"cannot read: {image.strerror}"})
            continue
        problem = image_problem(storage, image.start, image.end)
        if problem:
            skipped.append({"path": entry.relpath, "reason": problem})
            continue
        offsets.append((entry.index, size))
        head = image.start - RECORD_HEADER
        split = frame_in_place(storage, image, entry.label, entry.index)
        if split is None:
            if head != run_end:
                end_run()
                run_start = head
            run_end = (image.end + 3) & ~3
            size += run_end - head
        else:
            end_run()
            run_start = run_end = 0
            buffers.append(split)
            size += len(split)
    end_run()
    return _Chunk(len(entries), buffers, offsets, skipped, size, storage)


def _write_all(fd: int, buffers: list[bytes | memoryview]) -> None:
    """Write the buffers at the file position: one system call per chunk in the common case."""
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
        state = PackState.load(self.done)
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


ProgressFn = Callable[[int, int, int], None]  # (images done, images, bytes written)
PROGRESS_INTERVAL_S = 0.2  # how often pack reports; the display decides what to show


class _RecFile:
    """The `.rec` being appended to, from `size` bytes on.

    Where the file system allows it, records go out with O_DIRECT from a page-aligned staging
    buffer. A data set is written once and read by other jobs: putting 140 GB through the page
    cache costs a page allocation and a copy for every byte (the largest part of the pack's CPU in
    profiles, and many times more on VMs whose memory the host backs lazily) and evicts what the
    readers have cached. Direct writes start and end on block boundaries, so the last partial
    block stays in the staging buffer and is written zero-padded whenever the file must hold
    everything so far (`flush`); `close` cuts the padding off. Where O_DIRECT is refused
    (tmpfs, some network or FUSE file systems), plain buffered writes.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.size = size
        self._base = size - size % _DIRECT_ALIGN  # file offset of the staging buffer's start
        self._fill = size - self._base
        self._staging = memoryview(mmap.mmap(-1, _STAGING_BYTES))
        self._direct: int | None = None
        try:
            os.ftruncate(self.fd, size)
            direct_flag = getattr(os, "O_DIRECT", 0)
            with contextlib.suppress(OSError):
                self._direct = os.open(path, os.O_WRONLY | direct_flag) if direct_flag else None
            if self._direct is None:
                os.lseek(self.fd, size, os.SEEK_SET)
            elif self._fill:  # resuming inside a block: it is rewritten whole
                _read_exactly(self.fd, self._staging[: self._fill], self._base)
        except BaseException:
            self.close()
            raise

    def append(self, buffers: list[bytes | memoryview]) -> None:
        for number, piece in enumerate(buffers):
            view = memoryview(piece)
            while view and self._direct is not None:
                step = min(_STAGING_BYTES - self._fill, len(view))
                self._staging[self._fill : self._fill + step] = view[:step]
                self._fill += step
                self.size += step
                view = view[step:]
                if self._fill == _STAGING_BYTES:
                    self._write_staging(_STAGING_BYTES)
                    if self._direct is not None:
                        self._base, self._fill = self._base + _STAGING_BYTES, 0
            if self._direct is None:  # from the start, or since direct writes were refused
                rest = [view, *buffers[number + 1 :]]
                _write_all(self.fd, rest)
                self.size += sum(map(len, rest))
                return

    def flush(self) -> None:
        """Put everything appended so far into the file (a direct write's last block padded)."""
        if self._direct is not None and self._fill:
            end = -(-self._fill // _DIRECT_ALIGN) * _DIRECT_ALIGN
            self._staging[self._fill : end] = bytes(end - self._fill)
            self._write_staging(end)

    def _write_staging(self, length: int) -> None:
        """Write the staging buffer's first `length` bytes to where it belongs in the file."""
        assert self._direct is not None
        try:
            done = os.pwrite(self._direct, self._staging[:length], self._base)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            done = 0  # the file system takes O_DIRECT at open but not for writes
        if done < length:  # refused or short (a full disk): buffered, which says why
            self._switch_to_buffered()

    def _switch_to_buffered(self) -> None:
        assert self._direct is not None
        os.close(self._direct)
        self._direct = None
        os.lseek(self.fd, self._base, os.SEEK_SET)
        _write_all(self.fd, [self._staging[: self._fill]])
        self._base, self._fill = self.size, 0

    def close(self) -> None:
        """Flush, cut off a direct write's padding and close (also after an error)."""
        try:
            self.flush()
            os.ftruncate(self.fd, self.size)
        finally:
            if self._direct is not None:
                os.close(self._direct)
                self._direct = None
            os.close(self.fd)


def _read_exactly(fd: int, target: memoryview, offset: int) -> None:
    done = 0
    while done < len(target):
        got = os.preadv(fd, [target[done:]], offset + done)
        if got == 0:
            raise OSError(errno.EIO, f"file ends early ({done} of {len(target)} bytes)")
        done += got


class _Output:
    """Writing, checksums and checkpoints, off the reading path, on three threads in a row.

    The write thread appends each chunk's records to the `.rec`; the CRC thread then hashes the
    chunk (and hands its read buffer back to `spare`) and closes a segment when it meets a
    boundary mark, which the write thread passes on only once the file holds everything before it;
    the sync thread makes everything up to the mark durable (`fdatasync`) and only then writes
    the checkpoint. Reading and checking go on while the disk catches up.
    """

    def __init__(
        self, spare: queue.Queue[bytearray], state: PackState, rec: _RecFile, idx_fd: int,
        checkpoint: Path,
    ) -> None:  # fmt: skip
        self._spare = spare
        self._segments = list(state.segments)
        self._start = state.rec_size
        self._crc = 0
        self._rec = rec
        self._fds = (rec.fd, idx_fd)
        self._checkpoint = checkpoint
        self._error: BaseException | None = None
        self._writing: queue.Queue[_Chunk | PackState | None] = queue.Queue()
        self._hashing: queue.Queue[_Chunk | PackState | None] = queue.Queue()
        self._syncing: queue.Queue[PackState | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._write, name="prep-write", daemon=True),
            threading.Thread(target=self._hash, name="prep-crc", daemon=True),
            threading.Thread(target=self._sync, name="prep-sync", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _write(self) -> None:
        while (item := self._writing.get()) is not None:
            try:
                if self._error is None:
                    if isinstance(item, PackState):
                        self._rec.flush()
                    else:
                        self._rec.append(item.buffers)
            except OSError as error:
                self._error = error
            self._hashing.put(item)
            self._writing.task_done()
        self._hashing.put(None)
        self._writing.task_done()

    def _hash(self) -> None:
        while (item := self._hashing.get()) is not None:
            if isinstance(item, PackState):
                if item.rec_size > self._start:
                    length = item.rec_size - self._start
                    self._segments.append(
                        {"offset": self._start, "length": length, "crc32": self._crc}
                    )
                self._start, self._crc = item.rec_size, 0
                item.segments = list(self._segments)
                self._syncing.put(item)
            else:
                for buffer in item.buffers:
                    self._crc = zlib.crc32(buffer, self._crc)
                item.buffers.clear()
                self._spare.put(item.storage)
            self._hashing.task_done()
        self._syncing.put(None)
        self._hashing.task_done()

    def _sync(self) -> None:
        while (snapshot := self._syncing.get()) is not None:
            try:
                if self._error is None:
                    for fd in self._fds:
                        os.fdatasync(fd)
                    write_json(self._checkpoint, snapshot.to_json())
            except OSError as error:
                self._error = error
            self._syncing.task_done()
        self._syncing.task_done()

    def write(self, chunk: _Chunk) -> None:
        self.raise_error()
        self._writing.put(chunk)

    def mark(self, state: PackState) -> None:
        """A segment ends here: checksum it and checkpoint `state` once it is on disk."""
        self.raise_error()
        snapshot = PackState.from_json(state.to_json())
        snapshot.skipped = list(state.skipped)
        self._writing.put(snapshot)

    def finish(self, state: PackState) -> None:
        """Close the last segment, wait until it is durable, and put the segments into `state`."""
        self.mark(state)
        for stage in (self._writing, self._hashing, self._syncing):
            stage.join()
        self.raise_error()
        state.segments = list(self._segments)

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._writing.put(None)
        for thread in self._threads:
            thread.join()


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
        state = PackState.load(files.checkpoint)
    if not files.rec.exists() or files.rec.stat().st_size < state.rec_size:
        state = PackState()  # the checkpoint refers to data that is gone: start over
    reader = SourceReader()
    rec = _RecFile(files.rec, state.rec_size)
    try:
        with open(files.idx, "ab") as idx:
            idx.truncate(state.idx_size)
            idx.seek(state.idx_size)
            _pack_loop(
                entries,
                reader,
                rec,
                idx,
                files,
                state,
                workers,
                on_corrupt,
                segment_bytes,
                progress,
            )
    except BaseException:
        with contextlib.suppress(OSError):  # the error being raised says more
            rec.close()
        raise
    else:
        rec.close()
    finally:
        reader.close()
    write_json(files.done, state.to_json())
    files.checkpoint.unlink(missing_ok=True)
    return state


# Read buffers outlive one pack (the val split reuses train's): the first touch of fresh memory
# (page faults, zeroing) costs more than all the copies into a buffer that is already mapped.
_idle_buffers: list[bytearray] = []
_KEPT_BUFFERS = 64


def _pack_loop(
    entries: Sequence[ListEntry],
    reader: SourceReader,
    rec: _RecFile,
    idx: Any,
    files: ShardFiles,
    state: PackState,
    workers: int,
    on_corrupt: str,
    segment_bytes: int,
    progress: ProgressFn | None,
) -> None:
    workers = max(1, workers)
    window = workers * 2 + 2  # chunks read ahead of the writer
    spare: queue.Queue[bytearray] = queue.Queue()
    for _ in range(window + 2):  # more buffers than chunks in flight: a reader never starves
        spare.put(_idle_buffers.pop() if _idle_buffers else bytearray())
    output = _Output(spare, state, rec, idx.fileno(), files.checkpoint)
    segment_start = state.rec_size
    idx_lines: list[str] = []

    def boundary(final: bool) -> None:
        nonlocal segment_start
        idx.write("".join(idx_lines).encode("ascii"))
        idx_lines.clear()
        idx.flush()
        state.idx_size = idx.tell()
        if final:
            output.finish(state)
        else:
            output.mark(state)
        segment_start = state.rec_size

    starts = iter(range(state.position, len(entries), CHUNK))
    pending: deque[Future[_Chunk]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prep-read")
    last_report = time.monotonic()
    try:
        for start in starts:
            pending.append(pool.submit(_load_chunk, entries[start : start + CHUNK], reader, spare))
            if len(pending) >= window:
                break
        while pending:
            chunk = pending.popleft().result()
            following = next(starts, None)
            if following is not None:
                pending.append(
                    pool.submit(_load_chunk, entries[following : following + CHUNK], reader, spare)
                )
            for bad in chunk.skipped:
                if on_corrupt == "fail":
                    boundary(final=True)
                    raise UserError(
                        f"corrupt image {bad['path']}: {bad['reason']}",
                        hint="replace the file, or pass --on-corrupt skip to leave it out "
                        "(it is then listed in the manifest); the prep resumes where it "
                        "stopped",
                    )
                sys.stderr.write(f"warning: skipped {bad['path']}: {bad['reason']}\n")
                state.skipped.append(bad)
            output.write(chunk)
            base = state.rec_size
            idx_lines.extend(f"{rid}\t{base + offset}\n" for rid, offset in chunk.offsets)
            state.rec_size += chunk.size
            state.records += len(chunk.offsets)
            state.position += chunk.count
            if state.rec_size - segment_start >= segment_bytes:
                boundary(final=False)
            now = time.monotonic()
            if progress and now - last_report >= PROGRESS_INTERVAL_S:
                progress(state.position, len(entries), state.rec_size)
                last_report = now
        boundary(final=True)
    finally:
        for _ in range(workers):  # unblock readers waiting for a buffer after an error
            spare.put(bytearray())
        pool.shutdown(wait=True, cancel_futures=True)
        output.stop()
        while not spare.empty() and len(_idle_buffers) < _KEPT_BUFFERS:
            if len(buffer := spare.get()):
                _idle_buffers.append(buffer)
