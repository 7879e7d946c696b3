"""Where `detect` may write its files, and the one way it writes them.

A derived system YAML or MLPerf JSON is meant to be edited by hand afterwards (the JSON has fields
only a person can fill), so an existing file is replaced only with `--force`; and the shipped
catalog is never written, with or without it (its files are NVIDIA's published configs).
"""

from __future__ import annotations

from pathlib import Path

from hpcrepro.errors import UserError
from hpcrepro.safeopen import existing_file, replace_file


def check_target(path: Path, option: str, force: bool, shipped: Path | None) -> None:
    """Refuse `path` before anything is detected or written; `shipped` is the catalog folder."""
    if shipped is not None:
        catalog = shipped.resolve()
        if catalog in (path.absolute().parent, path.resolve().parent):
            raise UserError(
                f"{path} is in hpcrepro's shipped catalog ({catalog}), which is never modified",
                where=option,
                hint=f"write into a folder of your own, e.g. {option} mysystems/{path.name}"
                + (", and add that folder to $HPCREPRO_SYSTEMS" if path.suffix == ".yaml" else ""),
            )
    if not existing_file(path, option, hint="move it away, or choose another path"):
        return
    if not force:
        raise UserError(
            f"{path} exists",
            where=option,
            hint="choose another path, or pass --force to replace it (edits made to it are lost)",
        )


def write_text(path: Path, text: str, option: str) -> None:
    """Write `path` whole (`safeopen.replace_file`), creating its folder; any failure is a
    UserError naming the option."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, text.encode())
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}", where=option) from None
