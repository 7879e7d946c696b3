"""Where `collect` writes (the plot, the submission tree): checked before any work, and written
so that a failure leaves nothing behind and overwrites nothing the user made.

Scoring a large campaign takes a while; a `--plot` that names a folder, or a read-only place,
should fail at once with exit 2, not after the table was printed and with a traceback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from hpcrepro.errors import UserError
from hpcrepro.safeopen import existing_file, open_regular

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _writable_ancestor(path: Path, option: str) -> None:
    """Refuse a path whose nearest existing ancestor is no folder hpcrepro can write in.

    Tried for real (a temporary file made and removed): `access()` says yes to root on /proc,
    where creating anything fails, and knows nothing of quotas or read-only bind mounts.
    """
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{ancestor} is a file, so nothing can be written below it", where=option,
                        hint="choose another path")
    try:
        fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".hpcrepro-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise UserError(f"cannot write in {ancestor} ({error.strerror or error})", where=option,
                        hint="choose a folder you can write to") from None


def check_plot_path(path: Path) -> None:
    """A PNG file name in a writable place; an existing file only if it is a PNG (an older
    plot, replaced), so that a mistyped `--plot results.csv` cannot clobber data. A FIFO or
    device there is refused without opening it (the open of a FIFO waits for a writer)."""
    where = f"--plot {path}"
    if path.suffix.lower() != ".png":
        raise UserError("the plot is a PNG image: give it a .png name", where=where)
    if path.is_dir():
        raise UserError("this is a folder", where=where, hint="name a .png file, e.g. runs.png")
    if existing_file(path, where, "name a new .png file, or remove what is there"):
        try:
            with open_regular(path) as handle:
                is_png = handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
        except OSError as error:
            raise UserError(f"cannot read the existing file ({error.strerror})",
                            where=where) from error
        if not is_png:
            raise UserError("the file exists and is not a PNG image: not overwritten",
                            where=where, hint="choose another name or remove the file")
    _writable_ancestor(path, where)


def check_output_path(path: Path) -> None:
    """`-o FILE`: a file (new, or replaced) in a writable place; a folder or a FIFO is refused
    before any scoring."""
    where = f"--output {path}"
    if path.is_dir():
        raise UserError("this is a folder", where=where, hint="name a file, e.g. report.html")
    existing_file(path, where, "name a new file, or remove what is there")
    _writable_ancestor(path, where)


def check_package_path(folder: Path) -> None:
    """A folder (existing or not) in a writable place; its contents are checked when the tree's
    names are known (`StagedTree.commit`)."""
    where = f"--package {folder}"
    if folder.exists() and not folder.is_dir():
        raise UserError("this is a file, not a folder", where=where,
                        hint="name an empty folder for the submission tree")
    _writable_ancestor(folder / "x", where)


class StagedTree:
    """Build a tree of files in a hidden staging folder, then put it in place all or nothing.

    A new or empty `root`: the tree is built beside it and renamed to `root` in one step. A
    `root` that holds other things (a submitter's folder with other benchmarks): the tree is
    built inside it, and `commit` first checks that no target exists and that every folder on
    the way to one is a folder, then moves the targets in; a move that still fails (a full
    disk making a folder) moves back what was moved, so `root` is left as it was.
    """

    def __init__(self, root: Path, option: str) -> None:
        self.root, self.option = root, option
        self.whole = not root.exists() or (root.is_dir() and not any(root.iterdir()))
        name = f".{root.name}.hpcrepro-staging-{os.getpid()}"
        self.stage = root.parent / name if self.whole else root / name

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
        try:
            if self.whole:
                os.replace(self.stage, self.root)  # an empty folder is replaced whole
                return
        except OSError as error:
            raise UserError(f"cannot move the tree into place ({error.strerror or error})",
                            where=self.option, hint="nothing was written") from error
        for target in targets:
            self._check_free(target)
        moved: list[Path] = []
        made: list[Path] = []
        try:
            for target in targets:
                for folder in reversed((self.root / target).parents):
                    if folder.is_relative_to(self.root) and not folder.exists():
                        folder.mkdir()
                        made.append(folder)
                os.replace(self.stage / target, self.root / target)
                moved.append(target)
        except OSError as error:
            for target in reversed(moved):
                with contextlib.suppress(OSError):
                    os.replace(self.root / target, self.stage / target)
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise UserError(f"cannot move the tree into place ({error.strerror or error})",
                            where=self.option, hint="nothing was written") from error

    def _check_free(self, target: Path) -> None:
        """Refuse, before anything moves, a taken target or a non-folder on the way to one."""
        path = self.root / target
        if path.exists() or path.is_symlink():
            raise UserError(f"{path} already exists: not overwritten", where=self.option,
                            hint="pass an empty --package folder, or remove what is there")
        for folder in path.parents:
            if folder == self.root:
                break
            if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
                raise UserError(f"{folder} is not a folder, so {target} cannot be written below "
                                "it; nothing was written", where=self.option,
                                hint="move it away, or pass an empty --package folder")
