"""Provenance of a campaign: what produced its numbers, recorded so a result can be traced.

Two halves. At submit (`at_submit`): hpcrepro's version, the Slurm version (`sinfo --version`),
the site file and its SHA-256, the image reference (and digest, where the reference pins one),
and NVIDIA's code (results repository, commit, implementation folder; `hpcrepro.rounds`). In the
job (`seen_in_logs`): what the job printed into its log folder: the `:::SYSJSON` line of NVIDIA's
mlperf-common (CUDA, driver and NCCL versions), `:::DLPAL` (image, node list), NCCL's own
"NCCL version" banner and nvidia-smi's "Driver Version / CUDA Version" header.
Standard library only: the campaign's state reads and writes these fields.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# (key, label) in the order reports show them.
FIELDS = (
    ("hpcrepro_version", "hpcrepro version"),
    ("mlperf_logging_version", "mlperf-logging version"),
    ("image", "image reference"),
    ("image_digest", "image digest"),
    ("code_repository", "NVIDIA code repository"),
    ("code_commit", "NVIDIA code commit"),
    ("code_folder", "NVIDIA code folder"),
    ("driver", "NVIDIA driver (seen in the job)"),
    ("cuda", "CUDA (seen in the job)"),
    ("nccl", "NCCL (seen in the job)"),
    ("slurm_version", "Slurm version (at submit)"),
    ("nodes", "nodes"),
    ("site_file", "site file"),
    ("site_sha256", "site file sha256"),
)


def labelled(values: Mapping[str, str]) -> list[tuple[str, str]]:
    """(label, value) of every provenance field known, in FIELDS order: the rows that every
    report format shows."""
    return [(label, values[key]) for key, label in FIELDS if key in values]


KEYS = tuple(key for key, _ in FIELDS)
SEEN_KEYS = ("driver", "cuda", "nccl", "nodes", "image")
_DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})$")
_NCCL = re.compile(r"NCCL version (\d+\.\d+\.\d+)(?:\+cuda(\d+\.\d+))?")
_SMI = re.compile(r"Driver Version:\s*([0-9.]+)\s+CUDA Version:\s*([0-9.]+)")
_LONGEST_LINE = 1 << 20  # a :::SYSJSON line is about 2 KB; longer lines are not parsed


def file_sha256(path: Path) -> str | None:
    from hpcrepro.safeopen import open_regular

    digest = hashlib.sha256()
    try:
        with open_regular(path) as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def image_digest(reference: str | None) -> str | None:
    """The digest a reference pins (`nvcr.io/nvidia/mxnet@sha256:…`); None for a tag or file."""
    match = _DIGEST.search(reference or "")
    return match.group(1) if match else None


def built_image_digest(image: str | None) -> str | None:
    """For an image file hpcrepro built: the build record's key beside it (`<image>.json`, the
    SHA-256 of everything the build used); None where there is no record."""
    if not image or not image.startswith("/"):
        return None
    from hpcrepro.safeopen import open_regular

    try:
        with open_regular(f"{image}.json") as handle:
            data = json.loads(handle.read(_LONGEST_LINE))
    except (OSError, ValueError, RecursionError):
        return None
    key = data.get("key") if isinstance(data, dict) and data.get("hpcrepro_image") == 1 else None
    return f"hpcrepro build key sha256:{key}" if isinstance(key, str) else None


def code_of(version: str, implementation: str | None) -> dict[str, str]:
    """Where NVIDIA's code of a round sits: repository, commit, folder."""
    from hpcrepro.rounds import ROUNDS

    found = ROUNDS.get(version)
    if found is None:
        return {}
    code = {"code_repository": found.results_repository, "code_commit": found.results_commit}
    if implementation:
        code["code_folder"] = f"NVIDIA/benchmarks/resnet/implementations/{implementation}"
    return code


def at_submit(
    *,
    version: str,
    implementation: str | None,
    image: str | None,
    site_file: Path | None,
    backend: str,
) -> dict[str, str]:
    """What submit knows: versions, site file and hash, image, NVIDIA's code."""
    from hpcrepro import __version__

    found: dict[str, str] = {"hpcrepro_version": __version__}
    if backend == "slurm":
        from hpcrepro.detect.host import read_slurm_version

        slurm = read_slurm_version()
        if slurm:
            found["slurm_version"] = slurm
    if site_file is not None:
        found["site_file"] = str(site_file)
        digest = file_sha256(site_file)
        if digest:
            found["site_sha256"] = digest
    if image:
        found["image"] = image
        digest = image_digest(image)
        if digest:
            found["image_digest"] = digest
    found.update(code_of(version, implementation))
    return found


# Which source wins where two disagree: NVIDIA's :::SYSJSON (what mlperf-common reports to
# MLCommons), then nvidia-smi's header, then hpcrepro's :::DLPAL, then NCCL's banner.
SYSJSON, SMI, DLPAL, BANNER = range(4)
Offers = dict[str, tuple[int, str]]


def _offer(found: Offers, key: str, value: str, rank: int) -> None:
    if key not in found or rank < found[key][0]:
        found[key] = (rank, value)


