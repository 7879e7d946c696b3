"""Where the raw ImageNet images come from, without extracting anything.

Three layouts are accepted for each split: an extracted tree (`train/<wnid>/*.JPEG`), a folder of
per-class tars (`train/<wnid>.tar`, the state after untarring the outer tar only), and the
ILSVRC2012 tars themselves (a tar of per-class tars for train, a flat tar plus labels for val).
Images inside tars are located by byte offset, so they are read in place with `pread` instead of
being extracted first (saving a full copy of the data set). Every image gets the relative path it
would have after NVIDIA's README steps (`<wnid>/<file>`), which is what `im2rec.py` lists.
"""

from __future__ import annotations

import csv
import errno
import os
import re
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from hpcrepro.errors import UserError
from hpcrepro.prep import tarlist
from hpcrepro.safeopen import read_user_file

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
VAL_LABEL_FILES = (
    "valprep.sh",
    "LOC_val_solution.csv",
    "val_labels.txt",
    "imagenet_2012_validation_synset_labels.txt",
)
_DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
# The usual labels files of the 50,000 val images are 1-3 MB; a FIFO or /dev/zero is refused.
MAX_LABELS_BYTES = 64 << 20
_WNID = re.compile(r"n\d{8}")
# Where `hpcrepro prep` keeps its work in progress (under --out). Older versions accepted an --out
# inside the input and could leave one there; a listing ignores it when it holds no images.
WORK_DIR = ".hpcrepro-prep"


@dataclass(frozen=True)
class SourceImage:
    """One image: its path under the split root as im2rec sees it, and where its bytes are."""

    relpath: str
    file: str
    offset: int  # -1: the whole file; otherwise the byte offset inside `file` (a tar)
    size: int


@dataclass
class SplitSource:
    """All candidate images of one split and a description of where they came from."""

    split: str
    kind: str  # "folder", "flat-folder" (val + labels), "class-tars" or "tar"
    location: str
    images: list[SourceImage] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    # real paths of the folders the listing read: an --out inside one would change the input
    folders: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # stale WORK_DIRs, ignored


class _Window:
    """A read-only view of `size` bytes at `start` of an open file (a member of an outer tar)."""

    def __init__(self, handle: BinaryIO, start: int, size: int) -> None:
        self._handle = handle
        self._start = start
        self._size = size
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._pos
        n = left if n is None or n < 0 else min(n, left)
        self._handle.seek(self._start + self._pos)
        data: bytes = self._handle.read(n)
        self._pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _image_member(member: tarfile.TarInfo, archive: str) -> bool:
    """Whether a member is an image file read in place; a link or sparse file that im2rec would
    list after extraction, but whose bytes are not stored at the member, is refused."""
    if member.isfile() and not member.issparse():
        return True
    if (member.islnk() or member.issym() or member.issparse()) and is_listed(member.name):
        kind = "a sparse file" if member.issparse() else "a link"
        raise UserError(
            f"{archive} holds {_member_name(member.name)!r} as {kind}: its bytes are not stored "
            "in the archive where hpcrepro reads images in place",
            hint="extract the archive (tar xf) and pass the extracted folder as --raw",
        )
    return False


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _class_tar_images(
    archive: str, outer: Path, handle: BinaryIO, start: int, size: int, wnid: str
) -> list[SourceImage]:
    """The images of the class tar at `start` of `outer` (`archive` names it in messages)."""
    images = []
    window = _Window(handle, start, size)
    for member in tarlist.members(window, archive, "per-class tar", size):
        if _image_member(member, archive):
            rel = f"{wnid}/{_member_name(member.name)}"
            images.append(SourceImage(rel, str(outer), start + member.offset_data, member.size))
    return images


