"""The campaign manifest: one JSON file, written atomically under an NFS-safe lock.

Writers take `locked()` (filelock's SoftFileLock: a marker file created with O_EXCL, which works on
NFS, recording pid and host so that a lock left by a killed process on this host is broken), then
write to a temporary file in the same folder, fsync it and rename it over the manifest: readers
never see half a file, and they need no lock at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hpcrepro.campaign import shape
from hpcrepro.errors import UserError
from hpcrepro.jsonio import read_json

FORMAT = 1
LOCK_TIMEOUT_S = 120.0


def load(path: Path) -> dict[str, Any]:
    """The manifest at `path`, checked against the shape hpcrepro writes (see `shape`)."""
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{path} does not exist", hint="is this a campaign folder?")
    data = read_json(path, hint=shape.HINT)
    if not isinstance(data, dict):
        raise UserError(
            f"{path} is not a campaign manifest (a JSON {type(data).__name__}, not an object)",
            hint=shape.HINT,
        )
    if data.get("format") != FORMAT:
        raise UserError(
            f"{path} has manifest format {data.get('format')!r:.40}, expected {FORMAT}",
            hint="use the hpcrepro version that created this campaign",
        )
    try:
        shape.check(data)
    except shape.ShapeError as error:
        raise shape.damaged(path, error) from error
    return data


def save(path: Path, data: dict[str, Any]) -> None:
    """Replace the manifest atomically (temp file + fsync + rename)."""
    text = json.dumps(data, indent=1, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".campaign.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(lock_path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the campaign's lock; only one hpcrepro process changes a campaign at a time."""
    from filelock import SoftFileLock, Timeout

    lock = SoftFileLock(str(lock_path), timeout=timeout)
    try:
        lock.acquire()
    except Timeout as error:
        raise UserError(
            f"another hpcrepro process holds {lock_path} (waited {timeout:.0f} s)",
            hint="wait for it to finish; if no hpcrepro runs on any host, delete that file",
        ) from error
    try:
        yield
    finally:
        lock.release()


def try_locked(lock_path: Path) -> contextlib.AbstractContextManager[bool]:
    """Like `locked`, but does not wait: yields False when another process holds the lock."""
    return _try_locked(lock_path)


@contextlib.contextmanager
def _try_locked(lock_path: Path) -> Iterator[bool]:
    from filelock import SoftFileLock, Timeout

    lock = SoftFileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
