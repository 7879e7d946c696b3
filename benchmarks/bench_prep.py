"""Benchmark: hpcrepro prep vs MXNet's im2rec.py --pass-through vs a plain copy of the same bytes.

Generates (once, cached) a synthetic ImageNet-shaped set of >= 20,000 real JPEGs (~2 GB), then
times, in the same run and each followed by `sync` so every tool pays for its writes:
  * `hpcrepro prep imagenet --workers N` (list + pack + join + manifest, train and val),
  * `im2rec.py --list --recursive` + `im2rec.py --pass-through --num-thread N` for train and val,
    run in the MXNet venv the tests build (`tests/mxnet_env.py`),
  * `cat` of the same files, in sorted (on-disk) order, into one file: the physical limit.
`--cache cold` drops the page cache before each tool (as root); `--cache warm` reads the images
into it first. Best of `--rounds`. Prints throughputs and ratios; `--json FILE` saves them.
    PYTHONPATH=src python benchmarks/bench_prep.py [--workers N] [--cache cold|warm] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import mxnet_env  # noqa: E402
import prep_data  # noqa: E402


def cache_dir() -> Path:
    base = os.environ.get("HPCREPRO_TEST_CACHE") or os.path.expanduser("~/.cache/hpcrepro-test")
    return Path(base)


def build_set(root: Path, images: int, classes: int) -> None:
    """Photo-like JPEGs (noise content, 60-150 KB): a pool of encodings, each file made unique."""
    done = root / "COMPLETE"
    if done.is_file() and done.read_text() == f"{images} {classes}\n":
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(7)
    pool = [
        prep_data.jpeg_bytes(rng, rng.randint(280, 420), rng.randint(260, 400), noise=True)
        for _ in range(64)
    ]
    per_class = images // classes
    val_per_class = max(1, per_class // 20)
    val_no = 0
    for c in range(classes):
        wnid = f"n{10000000 + c * 7919:08d}"
        for split, count in (("train", per_class), ("val", val_per_class)):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for n in range(count):
                if split == "val":
                    val_no += 1
                    name = f"ILSVRC2012_val_{val_no:08d}.JPEG"
                else:
                    name = f"{wnid}_{n}.JPEG"
                blob = prep_data.with_comment(rng.choice(pool), f"{split} {c} {n}".encode())
                (folder / name).write_bytes(blob)
    done.write_text(f"{images} {classes}\n")


def drop_caches() -> bool:
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(label: str, command: list[str], cwd: Path, listing: Path, cache: str,
          **kwargs: Any) -> tuple[float, float]:  # fmt: skip
    """Wall and CPU seconds (user + system) of `command` + `sync`, from a cold or warm cache."""
    cold = drop_caches()
    if cache == "warm":
        subprocess.run(["bash", "-c", f"xargs -0 cat < {listing} > /dev/null"], check=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, **kwargs)
    subprocess.run(["sync"], check=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    state = cache if cache == "warm" or cold else "warm (cannot drop caches)"
    print(f"  {label}: {seconds:.2f} s wall, {cpu:.2f} s CPU ({state} cache)", flush=True)
    return seconds, cpu


def one_round(data: Path, work: Path, files: list[str], workers: int, python: Path,
              im2rec: Path, cache: str) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Time the three contenders once, checking that hpcrepro's files equal im2rec's."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    listing = work / "files.txt"
    listing.write_text("\0".join(files))
    times = {}
    hpcrepro_out = work / "hpcrepro"
    times["hpcrepro"] = timed(
        "hpcrepro prep",
        [sys.executable, "-m", "hpcrepro", "prep", "imagenet", "--raw", str(data),
         "--out", str(hpcrepro_out), "--workers", str(workers)],
        work, listing, cache, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    im2rec_out = work / "im2rec"
    im2rec_out.mkdir()
    script = " && ".join(
        f"{python} {im2rec} --list --recursive {s} {data / s} && "
        f"{python} {im2rec} --pass-through --num-thread {workers} {s} {data / s}"
        for s in ("train", "val")
    )
    times["im2rec"] = timed(
        f"im2rec.py --pass-through --num-thread {workers}",
        ["bash", "-c", script], im2rec_out, listing, cache, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    for name in ("train.rec", "train.idx", "val.rec", "val.idx", "train.lst", "val.lst"):
        if (hpcrepro_out / name).read_bytes() != (im2rec_out / name).read_bytes():
            sys.exit(f"{name} differs from im2rec's output")
    print("  all six files identical to im2rec's", flush=True)
    shutil.rmtree(im2rec_out)
    shutil.rmtree(hpcrepro_out)
    times["copy"] = timed(
        "copy (xargs cat > one file)",
        ["bash", "-c", f"xargs -0 cat < {listing} > {work / 'copy.bin'}"], work, listing, cache,
    )  # fmt: skip
    (work / "copy.bin").unlink()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="best of this many rounds")
    parser.add_argument("--cache", choices=("cold", "warm"), default="cold",
                        help="cold: drop the page cache before each tool; warm: read the images "
                        "into it first")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    data = cache_dir() / f"bench-imagenet-{args.images}"
    print(f"synthetic set: {data}", flush=True)
    build_set(data, args.images, args.classes)
    files = sorted(str(p) for p in data.rglob("*.JPEG"))
    total = sum(os.path.getsize(f) for f in files)
    print(f"  {len(files)} JPEGs, {total / 1e9:.2f} GB; workers N={args.workers}", flush=True)
    python = mxnet_env.ensure_venv()
    im2rec = mxnet_env.im2rec_script(python)
    free = shutil.disk_usage(data.parent).free
    if free < 3 * total:
        sys.exit(f"need {3 * total / 1e9:.1f} GB free next to {data}, have {free / 1e9:.1f} GB")

    best: dict[str, tuple[float, float]] = {}
    for number in range(args.rounds):
        print(f"round {number + 1}/{args.rounds}", flush=True)
        with tempfile.TemporaryDirectory(dir=data.parent, prefix="bench-prep-") as scratch:
            for name, value in one_round(data, Path(scratch), files, args.workers, python,
                                         im2rec, args.cache).items():  # fmt: skip
                best[name] = min(best.get(name, value), value)
    seconds = {name: wall for name, (wall, _) in best.items()}
    result = {
        "images": len(files),
        "bytes": total,
        "workers": args.workers,
        "rounds": args.rounds,
        "cache": args.cache,
        "seconds": seconds,
        "cpu_seconds": {name: cpu for name, (_, cpu) in best.items()},
        "mb_per_s": {name: total / wall / 1e6 for name, wall in seconds.items()},
        "speedup_vs_im2rec": seconds["im2rec"] / seconds["hpcrepro"],
        "fraction_of_copy": seconds["copy"] / seconds["hpcrepro"],
    }
    print(json.dumps(result, indent=1))
    print(
        f"hpcrepro is {result['speedup_vs_im2rec']:.2f}x im2rec (goal >= 2) and "
        f"{100 * result['fraction_of_copy']:.0f}% of copy (goal >= 70%)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
