"""Where `collect` writes (the plot, the submission tree): checked before any work, and written
so that a failure leaves nothing behind and overwrites nothing the user made.

Scoring a large campaign takes a while; a `--plot` that names a folder, or a read-only place,
should fail at once with exit 2, not after the table was printed and with a traceback.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hpcrepro.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _writable_ancestor(path: Path, option: str) -> None:
    """Refuse a path whose nearest existing ancestor is no writable folder."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{ancestor} is a file, so nothing can be written below it", where=option,
                        hint="choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot write in {ancestor} (read-only or no permission)", where=option,
                        hint="choose a folder you can write to")


def check_plot_path(path: Path) -> None:
    """A PNG file name in a writable place; an existing file only if it is a PNG (an older
    plot, replaced), so that a mistyped `--plot results.csv` cannot clobber data."""
    where = f"--plot {path}"
    if path.suffix.lower() != ".png":
        raise UserError("the plot is a PNG image: give it a .png name", where=where)
    if path.is_dir():
        raise UserError("this is a folder", where=where, hint="name a .png file, e.g. runs.png")
    if path.exists():
        try:
            with open(path, "rb") as handle:
                is_png = handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
        except OSError as error:
            raise UserError(f"cannot read the existing file ({error.strerror})",
                            where=where) from error
        if not is_png:
            raise UserError("the file exists and is not a PNG image: not overwritten",
                            where=where, hint="choose another name or remove the file")
    _writable_ancestor(path, where)


def check_package_path(folder: Path) -> None:
    """A folder (existing or not) in a writable place; its contents are checked when the tree's
    names are known (`staged_tree`)."""
    where = f"--package {folder}"
    if folder.exists() and not folder.is_dir():
        raise UserError("this is a file, not a folder", where=where,
                        hint="name an empty folder for the submission tree")
    _writable_ancestor(folder / "x", where)


class StagedTree:
    """Build a tree of files in a hidden folder inside `root`, then move its top entries into
    place: a failure half-way (full disk) removes the staging folder and leaves `root` as it was.

    `targets` are the paths (relative to `root`) the tree will occupy; `commit` refuses, before
    moving anything, when one of them already exists (an earlier submission, the user's edits).
    """

    def __init__(self, root: Path, option: str) -> None:
        self.root, self.option = root, option
        self.stage = root / f".hpcrepro-staging-{os.getpid()}"

    def __enter__(self) -> Path:
        try:
            self.stage.mkdir(parents=True)
        except OSError as error:
            raise UserError(f"cannot create {self.stage} ({error.strerror or error})",
                            where=self.option) from error
        return self.stage

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def commit(self, targets: list[Path]) -> None:
        taken = [t for t in targets if (self.root / t).exists() or (self.root / t).is_symlink()]
        if taken:
            raise UserError(f"{self.root / taken[0]} already exists: not overwritten",
                            where=self.option,
                            hint="pass an empty --package folder, or remove what is there")
        try:
            for target in targets:
                (self.root / target).parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.stage / target, self.root / target)
        except OSError as error:
            raise UserError(f"cannot move the tree into place ({error.strerror or error})",
                            where=self.option) from error
