"""Write an MLPerf Training submission tree for a scored campaign.

Layout (mlcommons/policies submission_rules, Training):
`systems/<name>.json`, `results/<name>/resnet/result_<i>.txt` (only the MLLOG lines of each run),
`results/<name>/resnet/scaling.json` when the score is scaled, and
`benchmarks/resnet/implementations/<impl>/` with the scripts that produced the runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcrepro.errors import UserError
from hpcrepro.jsonio import read_json
from hpcrepro.mlperf_system import STATUS_BY_SHORT_NAME as STATUS_LONG
from hpcrepro.mlperf_system import SYSTEM_FIELDS as SYSTEM_KEYS
from hpcrepro.results.collect import Collection
from hpcrepro.results.mllog import iter_records
from hpcrepro.results.outputs import StagedTree
from hpcrepro.results.runs import RunResult

SCRIPT_SUFFIXES = (".sh", ".sub", ".sbatch", ".py", ".def", ".j2", ".yaml", ".yml")


@dataclass
class PackageResult:
    folder: Path
    system_name: str
    runs: list[RunResult]
    missing_fields: list[str]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "system"


def _logged_sysjson(runs: list[RunResult]) -> dict[str, Any]:
    """The system description NVIDIA's job printed into the first run log (`:::SYSJSON`, from
    mlperf-common's mlperf-sysjson.sh, its in-job detection), or nothing."""
    import io

    from hpcrepro.safeopen import open_regular

    try:
        with io.TextIOWrapper(open_regular(runs[0].path), encoding="utf-8",
                              errors="replace") as handle:
            for number, line in enumerate(handle):
                if number > 10_000:
                    break
                start = line.find(":::SYSJSON ")
                if start >= 0:
                    found = json.loads(line[start + len(":::SYSJSON "):])
                    return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        pass
    return {}


def _known(value: Any) -> bool:
    return value not in (None, "", {}) and not (isinstance(value, str) and "UNKNOWN" in value)


_STACK = (  # provenance key -> other_software_stack key, as mlperf-sysjson.sh names them
    ("hpcrepro_version", "hpcrepro_version"),
    ("mlperf_logging_version", "mlperf_logging_version"),
    ("cuda", "cuda_version"),
    ("driver", "nvidia_kernel_driver"),
    ("nccl", "nccl_version"),
)
_NOTES = ("image", "image_digest", "code_repository", "code_commit", "code_folder",
          "slurm_version", "nodes", "site_sha256")


def _add_provenance(desc: dict[str, Any], provenance: dict[str, str]) -> None:
    """Versions into other_software_stack where it does not name them; the rest (image, code,
    Slurm, nodes, site hash) as one line of sw_notes."""
    stack = desc.get("other_software_stack")
    if stack in (None, ""):
        stack = {}
    if isinstance(stack, dict):
        for key, name in _STACK:
            if provenance.get(key) and not _known(stack.get(name)):
                stack[name] = provenance[key]
        desc["other_software_stack"] = stack
    notes = "; ".join(f"{key} {provenance[key]}" for key in _NOTES if provenance.get(key))
    if notes:
        before = str(desc.get("sw_notes") or "")
        desc["sw_notes"] = (before + " | " if before else "") + f"hpcrepro provenance: {notes}"


