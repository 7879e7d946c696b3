"""Resolve system x version x site x overrides into one validated configuration.

Layers, lowest first: the system catalog (NVIDIA's config, common file under it), the site YAML,
then `--set key=value` overrides. Every value remembers where it came from so that
`hpcrepro config show --explain` can answer "why is LR 10.5 here?".
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hpcrepro.catalog import STRUCTURED_EXPORTS, Hyperparameters, SystemVersion, load_catalog
from hpcrepro.errors import UserError, did_you_mean, location
from hpcrepro.site import DEFAULT_SITE_PATH, MAX_RUNS, SITE_ENV_VAR, Site, image_is_file
from hpcrepro.validation import KeyPath, user_error
from hpcrepro.yamlio import (
    YamlDocument,
    YamlTooDeep,
    YamlUnprintable,
    dotted_key,
    load_yaml,
    parse_yaml,
    unprintable,
)

# Site keys that hold paths: relative values are taken relative to the file that wrote them.
_SITE_PATH_KEYS = (
    "dataset_dir",
    "log_dir",
    "image_cache_dir",
    "imagenet_dir",
    "image_code_dir",
    "image_dockerfile",
    "image_wheels_dir",
)
DEFAULT_ORIGIN = "default"
SET_ORIGIN = "--set"


@dataclass(frozen=True)
class ResolvedConfig:
    """Everything needed to render and submit one system x version on one site."""

    system: str
    version: str
    spec: SystemVersion
    site: Site
    site_path: Path | None
    origins: dict[str, str] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return self.site.runs

    def time_limit_minutes(self, runs: int) -> int:
        """Wall time for a job of `runs` runs: NVIDIA's per-run formula, for all runs, plus margin.

        NVIDIA's configs evaluate `NEXP*a+b` with NEXP unset at source time, so their jobs get the
        limit of one run while doing five; here the run count is always explicit.
        """
        minutes = runs * self.spec.minutes_per_run + self.spec.walltime_overhead_minutes
        return math.ceil(minutes + self.site.time_margin_minutes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, written into campaign folders and shown by `config show`."""
        spec = self.spec.model_dump(mode="json")
        spec["global_batch"] = self.spec.global_batch
        spec["eval_epochs"] = self.spec.eval_epochs()
        spec["target_epoch"] = self.spec.target_epoch()
        return {
            "system": self.system,
            "version": self.version,
            "site_file": str(self.site_path) if self.site_path else None,
            "spec": spec,
            "site": self.site.model_dump(mode="json"),
            "time_limit_minutes": self.time_limit_minutes(self.runs),
        }

    def origin_of(self, dotted: str) -> str:
        """Where the value at `dotted` (e.g. 'spec.hparams.LR') came from."""
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            origin = self.origins.get(".".join(parts[:end]))
            if origin:
                return origin
        if dotted in ("spec.global_batch", "spec.eval_epochs", "spec.target_epoch"):
            return "derived"
        if dotted == "time_limit_minutes":
            return "derived: runs x minutes_per_run + overhead + margin"
        return DEFAULT_ORIGIN


