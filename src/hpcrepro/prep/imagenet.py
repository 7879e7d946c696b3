"""ImageNet → `train/val.{lst,rec,idx}` + manifest: plan, pack (whole or one shard), join, finish.

Everything in progress lives in `<out>/.hpcrepro-prep/`; the final names appear only when both
splits are packed, joined and checked, and `manifest.json` is written last, so a folder without a
manifest is never a finished data set. Re-running the same command resumes: the plan is reused,
finished shards are kept, a half-packed shard continues from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcrepro.errors import UserError
from hpcrepro.prep.files import (
    gib,
    input_errors,
    io_errors,
    read_json,
    require_space,
    write_json,
)
from hpcrepro.prep.listing import (
    ListEntry,
    build_list,
    check_relpath,
    class_names,
    read_lst,
    write_lst,
)
from hpcrepro.prep.pack import PackState, pack
from hpcrepro.prep.shards import JoinFiles, Shard, join, shard_files
from hpcrepro.prep.sources import (
    WORK_DIR,
    SourceImage,
    SplitSource,
    find_train,
    find_val,
    is_folder,
)
from hpcrepro.prep.verify import SPLITS, file_entry, quick_check, write_manifest
from hpcrepro.progress import Progress, rate
from hpcrepro.safeopen import replace_file

PLAN_VERSION = 1
_DISCARDED = WORK_DIR + ".discarded"  # a working folder being deleted
_WRITE_TEST = ".hpcrepro-write-test."
_SPLIT_PLAN = {"kind": str, "location": str, "images": int, "classes": int, "source_bytes": int}
PLAN_SHAPE = {
    "version": int, "raw": str, "val_labels": (str, None),
    "splits": {"train": _SPLIT_PLAN, "val": _SPLIT_PLAN},
}  # fmt: skip
_RECORD_OVERHEAD = 8 + 24 + 3 + 8  # record header, image header, padding, a possible split

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def default_workers() -> int:
    """Slurm's CPU allocation when inside a job, else the CPUs this process may use."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    return len(os.sched_getaffinity(0))


@dataclass
class Request:
    """What `hpcrepro prep imagenet` was asked to do (one CLI call)."""

    raw: Path
    out: Path
    workers: int
    val_labels: Path | None = None
    on_corrupt: str = "fail"
    shard: Shard | None = None
    join_only: bool = False
    restart: bool = False


# ---------------------------------------------------------------- plan


def _check_split(source: SplitSource) -> list[ListEntry]:
    where = source.location
    if source.empty_classes:
        raise UserError(
            f"class folder '{source.empty_classes[0]}' of the {source.split} set has no images "
            f"({len(source.empty_classes)} such folders)",
            where=where,
            hint="im2rec would give every later class a different label: restore the images "
            "of that class (or remove the folder if the class is not meant to be there)",
        )
    entries = build_list(source.images)
    if not entries:
        raise UserError(
            f"the {source.split} set holds no .jpeg/.jpg/.png images",
            where=where,
            hint="pass --raw the folder that holds train/ and val/ (or the ILSVRC2012 tars)",
        )
    for entry in entries:
        check_relpath(entry.relpath, where)
        if entry.relpath.count("/") != 1:
            kind = "outside any class folder" if "/" not in entry.relpath else "in a nested folder"
            raise UserError(
                f"image '{entry.relpath}' of the {source.split} set is {kind}",
                where=where,
                hint="ImageNet images sit exactly one level down, in <wnid>/ class folders; "
                "im2rec would make it a class of its own. Move or delete it",
            )
    return entries


Listed = list[tuple[SplitSource, list[ListEntry]]]


def list_input(request: Request, log: Log) -> Listed:
    """List and check both splits. It only reads: a mistake found here leaves --out untouched."""
    log(f"listing {request.raw} ...")
    with input_errors(request.raw):
        train = find_train(request.raw)
        train_entries = _check_split(train)
        train_classes = class_names(train_entries)
        val = find_val(request.raw, request.val_labels, train_classes)
        val_entries = _check_split(val)
    val_classes = class_names(val_entries)
    if val_classes != train_classes:
        lacking = sorted(set(train_classes) - set(val_classes))
        extra = sorted(set(val_classes) - set(train_classes))
        detail = f"missing {lacking[:5]}" if lacking else f"extra {extra[:5]}"
        raise UserError(
            f"the val set's class folders differ from the train set's ({detail})",
            where=val.location,
            hint="labels are class positions in sorted order, so both sets need the same classes",
        )
    for leftover in train.leftovers + val.leftovers:
        log(
            f"warning: ignoring {leftover}: the working folder of an earlier prep whose --out was "
            "inside the input; it holds no images (im2rec would list none from it). Delete it"
        )
    return [(train, train_entries), (val, val_entries)]