def _sysjson(text: str, found: Offers) -> None:
    try:
        data = json.loads(text)
    except ValueError:
        return
    stack = data.get("other_software_stack") if isinstance(data, dict) else None
    if not isinstance(stack, dict):
        return
    for key, names in (
        ("driver", ("nvidia_kernel_driver", "cuda_driver_version")),
        ("cuda", ("cuda_version",)),
        ("nccl", ("nccl_version",)),
    ):
        for name in names:
            value = stack.get(name)
            if isinstance(value, str) and value and "UNKNOWN" not in value:
                _offer(found, key, value, SYSJSON)
                break


def _line(line: str, found: Offers, nodes: list[str]) -> None:
    text = line.split(": ", 1)[1] if re.match(r"^\d+: ", line) else line  # srun -l prefix
    if text.startswith(":::SYSJSON "):
        _sysjson(text[len(":::SYSJSON ") :], found)
    elif text.startswith(":::DLPAL "):
        words = text.split()
        if len(words) >= 5:
            if words[1] != "none":
                _offer(found, "image", words[1], DLPAL)
            if words[4] not in nodes:
                nodes.append(words[4])
    elif "NCCL version" in text:
        match = _NCCL.search(text)
        if match:
            _offer(found, "nccl", match.group(1), BANNER)
            if match.group(2):
                _offer(found, "cuda", match.group(2), BANNER)
    elif "Driver Version" in text:
        match = _SMI.search(text)
        if match:
            _offer(found, "driver", match.group(1), SMI)
            _offer(found, "cuda", match.group(2), SMI)


def seen_in_logs(files: Iterable[Path]) -> dict[str, Any]:
    """Driver, CUDA and NCCL versions, the image and the node lists the jobs printed: of each the
    value of the most telling source (SYSJSON first), the first found among equals; node lists
    in the order seen."""
    import io

    from hpcrepro.safeopen import open_regular

    offers: Offers = {}
    nodes: list[str] = []
    for path in files:
        try:  # never a FIFO or device named like a log: opening one would wait for a writer
            with io.TextIOWrapper(open_regular(path), encoding="utf-8", errors="replace") as text:
                for line in text:
                    if len(line) < _LONGEST_LINE and ("::" in line or "ersion" in line):
                        _line(line.rstrip("\r\n"), offers, nodes)
        except OSError:
            continue
    found: dict[str, Any] = {key: value for key, (_, value) in offers.items()}
    if nodes:
        found["nodes"] = ", ".join(nodes)
    return found


def job_files(folder: Path) -> list[Path]:
    """What a campaign's jobs printed: run logs and NCCL test output (`logs/`), job output
    (`jobs/`); a plain folder of logs is read as it is."""
    found: list[Path] = []
    for sub, pattern in (("logs", "*.log"), ("logs", "nccl_*.txt"), ("jobs", "*.out")):
        found += sorted((folder / sub).glob(pattern))
    return found or sorted(folder.glob("*.log")) + sorted(folder.glob("result_*.txt"))


def _installed(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _recorded(folder: Path) -> tuple[dict[str, str], list[str]]:
    """The provenance campaign.json recorded, and its training jobs' node lists; nothing for a
    plain folder or a manifest that cannot be read (the logs are still scored)."""
    from hpcrepro.safeopen import open_regular

    try:
        with open_regular(folder / "campaign.json") as handle:
            data = json.loads(handle.read(_LONGEST_LINE * 16))
    except (OSError, ValueError, RecursionError):
        return {}, []
    if not isinstance(data, dict):
        return {}, []
    block = data.get("provenance")
    recorded = {k: v for k, v in block.items() if k in KEYS and isinstance(v, str)} if isinstance(
        block, dict) else {}
    nodes = []
    for stage in data.get("stages") or []:
        if isinstance(stage, dict) and stage.get("kind") == "train":
            for job in stage.get("jobs") or []:
                if isinstance(job, dict) and isinstance(job.get("nodelist"), str):
                    nodes.append(job["nodelist"])
    return recorded, list(dict.fromkeys(nodes))


def gather(folder: Path, logs: list[Path], config: dict[str, Any], version: str) -> dict[str, str]:
    """Everything known of what produced the logs of `folder`, by the keys of FIELDS: what the
    campaign recorded first, then what the logs show, then the versions installed now."""
    found, nodes = _recorded(folder)
    if nodes and "nodes" not in found:
        found["nodes"] = ", ".join(nodes)
    spec = config.get("spec") if isinstance(config.get("spec"), dict) else None
    if spec is not None:
        implementation = spec.get("implementation")
        for key, value in code_of(version, implementation if isinstance(
                implementation, str) else None).items():
            found.setdefault(key, value)
    files = job_files(folder) if (folder / "logs").is_dir() else logs
    for key, value in seen_in_logs(files).items():
        found.setdefault(key, value)
    digest = image_digest(found.get("image")) or built_image_digest(found.get("image"))
    if digest:
        found.setdefault("image_digest", digest)
    from hpcrepro import __version__

    found.setdefault("hpcrepro_version", __version__)
    logging_version = _installed("mlperf-logging")
    if logging_version:
        found.setdefault("mlperf_logging_version", logging_version)
    return {key: found[key] for key in KEYS if found.get(key)}
