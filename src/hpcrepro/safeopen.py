"""Open, read and write files that a user names (a log, a JSON or YAML file, an output) without
surprises.

A FIFO would block the open itself until some writer appears, and a link to /dev/zero would be
read forever; both are refused with an OSError saying what the path is. The open never blocks.
`read_user_file` adds what every configuration reader needs: a size limit and UTF-8 text, with
the line of a bad byte, as user errors naming the file.

Every file hpcrepro writes whole goes through one writer, `_replace_at`: a new private file
renamed over the name, so readers never see half a file and a link planted at the name is
replaced, not written through. `replace_file` (and `write_atomically`, its UserError form for a
command's output) writes into a folder the user named; inside a folder hpcrepro made (a campaign
folder, the campaign index), `replace_inside` and `open_inside` never follow a link: each folder
on the way is opened with O_NOFOLLOW, relative to the one before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from hpcrepro.errors import UserError, location

_NO_FOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# What a full disk or an exhausted quota says: the same advice fits both.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular(path: str | Path) -> BinaryIO:
    """`open(path, "rb")` for regular files; OSError(EINVAL, "a FIFO, not a regular file")."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "no regular file")
            raise OSError(errno.EINVAL, f"{kind}, not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_user_file(path: Path, max_bytes: int, hint: str | None = None) -> str:
    """The UTF-8 text of a small regular file (a leading BOM dropped); UserError otherwise."""
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            raw = b"" if size > max_bytes else handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise UserError("file not found", where=str(path), hint=hint) from None
    except OSError as error:
        raise UserError(
            f"cannot read it ({error.strerror or error})", where=str(path), hint=hint
        ) from None
    if size > max_bytes or len(raw) > max_bytes:
        raise UserError(
            f"{max(size, len(raw))} bytes: more than the {max_bytes // 1024} KiB "
            "such a file may have; is this the right file?",
            where=str(path),
            hint=hint,
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise UserError(
            f"not UTF-8 text: byte 0x{raw[error.start]:02x} at column {column}",
            where=location(str(path), line=line),
            hint=hint or "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None


def existing_file(path: Path, option: str, hint: str) -> bool:
    """Whether a regular file is at `path` (False: nothing is). A folder, a broken link or any
    other non-file there is a UserError even with --force: hpcrepro removes nothing to make room."""
    if not path.exists() and not path.is_symlink():
        return False
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "a broken link" if path.is_symlink() else "special"
        raise UserError(
            f"{path} exists and is {kind}, not a file: hpcrepro writes a file there "
            "and removes nothing",
            where=option,
            hint=hint,
        )
    return True


def _umask() -> int:
    """This process's umask, read without changing it (prep writes from several threads: setting
    and restoring it could give another thread's new file a looser mask)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            line = next(line for line in status if line.startswith("Umask:"))
        return int(line.split()[1], 8)
    mask = os.umask(0o022)  # kernels before 4.7 do not show it
    os.umask(mask)
    return mask


Data = bytes | Iterable[bytes]
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _replace_at(
    folder: int, name: str, data: Data, mode: int, sync: bool, staging: int | None = None
) -> None:
    """The one atomic write: `data` into a new private file (in `staging`, a folder on the same
    file system, else beside the target), given `mode`, optionally fsynced, then renamed over
    `name` in `folder`. Readers see the old file or the new one, never half; a link at `name` is
    replaced, not followed; on failure the temporary file is removed and the old file is left."""
    at = folder if staging is None else staging
    temp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(
        temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=at
    )
    try:
        try:
            if isinstance(data, bytes):
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            else:
                with os.fdopen(os.dup(fd), "wb") as handle:  # buffered: many small chunks
                    handle.writelines(data)
            os.fchmod(fd, mode)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, name, src_dir_fd=at, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=at)
        raise


def replace_file(
    path: Path,
    data: Data,
    *,
    mode: int | None = None,
    sync: bool = False,
    staging: Path | None = None,
) -> None:
    """Write `path` whole (see `_replace_at`) in a folder the user named, which may be reached
    through links; OSError on failure. Without `mode` the file gets what `open()` would give it
    (0666 less the umask), with it exactly `mode`."""
    folder = os.open(path.parent, _DIR)
    try:
        stage = os.open(staging, _DIR) if staging is not None else None
        try:
            _replace_at(
                folder, path.name, data, 0o666 & ~_umask() if mode is None else mode, sync, stage
            )
        finally:
            if stage is not None:
                os.close(stage)
    finally:
        os.close(folder)


def write_atomically(path: Path, data: Data, option: str, mode: int | None = None) -> None:
    """A command's output file: its folder made, the file written whole (`replace_file`); a
    UserError naming `option` on failure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, data, mode=mode)
    except OSError as error:
        raise UserError(f"cannot write {path} ({error.strerror or error})", where=option) from None


def open_folder(base: Path, relative: str | Path = "") -> int:
    """A descriptor of the folder `base/relative`, each part opened without following a link
    (OSError ELOOP or ENOTDIR when one is a link or no folder). `relative` may not climb ('..')."""
    parts = Path(relative).parts
    if any(part in ("..", "/") for part in parts):
        raise OSError(errno.EINVAL, "a path that leaves its folder", str(Path(base, relative)))
    fd = os.open(base, _NO_FOLLOW_DIR)
    try:
        for part in parts:
            inner = os.open(part, _NO_FOLLOW_DIR, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def replace_inside(
    base: Path, relative: str | Path, data: Data, mode: int = 0o644, sync: bool = False
) -> None:
    """Write `base/relative` whole (see `_replace_at`; permissions `mode` less the umask) with no
    link followed from `base` down: a link at that name is replaced, one on the way refused.
    OSError on failure; the old file is then left as it was."""
    relative = Path(relative)
    folder = open_folder(base, relative.parent)
    try:
        _replace_at(folder, relative.name, data, mode & ~_umask(), sync)
    finally:
        os.close(folder)


def open_inside(base: Path, relative: str | Path, flags: int, mode: int = 0o644) -> int:
    """`os.open(base/relative, flags)` for a regular file, with no link followed on the way or
    at the end, and no wait on a FIFO planted there (OSError EINVAL for anything not a file)."""
    relative = Path(relative)
    folder = open_folder(base, relative.parent)
    try:
        fd = os.open(
            relative.name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=folder
        )
    finally:
        os.close(folder)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(Path(base, relative)))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def cannot_write(path: Path, error: OSError, where: str | None = None) -> UserError:
    """The user error for a failed write: the file, the system's reason, and for a full disk or
    quota what to do about it."""
    hint = None
    if error.errno in NO_SPACE:
        hint = (
            f"the file system of {path.parent} is full (or your quota is used up): free "
            "space there (`df`, `quota`) and run the same command again"
        )
    return UserError(f"cannot write {path} ({error.strerror or error})", where=where, hint=hint)
