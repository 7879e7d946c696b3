"""Where `collect` finds run logs, the MLPerf version and NVIDIA's published score.

A campaign folder has `resolved-config.json` and run logs under `logs/`; a plain folder of logs
works too, with the version taken from `--version` or from the path (`v4.0`, `r3.1`). What the
campaign's manifest says about its runs comes from the caller (`exclude`): this area knows
nothing of campaigns.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcrepro.errors import UserError
from hpcrepro.jsonio import read_json
from hpcrepro.rounds import LAST, VERSIONS, of_ruleset, ruleset_for

_PATH_VERSION = re.compile(r"(?:^|[/_-])[rv](\d)\.(\d)(?:$|[/_-])")


def natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


@dataclass
class Inputs:
    folder: Path
    logs: list[Path]
    version: str  # "r4.0"
    ruleset: str  # "4.0.0"
    system: str | None
    published_minutes: float | None
    campaign: dict[str, Any] = field(default_factory=dict)  # resolved-config.json, if any
    # Logs of a campaign's runs that do not count for time-to-train (void: preempted, requeued,
    # node failure, out of memory, timeout, cut short; or never run), with the campaign's reason,
    # and folders below that could not be searched for logs, with the OS's reason.
    excluded: list[tuple[Path, str]] = field(default_factory=list)
    published_source: str = ""  # where published_minutes came from, for the reports


def _read_json(path: Path) -> Any:
    return read_json(path, hint="the campaign folder looks damaged; re-create it")


def is_log_name(name: str) -> bool:
    return name.endswith(".log") or (name.startswith("result_") and name.endswith(".txt"))


def find_logs(folder: Path, unreadable: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Run logs: `*.log` and `result_*.txt` below the folder, in natural order.

    Whatever bears a log's name is returned, a link leading nowhere or to a FIFO included, so
    that `collect` lists it as skipped with the reason instead of silently scoring one run fewer.
    Folders that cannot be listed (and folders bearing a log's name) go to `unreadable` with the
    reason. Links to folders are followed once each, so a link loop ends.
    """
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()
    todo = [folder]
    while todo:
        current = todo.pop()
        try:
            info = current.stat()
            if (info.st_dev, info.st_ino) in visited:
                continue
            visited.add((info.st_dev, info.st_ino))
            with os.scandir(current) as listing:
                entries = list(listing)
        except OSError as error:
            if unreadable is not None:
                unreadable.append((current, f"cannot list this folder: {error.strerror or error}"))
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                todo.append(path)
                if is_log_name(entry.name) and unreadable is not None:
                    unreadable.append((path, "a folder, not a log file"))
            elif is_log_name(entry.name):
                found.append(path)
    return sorted(found, key=natural_key)


def _catalog_published(system: str | None, version: str) -> float | None:
    if not system:
        return None
    try:
        from hpcrepro.catalog import load_catalog
    except ImportError:
        return None
    try:
        entry = load_catalog().get(system, version)
        return entry.published.score_minutes if entry.published else None
    except (KeyError, LookupError, AttributeError, UserError):
        return None


def result_dir_of(folder: Path) -> str | None:
    """'NVIDIA/results/eos_n8_ngc24.04_mxnet' for a folder in MLCommons' layout
    (`<submitter>/results/<system>/resnet`) or in the research copy's (`<submitter>/<system>`):
    the catalog's `published.result_dir` of the entry whose logs these are."""
    parts = folder.resolve().parts
    if len(parts) >= 4 and parts[-1] == "resnet" and parts[-3] == "results":
        return f"{parts[-4]}/results/{parts[-2]}"
    if len(parts) >= 2:
        return f"{parts[-2]}/results/{parts[-1]}"
    return None


