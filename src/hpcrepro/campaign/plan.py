"""Turn a resolved configuration into a campaign's stage graph and its scripts.

image (only for a registry image not yet in the cache) -> run-01 .. run-N (afterok) -> collect
(afterany). The dataset must already be in place: until the prep stage exists, the four RecordIO
files are checked here before anything is submitted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcrepro import __version__
from hpcrepro.campaign import engine
from hpcrepro.campaign import stages as st
from hpcrepro.campaign.layout import CampaignPaths
from hpcrepro.errors import UserError

if TYPE_CHECKING:
    from hpcrepro.config import ResolvedConfig

DATASET_FILES = ("train.rec", "train.idx", "val.rec", "val.idx")
IMAGE_STAGE_MINUTES = 120
COLLECT_MINUTES = 30


def fingerprint(cfg: ResolvedConfig, runs: int, runs_per_job: int, backend: str) -> str:
    """Identifies what a campaign was submitted with; a second submit must match it."""
    text = json.dumps([cfg.to_dict(), runs, runs_per_job, backend], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _prep_manifest_problems(folder: Path) -> list[str] | None:
    """Problems hpcrepro prep's manifest reports for `folder`; None when there is no manifest
    (or no prep module): the data set was then made some other way."""
    try:
        from hpcrepro.prep.verify import MANIFEST, quick_check
    except ImportError:
        return None
    if not (folder / MANIFEST).is_file():
        return None
    return quick_check(folder)


def verify_dataset(cfg: ResolvedConfig) -> None:
    """The data set is ready: hpcrepro prep's manifest agrees with the files when there is one,
    else the four RecordIO files exist and can be read."""
    folder = cfg.site.dataset_dir
    problems = _prep_manifest_problems(folder)
    if problems is None:
        problems = _missing_files(folder)
    if problems:
        raise UserError(
            f"the dataset in {folder} is not ready: {', '.join(problems)}",
            where="site key 'dataset_dir'",
            hint="prepare ImageNet as RecordIO there with `hpcrepro prep` (train.rec/.idx, "
            "val.rec/.idx), or point dataset_dir at a prepared copy",
        )


def _missing_files(folder: Path) -> list[str]:
    problems = []
    for name in DATASET_FILES:
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif not os.access(path, os.R_OK):
            problems.append(f"{name} is not readable")
    return problems


def image_cache_file(cfg: ResolvedConfig) -> Path:
    """Where a registry image is kept once imported (.sqsh for pyxis, .sif for apptainer)."""
    image = cfg.site.image or ""
    cache = cfg.site.image_cache_dir or cfg.site.log_dir / "images"
    stem = image.split("://", 1)[-1]
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in stem)
    suffix = ".sqsh" if cfg.site.runtime == "pyxis" else ".sif"
    return cache / f"{safe}{suffix}"


def with_image(cfg: ResolvedConfig, image: Path) -> ResolvedConfig:
    site = cfg.site.model_copy(update={"image": str(image)})
    return dataclasses.replace(cfg, site=site)


def small_job_config(cfg: ResolvedConfig) -> ResolvedConfig:
    """Image import and collection need one task, not a whole node to themselves."""
    return dataclasses.replace(cfg, site=cfg.site.model_copy(update={"exclusive": False}))


def needs_image_stage(cfg: ResolvedConfig) -> bool:
    return cfg.site.runtime in ("pyxis", "apptainer") and cfg.site.image_kind() == "registry"


def training_config(cfg: ResolvedConfig) -> ResolvedConfig:
    """The configuration the training jobs use: a registry image is replaced by its cached file."""
    return with_image(cfg, image_cache_file(cfg)) if needs_image_stage(cfg) else cfg


def build(
    cfg: ResolvedConfig,
    paths: CampaignPaths,
    name: str,
    runs: int,
    runs_per_job: int,
    backend: str,
    inputs: dict[str, Any],
) -> dict[str, Any]:
    """Write every script into the campaign folder and return the new manifest."""
    paths.make()
    stages: list[st.Stage] = []
    before: list[str] = []
    if needs_image_stage(cfg) and not image_cache_file(cfg).is_file():
        stages.append(st.new_stage("image", "image", "scripts/image.sbatch"))
        before = ["image"]
    for start in range(0, runs, runs_per_job):
        indices = list(range(start + 1, min(runs, start + runs_per_job) + 1))
        stage_name = engine.stage_name_for_runs(indices)
        stages.append(
            st.new_stage(
                stage_name,
                st.TRAIN,
                f"scripts/{stage_name}.sbatch",
                after=before,
                dependency=st.AFTER_OK,
                runs=indices,
            )
        )
    stages.append(
        st.new_stage(
            "collect",
            "collect",
            "scripts/collect.sbatch",
            after=[s["name"] for s in stages if s["kind"] == st.TRAIN],
            dependency=st.AFTER_ANY,
        )
    )
    manifest: dict[str, Any] = {
        "format": 1,
        "name": name,
        "id": st.new_id(),
        "created": st.now(),
        "backend": backend,
        "system": cfg.system,
        "version": cfg.version,
        "inputs": inputs,
        "fingerprint": fingerprint(cfg, runs, runs_per_job, backend),
        "runs_required": runs,
        "runs_per_job": runs_per_job,
        "target_epoch": cfg.spec.target_epoch(),
        "target_accuracy": 0.759,
        "cancelled": False,
        "stages": stages,
    }
    paths.resolved_config.write_text(json.dumps(cfg.to_dict(), indent=1, default=str) + "\n")
    for stage in stages:
        write_script(cfg, paths, manifest, stage, backend)
        st.plan_attempt(manifest, stage)
    return manifest


def write_script(
    cfg: ResolvedConfig,
    paths: CampaignPaths,
    manifest: dict[str, Any],
    stage: st.Stage,
    backend: str,
) -> None:
    """Render the script of one stage into the campaign's scripts/ folder."""
    from hpcrepro.render import ShellText, render_template, render_training, sbatch_header

    name = manifest["name"]
    output = str(paths.job_output / f"{stage['name']}-%j.out")
    job_name = st.token(st.key(manifest), stage["name"], 1)
    if stage["kind"] == st.TRAIN:
        text = render_training(
            training_config(cfg),
            job_name=job_name,
            run_indices=stage["runs"],
            log_dir=paths.logs,
            output=output,
            launcher="local" if backend == "local" else "srun",
        )
    elif stage["kind"] == "image":
        from hpcrepro.render import apptainer_image, pyxis_image

        header = sbatch_header(
            small_job_config(cfg),
            job_name=job_name,
            nodes=1,
            ntasks_per_node=1,
            time_minutes=IMAGE_STAGE_MINUTES,
            output=output,
            gpus=False,
        )
        image = cfg.site.image or ""
        source = pyxis_image(image) if cfg.site.runtime == "pyxis" else apptainer_image(image)
        text = render_template(
            "image.sbatch.j2",
            header=ShellText(header),
            uri=image,
            source=source,
            runtime=cfg.site.runtime,
            target=str(image_cache_file(cfg)),
            hpcrepro_version=__version__,
        )
    else:
        header = sbatch_header(
            small_job_config(cfg),
            job_name=job_name,
            nodes=1,
            ntasks_per_node=1,
            time_minutes=COLLECT_MINUTES,
            output=output,
            gpus=False,
        )
        text = render_template(
            "collect.sbatch.j2",
            header=ShellText(header),
            campaign=name,
            campaign_dir=str(paths.root),
            python=sys.executable,
            pythonpath=str(Path(__file__).resolve().parents[2]),
            hpcrepro_version=__version__,
        )
    script = paths.root / stage["script"]
    script.write_text(text)
    script.chmod(0o755)
