"""The catalog against NVIDIA's own config files, value by value.

Every entry names the NVIDIA `config_<SYSTEM>.sh` it reproduces: `source`, or for a derived
entry the file in `derived_from`. The test sources that file in a real bash the way NVIDIA's
launch does (`source config_X.sh` in the implementation folder, from a clean environment; the
file sources its own `config_DGXA100_common.sh`), and compares every variable it exports with
what hpcrepro's job exports for that entry (`render.job_exports`). NVIDIA's files are read in
place from ../shared/research/nvidia-resnet-code (its README maps the results repositories'
paths to its folders).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import NVIDIA_CODE, require_shared
from hpcrepro.catalog import Catalog, SystemVersion, load_catalog
from hpcrepro.config import resolve
from hpcrepro.render import container_plan, job_exports
from hpcrepro.resources import systems_dir

# `mlcommons/training_results_v3.0: NVIDIA/benchmarks/resnet/implementations/mxnet/config_X.sh`
# is `v3.0/NVIDIA/mxnet/config_X.sh` in the shared folder.
RESULTS_PATH = re.compile(
    r"mlcommons/training_results_(v\d\.\d): ([\w-]+)/benchmarks/resnet/implementations/"
    r"([\w.-]+)/(config_[\w.-]+\.sh)"
)
COMMON = "config_DGXA100_common.sh"

# NVIDIA's ResNet configs that no catalog entry reproduces, and why.
NOT_IN_CATALOG = {
    "v2.1/NVIDIA/mxnet-22.04/config_DGXA100_4gpu.sh": (
        "a 4-GPU development config of DGX A100 (DGXNGPU=4); NVIDIA published no result for it"
    ),
}

# Wanted differences, each exactly: (system, version) -> {NAME: (NVIDIA's value, hpcrepro's
# value)}; None is "not exported". WALLTIME is compared as `nvidia_walltime` and
# `catalog_walltime` write it.
WANTED = {
    # NVIDIA published no DGX A100 config in v3.0. The derived entry takes NVIDIA's v2.1
    # config_DGXA100.sh into the r3.0 folder, with the two changes that the partner copies of
    # that file in training_results_v3.0 (ASUSTeK, Azure, Fujitsu, Lenovo SR670v2-8xH100,
    # Supermicro, xFusion; identical files at commit 63e326c) make: EVAL_OFFSET 3 and WALLTIME
    # NEXP*40+5. Those copies are not in the shared folder, so the two are written out here.
    ("dgxa100_1x8", "r3.0"): {
        "EVAL_OFFSET": ("2", "3"),
        "WALLTIME": ("00:40:00 for any NEXP", "NEXP*40+5"),
    },
}

# The Dockerfile of NVIDIA's v2.1 H100 preview reads `ARG FROM_IMAGE_NAME=REDACTED`; its entries
# use the first public base of the same code, the one of the r3.0 folder (see their note).
REDACTED_BASE_FROM = {"v2.1/NVIDIA/mxnet-preview": "v3.0/NVIDIA/mxnet"}

# Bash's own bookkeeping, not an export of the config.
BASH_OWN = {"_", "PWD", "OLDPWD", "SHLVL"}
CLEAN_PATH = "/usr/bin:/bin"


@dataclass(frozen=True)
class NvidiaConfig:
    """One `config_*.sh` of the shared folder, named by its results-repository path."""

    round: str
    submitter: str
    folder: str
    name: str

    @classmethod
    def named_in(cls, text: str, where: str) -> NvidiaConfig:
        found = RESULTS_PATH.findall(text)
        assert len(found) == 1, f"{where} must name exactly one NVIDIA config file: {text!r}"
        return cls(*found[0])

    @property
    def folder_path(self) -> Path:
        return NVIDIA_CODE / self.round / self.submitter / self.folder

    @property
    def path(self) -> Path:
        return self.folder_path / self.name


def round_of(version: str) -> str:
    """The results round of a catalog version: r3.0 is training_results_v3.0."""
    return "v" + version.removeprefix("r")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    require_shared(NVIDIA_CODE)
    return load_catalog(systems_dir(), extra=[])


@pytest.fixture(scope="module")
def site_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site that adds nothing to the exports of the catalog (no env of its own)."""
    path = tmp_path_factory.mktemp("site") / "site.yaml"
    path.write_text(
        "runtime: pyxis\nimage: nvcr.io/nvidia/mxnet:23.04-py3\n"
        "dataset_dir: /data/imagenet\nlog_dir: /results\n",
        encoding="utf-8",
    )
    return path


