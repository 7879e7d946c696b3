"""The `.lst` file exactly as `im2rec.py --list --recursive PREFIX ROOT` writes it.

im2rec walks the root top-down with sorted folders and sorted files, numbers the images in that
order, gives each folder that holds an image the next class index when its first image is met, then
shuffles the whole list with `random.seed(100); random.shuffle(...)` and writes
`index\\tlabel(%f)\\trelpath` lines. Sorting the relative paths with `walk_key` reproduces the
walk's order without walking again, so the same code serves folders and tars.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hpcrepro.errors import UserError
from hpcrepro.prep.sources import SourceImage, is_listed
from hpcrepro.safeopen import replace_file

IM2REC_SEED = 100


@dataclass(frozen=True)
class ListEntry:
    """One `.lst` line plus where the image's bytes are."""

    index: int
    label: int
    relpath: str
    source: SourceImage


def walk_key(relpath: str) -> tuple[tuple[int, str], ...]:
    """Order of `os.walk` with sorted dirs and files: a folder's files before its subfolders."""
    parts = relpath.split("/")
    return (*((1, part) for part in parts[:-1]), (0, parts[-1]))


def check_relpath(relpath: str, where: str) -> None:
    """Refuse names that a `.lst` line cannot carry (im2rec would write a list it cannot read)."""
    name = relpath.rsplit("/", 1)[-1]
    if any(c in relpath for c in "\t\n\r") or name != name.strip():
        raise UserError(
            f"image name {relpath!r} contains a tab, a line break or surrounding spaces",
            where=where,
            hint="rename the file: a .lst line is 'index<TAB>label<TAB>path', im2rec strips spaces",
        )


def build_list(images: list[SourceImage], shuffle: bool = True) -> list[ListEntry]:
    """Number, label and shuffle the images exactly like `im2rec.py --list --recursive`."""
    listed = sorted((i for i in images if is_listed(i.relpath)), key=lambda i: walk_key(i.relpath))
    classes: dict[str, int] = {}
    entries = []
    for index, image in enumerate(listed):
        folder = image.relpath.rpartition("/")[0]
        label = classes.setdefault(folder, len(classes))
        entries.append(ListEntry(index, label, image.relpath, image))
    if shuffle:
        random.Random(IM2REC_SEED).shuffle(entries)
    return entries


def class_names(entries: list[ListEntry]) -> list[str]:
    """Folder of each label, in label order."""
    names: dict[int, str] = {}
    for entry in entries:
        names.setdefault(entry.label, entry.relpath.rpartition("/")[0])
    return [names[label] for label in sorted(names)]


def format_line(entry: ListEntry) -> str:
    return "%d\t%f\t%s\n" % (entry.index, entry.label, entry.relpath)  # noqa: UP031 - im2rec's format


def write_lst(path: Path, entries: Iterable[ListEntry]) -> None:
    """The list file, written whole (`safeopen.replace_file`): array tasks that plan at the same
    time each write the same bytes and rename them in."""
    lines = (format_line(entry).encode("utf-8", "surrogateescape") for entry in entries)
    replace_file(path, lines)


@dataclass(frozen=True)
class LstLine:
    index: int
    label: float
    relpath: str


def read_lst(path: Path) -> Iterator[LstLine]:
    """Parse a single-label `.lst` (as im2rec's `read_list` does), refusing malformed lines."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as handle:
        for lineno, line in enumerate(handle, 1):
            fields = [f.strip() for f in line.strip().split("\t")]
            if len(fields) != 3:
                raise UserError(
                    f"expected 'index<TAB>label<TAB>path', got {line.rstrip()!r}",
                    where=f"{path}:{lineno}",
                )
            try:
                yield LstLine(int(fields[0]), float(fields[1]), fields[2])
            except ValueError as error:
                raise UserError(
                    f"bad number in {line.rstrip()!r}", where=f"{path}:{lineno}"
                ) from error