def system_description(
    collection: Collection, runs: list[RunResult], detected: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """All 33 required keys, from a published system.json, the campaign, `detected` (detect's
    MLPerf JSON) and the logs' own :::SYSJSON, each filling what the ones before left empty."""
    desc: dict[str, Any] = {}
    log_dir = Path(runs[0].path).parent
    published = log_dir / "system.json"
    if published.is_file():
        found = read_json(published, hint="fix or remove it")
        if not isinstance(found, dict):
            raise UserError(
                f"holds a JSON {type(found).__name__}, not an object",
                where=str(published),
                hint="a system description is an object of fields; fix or remove it",
            )
        desc.update(found)
    config = collection.inputs.campaign
    spec: dict[str, Any] = config["spec"] if isinstance(config.get("spec"), dict) else {}
    site: dict[str, Any] = config["site"] if isinstance(config.get("site"), dict) else {}
    if spec.get("nodes") is not None:
        desc["number_of_nodes"] = str(spec["nodes"])
    if spec.get("gpus_per_node") is not None:
        desc["accelerators_per_node"] = str(spec["gpus_per_node"])
    for source in (site.get("system_description"), spec.get("system_description")):
        if isinstance(source, dict):
            desc.update({k: v for k, v in source.items() if k in SYSTEM_KEYS})
    for source in (detected or {}, _logged_sysjson(runs)):
        desc.update({k: v for k, v in source.items()
                     if k in SYSTEM_KEYS and _known(v) and not _known(desc.get(k))})
    first = runs[0]
    block = site.get("submission")
    submission: dict[str, Any] = block if isinstance(block, dict) else {}
    desc.setdefault("submitter", _logged_org(runs, submission.get("org")))
    desc.setdefault("division", first.division or submission.get("division") or "closed")
    desc.setdefault("system_name", first.platform or collection.inputs.system or "")
    status = str(desc.get("status") or submission.get("status") or "onprem")
    desc["status"] = STATUS_LONG.get(status, status)
    for count in ("number_of_nodes", "host_processors_per_node", "accelerators_per_node"):
        if not str(desc.get(count, "")).strip().isdigit():
            desc[count] = (
                "1" if count == "host_processors_per_node" else str(desc.get(count) or "1")
            )
    _add_provenance(desc, collection.provenance)
    missing = [k for k in SYSTEM_KEYS if desc.get(k) in (None, "", {})]
    for key in SYSTEM_KEYS:
        desc.setdefault(key, "")
    return desc, missing


_PLACEHOLDER = "SUBMISSION_ORG_PLACEHOLDER"  # what mlperf-common logs without MLPERF_SUBMISSION_ORG


def _logged_org(runs: list[RunResult], site_org: object) -> str:
    """The submitter the runs' logs name: one for all runs, the site's `submission.org` when it
    sets one (the package checker compares the logs with the system description)."""
    orgs = sorted({run.org or "" for run in runs})
    if len(orgs) > 1:
        raise UserError(
            f"the runs name different submitters ({', '.join(map(repr, orgs))})",
            hint="package runs of one campaign (one site setting)",
        )
    org = orgs[0]
    if org in ("", _PLACEHOLDER):
        raise UserError(
            f"the runs' logs name no submitter (submission_org {org or 'missing'})",
            where=runs[0].path,
            hint="set submission.org in the site file before the runs (NVIDIA's mlperf-common "
            "logs MLPERF_SUBMISSION_ORG); a log cannot be changed after the run",
        )
    if isinstance(site_org, str) and site_org and site_org != org:
        raise UserError(
            f"the runs' logs name {org!r} as submitter, the site's submission.org is {site_org!r}",
            where=runs[0].path,
            hint="NVIDIA's v2.1 code logs 'NVIDIA' whatever the environment says; the package "
            "must name who the logs name",
        )
    return org


# Every rank logs these at its own time; the score uses the first run_start/run_stop pair, so all
# copies stay. Other events are kept once: the seed checker rejects a seed logged twice.
_KEEP_ALL_COPIES = frozenset({"run_start", "run_stop"})


def _mllog_only(source: str, target: Path) -> None:
    """Copy the records mlperf-logging would read, one per line, without prefixes, noise or
    other ranks' duplicates."""
    seen: set[str] = set()
    with open(target, "w", encoding="utf-8") as out:
        for record in iter_records(source):
            if not record.official:
                continue
            identity = json.dumps([record.key, record.value, record.metadata], sort_keys=True)
            if record.key not in _KEEP_ALL_COPIES:
                if identity in seen:
                    continue
                seen.add(identity)
            time_ms = int(record.time_ms) if record.time_ms.is_integer() else record.time_ms
            out.write(
                ":::MLLOG "
                + json.dumps(
                    {
                        "namespace": record.namespace,
                        "time_ms": time_ms,
                        "event_type": record.event_type,
                        "key": record.key,
                        "value": record.value,
                        "metadata": record.metadata,
                    }
                )
                + "\n"
            )


def _campaign_files(folder: Path) -> list[Path]:
    """The regular files under `folder`, relative to it, without following links: a link in
    a campaign folder must not bring /etc/shadow or a whole file system into a submission."""
    found = []
    for root, dirs, files in os.walk(folder):  # os.walk does not enter linked folders
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if stat.S_ISREG(path.lstat().st_mode):
                found.append(path.relative_to(folder))
    return found


def _copy_scripts(collection: Collection, target: Path) -> list[str]:
    folder = collection.inputs.folder
    copied = []
    if collection.inputs.campaign:
        for relative in _campaign_files(folder):
            if relative.suffix in SCRIPT_SUFFIXES and relative.parts[0] not in ("logs", "results"):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / relative, target / relative)
                copied.append(str(relative))
        config = folder / "resolved-config.json"
        if config.is_file() and not config.is_symlink():
            shutil.copy2(config, target / "resolved-config.json")
            copied.append("resolved-config.json")
    return copied