def entries(catalog: Catalog) -> Iterator[tuple[str, str, SystemVersion]]:
    for name in catalog.names():
        for version, item in catalog.systems[name].versions.items():
            yield name, version, item


def entry_ids() -> list[str]:
    shipped = load_catalog(systems_dir(), extra=[])
    return [f"{name}-{version}" for name, version, _ in entries(shipped)]


def named_config(item: SystemVersion, system: str, version: str) -> NvidiaConfig:
    """The file the entry reproduces: `source`, or `derived_from` for a derived entry."""
    if item.provenance == "derived":
        assert item.derived_from is not None
        return NvidiaConfig.named_in(item.derived_from, f"{system} {version} derived_from")
    return NvidiaConfig.named_in(item.source, f"{system} {version} source")


def run_folder(item: SystemVersion, system: str, version: str) -> Path:
    """NVIDIA's implementation folder the entry runs in (and whose common file it sources)."""
    config = named_config(item, system, version)
    if item.provenance == "published":
        assert config.round == round_of(version), (
            f"{system} {version}: a published entry's source must be of its own round, "
            f"not {config.round}"
        )
        return config.folder_path
    return NVIDIA_CODE / round_of(version) / "NVIDIA" / item.implementation


# --- NVIDIA's side: the config sourced in a real bash ----------------------------------------


def _records(text: str) -> dict[str, str]:
    pairs = (record.partition("=") for record in text.split("\0") if record)
    return {name: value for name, _, value in pairs}