def save_plan(request: Request, work: Path, listed: Listed, log: Log) -> dict[str, list[ListEntry]]:
    """Write the lists and the plan; returns the lists (this run need not reread them)."""
    splits = {}
    classes = len(class_names(listed[0][1]))
    for source, entries in listed:
        # Array tasks may plan at the same time: each writes the same bytes and renames them in.
        write_lst(work / f"{source.split}.lst", entries)
        lines = (f"{e.source.offset}\t{e.source.size}\n".encode("ascii") for e in entries)
        replace_file(work / f"{source.split}.sources", lines)
        splits[source.split] = {
            "kind": source.kind,
            "location": source.location,
            "images": len(entries),
            "classes": classes,
            "source_bytes": sum(e.source.size for e in entries),
        }
        log(
            f"{source.split}: {len(entries)} images in {classes} classes "
            f"({source.kind} {source.location})"
        )
    write_json(work / "plan.json", {**_identity(request), "splits": splits})
    return {source.split: entries for source, entries in listed}


def _identity(request: Request) -> dict[str, Any]:
    return {
        "version": PLAN_VERSION,
        "raw": str(request.raw),
        "val_labels": str(request.val_labels) if request.val_labels else None,
    }


def load_entries(work: Path, split: str, info: dict[str, Any]) -> list[ListEntry]:
    """The plan's list with each entry's source location."""
    kind, location = info["kind"], info["location"]
    entries = []
    with open(work / f"{split}.sources", encoding="ascii") as sources:
        for line, source in zip(read_lst(work / f"{split}.lst"), sources, strict=True):
            offset, size = (int(v) for v in source.split("\t"))
            if kind == "folder":
                file = os.path.join(location, line.relpath)
            elif kind == "flat-folder":
                file = os.path.join(location, line.relpath.split("/", 1)[1])
            elif kind == "class-tars":
                file = os.path.join(location, line.relpath.split("/")[0] + ".tar")
            else:
                file = location
            image = SourceImage(line.relpath, file, offset, size)
            entries.append(ListEntry(line.index, int(line.label), line.relpath, image))
    if len(entries) != info["images"]:
        raise UserError(f"{work}: the plan is damaged", hint="rerun with --restart")
    return entries


# ---------------------------------------------------------------- output folder


def _refuse_out_in_input(request: Request, folders: list[str]) -> None:
    """Refuse an --out in or under a folder the listing reads, before anything is written.

    Files written there change the input: the working folder would be listed as an (empty)
    class and a later prep of the same input would refuse it. `folders` are real paths and
    `request.out` is resolved, so symlinks on either side are seen through. A --raw inside the
    working folder is refused too: finishing or --restart deletes that folder.
    """
    for folder in folders:
        if request.out.is_relative_to(folder):
            raise UserError(
                f"--out {request.out} is part of the input: the listing of --raw {request.raw} "
                f"reads {folder}, and the prep's own files there would change what it sees",
                hint=f"choose an --out outside the train/ and val/ folders, e.g. "
                f"{request.raw.parent / (request.raw.name + '-recordio')}; nothing was written",
            )
    if request.raw.is_relative_to(request.out / WORK_DIR):
        raise UserError(
            f"--raw {request.raw} is inside {request.out / WORK_DIR}, the prep's working folder, "
            "which it deletes when it finishes",
            hint="move the input out of that folder first; nothing was written",
        )


def _remove_stale_probes(folder: Path) -> None:
    """Remove the empty write-test folders a run killed while probing left in `folder`."""
    with contextlib.suppress(OSError):  # unreadable: the probe itself will say so
        for stale in folder.glob(f"{_WRITE_TEST}*"):
            with contextlib.suppress(OSError):  # not empty, or already gone: left alone
                stale.rmdir()


