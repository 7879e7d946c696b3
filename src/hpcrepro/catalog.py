"""The system catalog: NVIDIA's ResNet-50 configs as validated objects.

Each `systems/<name>.yaml` holds one system (a node count and GPU type) with a block per
MLPerf version; `systems/_common.yaml` holds the exports of NVIDIA's `config_DGXA100_common.sh`,
which every node config sources first: per version, with the few implementation folders whose
common file differs from the rest of their round. A system's `env` is laid over that common
layer. Extra folders (`$HPCREPRO_SYSTEMS`) let a site add or replace systems without touching
the installed package.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from hpcrepro.errors import UserError
from hpcrepro.rounds import RULESETS, VERSIONS
from hpcrepro.shell import check_env_name
from hpcrepro.validation import suggest, user_error
from hpcrepro.yamlio import KeyPath, YamlDocument, load_yaml

COMMON_FILE = "_common.yaml"
EXTRA_DIRS_ENV = "HPCREPRO_SYSTEMS"

# Exports that the catalog keeps as structured fields, never inside `env`.
STRUCTURED_EXPORTS = {
    "DGXNNODES": "nodes",
    "DGXNGPU": "gpus_per_node",
    "BATCHSIZE": "batch_per_gpu",
    "DGXSYSTEM": "dgxsystem",
    "WALLTIME": "minutes_per_run and walltime_overhead_minutes",
    "SBATCH_NETWORK": "sbatch_network",
}


# Bounds far above any real system, so that a typo such as nodes=100000000000000000000 is an
# error instead of a script nobody can submit.
MAX_SYSTEM_NODES = 65_536
MAX_GPUS_PER_NODE = 64
MAX_BATCH_PER_GPU = 65_536
MAX_EPOCHS = 1_000  # NVIDIA's runs stop by epoch 90; eval_epochs() lists every evaluation
MAX_MINUTES = 7 * 24 * 60  # a week: per run, per job overhead, a published score
MAX_LR = 1_000.0  # LARS runs use up to about 25
MAX_GROUP = 1_024  # GPUs per batch-norm group, input batch multiplier


def _env_text_path(key_path: KeyPath) -> bool:
    """Env values keep the text written: YAML 1.1 would read 010 as 8 and 1:30 as 90."""
    return len(key_path) >= 2 and key_path[-2] == "env"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Published(_Strict):
    """NVIDIA's published result for this system and version."""

    score_minutes: float = Field(gt=0, le=MAX_MINUTES)
    result_dir: str
    result_id: str | None = None