def published_of_folder(folder: Path, version: str) -> tuple[float, str] | None:
    """NVIDIA's published score of a published result folder, found by its place (submitter
    and system name) and round in the catalog, so NVIDIA's own folders need no --system."""
    wanted = result_dir_of(folder)
    if wanted is None:
        return None
    try:
        from hpcrepro.catalog import load_catalog

        catalog = load_catalog()
    except (ImportError, UserError):
        return None
    for name in catalog.names():
        entry = catalog.systems[name].versions.get(version)
        if entry is not None and entry.published and entry.published.result_dir == wanted:
            return entry.published.score_minutes, f"catalog {name} {version} ({wanted})"
    return None


# What a campaign says about its logs: (log, why it does not count) for the runs it judged void
# or never run (`hpcrepro.campaign.collect.not_counted`, passed in by whoever knows campaigns).
Exclude = Callable[[Path, list[Path]], list[tuple[Path, str]]]


def resolve(
    folder: Path,
    version: str | None,
    system: str | None,
    published: float | None,
    exclude: Exclude | None = None,
) -> Inputs:
    """Gather everything `collect` needs from a campaign folder or a plain folder of logs;
    `exclude` names the logs the campaign itself does not count."""
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "no such folder"
        raise UserError(
            what, where=str(folder), hint="pass a campaign name or folder, or a folder of run logs"
        )
    config: dict[str, Any] = {}
    log_root = folder
    if (folder / "resolved-config.json").is_file():
        config = _read_json(folder / "resolved-config.json")
        if not isinstance(config, dict):
            raise UserError("resolved-config.json is not a JSON object", where=str(folder))
        log_root = folder / "logs" if (folder / "logs").is_dir() else folder
    unlisted: list[tuple[Path, str]] = []
    logs = find_logs(log_root, unlisted)
    excluded = exclude(folder, logs) if exclude else []
    logs = [log for log in logs if log not in {path for path, _ in excluded}]
    if not logs and not excluded:
        hint = "point collect at a campaign or a log folder"
        if unlisted:
            hint = f"{unlisted[0][0]}: {unlisted[0][1]}; " + hint
        raise UserError(
            "no run logs found (looked for *.log and result_*.txt)", where=str(log_root), hint=hint
        )
    result_dirs = sorted({str(p.parent) for p in logs if p.name.startswith("result_")})
    if not config and len(result_dirs) > 1:
        raise UserError(
            f"the folder holds {len(result_dirs)} result sets",
            where=str(folder),
            hint="collect one result set at a time, e.g. " + result_dirs[0],
        )
    spec = config["spec"] if isinstance(config.get("spec"), dict) else {}
    system = system or config.get("system")
    ruleset = None
    if version is not None:
        ruleset = ruleset_for(version)
    elif config.get("version"):
        version = str(config["version"])
        ruleset = ruleset_for(version, where=f"{folder / 'resolved-config.json'} key 'version'")
    elif spec.get("ruleset"):
        ruleset = ruleset_for(str(spec["ruleset"]), where="resolved-config.json key 'spec.ruleset'")
        version = of_ruleset(ruleset).name
    else:
        match = _PATH_VERSION.search(str(folder.resolve()))
        if match:
            version = f"r{match[1]}.{match[2]}"
            ruleset = ruleset_for(version, where=str(folder))
    if not version or not ruleset:
        raise UserError(
            "cannot tell which MLPerf version these logs belong to",
            where=str(folder),
            hint=f"pass --version {LAST} (or {', '.join(VERSIONS[:-1])})",
        )
    version = of_ruleset(ruleset).name
    source = "--published" if published is not None else ""
    if published is None:
        block = spec.get("published")
        if isinstance(block, dict) and isinstance(block.get("score_minutes"), int | float):
            published, source = float(block["score_minutes"]), "the campaign's catalog entry"
        elif "published" not in spec:  # a plain folder, or a campaign that does not say
            published = _catalog_published(system, version)
            source = f"catalog {system} {version}" if published is not None else ""
            if published is None and not config and len(result_dirs) <= 1:
                found = published_of_folder(logs[0].parent if logs else folder, version)
                if found is not None:
                    published, source = found
    return Inputs(folder, logs, version, ruleset, system, published, config,
                  [*excluded, *unlisted], source)
