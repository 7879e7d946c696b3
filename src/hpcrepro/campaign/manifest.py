"""The campaign manifest: one JSON file, written atomically under an NFS-safe lock.

Writers take `locked()` (filelock's SoftFileLock: a marker file created with O_EXCL, which works on
NFS, recording pid and host so that a lock left by a killed process on this host is broken), then
write to a temporary file in the same folder, fsync it and rename it over the manifest: readers
never see half a file, and they need no lock at all.

A full disk must not stop `cancel` from recording what it did, so each save keeps a reserve file
beside the manifest (`.campaign.reserve`, twice the manifest's size, at least 64 KiB). When a save
finds no space, it gives the reserve back and writes into the room it leaves; the next save that
finds room again makes a new reserve.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hpcrepro.campaign import state
from hpcrepro.campaign.state import Manifest
from hpcrepro.errors import UserError
from hpcrepro.jsonio import read_json
from hpcrepro.safeopen import NO_SPACE, cannot_write, open_inside, replace_inside

LOCK_TIMEOUT_S = 120.0
RESERVE = ".campaign.reserve"
_RESERVE_MIN = 64 << 10


def load(path: Path) -> Manifest:
    """The manifest at `path`, read and checked as `campaign.state` declares it."""
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{path} does not exist", hint="is this a campaign folder?")
    data = read_json(path, hint=state.HINT)
    if not isinstance(data, dict):
        raise UserError(
            f"{path} is not a campaign manifest (a JSON {type(data).__name__}, not an object)",
            hint=state.HINT,
        )
    if data.get("format") != state.FORMAT:
        raise UserError(
            f"{path} has manifest format {data.get('format')!r:.40}, expected {state.FORMAT}",
            hint="use the hpcrepro version that created this campaign",
        )
    try:
        return state.from_json(data)
    except state.ShapeError as error:
        raise state.damaged(path, error) from error


def save(path: Path, manifest: Manifest, reserve: bool = True) -> None:
    """Replace the manifest atomically (temp file + fsync + rename); a UserError naming the
    file when it cannot be written, with the reserve given back unless `reserve` is False
    (status updates leave it to the commands that must record what they did)."""
    data = {"format": state.FORMAT, **manifest.to_json()}
    text = (json.dumps(data, indent=1, sort_keys=False) + "\n").encode()
    _with_room(path, reserve, lambda: replace_inside(path.parent, path.name, text, sync=True))
    _keep_reserve(path.parent, 2 * len(text))


class NoSpace(UserError):
    """A campaign file could not be written: the disk is full or the quota used up."""


def _with_room(path: Path, reserve: bool, write: Callable[[], None]) -> None:
    """`write()`, once more after giving back the reserve when the disk is full."""
    try:
        write()
        return
    except OSError as error:
        if not (reserve and error.errno in NO_SPACE and _give_back_reserve(path.parent)):
            raise _failed(path, error) from None
    try:
        write()
    except OSError as error:
        raise _failed(path, error) from None


def _failed(path: Path, error: OSError) -> UserError:
    problem = cannot_write(path, error)
    if error.errno in NO_SPACE:
        return NoSpace(problem.message, where=problem.where, hint=problem.hint)
    return problem


def _give_back_reserve(folder: Path) -> bool:
    try:
        os.unlink(folder / RESERVE)
    except OSError:
        return False
    return True


def _keep_reserve(folder: Path, wanted: int) -> None:
    """Make sure the reserve holds `wanted` bytes (64 KiB at least); when there is no room for
    it, there is no reserve (a part of one would take the room other writes need)."""
    wanted = max(_RESERVE_MIN, wanted)
    with contextlib.suppress(OSError):
        if os.lstat(folder / RESERVE).st_size >= wanted:
            return
    try:
        fd = open_inside(folder, RESERVE, os.O_WRONLY | os.O_CREAT)
    except OSError:
        return
    try:
        os.posix_fallocate(fd, 0, wanted)
    except OSError:
        _give_back_reserve(folder)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(lock_path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the campaign's lock; only one hpcrepro process changes a campaign at a time. On a
    full disk the lock's marker file is written into the room of the reserve."""
    from filelock import SoftFileLock, Timeout

    lock = SoftFileLock(str(lock_path), timeout=timeout)
    try:
        _with_room(lock_path, True, lambda: _acquire(lock))
    except Timeout as error:
        raise UserError(
            f"another hpcrepro process holds {lock_path} (waited {timeout:.0f} s)",
            hint="wait for it to finish; if no hpcrepro runs on any host, delete that file",
        ) from error
    try:
        yield
    finally:
        lock.release()


def _acquire(lock: Any) -> None:
    lock.acquire()


def try_locked(lock_path: Path) -> contextlib.AbstractContextManager[bool]:
    """Like `locked`, but does not wait: yields False when another process holds the lock.
    OSError when the lock file cannot be written (a full disk: the reserve is not used)."""
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
