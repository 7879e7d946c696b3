"""A campaign folder appears whole or not at all, and only where hpcrepro made it.

`submit` builds the folder under a hidden name beside its final place, `.NAME~partial-XXXXXXXX`
(made by mkdtemp: a new private folder that nobody can have prepared), writes into it the
request it was given, the scripts, the resolved configuration and last the manifest, and then
renames it into place. A rename never follows a link and never replaces a folder that holds
anything, so a folder or link planted at `<log_dir>/NAME` (the default name is easy to guess in a
shared log_dir) stops the submit instead of receiving its files. The one folder a submit replaces
is a dry run's: it holds `.hpcrepro-dry-run` and belongs to the same user.

A submit killed before the rename leaves only the hidden folder (`~` cannot occur in a campaign
name, so it belongs to exactly one name). Nothing of it was submitted: jobs are submitted only
once the manifest is in place. `resume NAME` finishes it, `cancel NAME` removes it (see
`campaign.actions`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from hpcrepro.errors import UserError
from hpcrepro.jsonio import read_json
from hpcrepro.safeopen import cannot_write, replace_inside

PARTIAL = "~partial-"
OLD = "~old-"  # a dry run's folder moved aside while a submit takes its place
REQUEST = ".hpcrepro-submit.json"
DRY_RUN = ".hpcrepro-dry-run"
SUBFOLDERS = ("scripts", "logs", "jobs", "results")


def make_partial(root: Path) -> Path:
    """A new private folder beside `root` in which the campaign is built (OSError when the
    log folder cannot be made or written)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{root.name}{PARTIAL}", dir=root.parent))
    for name in SUBFOLDERS:
        (partial / name).mkdir()
    return partial


def write_request(partial: Path, request: dict[str, Any]) -> None:
    """Record what was asked for, first of all, so that an interrupted submit can be redone."""
    _write(partial, REQUEST, (json.dumps(request, indent=1) + "\n").encode())


def read_request(partial: Path) -> dict[str, Any] | None:
    """The request an interrupted submit recorded, None when it is missing or unreadable."""
    try:
        data = read_json(partial / REQUEST)
    except UserError:
        return None
    return data if isinstance(data, dict) else None


def mark_dry_run(partial: Path) -> None:
    _write(partial, DRY_RUN, b"written by hpcrepro submit --dry-run; nothing submitted\n")


def _write(partial: Path, name: str, data: bytes) -> None:
    try:
        replace_inside(partial, name, data)
    except OSError as error:
        raise cannot_write(partial / name, error) from None


def publish(partial: Path, root: Path) -> None:
    """Rename the finished folder into place; a dry run's folder there is replaced, anything
    else there is a UserError and `partial` is left for the caller to remove."""
    os.chmod(partial, 0o755 & ~_umask())
    try:
        os.rename(partial, root)
        return
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not is_dry_run(root):
            raise _occupied(root, error) from None
    old = root.with_name(f".{root.name}{OLD}{os.urandom(4).hex()}")
    os.rename(root, old)
    os.rename(partial, root)
    remove(old)


def _occupied(root: Path, error: OSError) -> UserError:
    what = (
        "is a link"
        if root.is_symlink()
        else "exists and is not a folder"
        if error.errno == errno.ENOTDIR
        else "already exists and holds files hpcrepro did not make"
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST)
        else f"cannot be made ({error.strerror or error})"
    )
    return UserError(
        f"the campaign folder {root} {what}: a campaign is only written into a folder that "
        "hpcrepro creates itself, never into one it finds",
        where="site key 'log_dir'",
        hint="choose another campaign name with --name, or move that folder away",
    )


def is_dry_run(root: Path) -> bool:
    """Whether `root` is a real folder of this user holding a dry run and no campaign."""
    try:
        info = os.lstat(root)
        marker = os.lstat(root / DRY_RUN)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and stat.S_ISREG(marker.st_mode)
        and marker.st_uid == os.geteuid()
        and not os.path.lexists(root / "campaign.json")
    )


def leftovers(root: Path) -> list[Path]:
    """Folders that interrupted submits of this campaign left beside it (real folders of this
    user only), the newest first."""
    found = []
    try:
        candidates = list(root.parent.iterdir())
    except OSError:
        return []
    prefixes = (f".{root.name}{PARTIAL}", f".{root.name}{OLD}")
    for path in candidates:
        if not path.name.startswith(prefixes):
            continue
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid():
            found.append((info.st_mtime, path))
    return [path for _, path in sorted(found, reverse=True)]


def is_leftover(path: Path) -> bool:
    return PARTIAL in path.name or OLD in path.name


def remove(folder: Path) -> None:
    """Delete a folder hpcrepro made (rmtree never follows a link inside it)."""
    shutil.rmtree(folder, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
