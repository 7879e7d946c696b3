"""Check a prepared RecordIO data set and keep the manifest that lets later campaigns skip prep.

The check follows every `.idx` offset to a record header, requires the records to tile the `.rec`
file with no gap or trailing bytes, and compares each record's id and label with the `.lst`. With
`deep`, it also reads every image and recomputes the manifest's per-segment CRC-32s (in parallel).
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcrepro.errors import UserError
from hpcrepro.prep.files import check_shape, gib, io_errors, read_json, write_json
from hpcrepro.prep.imagecheck import image_problem
from hpcrepro.prep.listing import read_lst
from hpcrepro.progress import Progress, rate
from hpcrepro.recordio import (
    IR_HEADER,
    MAGIC,
    RecordIOError,
    read_index,
    read_record,
    unpack_image,
)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "hpcrepro-imagenet-recordio"
SPLITS = ("train", "val")
IMAGENET_COUNTS = {"train": 1_281_167, "val": 50_000}
IMAGENET_CLASSES = 1000
_HEAD = struct.Struct("<II")
_MAX_SHOWN = 10


@dataclass
class SplitReport:
    split: str
    listed: int = 0
    records: int = 0
    classes: int = 0
    rec_bytes: int = 0
    missing: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < _MAX_SHOWN:
            self.problems.append(text)


def split_files(folder: Path, split: str) -> dict[str, Path]:
    return {ext: folder / f"{split}.{ext}" for ext in ("lst", "rec", "idx")}


def check_split(
    folder: Path,
    split: str,
    *,
    skipped: int = 0,
    deep: bool = False,
    num_classes: int = 0,
    board: Progress | None = None,
) -> SplitReport:
    """Check one split's `.lst/.rec/.idx` against each other; problems go into the report.
    With `deep` and a `board`, the records read so far show as a task on it."""
    paths = split_files(folder, split)
    report = SplitReport(split)
    absent = [p.name for p in paths.values() if not p.is_file()]
    if absent:
        report.problem(f"missing {', '.join(absent)}")
        return report
    labels: dict[int, float] = {}
    for line in read_lst(paths["lst"]):
        if line.index in labels:
            report.problem(f"{paths['lst'].name}: index {line.index} appears twice")
        labels[line.index] = line.label
    report.listed = len(labels)
    report.classes = num_classes or len(set(labels.values()))
    try:
        entries = read_index(paths["idx"])
    except RecordIOError as error:
        report.problem(str(error))
        return report
    report.records = len(entries)
    report.rec_bytes = paths["rec"].stat().st_size
    report.missing = len(set(labels) - {key for key, _ in entries})
    if report.missing != skipped:
        report.problem(
            f"{report.missing} listed images have no record"
            + (f" (the manifest lists {skipped} skipped)" if skipped else "")
        )
    task = board.task(f"{split} records", len(entries), "records") if board and deep else None
    with open(paths["rec"], "rb") as rec:
        expected: int | None = 0  # None after a broken record: its end is unknown
        seen: set[int] = set()
        for done, (key, offset) in enumerate(entries):
            if task is not None and done % 256 == 0:
                task.update(done)
            if expected is not None and offset != expected:
                report.problem(f"{split}.idx: record {key} at offset {offset}, expected {expected}")
            try:
                expected = _check_record(rec, key, offset, labels, report, deep)
            except RecordIOError as error:
                report.problem(f"{split}.rec: record {key} at offset {offset}: {error}")
                expected = None
            if key in seen:
                report.problem(f"{split}.idx: id {key} appears twice")
            seen.add(key)
        if task is not None:
            task.finish()
        if entries and expected is not None and expected != report.rec_bytes:
            report.problem(
                f"{split}.rec has {report.rec_bytes - expected} bytes after its last record"
            )
    return report


def _check_record(
    rec: Any, key: int, offset: int, labels: dict[int, float], report: SplitReport, deep: bool
) -> int:
    """Check the record at `offset`; return the offset just after it."""
    rec.seek(offset)
    head = rec.read(8 + IR_HEADER.size)
    if len(head) < 8:
        raise RecordIOError("offset is past the end of the file")
    magic, lrec = _HEAD.unpack_from(head)
    if magic != MAGIC:
        raise RecordIOError(f"no record starts here (0x{magic:08x} instead of the magic number)")
    cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
    if cflag not in (0, 1):
        raise RecordIOError(f"record starts with a continuation part (flag {cflag})")
    if cflag == 0 and not deep:
        if length < IR_HEADER.size or len(head) < 8 + IR_HEADER.size:
            raise RecordIOError("record is shorter than the image header")
        flag, label, rid, _ = IR_HEADER.unpack_from(head, 8)
        end = offset + 8 + length + (-length % 4)
    else:
        rec.seek(offset)
        image = unpack_image(read_record(rec) or b"")
        flag, label, rid, end = image.flag, image.label, image.id, rec.tell()
        problem = image_problem(image.image) if deep else None
        if problem:
            report.problem(f"{report.split}.rec: record {key}: {problem}")
    if flag != 0:
        report.problem(f"{report.split}.rec: record {key} has {flag} labels, expected one")
    if rid != key:
        report.problem(f"{report.split}.rec: record at .idx id {key} carries id {rid}")
    if key not in labels:
        report.problem(f"{report.split}.idx: id {key} is not in {report.split}.lst")
    elif labels[key] != label:
        report.problem(
            f"{report.split}.rec: record {key} has label {label}, "
            f"{report.split}.lst says {labels[key]}"
        )
    if not (0 <= label < report.classes and label == int(label)):
        report.problem(f"{report.split}.rec: record {key} label {label} is out of range")
    return int(end)


def crc_of(path: Path, offset: int, length: int) -> int:
    crc = 0
    with open(path, "rb", buffering=0) as handle:
        handle.seek(offset)
        left = length
        while left:
            block = handle.read(min(left, 8 << 20))
            if not block:
                break
            crc = zlib.crc32(block, crc)
            left -= len(block)
    return crc


def file_entry(path: Path, segments: list[dict[str, int]] | None = None) -> dict[str, Any]:
    """Size and per-segment CRC-32s of a file (one segment for the whole file if none given)."""
    size = path.stat().st_size
    if segments is None:
        segments = [{"offset": 0, "length": size, "crc32": crc_of(path, 0, size)}]
    return {"size": size, "segments": segments}


def check_checksums(
    folder: Path, files: dict[str, Any], workers: int, board: Progress | None = None
) -> list[str]:
    """Recompute every segment's CRC-32 (segments in parallel); return the mismatches."""
    jobs = [(name, seg) for name, entry in files.items() for seg in entry["segments"]]
    task = board.task("checksums", len(jobs), "segments") if board else None
    read = 0

    def one(job: tuple[str, dict[str, int]]) -> int:
        return crc_of(folder / job[0], job[1]["offset"], job[1]["length"])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        crcs = []
        for (_, seg), crc in zip(jobs, pool.map(one, jobs), strict=True):
            crcs.append(crc)
            read += seg["length"]
            if task is not None:
                seconds = time.monotonic() - task.started
                task.update(len(crcs), f"{gib(read)}, {rate(read, seconds)}")
    if task is not None:
        task.finish(gib(read))
    return [
        f"{name}: bytes {seg['offset']}..{seg['offset'] + seg['length']} changed (CRC-32 mismatch)"
        for (name, seg), crc in zip(jobs, crcs, strict=True)
        if crc != seg["crc32"]
    ]