# Names the job script sets from the catalog entry and the launch: a site's `env` may not set
# them, or its value would silently win over what `config show` prints (and a value such as
# `RUN_TOTAL[$(id)]` would reach shell arithmetic).
LAUNCH_NAMES = frozenset(
    {
        "MLPERF_RULESET", "CLEAR_CACHES", "CHECK_COMPLIANCE", "NCCL_TEST", "SLURM_MPI_TYPE",
        "SLURM_EXPORT_ENV", "MLPERF_CLUSTER_NAME", "MLPERF_SUBMISSION_ORG",
        "MLPERF_SUBMISSION_PLATFORM", "MLPERF_SUBMITTER", "MLPERF_SYSTEM_NAME", "MLPERF_STATUS",
        "MLPERF_DIVISION", "HPCREPRO_SYSTEM", "HPCREPRO_VERSION", "HPCREPRO_DATA_DIR",
        "HPCREPRO_RESULTS_DIR", "HPCREPRO_PYTHON", "HPCREPRO_CACHE_CLEARED", "HPCREPRO_LOCAL",
    }
)  # fmt: skip
_SITE_KEY_FOR = {
    "SLURM_MPI_TYPE": "mpi",
    "MLPERF_CLUSTER_NAME": "cluster_name",
    "NCCL_TEST": "nccl_test",
    "CLEAR_CACHES": "drop_caches_command",
    "CHECK_COMPLIANCE": "check_compliance",
    **{
        name: "submission"
        for name in (
            "MLPERF_SUBMISSION_ORG",
            "MLPERF_SUBMISSION_PLATFORM",
            "MLPERF_SUBMITTER",
            "MLPERF_SYSTEM_NAME",
            "MLPERF_STATUS",
            "MLPERF_DIVISION",
        )
    },
}


def check_site_env(site: Site, spec: SystemVersion, where: Callable[[KeyPath], str]) -> None:
    """Refuse a site `env` name that the catalog entry or the launch already sets."""
    for name, value in site.env.items():
        problem, hint = "", ""
        if name in STRUCTURED_EXPORTS or name in Hyperparameters.model_fields:
            problem = "is one of the system's sizes or hyperparameters"
            field = STRUCTURED_EXPORTS.get(name) or f"hparams.{name}"
            hint = f"change it with --set {field.split(' ')[0]}=VALUE, which `config show` reports"
        elif name in spec.env:
            problem = f"is set by the system's own config ({spec.env[name]!r})"
            hint = f"change the system's value with --set system.env.{name}=VALUE"
        elif name in LAUNCH_NAMES:
            problem = "is set by the job script itself"
            key = _SITE_KEY_FOR.get(name)
            hint = f"use the site key '{key}'" if key else "remove it"
        elif name.startswith("SLURM_"):
            problem = "belongs to Slurm, which sets it in every job"
            hint = "remove it; Slurm options go in sbatch_args or srun_args"
        elif name == "SEED" and not value.isdigit():
            problem = f"must be a whole number (NVIDIA's --seed), not {value!r}"
            hint = "write a number, or remove SEED to draw a fresh seed per run"
        if problem:
            raise UserError(f"env {name} {problem}", where=where(("env", name)), hint=hint)


def find_site_file(explicit: Path | None) -> Path | None:
    """`--site`, else $HPCREPRO_SITE, else ~/.config/hpcrepro/site.yaml if it exists."""
    return site_file_and_source(explicit)[0]


def site_file_and_source(explicit: Path | None) -> tuple[Path | None, str]:
    """The site file and what named it ('--site', '$HPCREPRO_SITE' or the default path)."""
    if explicit is not None:
        return explicit, "--site"
    from_env = os.environ.get(SITE_ENV_VAR)
    if from_env:
        return Path(from_env), f"${SITE_ENV_VAR}"
    default = DEFAULT_SITE_PATH.expanduser()
    return (default, "the default site file") if default.is_file() else (None, "")


def _absolute_path(value: str, base: Path) -> str:
    """`~` expanded; a relative path taken from `base` (the site file's folder, or the cwd)."""
    expanded = os.path.expanduser(value)
    return expanded if os.path.isabs(expanded) else str((base / expanded).resolve())


def _absolutize_site_paths(data: dict[str, Any], base: Path) -> None:
    for key in _SITE_PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value:
            data[key] = _absolute_path(value, base)
    for key in ("image", "image_base"):
        image = data.get(key)
        if isinstance(image, str) and image_is_file(image):
            data[key] = _absolute_path(image, base)