def scan_train_tar(path: Path) -> SplitSource:
    """Index the ILSVRC2012 train tar: an uncompressed tar whose members are `<wnid>.tar` files."""
    source = SplitSource("train", "tar", str(path))
    with open(path, "rb") as handle:
        size = tarlist.file_size(handle)
        members = list(tarlist.members(handle, str(path), TRAIN_TAR, size))
        files = [m for m in members if m.isfile()]
        if not files:
            raise UserError(f"{path} is an empty tar", hint="pass ILSVRC2012_img_train.tar")
        for member in files:
            name = _member_name(member.name)
            if not name.endswith(".tar") or "/" in name:
                raise UserError(
                    f"{path} is not the ImageNet train tar: it holds '{name}', but the train tar "
                    "holds only per-class tars such as n01440764.tar",
                    hint="pass ILSVRC2012_img_train.tar, or an extracted train/<wnid>/ folder",
                )
            wnid = name[: -len(".tar")]
            images = _class_tar_images(
                f"{path}[{name}]", path, handle, member.offset_data, member.size, wnid
            )
            if not any(is_listed(i.relpath) for i in images):
                source.empty_classes.append(wnid)
            source.images.extend(images)
    return source


def scan_class_tar_folder(folder: Path) -> SplitSource:
    """Index a folder of per-class tars (`train/<wnid>.tar`)."""
    source = SplitSource("train", "class-tars", str(folder), folders=[os.path.realpath(folder)])
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name == WORK_DIR and entry.is_dir():
            source.leftovers.append(entry.path)
        if not entry.name.endswith(".tar") or not entry.is_file():
            continue
        wnid = entry.name[: -len(".tar")]
        size = entry.stat().st_size
        with open(entry.path, "rb") as handle:
            images = _class_tar_images(entry.path, Path(entry.path), handle, 0, size, wnid)
        if not any(is_listed(i.relpath) for i in images):
            source.empty_classes.append(wnid)
        source.images.extend(images)
    return source


def _raise(error: OSError) -> None:
    raise error


def scan_folder(split: str, folder: Path) -> SplitSource:
    """Index an extracted tree the way im2rec's `os.walk(root, followlinks=True)` sees it.

    im2rec silently leaves out a folder it cannot list and a file it cannot stat, shifting the
    labels of every later class; here both errors are raised (see `files.input_errors`).
    """
    source = SplitSource(split, "folder", str(folder))
    root = str(folder)
    prefix = root if root.endswith(os.sep) else root + os.sep  # os.walk paths all start with it
    for path, dirs, files in os.walk(root, onerror=_raise, followlinks=True):
        dirs.sort()
        source.folders.append(os.path.realpath(path))
        found = False
        for name in sorted(files):
            full = os.path.join(path, name)
            try:
                info = os.stat(full)
            except OSError as error:
                if error.errno in (errno.ENOENT, errno.ELOOP):
                    continue  # a dangling link: im2rec's isfile() skips it too
                raise
            if stat.S_ISREG(info.st_mode):
                rel = full[len(prefix) :]
                source.images.append(SourceImage(rel, full, -1, info.st_size))
                found = found or is_listed(rel)
        if path != root and not found and not dirs:
            if os.path.basename(path) == WORK_DIR:
                source.leftovers.append(path)
            else:
                source.empty_classes.append(path[len(prefix) :])
    return source


IMAGE_EXTS = (".jpeg", ".jpg", ".png")


def is_listed(relpath: str) -> bool:
    """im2rec's default `--exts`: the suffix after the last dot, lower-cased."""
    return os.path.splitext(os.path.basename(relpath))[1].lower() in IMAGE_EXTS


def _has_class_tars(folder: Path) -> bool:
    return any(e.name.endswith(".tar") and e.is_file() for e in os.scandir(folder))


def _class_dirs(entries: list[os.DirEntry[str]]) -> list[os.DirEntry[str]]:
    return [e for e in entries if e.is_dir() and e.name != WORK_DIR]


