"""`hpcrepro prep` end to end through the CLI: input layouts, shards, verify, and bad input."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from mounts import small_filesystem, without_read_override
from prep_data import SyntheticSet, make_imagenet, write_valprep

SRC = Path(__file__).resolve().parent.parent / "src"
OUTPUTS = ("train.lst", "train.rec", "train.idx", "val.lst", "val.rec", "val.idx")


def hpcrepro(
    *args: str | Path, preexec: Callable[[], None] | None = None, wrapper: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Run the CLI; `wrapper` is a command prefix (setpriv) and `preexec` runs in the child."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [*wrapper, sys.executable, "-m", "hpcrepro", *map(str, args)],
        capture_output=True, text=True, env=env, preexec_fn=preexec, timeout=120,
    )  # fmt: skip


def prep(
    raw: Path,
    out: Path,
    *extra: str | Path,
    preexec: Callable[[], None] | None = None,
    wrapper: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    return hpcrepro("prep", "imagenet", "--raw", raw, "--out", out, "--workers", "2", *extra,
                    preexec=preexec, wrapper=wrapper)  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def user_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, an 'error:' message containing every needle, and no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("error:") == 1
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    return result.stderr


def assert_not_complete(out: Path) -> None:
    """Nothing under a final name: no manifest, no train/val files."""
    if out.exists():
        finals = {p.name for p in out.iterdir()} & {*OUTPUTS, "manifest.json"}
        assert not finals, finals


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSet:
    return make_imagenet(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="module")
def reference(synthetic: SyntheticSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "out"
    ok(prep(synthetic.extracted, out))
    return out


def same_outputs(a: Path, b: Path) -> None:
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def copy_raw(synthetic: SyntheticSet, tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(synthetic.extracted, raw)
    return raw


def test_every_input_layout_gives_the_same_files(
    synthetic: SyntheticSet, reference: Path, tmp_path: Path
) -> None:
    ok(prep(synthetic.tars, tmp_path / "from-tars"))
    same_outputs(reference, tmp_path / "from-tars")

    # The README's half-way state: train/ holds class tars, val/ is flat with valprep.sh.
    raw = tmp_path / "half"
    (raw / "train").mkdir(parents=True)
    (raw / "val").mkdir()
    with tarfile.open(synthetic.tars / "ILSVRC2012_img_train.tar") as outer:
        outer.extractall(raw / "train", filter="data")
    with tarfile.open(synthetic.tars / "ILSVRC2012_img_val.tar") as val:
        val.extractall(raw / "val", filter="data")
    write_valprep(synthetic, raw / "val" / "valprep.sh")
    ok(prep(raw, tmp_path / "from-half"))
    same_outputs(reference, tmp_path / "from-half")

    # The val tar with one wnid per line, passed explicitly.
    labels = tmp_path / "synsets.txt"
    labels.write_text("".join(f"{synthetic.val[name]}\n" for name in sorted(synthetic.val)))
    raw2 = tmp_path / "tars2"
    raw2.mkdir()
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        os.symlink(synthetic.tars / name, raw2 / name)
    ok(prep(raw2, tmp_path / "from-synsets", "--val-labels", labels))
    same_outputs(reference, tmp_path / "from-synsets")


def test_verify_reports_and_manifest(reference: Path) -> None:
    result = ok(hpcrepro("prep", "verify", reference, "--json", "--checksums"))
    report = json.loads(result.stdout)
    assert report["ok"] and report["manifest"] and report["checksums_checked"]
    assert report["splits"]["train"]["records"] == 20 and report["splits"]["val"]["records"] == 8
    assert report["splits"]["train"]["classes"] == 4 and not report["full_imagenet"]
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["files"]["train.rec"]["size"] == (reference / "train.rec").stat().st_size
    text = ok(hpcrepro("prep", "verify", reference)).stdout
    assert "train: 20 records of 20 listed, 4 classes" in text and text.endswith("ok\n")
    again = ok(prep(Path("/nonexistent-is-not-read"), reference))
    assert "already a complete data set" in again.stderr


def test_verify_finds_damage(reference: Path, tmp_path: Path) -> None:
    def damaged(name: str, change) -> Path:  # type: ignore[no-untyped-def]
        folder = tmp_path / name
        shutil.copytree(reference, folder)
        change(folder)
        return folder

    def flip_image_byte(folder: Path) -> None:
        data = bytearray((folder / "train.rec").read_bytes())
        data[len(data) // 2] ^= 0x55
        (folder / "train.rec").write_bytes(bytes(data))

    folder = damaged("bytes", flip_image_byte)
    user_error(hpcrepro("prep", "verify", folder, "--checksums"), "CRC-32 mismatch")

    def shift_offset(folder: Path) -> None:
        lines = (folder / "val.idx").read_text().splitlines()
        key, offset = lines[3].split("\t")
        lines[3] = f"{key}\t{int(offset) + 4}"
        (folder / "val.idx").write_text("\n".join(lines) + "\n")

    user_error(hpcrepro("prep", "verify", damaged("offset", shift_offset)), "val.idx: record")

    def relabel(folder: Path) -> None:
        lines = (folder / "train.lst").read_text().splitlines()
        index, label, path = lines[0].split("\t")
        lines[0] = f"{index}\t{(float(label) + 1) % 4:f}\t{path}"
        (folder / "train.lst").write_text("\n".join(lines) + "\n")

    user_error(hpcrepro("prep", "verify", damaged("label", relabel)), "train.lst says")

    def truncate(folder: Path) -> None:
        with open(folder / "train.rec", "r+b") as handle:
            handle.truncate(handle.seek(0, 2) - 10)

    user_error(hpcrepro("prep", "verify", damaged("short", truncate)), "ends inside a record")


def test_verify_on_unreadable_files_and_adopt_on_a_read_only_folder(
    reference: Path, tmp_path: Path
) -> None:
    """Both used to end in a PermissionError or OSError traceback."""
    wrapper = without_read_override()
    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    with mode(copy / "train.idx", 0):
        result = hpcrepro("prep", "verify", copy, wrapper=wrapper)
        user_error(result, f"cannot read {copy / 'train.idx'} (Permission denied)")
    (copy / "manifest.json").unlink()
    with small_filesystem(tmp_path / "ro", "4m") as mount:
        for name in OUTPUTS:
            shutil.copy(copy / name, mount / name)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        result = hpcrepro("prep", "verify", mount, "--write-manifest")
        user_error(result, f"cannot write in {mount} while writing the manifest", "Read-only")


def test_shards_then_join(synthetic: SyntheticSet, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for index in (1, 2):
        result = ok(prep(synthetic.tars, out, "--shard", f"{index}/3", "--json"))
        assert json.loads(result.stdout)["status"] == "shard-done"
    user_error(prep(synthetic.tars, out, "--join"), "shards 0 of 3 are not finished")
    assert_not_complete(out)
    ok(prep(synthetic.tars, out, "--shard", "0/3"))
    assert "already packed, kept" in ok(prep(synthetic.tars, out, "--shard", "1/3")).stderr
    ok(prep(synthetic.tars, out, "--join"))
    same_outputs(reference, out)
    assert not (out / ".hpcrepro-prep").exists()
    user_error(prep(synthetic.tars, tmp_path / "x", "--shard", "3/3"), "--shard '3/3'")


def _truncate_first_image(raw: Path) -> tuple[Path, bytes]:
    victim = sorted((raw / "train").rglob("*.JPEG"))[-1]
    original = victim.read_bytes()
    victim.write_bytes(original[: len(original) // 2])
    return victim, original


def test_corrupt_image_fails_then_resumes_after_fix(
    synthetic: SyntheticSet, reference: Path, tmp_path: Path
) -> None:
    raw = copy_raw(synthetic, tmp_path)
    victim, original = _truncate_first_image(raw)
    out = tmp_path / "out"
    name = f"{victim.parent.name}/{victim.name}"
    user_error(prep(raw, out), f"corrupt image {name}", "truncated JPEG", "--on-corrupt skip")
    assert_not_complete(out)
    victim.write_bytes(original)
    ok(prep(raw, out))
    same_outputs(reference, out)


def test_corrupt_image_skipped_on_request(synthetic: SyntheticSet, tmp_path: Path) -> None:
    raw = copy_raw(synthetic, tmp_path)
    victim, _ = _truncate_first_image(raw)
    (raw / "val" / synthetic.wnids[0] / "junk.JPEG").write_bytes(b"<html>not an image</html>")
    out = tmp_path / "out"
    result = ok(prep(raw, out, "--on-corrupt", "skip"))
    assert f"skipped {victim.parent.name}/{victim.name}: truncated JPEG" in result.stderr
    assert "not a JPEG or PNG" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["path"] for s in manifest["splits"]["train"]["skipped"]] == [
        f"{victim.parent.name}/{victim.name}"
    ]
    report = json.loads(ok(hpcrepro("prep", "verify", out, "--json")).stdout)
    assert report["splits"]["train"]["records"] == 19 and report["splits"]["val"]["records"] == 8
    assert report["splits"]["val"]["listed"] == 9


def test_layout_mistakes(synthetic: SyntheticSet, tmp_path: Path) -> None:
    raw = copy_raw(synthetic, tmp_path)
    empty = raw / "train" / "n00000001"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    user_error(prep(raw, tmp_path / "o1"), "class folder 'n00000001'", "has no images")
    shutil.rmtree(empty)

    shutil.rmtree(raw / "val" / synthetic.wnids[2])
    user_error(prep(raw, tmp_path / "o2"), "val set's class folders differ", synthetic.wnids[2])
    shutil.rmtree(raw / "val")
    user_error(prep(raw, tmp_path / "o3"), "no validation images")

    (raw / "val").mkdir()
    for name, wnid in synthetic.val.items():
        shutil.copy(synthetic.extracted / "val" / wnid / name, raw / "val" / name)
    user_error(prep(raw, tmp_path / "o4"), "no labels file was found", "--val-labels")
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{n} {w}\n" for n, w in list(synthetic.val.items())[1:]))
    user_error(prep(raw, tmp_path / "o5", "--val-labels", labels), "gives no class for 1 of the 8")

    (raw / "train" / "stray.jpg").write_bytes(b"x")
    user_error(prep(raw, tmp_path / "o6"), "'stray.jpg'", "outside any class folder")
    for out in ("o1", "o2", "o3", "o4", "o5", "o6"):
        assert not (tmp_path / out).exists(), out  # every check comes before the first write
    user_error(prep(tmp_path / "missing", tmp_path / "o7"), "is not a folder")
    (tmp_path / "o8").write_text("a file")
    user_error(prep(raw, tmp_path / "o8"), "--out", "is a file")
    user_error(prep(raw, tmp_path / "o8" / "sub"), "cannot create --out", "o8 is a file")


def test_tars_that_are_not_imagenet(synthetic: SyntheticSet, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    with tarfile.open(raw / "ILSVRC2012_img_train.tar", "w") as tar:
        tar.add(__file__, arcname="holiday/photo.jpg")
    user_error(prep(raw, tmp_path / "o1"), "not the ImageNet train tar", "holiday/photo.jpg")
    (raw / "ILSVRC2012_img_train.tar").write_bytes(b"this is not a tar at all" * 100)
    user_error(prep(raw, tmp_path / "o2"), "not a readable tar file")
    (raw / "ILSVRC2012_img_train.tar").unlink()
    os.symlink(synthetic.tars / "ILSVRC2012_img_train.tar", raw / "ILSVRC2012_img_train.tar")
    os.symlink(synthetic.tars / "ILSVRC2012_img_train.tar", raw / "ILSVRC2012_img_val.tar")
    shutil.copy(synthetic.tars / "LOC_val_solution.csv", raw)
    user_error(prep(raw, tmp_path / "o3"), "not the ImageNet val tar", "swap")


def test_existing_outputs(synthetic: SyntheticSet, reference: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "train.rec").write_bytes(b"from somewhere else")
    user_error(prep(synthetic.extracted, foreign), "already holds train.rec", "--write-manifest")
    assert (foreign / "train.rec").read_bytes() == b"from somewhere else"

    raw = copy_raw(synthetic, tmp_path)
    _truncate_first_image(raw)
    out = tmp_path / "out"
    user_error(prep(raw, out), "truncated JPEG")
    user_error(prep(synthetic.extracted, out), "partial prep of other input", "--restart")
    ok(prep(synthetic.extracted, out, "--restart"))
    same_outputs(reference, out)


def test_full_disk_is_caught_before_writing(synthetic: SyntheticSet, tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small", "40k") as small:
        user_error(prep(synthetic.extracted, small / "out"), "needs", "only", "is free")
        assert_not_complete(small / "out")


def test_read_only_output(synthetic: SyntheticSet, tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "ro", "1m", "ro") as readonly:
        user_error(prep(synthetic.extracted, readonly / "out"), "cannot write in", "Read-only")


@pytest.mark.parametrize("out", ["/proc/hpcrepro-out", "/proc/self/out", "/proc/sys/out"])
def test_out_on_a_pseudo_file_system_is_refused_before_the_listing(
    synthetic: SyntheticSet, out: str
) -> None:
    """/proc takes no new folders (ENOENT, whatever access() says for root): found by making
    one, before the listing, instead of a FileNotFoundError traceback after it."""
    stderr = user_error(prep(synthetic.extracted, Path(out)), "cannot write in", "making a folder")
    assert "listing" not in stderr


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (["--workers", "99999999999999999999"], "give 1 to 4096"),
        (["--workers", "-1"], "give 1 to 4096"),
        (["--shard", "0/100000"], "N <= 99999"),  # shard files carry five digits
        (["--shard", "0/" + "9" * 5000], "N <= 99999"),
        (["--shard", "1/1"], "0 <= I < N"),
    ],
)
def test_numeric_options_are_bounded(
    synthetic: SyntheticSet, tmp_path: Path, options: list[str], needle: str
) -> None:
    """Before, --workers 10**20 spun building 2*10**20 read buffers."""
    out = tmp_path / "out"
    stderr = user_error(hpcrepro("prep", "imagenet", "--raw", synthetic.extracted, "--out", out,
                                 *options), needle)  # fmt: skip
    assert "listing" not in stderr and not out.exists()


def test_any_os_error_while_writing_is_a_user_error(tmp_path: Path) -> None:
    from hpcrepro.errors import UserError
    from hpcrepro.prep.files import io_errors

    for number in (errno.EIO, errno.ENOENT, errno.EINVAL, errno.ENAMETOOLONG):
        with pytest.raises(UserError, match=os.strerror(number)), io_errors("packing", tmp_path):
            raise OSError(number, os.strerror(number), str(tmp_path / "x"))


def test_write_failure_midway_then_resume(
    synthetic: SyntheticSet, reference: Path, tmp_path: Path
) -> None:
    def limit_file_size() -> None:  # the kernel refuses writes past 30 kB, like a full quota
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

    out = tmp_path / "out"
    user_error(prep(synthetic.extracted, out, preexec=limit_file_size), "no space left")
    assert_not_complete(out)
    ok(prep(synthetic.extracted, out))
    same_outputs(reference, out)


def test_resume_after_a_kill_between_renames(
    synthetic: SyntheticSet, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    ok(prep(synthetic.extracted, out, "--shard", "0/1"))
    work = out / ".hpcrepro-prep"
    # Killed inside the join: train's index already renamed, its records not yet.
    os.replace(work / "train.00000-of-00001.idx", work / "train.idx")
    result = ok(prep(synthetic.extracted, out))
    assert "packing" not in result.stderr  # the packed shards were kept, not redone
    same_outputs(reference, out)


def test_killed_at_any_moment_then_rerun_gives_the_same_files(tmp_path: Path) -> None:
    data = make_imagenet(tmp_path / "raw", classes=6, train_per_class=60, val_per_class=5,
                         noise=True, tars=False)  # fmt: skip
    reference = tmp_path / "reference"
    ok(prep(data.extracted, reference))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    for number, delay in enumerate((0.15, 0.3, 0.45, 0.6)):
        out = tmp_path / f"out{number}"
        process = subprocess.Popen(
            [sys.executable, "-m", "hpcrepro", "prep", "imagenet", "--raw", str(data.extracted),
             "--out", str(out), "--workers", "2"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        ok(prep(data.extracted, out))
        same_outputs(reference, out)


def tree(root: Path) -> list[tuple[str, int]]:
    """Every path under `root` with its mode: what a prep must leave as it was."""
    paths = [
        os.path.join(folder, name) for folder, dirs, files in os.walk(root) for name in dirs + files
    ]
    return sorted((os.path.relpath(path, root), os.lstat(path).st_mode) for path in paths)


@contextmanager
def mode(path: Path, bits: int) -> Iterator[None]:
    original = path.stat().st_mode & 0o7777
    path.chmod(bits)
    try:
        yield
    finally:
        path.chmod(original)


def test_unreadable_input_stops_the_prep_before_anything_is_written(
    synthetic: SyntheticSet, tmp_path: Path
) -> None:
    """im2rec silently leaves out a folder it cannot list, so every later class gets the label
    of the one before: the prep must refuse instead, naming the folder and the reason."""
    wrapper = without_read_override()
    raw = copy_raw(synthetic, tmp_path)
    out = tmp_path / "out"
    first, second = (raw / "train" / synthetic.wnids[0]), (raw / "val" / synthetic.wnids[0])
    with mode(first, 0), mode(second, 0):  # the same class in both: the lists would still agree
        result = prep(raw, out, wrapper=wrapper)
        user_error(result, f"cannot read {first} while listing", "Permission denied", "chmod")
    with mode(second, 0):
        user_error(prep(raw, out, wrapper=wrapper), f"cannot read {second} ", "Permission denied")
    with mode(raw / "train", 0):
        user_error(prep(raw, out, wrapper=wrapper), f"cannot read {raw / 'train'} ")
    with mode(first, 0o644):  # listable but not searchable: its images cannot be looked at
        user_error(prep(raw, out, wrapper=wrapper), f"cannot read {first}/", "Permission denied")
    tars = tmp_path / "tars"
    shutil.copytree(synthetic.tars, tars)
    with mode(tars / "ILSVRC2012_img_train.tar", 0):
        result = prep(tars, out, wrapper=wrapper)
        user_error(result, f"cannot read {tars / 'ILSVRC2012_img_train.tar'} ", "Permission denied")
    assert not out.exists()


def test_out_inside_the_input_is_refused_before_anything_is_written(
    synthetic: SyntheticSet, reference: Path, tmp_path: Path
) -> None:
    raw = copy_raw(synthetic, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = synthetic.wnids[2]  # a class folder that is a link to another file system, say
    shutil.move(raw / "train" / moved, elsewhere / moved)
    os.symlink(elsewhere / moved, raw / "train" / moved)
    os.symlink(raw / "train", tmp_path / "link")
    before = tree(raw), tree(elsewhere)
    for out in (
        raw / "train" / synthetic.wnids[0],
        raw / "val",
        tmp_path / "link" / synthetic.wnids[1] / "out",  # the same folder through a link
        elsewhere / moved / "out",  # inside a linked class folder: found while listing
    ):
        user_error(prep(raw, out), "is part of the input", "choose an --out outside")
    assert (tree(raw), tree(elsewhere)) == before  # not even an empty folder was created
    work = tmp_path / "o" / ".hpcrepro-prep"
    work.mkdir(parents=True)
    shutil.copytree(raw, work / "raw", symlinks=True)
    user_error(prep(work / "raw", tmp_path / "o"), "the prep's working folder")

    # Beside train/ and val/ is fine; a working folder an older version left in the input
    # holds no images and is ignored (im2rec lists nothing from it either), with a warning.
    for leftover in (
        raw / "train" / ".hpcrepro-prep",
        raw / "val" / synthetic.wnids[0] / ".hpcrepro-prep",
    ):
        leftover.mkdir()
        (leftover / "plan.json").write_text("{}")
    result = ok(prep(raw, raw / "recordio"))
    assert result.stderr.count("warning: ignoring") == 2, result.stderr
    same_outputs(reference, raw / "recordio")
