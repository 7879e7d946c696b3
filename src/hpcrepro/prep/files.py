"""Writes that never leave a half-written file under a final name; readable I/O errors."""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hpcrepro import jsonio
from hpcrepro.errors import UserError
from hpcrepro.safeopen import replace_file

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NO_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS}


def gib(size: float) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**27 else f"{size / 2**20:.1f} MiB"


@contextmanager
def io_errors(what: str, folder: Path) -> Iterator[None]:
    """Turn any OSError while writing into a UserError: a full disk or a read-only/forbidden
    output folder with its own advice, anything else (a file system that refuses the
    operation, an I/O error) with the system's reason."""
    try:
        yield
    except OSError as error:
        if error.errno in _NO_SPACE:
            raise UserError(
                f"no space left while {what} in {folder} ({error.strerror})",
                hint="free space there (or pass another --out) and run the same command again: "
                "finished parts are kept and the prep resumes",
            ) from error
        if error.errno in _NO_WRITE:
            raise UserError(
                f"cannot write in {folder} while {what} ({error.strerror})",
                hint="choose an --out folder you can write to, or fix its permissions",
            ) from error
        raise UserError(
            f"the file system of {folder} failed while {what} "
            f"({error.strerror or error}{f': {error.filename}' if error.filename else ''})",
            hint="check that file system (or pass another --out) and run the same command "
            "again: finished parts are kept and the prep resumes",
        ) from error


@contextmanager
def input_errors(raw: Path) -> Iterator[None]:
    """Turn any OSError met while listing the input into a UserError naming what and why.

    A folder that cannot be listed must stop the prep: left out, it would shift the labels of
    every later class, the very mistake the listing checks exist to refuse.
    """
    try:
        yield
    except OSError as error:
        what = error.filename or f"a file under {raw}"
        reason = error.strerror or str(error)
        hint = (
            "make the input readable to this user (e.g. 'chmod -R a+rX' on it, or fix its owner "
            "or ACL), or run the prep as a user who can read all of it; nothing was written"
            if error.errno in (errno.EACCES, errno.EPERM)
            else "check the file system that holds the input, then run the same command again; "
            "nothing was written"
        )
        raise UserError(
            f"cannot read {what} while listing the input ({reason})", hint=hint
        ) from error


def require_space(folder: Path, needed: int, what: str) -> None:
    """Fail before starting when the file system cannot hold what is about to be written."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(
            f"{what} needs {gib(needed)} in {folder}, but only {gib(free)} is free",
            hint="free space there or pass another --out; nothing was written",
        )


def write_json(path: Path, data: Any, staging: Path | None = None) -> None:
    """A prep state file, written whole and synced (`safeopen.replace_file`); its temporary file
    goes in `staging` (same file system) when given, so that a kill midway leaves it there, in a
    folder deleted later, rather than beside `path`."""
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    replace_file(path, text.encode(), sync=True, staging=staging)


_STATE_HINT = "delete it and run the prep again (with --restart if it is the plan)"


def read_json(path: Path, shape: Any = None) -> Any:
    """A prep state file, checked against `shape` (see `check_shape`) when given; a damaged or
    hand-edited one says how to start over instead of ending in a KeyError or TypeError."""
    data = jsonio.read_json(path, hint=_STATE_HINT)
    if shape is not None:
        check_shape(data, shape, path)
    return data


def check_shape(data: Any, shape: Any, path: Path, at: str = "") -> None:
    """Check JSON `data` against `shape`: `int` (a count: 0 <= n < 2**63), `str`, `None`, a
    tuple of alternatives, `[item shape]`, or `{key: shape}` (exact keys; a key ending in '?'
    may be absent). A mismatch is a UserError naming the file and the place."""
    if isinstance(shape, tuple):
        problems = []
        for option in shape:
            try:
                check_shape(data, option, path, at)
                return
            except UserError as error:
                problems.append(error)
        raise problems[0]
    if shape is int:
        ok = type(data) is int and 0 <= data < 2**63  # sizes and offsets: what a file can have
    elif shape is None or shape is str:
        ok = data is None if shape is None else isinstance(data, str)
    elif isinstance(shape, list):
        ok = isinstance(data, list)
        for index, item in enumerate(data if ok else []):
            check_shape(item, shape[0], path, f"{at}[{index}]")
    else:
        keys = {key.rstrip("?"): key.endswith("?") for key in shape}
        ok = (
            isinstance(data, dict)
            and all(k in data for k, optional in keys.items() if not optional)
            and set(data) <= set(keys)
        )
        for key, value in data.items() if ok else ():
            check_shape(value, shape[key if key in shape else f"{key}?"], path, f"{at}.{key}")
    if not ok:
        if isinstance(shape, dict):
            wanted = f"an object with {', '.join(sorted(shape))}"
        elif isinstance(shape, list):
            wanted = "a list"
        else:
            wanted = {int: "a count (0 to 2**63-1)", str: "text", None: "null"}[shape]
        raise UserError(
            f"{path} is damaged: {at.lstrip('.') or 'the file'} is not {wanted}", hint=_STATE_HINT
        )