class Hyperparameters(_Strict):
    """Training hyperparameters; exported to the job under these exact names."""

    OPTIMIZER: str
    LR: float = Field(gt=0, le=MAX_LR)
    WARMUP_EPOCHS: int = Field(ge=0, le=MAX_EPOCHS)
    NUMEPOCHS: int = Field(ge=1, le=MAX_EPOCHS)
    EVAL_OFFSET: int = Field(ge=0, le=MAX_EPOCHS)
    EVAL_PERIOD: int = Field(default=4, ge=1, le=MAX_EPOCHS)
    WD: float = Field(ge=0, le=1)
    MOM: float = Field(ge=0, le=1)
    LARSETA: float = Field(ge=0, le=1)
    LABELSMOOTHING: float = Field(ge=0, lt=1)
    LRSCHED: str
    NETWORK: str
    KVSTORE: str = "horovod"
    BN_GROUP: int | None = Field(default=None, ge=1, le=MAX_GROUP)
    INPUT_BATCH_MULTIPLIER: int | None = Field(default=None, ge=1, le=MAX_GROUP)

    # Text of values given as strings ("5.0e-05"), so exports keep NVIDIA's spelling.
    _texts: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_texts(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        model = handler(data)
        if isinstance(data, dict):
            model._texts = {k: v.strip() for k, v in data.items() if isinstance(v, str)}
        return model

    @model_validator(mode="after")
    def _has_an_eval(self) -> Hyperparameters:
        if self.EVAL_OFFSET + 1 > self.NUMEPOCHS:
            raise ValueError(
                f"EVAL_OFFSET {self.EVAL_OFFSET} leaves no evaluation within NUMEPOCHS "
                f"{self.NUMEPOCHS}; evaluations happen at epochs EVAL_OFFSET+1 + k*EVAL_PERIOD"
            )
        return self

    def exports(self) -> dict[str, str]:
        """NAME -> value text as NVIDIA wrote it (None values are not exported)."""
        result: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            result[name] = self._text_of(name, value)
        return result

    def _text_of(self, name: str, value: object) -> str:
        text = self._texts.get(name)
        if text is not None and _same_value(text, value):
            return text
        return str(value)


def _same_value(text: str, value: object) -> bool:
    """True when `text` still spells `value` (it may have been changed after loading)."""
    if isinstance(value, str):
        return text == value
    try:
        return float(text) == float(value)  # type: ignore[arg-type]
    except ValueError:
        return False


def _env_to_text(value: Any) -> Any:
    """Check env names and turn numbers into text; booleans become 1/0 as in NVIDIA's configs."""
    if not isinstance(value, dict):
        return value
    result: dict[str, Any] = {}
    for name, item in value.items():
        name = str(name)
        try:
            check_env_name(name)
        except UserError as error:
            raise ValueError(f"{error.message} ({error.hint})") from None
        if name in STRUCTURED_EXPORTS:
            raise ValueError(
                f"{name} is not set in env: it comes from '{STRUCTURED_EXPORTS[name]}'"
            )
        if name in Hyperparameters.model_fields:
            raise ValueError(f"{name} is a hyperparameter: set it under 'hparams', not 'env'")
        if isinstance(item, bool):
            item = "1" if item else "0"
        elif isinstance(item, (int, float)):
            item = str(item)
        elif item is None:
            raise ValueError(f'env {name} has no value: write a string, e.g. {name}: "1"')
        result[name] = item
    return result


def _known_ruleset(value: Any) -> Any:
    """mlperf-logging's ruleset of a round with ResNet-50 (`hpcrepro.rounds`), as text."""
    if value not in RULESETS:
        listed = ", ".join(repr(ruleset) for ruleset in RULESETS[:-1])
        raise ValueError(f"Input should be {listed} or {RULESETS[-1]!r}")
    return value


class SystemVersion(_Strict):
    """One system in one MLPerf version: scale, hyperparameters, environment, provenance."""

    provenance: Literal["published", "derived"]
    source: str
    derived_from: str | None = None
    note: str | None = None
    dgxsystem: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    nodes: int = Field(ge=1, le=MAX_SYSTEM_NODES)
    gpus_per_node: int = Field(ge=1, le=MAX_GPUS_PER_NODE)
    batch_per_gpu: int = Field(ge=1, le=MAX_BATCH_PER_GPU)
    minutes_per_run: float = Field(gt=0, le=MAX_MINUTES)
    walltime_overhead_minutes: float = Field(ge=0, le=MAX_MINUTES)
    implementation: str
    container_base: str
    ruleset: Annotated[str, BeforeValidator(_known_ruleset)]
    sbatch_network: str | None = None
    published: Published | None = None
    hparams: Hyperparameters
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("env", mode="before")
    @classmethod
    def _env_as_text(cls, value: Any) -> Any:
        return _env_to_text(value)

    @model_validator(mode="after")
    def _provenance_is_explained(self) -> SystemVersion:
        if self.provenance == "derived" and not self.derived_from:
            raise ValueError("a derived entry needs 'derived_from': say what it is built from")
        return self

    @property
    def global_batch(self) -> int:
        return self.nodes * self.gpus_per_node * self.batch_per_gpu

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def eval_epochs(self) -> list[int]:
        """1-based epochs with an evaluation (NVIDIA's fit.py: epoch % period == offset)."""
        hp = self.hparams
        return list(range(hp.EVAL_OFFSET + 1, hp.NUMEPOCHS + 1, hp.EVAL_PERIOD))

    def target_epoch(self) -> int:
        """The last evaluation epoch: a run that has not converged there is aborted."""
        return self.eval_epochs()[-1]


class SystemEntry(_Strict):
    """One `systems/<name>.yaml` file."""

    system: str
    title: str
    gpu_model: str
    versions: dict[str, SystemVersion] = Field(min_length=1)


class _CommonImplementation(_Strict):
    """How one implementation folder's common file differs from the rest of its round."""

    env: dict[str, str] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list)

    @field_validator("env", mode="before")
    @classmethod
    def _env_as_text(cls, value: Any) -> Any:
        return _env_to_text(value)

    @field_validator("unset")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            try:
                check_env_name(name)
            except UserError as error:
                raise ValueError(f"{error.message} ({error.hint})") from None
        return names