_SEGMENT = {"offset": int, "length": int, "crc32": int}
_FILE = {"size": int, "segments": [_SEGMENT]}
_SPLIT = {"images": int, "listed?": int, "classes": int, "skipped": [{"path": str, "reason": str}]}


def load_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise UserError(f"{path} is not an hpcrepro prep manifest", hint="delete it and rerun prep")
    for name, entry in _mapping(data, "files", path).items():
        check_shape(entry, _FILE, path, f"files.{name}")
    for split, info in _mapping(data, "splits", path).items():
        check_shape(info, _SPLIT, path, f"splits.{split}")
    return data


def _mapping(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise UserError(
            f"{path} is damaged: '{key}' is not an object",
            hint="delete it and rerun prep (or 'prep verify --write-manifest')",
        )
    return value


def quick_check(folder: Path) -> list[str]:
    """Cheap completeness test for campaigns: manifest present and every file has its size."""
    manifest = load_manifest(folder)
    if manifest is None:
        return [
            f"{folder / MANIFEST} is missing: the data set is incomplete "
            "or was not made by hpcrepro"
        ]
    problems = []
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(
                f"{name} has {path.stat().st_size} bytes, the manifest says {entry['size']}"
            )
    return problems


@contextmanager
def _read_errors(folder: Path) -> Iterator[None]:
    """A file of the data set that cannot be read: a UserError naming it and why."""
    try:
        yield
    except OSError as error:
        raise UserError(
            f"cannot read {error.filename or folder} ({error.strerror or error})",
            hint="make the data set readable to this user (or check its file system), then "
            "verify again",
        ) from error


def verify(
    folder: Path, *, deep: bool = False, workers: int = 1, board: Progress | None = None
) -> dict[str, Any]:
    """Full check of a data set folder; returns a JSON-ready report with an `ok` flag.
    `board` shows the deep check's progress (records, then checksum bytes)."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder", hint="pass the --out folder of hpcrepro prep")
    with _read_errors(folder):
        return _verify(folder, deep, workers, board)


def _verify(folder: Path, deep: bool, workers: int, board: Progress | None) -> dict[str, Any]:
    manifest = load_manifest(folder)
    problems = quick_check(folder) if manifest else []
    splits = {}
    for split in SPLITS:
        info = (manifest or {}).get("splits", {}).get(split, {})
        report = check_split(
            folder,
            split,
            skipped=len(info.get("skipped", [])),
            deep=deep,
            num_classes=info.get("classes", 0),
            board=board,
        )
        splits[split] = report
        problems += [f"{split}: {p}" for p in report.problems]
        if report.problem_count > len(report.problems):
            problems.append(f"{split}: ... {report.problem_count - len(report.problems)} more")
    if deep and manifest and not problems:
        problems += check_checksums(folder, manifest["files"], workers, board)
    imagenet = all(splits[s].records == IMAGENET_COUNTS[s] for s in SPLITS) and all(
        splits[s].classes == IMAGENET_CLASSES for s in SPLITS
    )
    return {
        "folder": str(folder),
        "ok": not problems,
        "manifest": manifest is not None,
        "checksums_checked": bool(deep and manifest),
        "full_imagenet": imagenet,
        "splits": {
            s: {
                "records": r.records,
                "listed": r.listed,
                "classes": r.classes,
                "rec_bytes": r.rec_bytes,
                "skipped": r.missing,
            }
            for s, r in splits.items()
        },
        "problems": problems,
    }


def write_manifest(
    folder: Path,
    splits: dict[str, dict[str, Any]],
    files: dict[str, Any],
    source: dict[str, Any],
    staging: Path | None = None,
) -> None:
    """Write the manifest last: its presence is what marks the data set complete.

    `staging` is a folder on the same file system for the temporary file (see write_json)."""
    from hpcrepro import __version__

    write_json(
        folder / MANIFEST,
        {
            "format": MANIFEST_FORMAT,
            "version": 1,
            "tool": f"hpcrepro {__version__}",
            "source": source,
            "splits": splits,
            "files": files,
            "checksum": "crc32 per segment",
        },
        staging,
    )


def _adopted_entries(folder: Path, report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest's file entries (CRC-32 per GiB) and split entries of a checked data set."""
    files = {}
    splits = {}
    for split in SPLITS:
        for ext in ("lst", "idx", "rec"):
            path = folder / f"{split}.{ext}"
            size = path.stat().st_size
            step = 1 << 30
            segments = [
                {
                    "offset": o,
                    "length": min(step, size - o),
                    "crc32": crc_of(path, o, min(step, size - o)),
                }
                for o in range(0, size, step)
            ]
            files[path.name] = {"size": size, "segments": segments}
        info = report["splits"][split]
        splits[split] = {"images": info["records"], "classes": info["classes"], "skipped": []}
    return files, splits


def adopt(folder: Path) -> dict[str, Any]:
    """Write a manifest for a data set made elsewhere (e.g. by im2rec) after checking it."""
    if load_manifest(folder) is not None:
        raise UserError(
            f"{folder} already has a manifest", hint="run verify without --write-manifest"
        )
    report = verify(folder)
    if not report["ok"]:
        raise UserError(
            f"{folder} fails verification, so no manifest was written: "
            + "; ".join(report["problems"])
        )
    with _read_errors(folder):
        files, splits = _adopted_entries(folder, report)
    with io_errors("writing the manifest", folder):
        write_manifest(folder, splits, files, {"adopted": str(folder)})
    return report