def _write_tree(
    collection: Collection,
    stage: Path,
    runs: list[RunResult],
    results: Path,
    system_file: Path,
    implementation_dir: Path,
    desc: dict[str, Any],
    missing: list[str],
) -> None:
    (stage / results).mkdir(parents=True)
    for index, run in enumerate(runs):
        _mllog_only(run.path, stage / results / f"result_{index}.txt")
    if collection.score.scaling_factor != 1.0:
        (stage / results / "scaling.json").write_text(
            json.dumps({"scaling_factor": collection.score.scaling_factor})
        )
    (stage / system_file).parent.mkdir(parents=True)
    (stage / system_file).write_text(json.dumps(desc, indent=4) + "\n")
    (stage / implementation_dir).mkdir(parents=True)
    copied = _copy_scripts(collection, stage / implementation_dir)
    readme = [f"# {implementation_dir.name}", "", "ResNet-50 runs produced with hpcrepro.", ""]
    readme += [f"- {c}" for c in copied] or [
        "The scripts that produced these logs were not available to hpcrepro; add them here."
    ]
    if missing:
        readme += [
            "",
            f"System description fields hpcrepro could not know (fill them in {system_file}):",
            "",
            *(f"- {m}" for m in missing),
        ]
    (stage / implementation_dir / "README.md").write_text("\n".join(readme) + "\n")


def write_package(
    collection: Collection,
    out: Path,
    system: str | None = None,
    detected: dict[str, Any] | None = None,
) -> PackageResult:
    """Write the submission tree into `out` (the submitter's folder); `detected` is detect's
    MLPerf system JSON, filling the fields nothing else knew."""
    runs = collection.scored_runs
    if not collection.score.valid:
        raise UserError(
            f"no submission without a valid score: {collection.score.reason}",
            hint="fix or re-run the failed runs, then collect again",
        )
    desc, missing = system_description(collection, runs, detected)
    name = _safe_name(system or collection.inputs.system or Path(runs[0].path).parent.name)
    spec = collection.inputs.campaign.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    implementation = _safe_name(str(spec.get("implementation") or f"{name}_hpcrepro"))
    results = Path("results") / name / "resnet"
    system_file = Path("systems") / f"{name}.json"
    implementation_dir = Path("benchmarks") / "resnet" / "implementations" / implementation
    staging = StagedTree(out, f"--package {out}")
    with staging as stage:
        try:
            _write_tree(
                collection, stage, runs, results, system_file, implementation_dir, desc, missing
            )
        except OSError as error:
            raise UserError(
                f"cannot write the submission tree ({error.strerror or error})",
                where=f"--package {out}",
                hint="nothing was written",
            ) from error
        staging.commit([results, system_file, implementation_dir])
    return PackageResult(out, name, runs, missing)