def sourced_exports(folder: Path, name: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """What `source ./<name>` in `folder` exports, from a clean environment plus `env`."""
    # env -0 before and after the source; an empty record (two NULs) separates the two lists.
    script = 'env -0; printf "\\0"; source "./$1" >&2; env -0'
    done = subprocess.run(
        [
            "env",
            "-i",
            f"PATH={CLEAN_PATH}",
            *(f"{k}={v}" for k, v in (env or {}).items()),
            "bash",
            "--noprofile",
            "--norc",
            "-c",
            script,
            "bash",
            name,
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    # The only complaint bash may have is about the lines NVIDIA redacted in the v2.1 preview.
    redacted = "REDACTED: command not found"
    complaints = [line for line in done.stderr.splitlines() if not line.endswith(redacted)]
    assert not complaints, f"sourcing {folder / name}: {done.stderr}"
    before_text, _, after_text = done.stdout.partition("\0\0")
    before, after = _records(before_text + "\0"), _records(after_text)
    assert set(before) <= set(after), f"{folder / name} unsets {set(before) - set(after)}"
    return {
        key: value
        for key, value in after.items()
        if key not in BASH_OWN and before.get(key) != value
    }


def nvidia_exports(
    item: SystemVersion, system: str, version: str, tmp: Path, env: dict[str, str] | None = None
) -> dict[str, str]:
    """The named config, sourced with the common file of the folder the entry runs in.

    A published entry's config sits in that folder and runs in place. A derived entry's config
    is of another folder: it is linked beside a link to the run folder's common file, which is
    what copying the file into that folder would do (DGXSYSTEM comes from the linked file's
    real name)."""
    config = named_config(item, system, version)
    folder = run_folder(item, system, version)
    if config.folder_path != folder:
        for link, target in ((config.name, config.path), (COMMON, folder / COMMON)):
            if not (tmp / link).is_symlink():
                (tmp / link).symlink_to(target)
        folder = tmp
    exports = sourced_exports(folder, config.name, env)
    five_runs = sourced_exports(folder, config.name, {**(env or {}), "NEXP": "5"})
    exports["WALLTIME"] = nvidia_walltime(exports.get("WALLTIME"), five_runs.get("WALLTIME"))
    return exports


def nvidia_walltime(one_run: str | None, five_runs: str | None) -> str:
    """NVIDIA's WALLTIME as `NEXP*a+b`, or `HH:MM:SS for any NEXP` where it is a fixed limit.

    NVIDIA's launch sources the config before sbatch with NEXP unset, so `$(( NEXP*a + b ))`
    evaluates for one run; sourcing it again with NEXP=5 gives the per-run part."""
    assert one_run is not None and five_runs is not None, "the config exports no WALLTIME"
    if one_run == five_runs:
        return f"{one_run} for any NEXP"
    per_run = (int(five_runs) - int(one_run)) / 4
    return f"NEXP*{per_run:g}+{int(one_run) - per_run:g}"


# --- hpcrepro's side: what the job exports ---------------------------------------------------


def catalog_walltime(item: SystemVersion) -> str:
    return f"NEXP*{item.minutes_per_run:g}+{item.walltime_overhead_minutes:g}"


def walltimes_agree(nvidia: str, item: SystemVersion) -> bool:
    """A fixed HH:MM:SS of NVIDIA's is the limit of the one run a sourced config gets: the
    entry's one-run limit must equal it (its note says how the per-run minutes were chosen)."""
    fixed = re.fullmatch(r"(\d+):(\d\d):(\d\d) for any NEXP", nvidia)
    if fixed is None:
        return nvidia == catalog_walltime(item)
    hours, minutes, seconds = (int(part) for part in fixed.groups())
    return hours * 60 + minutes + seconds / 60 == item.minutes_per_run + (
        item.walltime_overhead_minutes
    )


def differences(
    system: str, version: str, item: SystemVersion, nvidia: dict[str, str], job: dict[str, str]
) -> list[str]:
    """Every variable where the job and NVIDIA's config disagree, less the wanted ones."""
    catalog_names = {"DGXSYSTEM", "DGXNNODES", "DGXNGPU", "BATCHSIZE"}
    catalog_names |= set(item.hparams.exports()) | set(item.env)
    ours: dict[str, str | None] = {
        name: job.get(name) for name in (set(nvidia) | catalog_names) - {"WALLTIME"}
    }
    ours["SBATCH_NETWORK"] = item.sbatch_network
    ours["WALLTIME"] = catalog_walltime(item)
    theirs: dict[str, str | None] = {name: nvidia.get(name) for name in ours}
    wanted = WANTED.get((system, version), {})
    found = []
    for name in sorted(ours):
        pair = (theirs[name], ours[name])
        if name in wanted:
            assert pair == wanted[name], (
                f"{system} {version} {name}: the wanted difference is {wanted[name]}, "
                f"now NVIDIA {pair[0]!r}, hpcrepro {pair[1]!r}: update WANTED or the entry"
            )
            continue
        if name == "WALLTIME" and walltimes_agree(theirs[name] or "", item):
            continue
        if pair[0] != pair[1]:
            found.append(f"{system} {version} {name}: NVIDIA {pair[0]!r}, hpcrepro {pair[1]!r}")
    return found


@pytest.mark.parametrize("entry", entry_ids())
def test_exports_equal_nvidias_config(
    catalog: Catalog, site_file: Path, entry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, _, version = entry.rpartition("-")
    item = catalog.get(system, version)
    nvidia = nvidia_exports(item, system, version, tmp_path)
    monkeypatch.delenv("HPCREPRO_SYSTEMS", raising=False)
    cfg = resolve(system, version, site_file)
    job = dict(job_exports(cfg, container_plan(cfg, cfg.site.log_dir)))
    found = differences(system, version, item, nvidia, job)
    assert not found, "the catalog differs from NVIDIA's config:\n" + "\n".join(found)


# The switches NVIDIA's v3.1 and v4.0 configs read: the power-measurement block and the
# MaxQ/MinEDP clocks. hpcrepro does not export what they turn on; each entry's note says it.
SWITCHES = (
    {"MLPERF_POWER_TRAIN_AFTER_RUN_STOP": "1"},
    {"SET_MAXQ_CLK": "1"},
    {"SET_MINEDP_CLK": "1"},
)


def per_run_minutes(walltime: str) -> float:
    found = re.fullmatch(r"NEXP\*([\d.]+)\+([\d.]+)", walltime)
    assert found, f"not a per-run WALLTIME: {walltime}"
    return float(found.group(1))


@pytest.mark.parametrize("entry", entry_ids())
def test_conditional_blocks_are_documented(catalog: Catalog, entry: str, tmp_path: Path) -> None:
    """What a switch changes in NVIDIA's config is in the entry's note, value for value."""
    system, _, version = entry.rpartition("-")
    item = catalog.get(system, version)
    plain = nvidia_exports(item, system, version, tmp_path)
    note = " ".join((item.note or "").split())
    for switch in SWITCHES:
        switched = nvidia_exports(item, system, version, tmp_path, switch)
        for name, value in sorted(switched.items()):
            if value == plain.get(name):
                continue
            if name == "WALLTIME":
                added = per_run_minutes(value) - per_run_minutes(plain[name])
                documented = f"adds {added:g} minutes per run"
            else:
                documented = f"{name}={value}"
            assert documented in note, f"{system} {version}, {switch}: note lacks {documented!r}"


# --- folders and images ----------------------------------------------------------------------


def dockerfile_base(folder: Path) -> str:
    text = (folder / "Dockerfile").read_text(encoding="utf-8")
    found = re.findall(r"^ARG FROM_IMAGE_NAME=(\S+)\s*$", text, flags=re.MULTILINE)
    assert len(found) == 1, f"{folder}/Dockerfile: expected one ARG FROM_IMAGE_NAME line"
    return found[0]


@pytest.mark.parametrize("entry", entry_ids())
def test_implementation_and_container_base_are_nvidias(catalog: Catalog, entry: str) -> None:
    system, _, version = entry.rpartition("-")
    item = catalog.get(system, version)
    folder = run_folder(item, system, version)
    assert folder.is_dir(), f"{system} {version}: no NVIDIA folder {folder}"
    assert item.implementation == folder.name
    assert (folder / COMMON).is_file() and (folder / "run.sub").is_file()
    network = folder / "symbols" / f"{item.hparams.NETWORK}.py"
    assert network.is_file(), f"{system} {version}: {folder.name} has no network {network.name}"
    relative = str(folder.relative_to(NVIDIA_CODE))
    base = dockerfile_base(folder)
    if relative in REDACTED_BASE_FROM:
        assert base == "REDACTED"
        base = dockerfile_base(NVIDIA_CODE / REDACTED_BASE_FROM[relative])
        assert item.note and "REDACTED" in item.note
    assert item.container_base == base, f"{system} {version}: {relative}/Dockerfile uses {base}"


# --- coverage --------------------------------------------------------------------------------


def test_every_nvidia_config_is_in_the_catalog_or_explained(catalog: Catalog) -> None:
    """A config NVIDIA published for ResNet is reproduced by an entry, is a byte-identical copy
    of one in the same round (the v3.0 NVIDIA_CoreWeave folder), or is listed with its reason."""
    named = {named_config(item, n, v).path for n, v, item in entries(catalog)}
    published = sorted(
        path
        for path in NVIDIA_CODE.glob("v*/*/*/config_*.sh")
        if not path.name.endswith("_common.sh")
    )
    assert published, f"no config_*.sh under {NVIDIA_CODE}"
    missing = []
    for path in published:
        relative = str(path.relative_to(NVIDIA_CODE))
        same_round = [p for p in named if p.name == path.name and p.parts[-4] == path.parts[-4]]
        copies = [p for p in same_round if p.read_bytes() == path.read_bytes()]
        if path in named or copies:
            assert relative not in NOT_IN_CATALOG, f"{relative} is in the catalog now"
        elif relative not in NOT_IN_CATALOG:
            missing.append(relative)
    assert not missing, f"NVIDIA configs with no catalog entry and no reason: {missing}"
    stale = set(NOT_IN_CATALOG) - {str(p.relative_to(NVIDIA_CODE)) for p in published}
    assert not stale, f"NOT_IN_CATALOG names files that do not exist: {stale}"


def test_no_entry_rests_on_values_nobody_read() -> None:
    """Each value is checked against NVIDIA's file above; no note may still claim otherwise."""
    stale = ("stored index", "research notes")
    for path in sorted(systems_dir().glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        for phrase in stale:
            assert phrase not in text, f"{path.name} still says '{phrase}'"
