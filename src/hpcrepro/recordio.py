"""MXNet RecordIO, byte-compatible with dmlc-core's writer and MXNet's `im2rec.py`.

A record is `magic:u32, lrec:u32, payload, zero padding to 4 bytes`, with
`lrec = cflag << 29 | length`. dmlc splits a payload wherever the magic number appears at a
4-byte-aligned offset (cflag 1 = first part, 2 = middle, 3 = last; the magic itself is dropped and
restored by the reader). An image payload starts with the IRHeader `struct IfQQ` =
(flag, label, id, id2); im2rec's pass-through mode stores flag 0, the class index as a float label,
the list index as id, 0 as id2, then the original JPEG bytes. The `.idx` file holds one
`id\\toffset` line per record, the offset of the record's first magic.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
IR_HEADER = struct.Struct("<IfQQ")
_LREC = struct.Struct("<II")
_MAX_LENGTH = (1 << 29) - 1


class RecordIOError(ValueError):
    """The bytes are not valid RecordIO."""


@dataclass(frozen=True)
class ImageRecord:
    """One decoded image record: im2rec's header fields and the stored image bytes."""

    label: float
    id: int
    id2: int
    image: bytes
    flag: int = 0
    labels: tuple[float, ...] = ()


def pack_image(label: float, record_id: int, image: bytes, id2: int = 0) -> bytes:
    """Payload of an image record exactly as `mx.recordio.pack(IRHeader(0, label, id, 0), img)`."""
    return IR_HEADER.pack(0, label, record_id, id2) + image


def unpack_image(payload: bytes) -> ImageRecord:
    """Split a payload into IRHeader and image bytes (multi-label records keep all labels)."""
    if len(payload) < IR_HEADER.size:
        raise RecordIOError(f"payload of {len(payload)} bytes is shorter than the image header")
    flag, label, rid, id2 = IR_HEADER.unpack_from(payload)
    body = payload[IR_HEADER.size :]
    labels: tuple[float, ...] = ()
    if flag > 0:
        if len(body) < 4 * flag:
            raise RecordIOError(f"header announces {flag} labels but the record is too short")
        labels = struct.unpack_from(f"<{flag}f", body)
        body = body[4 * flag :]
    return ImageRecord(label=label, id=rid, id2=id2, image=bytes(body), flag=flag, labels=labels)


def encode_record(payload: bytes) -> bytes:
    """Frame one payload the way dmlc::RecordIOWriter::WriteRecord does, padding included."""
    size = len(payload)
    if size > _MAX_LENGTH:
        raise RecordIOError(f"record of {size} bytes exceeds RecordIO's 2^29-byte limit")
    parts: list[bytes] = []
    start = 0
    lower_align = size & ~3
    search = payload.find(MAGIC_BYTES, 0, lower_align + 3)
    while search != -1 and search < lower_align:
        if search % 4 == 0:
            cflag = 1 if start == 0 else 2
            parts.append(_LREC.pack(MAGIC, (cflag << 29) | (search - start)))
            parts.append(payload[start:search])
            start = search + 4
            search = payload.find(MAGIC_BYTES, start, lower_align + 3)
        else:
            search = payload.find(MAGIC_BYTES, search + 1, lower_align + 3)
    cflag = 3 if start != 0 else 0
    parts.append(_LREC.pack(MAGIC, (cflag << 29) | (size - start)))
    parts.append(payload[start:])
    parts.append(b"\0" * (-size % 4))
    return b"".join(parts)


def read_record(stream: BinaryIO) -> bytes | None:
    """Read the next payload from `stream` (joining split parts); None at a clean end of file."""
    chunks: list[bytes] = []
    while True:
        head = stream.read(8)
        if not head:
            if chunks:
                raise RecordIOError("file ends inside a split record")
            return None
        if len(head) < 8:
            raise RecordIOError("file ends inside a record header")
        magic, lrec = _LREC.unpack(head)
        if magic != MAGIC:
            raise RecordIOError(f"bad magic 0x{magic:08x} at offset {stream.tell() - 8}")
        cflag, length = lrec >> 29, lrec & _MAX_LENGTH
        data = stream.read(length)
        if len(data) < length:
            raise RecordIOError("file ends inside a record payload")
        stream.read(-length % 4)
        if cflag == 0:
            if chunks:
                raise RecordIOError("unsplit record inside a split record")
            return data
        if cflag == 1 and chunks:
            raise RecordIOError("a split record starts before the previous one ended")
        if cflag in (2, 3) and not chunks:
            raise RecordIOError("continuation part without a first part")
        if chunks:
            chunks.append(MAGIC_BYTES)
        chunks.append(data)
        if cflag == 3:
            return b"".join(chunks)


def iter_records(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, payload) for every record of a `.rec` file, in file order."""
    with open(path, "rb", buffering=1 << 20) as stream:
        while True:
            offset = stream.tell()
            payload = read_record(stream)
            if payload is None:
                return
            yield offset, payload


def read_index(path: Path) -> list[tuple[int, int]]:
    """Parse an `.idx` file into (id, offset) pairs in file order."""
    entries: list[tuple[int, int]] = []
    with open(path, encoding="ascii") as handle:
        for lineno, line in enumerate(handle, 1):
            fields = line.split("\t")
            if len(fields) != 2:
                raise RecordIOError(f"{path}:{lineno}: expected 'id<TAB>offset', got {line!r}")
            try:
                entries.append((int(fields[0]), int(fields[1])))
            except ValueError as exc:
                raise RecordIOError(f"{path}:{lineno}: not integers: {line!r}") from exc
    return entries


class IndexedReader:
    """Random access to the records of a `.rec` file through its `.idx` (like MXIndexedRecordIO)."""

    def __init__(self, rec_path: Path, idx_path: Path) -> None:
        self.rec_path = Path(rec_path)
        self.entries = read_index(Path(idx_path))
        self.keys = [key for key, _ in self.entries]
        self._stream: BinaryIO | None = None
        self._owner = 0  # pid that opened _stream

    def __len__(self) -> int:
        return len(self.entries)

    def _file(self) -> BinaryIO:
        """This process's own handle. A forked loader worker must not use its parent's: the
        processes would share one file offset, and their seek-then-read pairs interleave."""
        if self._stream is None or self._owner != os.getpid():
            self._stream = open(self.rec_path, "rb")  # noqa: SIM115 - closed in close()
            self._owner = os.getpid()
        return self._stream

    def __getstate__(self) -> dict[str, object]:
        # A loader worker started from a fresh interpreter gets a copy without the handle.
        return {**self.__dict__, "_stream": None, "_owner": 0}

    def read_payload_at(self, offset: int) -> bytes:
        stream = self._file()
        stream.seek(offset)
        payload = read_record(stream)
        if payload is None:
            raise RecordIOError(f"{self.rec_path}: no record at offset {offset}")
        return payload

    def read_position(self, position: int) -> ImageRecord:
        """The record at `position` in index order (0 .. len-1)."""
        return unpack_image(self.read_payload_at(self.entries[position][1]))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __enter__(self) -> IndexedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