def is_folder(path: Path) -> bool:
    """Whether `path` is a folder; a path that cannot be checked (EACCES) raises, where
    `Path.is_dir` would answer False on newer Pythons and send the search elsewhere."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def find_train(raw: Path) -> SplitSource:
    """Locate the train split under `raw` (extracted folder, class-tar folder or train tar)."""
    folder = raw / "train"
    if is_folder(folder):
        if _has_class_tars(folder):
            if _class_dirs(list(os.scandir(folder))):
                raise UserError(
                    f"{folder} holds both class folders and class tars",
                    hint="finish extracting (each <wnid>.tar into <wnid>/ then delete the tar) "
                    "or keep only the tars",
                )
            return scan_class_tar_folder(folder)
        return scan_folder("train", folder)
    tar = raw / TRAIN_TAR
    if tar.is_file():
        return scan_train_tar(tar)
    raise UserError(
        f"no training images under {raw}: neither a 'train/' folder nor {TRAIN_TAR}",
        hint="pass --raw the folder that holds train/ and val/ (or the two ILSVRC2012 tars)",
    )


def find_val(raw: Path, labels: Path | None, train_classes: list[str]) -> SplitSource:
    """Locate the val split; flat images (folder or tar) get their classes from a labels file."""
    folder = raw / "val"
    if is_folder(folder):
        entries = list(os.scandir(folder))
        class_dirs = _class_dirs(entries)
        flat = [e for e in entries if e.is_file() and is_listed(e.name)]
        if class_dirs and flat:
            raise UserError(
                f"{folder} holds both class folders and {len(flat)} loose images "
                f"(e.g. {sorted(e.name for e in flat)[0]})",
                hint="valprep.sh stopped half-way: move the loose images into their class folders",
            )
        if class_dirs:
            return scan_folder("val", folder)
        if flat:
            images = [
                SourceImage(e.name, e.path, -1, e.stat().st_size)
                for e in sorted(flat, key=lambda e: e.name)
            ]
            source = _label_flat_val("flat-folder", str(folder), images, raw, labels, train_classes)
            source.folders.append(os.path.realpath(folder))
            source.leftovers = [e.path for e in entries if e.name == WORK_DIR and e.is_dir()]
            return source
    tar = raw / VAL_TAR
    if tar.is_file():
        return _label_flat_val("tar", str(tar), _scan_val_tar(tar), raw, labels, train_classes)
    raise UserError(
        f"no validation images under {raw}: neither a 'val/' folder nor {VAL_TAR}",
        hint="pass --raw the folder that holds train/ and val/ (or the two ILSVRC2012 tars)",
    )


def _scan_val_tar(path: Path) -> list[SourceImage]:
    images = []
    with open(path, "rb") as handle:
        for member in tarlist.members(handle, str(path), VAL_TAR, tarlist.file_size(handle)):
            if not _image_member(member, str(path)):
                continue
            name = _member_name(member.name)
            if name.endswith(".tar") or "/" in name:
                raise UserError(
                    f"{path} is not the ImageNet val tar: it holds '{name}', but the val tar "
                    "holds only the 50,000 flat ILSVRC2012_val_*.JPEG images",
                    hint="pass ILSVRC2012_img_val.tar (did you swap it with the train tar?)",
                )
            images.append(SourceImage(name, str(path), member.offset_data, member.size))
    if not images:
        raise UserError(f"{path} holds no images", hint=f"pass {VAL_TAR}")
    return images


def _label_flat_val(
    kind: str,
    location: str,
    images: list[SourceImage],
    raw: Path,
    labels: Path | None,
    train_classes: list[str],
) -> SplitSource:
    label_file = labels or _find_label_file(raw, location)
    mapping = read_val_labels(label_file, [i.relpath for i in images])
    known = set(train_classes)
    source = SplitSource("val", kind, location)
    missing = [i.relpath for i in images if i.relpath not in mapping]
    if missing:
        raise UserError(
            f"{label_file} gives no class for {len(missing)} of the {len(images)} val images "
            f"(e.g. {missing[0]})",
            hint="use the labels file that belongs to this val set (50,000 lines for ImageNet)",
        )
    present = {i.relpath for i in images}
    orphans = sorted(set(mapping) - present)
    if orphans:
        raise UserError(
            f"{label_file} names {len(orphans)} images that are not in {location} "
            f"(e.g. {orphans[0]})",
            hint="the val set is incomplete: extract or download it again",
        )
    for image in images:
        wnid = mapping[image.relpath]
        if wnid not in known:
            raise UserError(
                f"{label_file}: class '{wnid}' of {image.relpath} is not a training class",
                hint="the labels file and the train set do not belong together",
            )
        source.images.append(
            SourceImage(f"{wnid}/{image.relpath}", image.file, image.offset, image.size)
        )
    return source


def _find_label_file(raw: Path, location: str) -> Path:
    candidates = [raw / name for name in VAL_LABEL_FILES]
    candidates += [raw / "val" / name for name in VAL_LABEL_FILES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    devkit = [p for p in (raw / _DEVKIT_TRUTH, raw / "val" / _DEVKIT_TRUTH) if p.is_file()]
    hint = "pass --val-labels FILE: valprep.sh, LOC_val_solution.csv, or lines '<image> <wnid>'"
    if devkit:
        hint += (
            f"; {devkit[0].name} holds devkit class ids, not wnids: use valprep.sh or "
            "LOC_val_solution.csv instead"
        )
    raise UserError(
        f"the val images in {location} are not sorted into class folders and no labels file "
        f"was found (looked for {', '.join(VAL_LABEL_FILES)} in {raw} and {raw / 'val'})",
        hint=hint,
    )


def read_val_labels(path: Path, image_names: list[str]) -> dict[str, str]:
    """Map val image file names to wnids from any of the usual label file formats.

    valprep.sh (`mv <image> <wnid>/`), Kaggle's LOC_val_solution.csv (`<id>,<wnid> ...`),
    two columns `<image> <wnid>`, or one wnid per line for ILSVRC2012_val_00000001.JPEG onwards.
    """
    text = read_user_file(
        path, MAX_LABELS_BYTES, hint="pass --val-labels the labels file of this val set"
    )
    by_stem = {os.path.splitext(name)[0]: name for name in image_names}
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    mapping: dict[str, str] = {}

    def add(lineno: int, image: str, wnid: str) -> None:
        if not _WNID.fullmatch(wnid):
            raise UserError(
                f"'{wnid}' is not a WordNet id like n01440764",
                where=f"{path}:{lineno}",
                hint="each line must name an image and its wnid",
            )
        name = (
            image if image in by_stem.values() else by_stem.get(os.path.splitext(image)[0], image)
        )
        if name in mapping and mapping[name] != wnid:
            raise UserError(
                f"{name} is labelled both {mapping[name]} and {wnid}", where=f"{path}:{lineno}"
            )
        mapping[name] = wnid

    if first.startswith("ImageId,"):
        for lineno, row in enumerate(csv.reader(lines[1:]), 2):
            if not row:
                continue
            if len(row) < 2 or not row[1].split():
                raise UserError("expected 'ImageId,PredictionString'", where=f"{path}:{lineno}")
            add(lineno, row[0], row[1].split()[0])
        return mapping
    all_wnids = all(_WNID.fullmatch(ln.strip()) for ln in lines if ln.strip())
    if all_wnids:
        for lineno, line in enumerate(lines, 1):
            if line.strip():
                add(lineno, f"ILSVRC2012_val_{lineno:08d}.JPEG", line.strip())
        return mapping
    for lineno, line in enumerate(lines, 1):
        words = line.split()
        if not words or words[0].startswith("#") or words[0] in ("mkdir", "cd", "set"):
            continue
        if words[0] == "mv" and len(words) == 3:
            add(lineno, words[1], words[2].rstrip("/"))
        elif len(words) == 2:
            add(lineno, words[0], words[1].rstrip("/"))
        else:
            raise UserError(
                f"cannot read this line as '<image> <wnid>': {line.strip()!r}",
                where=f"{path}:{lineno}",
                hint="supported: valprep.sh, LOC_val_solution.csv, '<image> <wnid>' lines, "
                "or one wnid per line in image-number order",
            )
    return mapping