def load_site_file(path: Path | None, source: str) -> tuple[dict[str, Any], YamlDocument | None]:
    """A site file's mapping (paths made absolute) and its document; `source` names where the
    path came from (--site, $HPCREPRO_SITE) for the error when it is missing."""
    if path is None:
        return {}, None
    if not path.expanduser().exists():
        raise UserError(
            f"site file not found: {path}",
            where=source,
            hint=f"fix the path given by {source}"
            + (f", or unset {SITE_ENV_VAR}" if source.startswith("$") else ""),
        )
    doc = load_yaml(path.expanduser(), text_paths=lambda key_path: True)
    if doc.data is None:
        return {}, doc
    if not isinstance(doc.data, dict):
        raise UserError(
            "a site file must be a mapping of keys to values",
            where=str(path),
            hint="see docs/site.md for an example",
        )
    data = copy.deepcopy(doc.data)
    _absolutize_site_paths(data, path.expanduser().resolve().parent)
    return data, doc


def split_override(text: str) -> tuple[list[str], str]:
    """Split 'a.b=value' into (['a', 'b'], 'value'); a control character or a byte that is
    not UTF-8 anywhere in it is refused (YAML would refuse it in a site file too)."""
    key, sep, raw = text.partition("=")
    found = unprintable(text)
    if found is not None:
        index, what = found
        part = (
            f"the key at character {index + 1}"
            if index < len(key)
            else f"the value of '{key.strip()}' at character {index - len(key)}"
        )
        raise UserError(
            f"{part} holds {what}: {text!r}",
            where="--set",
            hint="remove it; a shell's $'...' quoting or a pasted file can bring such "
            "characters in",
        )
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")) or not key.isprintable():
        raise UserError(
            f"{text!r} is not KEY=VALUE",
            where="--set",
            hint="for example --set partition=gpu or --set hparams.LR=10.5",
        )
    return key.split("."), raw


def override_value(raw: str, where: str, keep_number_text: bool) -> Any:
    """The value of `--set`, read as a YAML scalar or list; text that is not YAML stays text.

    With `keep_number_text`, plain numbers keep what was written ('010' stays '010').
    """
    if not raw.strip():
        return ""
    try:
        value = parse_yaml(raw, where, (lambda key_path: True) if keep_number_text else None).data
    except (YamlTooDeep, YamlUnprintable) as error:  # never meant as text: said, not kept
        raise type(error)(error.message, where=where, hint=error.hint) from None
    except UserError:
        return raw
    return raw if isinstance(value, dict) else value  # 'a: b' is meant as text, not a mapping


def _origin(origins: dict[str, str], key: str, default: str) -> str:
    origin = origins.get(key)
    return origin if origin else default


def run_count(cfg: ResolvedConfig, requested: int | None, where: str = "--runs") -> int:
    """Runs of a job or campaign: `requested` (a command-line option) or the site's `runs`.

    The same bounds as the site key apply, so `--runs 0` is refused rather than read as unset.
    """
    if requested is None:
        return cfg.runs
    if not 1 <= requested <= MAX_RUNS:
        raise UserError(
            f"{requested} runs is out of range: give 1 to {MAX_RUNS}",
            where=where,
            hint="MLPerf scores 5 runs; logs are numbered run-01 to run-99",
        )
    return requested


def _route(parts: list[str], site_keys: set[str], system_keys: set[str]) -> tuple[str, list[str]]:
    """Decide whether an override targets the site or the system layer."""
    head = parts[0]
    if head in ("site", "system") and len(parts) > 1:
        return head, parts[1:]
    if head in site_keys:
        return "site", parts
    if head in system_keys:
        return "system", parts
    valid = sorted(site_keys | system_keys)
    raise UserError(
        f"unknown key '{'.'.join(parts)}'",
        where="--set",
        hint=did_you_mean(
            head,
            valid,
            f"valid keys: {', '.join(valid)} (prefix with site. or system. to be explicit)",
        ),
    )