class _CommonVersion(_Strict):
    env: dict[str, str] = Field(default_factory=dict)
    implementations: dict[str, _CommonImplementation] = Field(default_factory=dict)

    @field_validator("env", mode="before")
    @classmethod
    def _env_as_text(cls, value: Any) -> Any:
        return _env_to_text(value)


class _CommonFile(_Strict):
    versions: dict[str, _CommonVersion]


def _natural_key(name: str) -> list[tuple[int, str]]:
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", name)]


# NAME -> (text, 'file:line') of one common export.
_CommonEnv = dict[str, tuple[str, str]]


@dataclass
class _CommonLayer:
    """One version block of one `_common.yaml`: the round's env and its folders' changes."""

    version: str
    env: _CommonEnv
    implementations: dict[str, tuple[_CommonEnv, list[str]]]
    doc: YamlDocument
    shipped: bool


def _common_env(layers: Sequence[_CommonLayer], version: str, implementation: Any) -> _CommonEnv:
    """The common exports of one implementation folder of one version.

    Layers apply in folder order (a later folder wins); within one file, an implementation's
    block applies after its round's env: `unset` removes names, `env` sets them."""
    result: _CommonEnv = {}
    for layer in layers:
        if layer.version != version:
            continue
        result.update(layer.env)
        env, unset = layer.implementations.get(str(implementation), ({}, []))
        for name in unset:
            result.pop(name, None)
        result.update(env)
    return result


@dataclass
class _Source:
    """Where a system's data came from: its document and the common layer documents."""

    doc: YamlDocument
    label: str


@dataclass
class Catalog:
    """All systems, validated, with the line each value came from."""

    systems: dict[str, SystemEntry]
    path: Path
    _sources: dict[str, _Source] = field(default_factory=dict, repr=False)
    _common: list[_CommonLayer] = field(default_factory=list, repr=False)
    _raw: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def names(self) -> list[str]:
        """System names in natural order (dgxh100_4x8 before dgxh100_64x8)."""
        return sorted(self.systems, key=_natural_key)

    def entry(self, system: str) -> SystemEntry:
        found = self.systems.get(system)
        if found is None:
            raise UserError(
                f"unknown system '{system}'{suggest(system, self.names())}",
                hint=f"systems in the catalog: {', '.join(self.names())} (see `hpcrepro systems`)",
            )
        return found

    def get(self, system: str, version: str) -> SystemVersion:
        entry = self.entry(system)
        found = entry.versions.get(version)
        if found is None:
            have = ", ".join(entry.versions)
            close = suggest(version, list(entry.versions))
            raise UserError(
                f"system '{system}' has no version '{version}'{close}",
                hint=f"versions of {system}: {have}",
            )
        return found

    def raw(self, system: str, version: str) -> dict[str, Any]:
        """Plain merged data (common env under the system's env) before validation."""
        self.get(system, version)
        data = copy.deepcopy(self._raw[system]["versions"][version])
        common = _common_env(self._common, version, data.get("implementation"))
        env = {name: text for name, (text, _) in common.items()}
        env.update(data.get("env") or {})
        data["env"] = env
        return data

    def origin(self, system: str, version: str) -> dict[str, str]:
        """Dotted key -> 'file:line' for every value of this system and version."""
        chosen = self.get(system, version)
        source = self._sources[system]
        base: KeyPath = ("versions", version)
        result: dict[str, str] = {}
        for key in ("system", "title", "gpu_model"):
            result[key] = self._at(source, (key,))
        for name in SystemVersion.model_fields:
            if name in ("hparams", "env", "published"):
                continue
            result[name] = self._at(source, (*base, name))
        for name in Hyperparameters.model_fields:
            result[f"hparams.{name}"] = self._at(source, (*base, "hparams", name))
        if chosen.published is not None:
            for name in Published.model_fields:
                result[f"published.{name}"] = self._at(source, (*base, "published", name))
        else:
            result["published"] = self._at(source, (*base, "published"))
        for name, (_, where) in _common_env(self._common, version, chosen.implementation).items():
            result[f"env.{name}"] = where
        for name in self._raw[system]["versions"][version].get("env") or {}:
            result[f"env.{name}"] = self._at(source, (*base, "env", str(name)))
        return result

    @staticmethod
    def _at(source: _Source, key_path: KeyPath) -> str:
        line = source.doc.lines.get(key_path)
        return f"{source.label}:{line}" if line else f"{source.label} (default)"