def _check_writable(out: Path) -> None:
    """Fail before the (long) listing when --out is a file or cannot be created or written."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file", hint="pass a folder (it is created)")
    existing = out
    while not os.path.lexists(existing):  # the nearest part that exists gets the new folders
        existing = existing.parent
    if not os.path.isdir(existing):
        raise UserError(
            f"cannot create --out {out}: {existing} is a file", hint="pass a folder path for --out"
        )
    _remove_stale_probes(existing)
    try:  # a real folder made and removed: /proc, /sys, read-only mounts and ACLs all answer
        probe = tempfile.mkdtemp(prefix=_WRITE_TEST, dir=existing)
        with contextlib.suppress(FileNotFoundError):  # another task's clean-up came first
            os.rmdir(probe)
    except OSError as error:
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        raise UserError(
            f"cannot write in {existing}: making a folder there fails ({error.strerror or error})",
            hint="free space there or pass another --out"
            if full
            else "choose an --out folder you can write to (a real file system, not /proc or "
            "/sys), or fix its permissions",
        ) from error


def _existing_plan(request: Request) -> dict[str, Any] | None:
    """The plan of a partial prep of this input in --out, to resume; None to start afresh.

    Only reads: output files that hpcrepro did not finish, or a partial prep of other input,
    stop the run before anything is written.
    """
    out, plan_path = request.out, request.out / WORK_DIR / "plan.json"
    if request.restart or not plan_path.is_file():
        finals = [
            p.name
            for s in SPLITS
            for p in out.glob(f"{s}.*")
            if p.suffix in (".rec", ".idx", ".lst")
        ]
        if finals:
            raise UserError(
                f"{out} already holds {', '.join(sorted(finals))} but no hpcrepro manifest: "
                "an unfinished or foreign data set",
                hint="choose an empty --out folder, or delete those files; a data set made by "
                "im2rec can be adopted with 'hpcrepro prep verify DIR --write-manifest'",
            )
        return None
    plan: dict[str, Any] = read_json(plan_path, PLAN_SHAPE)
    if {k: plan.get(k) for k in _identity(request)} != _identity(request):
        raise UserError(
            f"{out} holds a partial prep of other input (raw {plan.get('raw')}, "
            f"val labels {plan.get('val_labels')})",
            hint="run the same command as before to resume it, or add --restart to discard it",
        )
    return plan


def _discard_work(out: Path) -> None:
    """Delete the working folder as one step: it is renamed aside first, so a kill midway
    never leaves a half-deleted plan under the name a rerun resumes from."""
    work, aside = out / WORK_DIR, out / _DISCARDED
    if aside.exists():  # left by a run killed while deleting
        shutil.rmtree(aside)
    if work.exists():
        os.replace(work, aside)
        shutil.rmtree(aside)


def _open_output(request: Request, log: Log) -> Path:
    """Create (or reopen, or with --restart empty) `<out>/.hpcrepro-prep` and return it."""
    out, work = request.out, request.out / WORK_DIR
    with io_errors("creating the output folder", out):
        out.mkdir(parents=True, exist_ok=True)
        if request.restart and work.exists():
            log(f"--restart: discarding the partial prep in {work}")
            _discard_work(out)
        if (out / _DISCARDED).exists():  # left by a run killed while deleting
            shutil.rmtree(out / _DISCARDED)
        work.mkdir(exist_ok=True)
        probe = work / f".write-test.{os.uname().nodename}.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    return work


def prepare(
    request: Request, log: Log = _stderr, board: Progress | None = None
) -> dict[str, Any]:
    """Run the part of the prep the request asks for; returns a summary.

    Every check of the arguments and of the input comes before the first write, so a mistake
    leaves --out (and the input) as they were. `board` shows the packing of each split (images,
    bytes, rate, ETA); without one, a plain line a minute goes to `log`'s stream.
    """
    board = board or Progress(enabled=False)
    request.raw = request.raw.resolve()
    request.out = request.out.resolve()
    if request.val_labels:
        request.val_labels = request.val_labels.resolve()
    _refuse_out_in_input(request, [os.path.realpath(request.raw / split) for split in SPLITS])
    if os.path.isfile(request.out / "manifest.json"):
        problems = quick_check(request.out)
        if not problems:
            with io_errors("removing the finished prep's working folder", request.out):
                _discard_work(request.out)  # a run killed after writing the manifest
            log(f"{request.out} is already a complete data set (manifest.json); nothing to do")
            return {"status": "complete", "out": str(request.out)}
        raise UserError(
            f"{request.out} holds a data set that no longer matches its manifest: "
            + "; ".join(problems),
            hint="delete the folder's train.*, val.* and manifest.json and prepare it again",
        )
    with input_errors(request.raw):
        raw_is_folder = is_folder(request.raw)
    if not raw_is_folder:
        raise UserError(
            f"--raw {request.raw} is not a folder", hint="pass the folder with train/ and val/"
        )
    _check_writable(request.out)
    plan = _existing_plan(request)
    entries: dict[str, list[ListEntry]] = {}
    if plan is None:
        listed = list_input(request, log)
        _refuse_out_in_input(request, [f for source, _ in listed for f in source.folders])
        work = _open_output(request, log)
        with io_errors("writing the image list", work):
            entries = save_plan(request, work, listed, log)
        plan = read_json(work / "plan.json", PLAN_SHAPE)
    else:
        work = _open_output(request, log)
    if request.join_only:
        return _join_and_finish(request, work, plan, log)
    shard = request.shard or Shard(0, 1)
    for split in SPLITS:
        _pack_split(request, work, plan, split, shard, log, entries.get(split), board)
    if request.shard is not None:
        log(f"shard {shard.index}/{shard.count} done; run with --join once all shards are done")
        return {"status": "shard-done", "shard": f"{shard.index}/{shard.count}"}
    return _join_and_finish(request, work, plan, log)


def _pack_split(
    request: Request,
    work: Path,
    plan: dict[str, Any],
    split: str,
    shard: Shard,
    log: Log,
    entries: list[ListEntry] | None,
    board: Progress,
) -> None:
    if JoinFiles.of(work, split).started():
        log(f"{split}: packed; the join had started and continues")
        return
    files = shard_files(work, split, shard)
    if files.finished() is not None:
        log(f"{split} shard {shard.index}/{shard.count}: already packed, kept")
        return
    if entries is None:
        entries = load_entries(work, split, plan["splits"][split])
    start, end = shard.range(len(entries))
    part = entries[start:end]
    needed = sum(e.source.size + _RECORD_OVERHEAD for e in part)
    written = files.rec.stat().st_size if files.rec.exists() else 0
    require_space(
        work, max(0, needed - written), f"packing {split} shard {shard.index}/{shard.count}"
    )
    log(f"{split}: packing {len(part)} images ({gib(needed)}) with {request.workers} readers")

    task = board.task(f"{split} images", len(part), "images")
    first: list[int] = []  # bytes already packed when this call started (a resumed pack)

    def progress(done: int, total: int, size: int) -> None:
        first[:] = first or [size]
        seconds = time.monotonic() - task.started
        task.update(done, f"{gib(size)}, {rate(size - first[0], seconds)}")

    with io_errors(f"packing {split}", work):
        state = pack(
            part, files, workers=request.workers, on_corrupt=request.on_corrupt, progress=progress
        )
    task.finish(gib(state.rec_size))
    if state.skipped:
        log(f"{split}: skipped {len(state.skipped)} corrupt images (listed in the manifest)")


def _check_packed(
    located: Callable[[str], Path], split: str, state: PackState, listed: int
) -> dict[str, Any]:
    """Check the packed files against what the packer counted; return the `.idx` manifest entry.

    The records were checksummed as they were written, so nothing rereads the `.rec` here (that
    is `hpcrepro prep verify --checksums`' job); sizes and counts catch a lost or doubled part.
    """
    idx = located(f"{split}.idx").read_bytes()
    problems = []
    rec_size = located(f"{split}.rec").stat().st_size
    if rec_size != state.rec_size:
        problems.append(f"{split}.rec has {rec_size} bytes, the packer wrote {state.rec_size}")
    if len(idx) != state.idx_size or idx.count(b"\n") != state.records:
        problems.append(f"{split}.idx does not hold the {state.records} lines the packer wrote")
    if state.records + len(state.skipped) != listed:
        problems.append(
            f"{state.records} records and {len(state.skipped)} skipped images "
            f"for {listed} listed images"
        )
    if problems:
        raise UserError(
            f"the packed {split} set failed its check: {'; '.join(problems)}",
            hint="rerun with --restart; if it happens again, report it as a bug",
        )
    crc = zlib.crc32(idx)
    return {"size": len(idx), "segments": [{"offset": 0, "length": len(idx), "crc32": crc}]}


def _join_and_finish(
    request: Request, work: Path, plan: dict[str, Any], log: Log
) -> dict[str, Any]:
    out = request.out
    states = {}
    for split in SPLITS:
        with io_errors(f"joining {split}", work):
            states[split] = join(work, split, JoinFiles.of(work, split))

    def located(name: str) -> Path:
        """A finished file: still in the working folder, or moved out by a run killed midway."""
        return work / name if (work / name).exists() else out / name

    files: dict[str, Any] = {}
    summary: dict[str, Any] = {"status": "complete", "out": str(out), "splits": {}}
    manifest_splits = {}
    for split in SPLITS:
        state, info = states[split], plan["splits"][split]
        files[f"{split}.rec"] = {"size": state.rec_size, "segments": state.segments}
        files[f"{split}.idx"] = _check_packed(located, split, state, info["images"])
        files[f"{split}.lst"] = file_entry(located(f"{split}.lst"))
        manifest_splits[split] = {
            "images": state.records,
            "listed": info["images"],
            "classes": info["classes"],
            "skipped": state.skipped,
        }
        summary["splits"][split] = {
            "images": state.records,
            "skipped": len(state.skipped),
            "rec_bytes": state.rec_size,
        }
    with io_errors("moving the finished files into place", out):
        for split in SPLITS:
            for ext in ("lst", "idx", "rec"):
                if (work / f"{split}.{ext}").exists():
                    os.replace(work / f"{split}.{ext}", out / f"{split}.{ext}")
        write_manifest(
            out,
            manifest_splits,
            files,
            {
                "raw": plan["raw"],
                "val_labels": plan["val_labels"],
                "kinds": {s: plan["splits"][s]["kind"] for s in SPLITS},
            },
            staging=work,
        )
        _discard_work(out)
    log(f"done: {out} (train {states['train'].records}, val {states['val'].records} images)")
    return summary