def _assign(data: dict[str, Any], parts: list[str], value: Any) -> None:
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def resolve(
    system: str,
    version: str,
    site_path: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> ResolvedConfig:
    """Build and validate the configuration; every user mistake becomes a UserError."""
    catalog = load_catalog()
    catalog.get(system, version)  # unknown system or version: a UserError with close matches
    system_data = copy.deepcopy(catalog.raw(system, version))
    origins = {f"spec.{key}": origin for key, origin in catalog.origin(system, version).items()}

    site_file, site_source = site_file_and_source(site_path)
    origins["system"], origins["version"] = "--system", "--version"
    origins["site_file"] = site_source or (
        f"none: no --site, no ${SITE_ENV_VAR}, no {DEFAULT_SITE_PATH}"
    )
    site_data, site_doc = load_site_file(site_file, site_source)
    if site_doc is not None:
        for key_path, line in site_doc.lines.items():
            dotted = ".".join(str(part) for part in key_path)
            origins[f"site.{dotted}"] = location(str(site_file), line=line)

    site_keys = set(Site.model_fields)
    system_keys = set(SystemVersion.model_fields)
    set_keys: set[tuple[str, ...]] = set()
    for text in overrides:
        parts, raw = split_override(text)
        layer, path = _route(parts, site_keys, system_keys)
        keep_text = layer == "site" or path[-2:-1] == ["env"]
        value = override_value(raw, f"--set {'.'.join(parts)}", keep_text)
        if (
            layer == "site"
            and isinstance(value, str)
            and value
            and (
                path[0] in _SITE_PATH_KEYS
                or (path in (["image"], ["image_base"]) and image_is_file(value))
            )
        ):
            value = _absolute_path(value, Path.cwd())
        _assign(site_data if layer == "site" else system_data, path, value)
        prefix = "site" if layer == "site" else "spec"
        origins[f"{prefix}.{'.'.join(path)}"] = f"{SET_ORIGIN} {text.partition('=')[0]}"
        set_keys.add((layer, *path))

    def site_where(loc: KeyPath) -> str:
        dotted = dotted_key(loc)
        if ("site", *[str(part) for part in loc[:1]]) in {k[:2] for k in set_keys}:
            return f"--set {dotted}"
        if site_doc is not None:
            return site_doc.where(loc)
        return location(str(site_file) if site_file else "site settings", dotted)

    try:
        site = Site.model_validate(site_data)
    except ValidationError as exc:
        hint_missing = any(
            e["type"] == "missing" and e["loc"][0] in ("dataset_dir", "log_dir")
            for e in exc.errors()
        )
        if site_file is None and hint_missing:
            raise UserError(
                "no site configuration: dataset_dir and log_dir are required",
                hint="write one from what the cluster says with `hpcrepro site init`, then pass "
                "--site site.yaml, set $HPCREPRO_SITE, or keep it as ~/.config/hpcrepro/site.yaml "
                "(or use --set dataset_dir=... --set log_dir=...)",
            ) from None
        if exc.errors()[0]["loc"] == ("image",) and not site_data.get("image"):
            raise UserError(
                exc.errors()[0]["msg"].removeprefix("Value error, "),
                where=site_where(("image",)),
                hint="set 'image', or 'runtime: none' to run without a container; runtime "
                f"comes from {_origin(origins, 'site.runtime', 'the default (pyxis)')}",
            ) from None
        raise user_error(exc, Site, site_where, docs="docs/site.md") from None

    def system_where(loc: KeyPath) -> str:
        dotted = dotted_key(loc)
        if ("system", *[str(part) for part in loc[:1]]) in {k[:2] for k in set_keys}:
            return f"--set {dotted}"
        origin = origins.get(f"spec.{dotted}") or origins.get(f"spec.{loc[0]}")
        return f"{origin} key '{dotted}'" if origin else f"system {system} {version} key '{dotted}'"

    try:
        spec = SystemVersion.model_validate(system_data)
    except ValidationError as exc:
        raise user_error(exc, SystemVersion, system_where, docs="docs/catalog.md") from None
    check_site_env(site, spec, site_where)

    return ResolvedConfig(
        system=system,
        version=version,
        spec=spec,
        site=site,
        site_path=site_file.resolve() if site_file else None,
        origins=origins,
    )