# --- loading -----------------------------------------------------------------------------------


def _label(path: Path, shipped: Path) -> str:
    """'systems/x.yaml' for shipped files, the full path for a user's own folder."""
    return f"systems/{path.name}" if path.parent == shipped else str(path)


def _load_common(path: Path) -> tuple[YamlDocument, _CommonFile]:
    doc = load_yaml(path, text_paths=_env_text_path)
    data = _mapping(doc, "versions: {<version>: {env: {NAME: value}}}")
    try:
        return doc, _CommonFile.model_validate(data)
    except ValidationError as error:
        raise user_error(error, _CommonFile, doc.where, docs="docs/catalog.md") from None


def _common_layers(
    doc: YamlDocument, parsed: _CommonFile, label: str, shipped: bool
) -> list[_CommonLayer]:
    def located(env: dict[str, str], *key_path: str) -> _CommonEnv:
        lines = {name: doc.lines.get((*key_path, name)) for name in env}
        return {
            name: (text, f"{label}:{lines[name]}" if lines[name] else label)
            for name, text in env.items()
        }

    layers = []
    for version, block in parsed.versions.items():
        base = ("versions", version)
        implementations = {
            name: (located(item.env, *base, "implementations", name, "env"), item.unset)
            for name, item in block.implementations.items()
        }
        layers.append(
            _CommonLayer(version, located(block.env, *base, "env"), implementations, doc, shipped)
        )
    return layers


def _check_common_implementations(
    layers: Sequence[_CommonLayer], systems: dict[str, SystemEntry]
) -> None:
    """A folder that a user's common layer names must be run by some system of that version,
    and what a layer unsets must be set by the round: a typo would otherwise change nothing,
    silently. (A shipped folder may be unused: a user's file can replace the system running it.)"""
    for index, layer in enumerate(layers):
        used = sorted(
            {
                item.implementation
                for entry in systems.values()
                for version, item in entry.versions.items()
                if version == layer.version
            }
        )
        for name, (_, unset) in layer.implementations.items():
            key_path: KeyPath = ("versions", layer.version, "implementations", name)
            if name not in used and not layer.shipped:
                raise UserError(
                    f"no {layer.version} system runs implementation '{name}'{suggest(name, used)}",
                    where=layer.doc.where(key_path),
                    hint=f"implementations of {layer.version}: {', '.join(used) or 'none'}",
                )
            before = _common_env(layers[:index], layer.version, name) | layer.env
            for position, variable in enumerate(unset):
                if variable not in before:
                    raise UserError(
                        f"unset {variable}: the {layer.version} common env does not set it",
                        where=layer.doc.where((*key_path, "unset", position)),
                        hint=f"names it sets: {', '.join(sorted(before)) or 'none'}",
                    )


def _mapping(doc: YamlDocument, what: str) -> dict[str, Any]:
    """The top level as a mapping, version keys as text (YAML reads a bare 3.0 as a float)."""
    if not isinstance(doc.data, dict):
        raise UserError(
            f"{doc.path.name} must be a mapping of keys to values ({what})",
            where=str(doc.path),
            hint="see docs/catalog.md for the file format",
        )
    data = copy.deepcopy(doc.data)
    if isinstance(data.get("versions"), dict):
        data["versions"] = {str(key): value for key, value in data["versions"].items()}
        for version in data["versions"]:
            if version not in VERSIONS:
                raise UserError(
                    f"unknown version '{version}'{suggest(version, VERSIONS)}",
                    where=doc.where(("versions", version)),
                    hint=f"versions: {', '.join(VERSIONS)}",
                )
    return data


