"""Tar members listed so that a damaged archive is an error, never a shorter list.

Python's `tarfile` ends its listing without a word at a damaged member header after the first
(a bad checksum, an archive cut inside a header), accepts members whose data lies past the end of
the file, and reads a PAX or GNU long-name header into memory whatever size it declares. GNU tar
reports each of these and exits 2; an image silently left out shifts nothing but is simply gone
from the data set. Here a listing must end at an end-of-archive block with only zeros after it
(or exactly at the end of the file), every member must lie inside the archive, and metadata
headers are bounded: anything else raises a `UserError` naming the archive, the byte and the
member.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from typing import Any, BinaryIO, Protocol, cast

from hpcrepro.errors import UserError

BLOCK = tarfile.BLOCKSIZE
# A PAX or GNU long-name header is read whole into memory; real ones hold a few hundred bytes
# (GNU tar's own long names are at most PATH_MAX), so anything this large is damage.
MAX_METADATA = 1 << 20
_METADATA = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)
_SCAN_STEP = 1 << 20


class Seekable(Protocol):
    """What tarfile reads a tar through: a file, or a window onto a member of an outer tar."""

    def read(self, n: int = -1, /) -> bytes: ...
    def seek(self, pos: int, whence: int = 0, /) -> int: ...
    def tell(self) -> int: ...


class _Damage(Exception):
    """Raised from inside tarfile's parser, which would otherwise swallow a HeaderError."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _BoundedInfo(tarfile.TarInfo):
    """A TarInfo that refuses an oversized metadata header before tarfile reads it.

    `_proc_member` is the hook tarfile documents for subclasses (see its source comments).
    """

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        if self.type in _METADATA and self.size > MAX_METADATA:
            raise _Damage(
                f"the member header at byte {self.offset} declares a {self.size}-byte "
                f"{'PAX' if self.type in _METADATA[:3] else 'GNU long-name'} header "
                f"(real ones hold a few hundred bytes)",
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def _name(name: str) -> str:
    """A member name for a message: quoted, control characters escaped (names are data)."""
    return repr(name) if name.isprintable() else ascii(name)


def _damaged(archive: str, what: str, message: str, after: str | None) -> UserError:
    place = f" (after member {_name(after)})" if after else ""
    return UserError(
        f"{archive} is damaged: {message}{place}",
        hint=f"see 'tar tvf' on it; download or copy the {what} again (the ILSVRC2012 tars "
        "have published MD5 sums) and run the same command; nothing was written",
    )


def _header_fault(block: bytes) -> str:
    """Why `block` is not a member header, and the name its name field still shows."""
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        reason = "unreadable member header"
    except tarfile.HeaderError as error:
        reason = str(error)
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    shown = f", its name field reads {_name(name)}" if name else ""
    return f"{reason}{shown}"


def _nonzero_after(handle: Seekable, offset: int, size: int) -> int | None:
    """The offset of the first non-zero byte in [offset, size), or None."""
    position = offset
    while position < size:
        handle.seek(position)
        chunk = handle.read(min(_SCAN_STEP, size - position))
        if not chunk:
            return None
        stripped = chunk.lstrip(b"\0")
        if stripped:
            return position + len(chunk) - len(stripped)
        position += len(chunk)
    return None


def _open(handle: Seekable, archive: str, what: str) -> tarfile.TarFile:
    try:
        # tarfile only reads, seeks and tells through a file object opened for reading
        return tarfile.open(fileobj=cast(BinaryIO, handle), mode="r:", tarinfo=_BoundedInfo)
    except _Damage as damage:
        raise _damaged(archive, what, damage.message, None) from damage
    except (tarfile.TarError, EOFError, ValueError, OverflowError) as error:
        raise UserError(
            f"{archive} is not a readable tar file ({error})",
            hint=f"pass the original {what} as downloaded from image-net.org (uncompressed tar)",
        ) from error


def members(handle: Seekable, archive: str, what: str, size: int) -> Iterator[tarfile.TarInfo]:
    """Every member of the tar in `handle` (`size` bytes), in order, checked as described above.

    `archive` names the tar in messages (`outer.tar[inner.tar]` for a tar inside a tar) and
    `what` says what the user should fetch again. OSErrors pass through unchanged.
    """
    tar = _open(handle, archive, what)
    previous: str | None = None
    with tar:
        while True:
            try:
                member = tar.next()
            except _Damage as damage:
                raise _damaged(archive, what, damage.message, previous) from damage
            except (tarfile.TarError, EOFError, ValueError, OverflowError) as error:
                message = f"unreadable member header at byte {tar.offset} ({error})"
                raise _damaged(archive, what, message, previous) from error
            if member is None:
                break
            if tar.offset > size:  # tar.offset: where the next header would start
                raise _damaged(
                    archive,
                    what,
                    f"member {_name(member.name)} declares {member.size} bytes from byte "
                    f"{member.offset_data}, but the archive ends at byte {size}: it is cut short",
                    None,
                )
            previous = member.name
            yield member
        _check_end(handle, tar.offset, size, archive, what, previous)


def _check_end(
    handle: Seekable, offset: int, size: int, archive: str, what: str, previous: str | None
) -> None:
    """tarfile stopped at `offset`: accept only an end-of-archive block or the end of the file."""
    handle.seek(offset)
    block = handle.read(BLOCK)
    if not block:
        return  # no end-of-archive blocks: GNU tar accepts this too
    if len(block) < BLOCK:
        message = f"the archive ends inside a member header at byte {offset}: it is cut short"
        raise _damaged(archive, what, message, previous)
    if block.count(0) != BLOCK:
        message = f"the member header at byte {offset} is damaged ({_header_fault(block)})"
        raise _damaged(archive, what, message, previous)
    stray = _nonzero_after(handle, offset + BLOCK, size)
    if stray is not None:
        message = (
            f"an end-of-archive block at byte {offset} is followed by data at byte {stray} "
            "(a zeroed header, or two archives joined; GNU tar lists only the first part too)"
        )
        raise _damaged(archive, what, message, previous)


def file_size(handle: BinaryIO) -> int:
    return os.fstat(handle.fileno()).st_size
