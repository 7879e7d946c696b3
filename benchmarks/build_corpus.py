"""Build the parse benchmark corpus: >= 1 GB of raw MLLOG logs made from the real MLPerf logs.

Every real result directory (v2.1-v4.0, all submitters in tests/data/results) is turned into
several result sets `set_NNNN/result_{0..4}.txt` (+ its scaling.json), each with a different
mix of what raw Slurm logs contain: `srun -l` and mpirun prefixes, every rank's copy of each MLLOG
line (a few ms apart), NCCL/progress noise with carriage returns, `:::SYSJSON`/`:::DLPAL` lines,
latin-1 bytes, and, in some sets, one damaged run: a truncated JSON line, a record missing `value`
or `metadata`, two records on one line, or a log cut off before run_stop.

    python benchmarks/build_corpus.py OUT_DIR [--gigabytes 1.0]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tarfile
import tempfile
from pathlib import Path

ARCHIVE = Path(__file__).resolve().parent.parent / "tests/data/results/mlperf-resnet-results.tar.xz"
MALFORMATIONS = ("none", "truncated_json", "missing_value", "missing_metadata", "merged_line",
                 "cut_before_run_stop", "none", "none")
NOISE = (
    "{r}: node{n:03d}:1234:1234 [{g}] NCCL INFO Channel 00/32 : 0 1 2 3 4 5 6 7",
    "{r}: [{n}] Epoch[3] Batch [40-60]\tSpeed: 31337.17 samples/sec\taccuracy=0.412",
    "{r}: DALI pipeline built in 1.234 s",
    "{r}: train 12%|#2        | 100/800 [00:04<00:30, 23.1it/s]\r{r}: train 48%|####8     | "
    "400/800 [00:16<00:16, 24.0it/s]\r{r}: train 97%|#########7| 780/800 [00:32<00:00]",
    "{r}: caf\xe9 na\xefve \xff\xfe latin-1 bytes from a misconfigured locale",
)


def _prefix(style: int, rank: int) -> str:
    return (f"{rank}: ", f"[1,{rank}]<stdout>:", "")[style]


def _shift(line: str, rank: int) -> str:
    """Another rank's copy of an MLLOG line: same event, logged a few ms later."""
    head, _, payload = line.partition(":::MLLOG ")
    try:
        record = json.loads(payload)
        record["time_ms"] += rank * 3
    except (ValueError, TypeError, KeyError):
        return line
    return head + ":::MLLOG " + json.dumps(record)


def rawify(text: str, rng: random.Random, ranks: int, noise_every: int, style: int,
           damage: str) -> str:
    lines = text.splitlines()
    mllog = [i for i, x in enumerate(lines) if ":::MLLOG " in x]
    target = rng.choice(mllog[len(mllog) // 4 :]) if mllog else -1
    out = [f":::DLPAL /opt/dlpal {rng.randint(1, 999)} {ranks} {style}"]
    for index, line in enumerate(lines):
        if ":::MLLOG " not in line:
            out.append(line)
            continue
        if damage == "cut_before_run_stop" and '"run_stop"' in line:
            break
        copies = [_prefix(style, r) + (line if r == 0 else _shift(line, r)) for r in range(ranks)]
        if index == target:
            if damage == "truncated_json":
                copies[0] = copies[0][: len(copies[0]) * 2 // 3]
            elif damage in ("missing_value", "missing_metadata"):
                head, _, payload = copies[0].partition(":::MLLOG ")
                record = json.loads(payload)
                record.pop("value" if damage == "missing_value" else "metadata", None)
                copies[0] = head + ":::MLLOG " + json.dumps(record)
            elif damage == "merged_line" and len(copies) > 1:
                copies[0:2] = [copies[0] + copies[1]]
        out.extend(copies)
        if noise_every and index % noise_every == 0:
            template = rng.choice(NOISE)
            out.append(template.format(r=rng.randrange(ranks), n=rng.randrange(64),
                                       g=rng.randrange(8)))
    return "\n".join(out) + "\n"


def build(out: Path, gigabytes: float, seed: int = 2024) -> int:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    goal = int(gigabytes * (1 << 30))
    total = 0
    with tempfile.TemporaryDirectory() as scratch:
        with tarfile.open(ARCHIVE) as archive:
            archive.extractall(scratch, filter="data")
        sources = sorted(p for p in Path(scratch).glob("v*/*/*") if any(p.glob("result_*.txt")))
        number = 0
        while total < goal:
            source = sources[number % len(sources)]
            target = out / f"set_{number:04d}_{source.parts[-3]}_{source.parent.name}"
            target.mkdir(exist_ok=True)
            ranks = rng.choice((1, 2, 4, 8))
            style = rng.randrange(3)
            noise_every = rng.choice((0, 1, 3))
            damage = rng.choice(MALFORMATIONS)
            files = sorted(source.glob("result_*.txt"))
            damaged = rng.randrange(len(files))
            for i, file in enumerate(files):
                text = file.read_text(encoding="latin-1")
                raw = rawify(text, rng, ranks, noise_every, style,
                             damage if i == damaged else "none")
                data = raw.encode("latin-1")
                (target / file.name).write_bytes(data)
                total += len(data)
            if (source / "scaling.json").is_file():
                shutil.copy2(source / "scaling.json", target / "scaling.json")
            (target / "ruleset").write_text(source.parts[-3][1:] + ".0")
            number += 1
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--gigabytes", type=float, default=1.0)
    args = parser.parse_args()
    size = build(args.out, args.gigabytes)
    print(f"corpus: {size / (1 << 30):.2f} GiB in {args.out}")


if __name__ == "__main__":
    main()