def _load_system(
    path: Path, common: Sequence[_CommonLayer]
) -> tuple[YamlDocument, dict[str, Any], SystemEntry]:
    doc = load_yaml(path, text_paths=_env_text_path)
    data = _mapping(doc, "system, title, gpu_model, versions")
    if "system" not in data:
        raise UserError(
            "required key 'system' is missing",
            where=str(path),
            hint=f"add 'system: {path.stem}' (the file name without .yaml)",
        )
    if data["system"] != path.stem:
        raise UserError(
            f"'system: {data['system']}' does not match the file name '{path.name}'",
            where=doc.where(("system",)),
            hint=f"write 'system: {path.stem}' or rename the file to '{data['system']}.yaml'",
        )
    merged = copy.deepcopy(data)
    for version, block in (merged.get("versions") or {}).items():
        if isinstance(block, dict) and isinstance(block.get("env") or {}, dict):
            layer = _common_env(common, version, block.get("implementation"))
            env = {name: text for name, (text, _) in layer.items()}
            env.update(block.get("env") or {})
            block["env"] = env
    try:
        entry = SystemEntry.model_validate(merged)
    except ValidationError as error:
        raise user_error(error, SystemEntry, doc.where, docs="docs/catalog.md") from None
    return doc, data, entry


def _extra_dirs() -> list[Path]:
    value = os.environ.get(EXTRA_DIRS_ENV, "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


def _fingerprint(folders: Sequence[Path]) -> tuple[tuple[str, int], ...]:
    stamps: list[tuple[str, int]] = []
    for folder in folders:
        for path in sorted(folder.glob("*.y*ml")):
            stamps.append((str(path), path.stat().st_mtime_ns))
    return tuple(stamps)


_CACHE: dict[tuple[Any, ...], Catalog] = {}


def load_catalog(directory: Path | None = None, *, extra: Sequence[Path] | None = None) -> Catalog:
    """Load and validate the catalog.

    `directory` defaults to the shipped `systems/` folder. `extra` folders (default: the
    `$HPCREPRO_SYSTEMS` list, only when `directory` is not given) are laid over it in order:
    a system file there replaces the one of the same name, and an extra `_common.yaml` overrides
    the common env key by key. The result is cached until a file changes.
    """
    from hpcrepro.resources import systems_dir

    shipped = systems_dir()
    primary = Path(directory) if directory is not None else shipped
    extras = list(extra) if extra is not None else (_extra_dirs() if directory is None else [])
    folders = [primary, *extras]
    for folder in folders:
        if not folder.is_dir():
            origin = f" (from ${EXTRA_DIRS_ENV})" if folder in extras and extra is None else ""
            raise UserError(
                f"systems folder not found: {folder}{origin}",
                hint="give an existing folder with <system>.yaml files",
            )
    key = (tuple(str(f.resolve()) for f in folders), _fingerprint(folders))
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    catalog = _build(folders, shipped)
    _CACHE.clear()
    _CACHE[key] = catalog
    return catalog


def _build(folders: Sequence[Path], shipped: Path) -> Catalog:
    common: list[_CommonLayer] = []
    files: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.suffix == ".yml":
                raise UserError(
                    f"{path.name} ends in .yml",
                    where=str(path),
                    hint=f"rename it to {path.stem}.yaml; only .yaml files are read",
                )
            if path.suffix != ".yaml":
                continue
            if path.name == COMMON_FILE:
                doc, parsed = _load_common(path)
                label = _label(path, shipped)
                common.extend(_common_layers(doc, parsed, label, folder == shipped))
            elif path.name.startswith("_"):
                raise UserError(
                    f"unexpected file {path.name}",
                    where=str(path),
                    hint=f"only {COMMON_FILE} may start with '_'; "
                    "system files are named <system>.yaml",
                )
            else:
                files[path.stem] = path
    catalog = Catalog(systems={}, path=folders[0], _common=common)
    for name in sorted(files):
        path = files[name]
        doc, data, entry = _load_system(path, common)
        catalog.systems[name] = entry
        catalog._sources[name] = _Source(doc=doc, label=_label(path, shipped))
        catalog._raw[name] = data
    _check_common_implementations(common, catalog.systems)
    return catalog
