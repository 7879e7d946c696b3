"""Turn a resolved configuration into a campaign's stage graph and its scripts.

image (only for a registry image not yet in the cache) and prep (only when dataset_dir is not a
prepared data set and imagenet_dir says where the raw ImageNet is) -> run-01 .. run-N (afterok on
both) -> collect (afterany).
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
from hpcrepro.campaign import state as st
from hpcrepro.campaign.layout import CampaignPaths
from hpcrepro.campaign.state import Manifest, Stage
from hpcrepro.errors import UserError
from hpcrepro.resources import package_root
from hpcrepro.rounds import TARGET_ACCURACY

if TYPE_CHECKING:
    from hpcrepro.config import ResolvedConfig

DATASET_FILES = ("train.rec", "train.idx", "val.rec", "val.idx")
IMAGE_STAGE_MINUTES = 120
PREP_STAGE_MINUTES = 360  # ImageNet from a slow parallel file system on one node fits in this
PREP_LOCK = ".hpcrepro-prep.lock"
COLLECT_MINUTES = 30


def fingerprint(cfg: ResolvedConfig, runs: int, runs_per_job: int, backend: str) -> str:
    """Identifies what a campaign was submitted with; a second submit must match it."""
    return _fingerprint_of(cfg.to_dict(), runs, runs_per_job, backend)


def _fingerprint_of(config: Any, runs: int, runs_per_job: int, backend: str) -> str:
    """`config` is `cfg.to_dict()`, or resolved-config.json as read back (the same JSON text)."""
    text = json.dumps([config, runs, runs_per_job, backend], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _prep_manifest_problems(folder: Path) -> list[str] | None:
    """Problems hpcrepro prep's manifest reports for `folder`; None when there is no manifest
    (the data set was then made some other way, or not yet)."""
    from hpcrepro.prep.verify import MANIFEST, quick_check

    if not (folder / MANIFEST).is_file():
        return None
    return quick_check(folder)


def _unfinished_prep(folder: Path) -> bool:
    """An hpcrepro prep started here and has not written its manifest yet (it can resume)."""
    from hpcrepro.prep.imagenet import WORK_DIR

    return (folder / WORK_DIR / "plan.json").is_file()


def dataset_needs_prep(cfg: ResolvedConfig) -> bool:
    """Whether the campaign needs a prep stage; a data set that is neither ready nor can be made
    from `imagenet_dir` stops the submit with what is wrong.

    Ready: hpcrepro prep's manifest agrees with the files, or (no manifest, no prep in progress)
    the four RecordIO files exist and can be read.
    """
    folder = cfg.site.dataset_dir
    problems = _prep_manifest_problems(folder)
    if problems:
        raise UserError(
            f"the dataset in {folder} does not match its manifest.json: {', '.join(problems)}",
            where="site key 'dataset_dir'",
            hint="the files changed after prep: delete train.*, val.* and manifest.json there and "
            "prepare it again (set imagenet_dir to let the campaign do it), or point dataset_dir "
            "at a good copy",
        )
    if problems is not None:
        return False
    unfinished = _unfinished_prep(folder)
    problems = _missing_files(folder)
    if unfinished:
        problems.insert(0, "an hpcrepro prep there is unfinished (no manifest.json yet)")
    if not problems:
        return False
    raw = cfg.site.imagenet_dir
    if raw is None:
        raise UserError(
            f"the dataset in {folder} is not ready: {', '.join(problems)}",
            where="site key 'dataset_dir'",
            hint="set imagenet_dir in the site file (the raw ILSVRC2012 tars or extracted "
            "train/ and val/ folders) and the campaign prepares it in a prep stage first; or "
            "prepare it with `hpcrepro prep imagenet --raw RAW --out DATASET_DIR`; or point "
            "dataset_dir at a prepared copy",
        )
    if not raw.is_dir():
        raise UserError(
            f"{raw} is not a folder" + (" (it does not exist)" if not raw.exists() else ""),
            where="site key 'imagenet_dir'",
            hint="give the folder that holds ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
            "(or extracted train/ and val/ folders), as `hpcrepro prep imagenet --raw` takes it",
        )
    foreign = sorted(
        name for name in (*DATASET_FILES, "train.lst", "val.lst") if (folder / name).exists()
    )
    if foreign and not unfinished:
        raise UserError(
            f"{folder} already holds {', '.join(foreign)} but no hpcrepro manifest.json: prep "
            "would not overwrite them",
            where="site key 'dataset_dir'",
            hint="delete those files so the prep stage can make the data set, point dataset_dir "
            "at an empty folder, or adopt a complete im2rec data set with "
            "`hpcrepro prep verify DIR --write-manifest`",
        )
    return True


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
    """The image file the runs use: a registry image imported once, or (no `image` set) NVIDIA's
    image built once, both in the site's image cache (`hpcrepro.image.cache` names them)."""
    from hpcrepro.image import cache

    image = cfg.site.image
    if not image:
        from hpcrepro.image.build import planned_file

        return planned_file(cfg)
    from hpcrepro.image.reference import apptainer_image, pyxis_image

    source = pyxis_image(image) if cfg.site.runtime == "pyxis" else apptainer_image(image)
    return cache.registry_cache_file(cfg.site, source)


def with_image(cfg: ResolvedConfig, image: Path) -> ResolvedConfig:
    site = cfg.site.model_copy(update={"image": str(image)})
    return dataclasses.replace(cfg, site=site)


def small_job_config(cfg: ResolvedConfig) -> ResolvedConfig:
    """Image import and collection need one task, not a whole node to themselves."""
    return dataclasses.replace(cfg, site=cfg.site.model_copy(update={"exclusive": False}))


def needs_image_stage(cfg: ResolvedConfig) -> bool:
    """A registry image to import, or no image at all: NVIDIA's to build."""
    return cfg.site.runtime in ("pyxis", "apptainer") and cfg.site.image_kind() != "file"


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
    inputs: st.Inputs,
    *,
    prep: bool = False,
    into: Path | None = None,
) -> Manifest:
    """Write every script and resolved-config.json and return the new manifest.

    `prep` (from `dataset_needs_prep`) adds the stage that makes dataset_dir from imagenet_dir.
    The scripts name the folders of `paths`; the files go into `into`, the folder that becomes
    `paths.root` once complete (see `campaign.folder`), by default `paths.root` itself.
    """
    if into is None:
        paths.make()
        into = paths.root
    stages: list[Stage] = []
    if needs_image_stage(cfg) and not image_cache_file(cfg).is_file():
        stages.append(Stage.new("image", "image"))
    if prep:
        stages.append(Stage.new("prep", "prep"))
    before = [stage.name for stage in stages]
    for start in range(0, runs, runs_per_job):
        indices = list(range(start + 1, min(runs, start + runs_per_job) + 1))
        stages.append(
            Stage.new(
                engine.stage_name_for_runs(indices),
                st.TRAIN,
                after=before,
                dependency=st.AFTER_OK,
                runs=indices,
            )
        )
    stages.append(
        Stage.new(
            "collect",
            "collect",
            after=[s.name for s in stages if s.kind == st.TRAIN],
            dependency=st.AFTER_ANY,
        )
    )
    manifest = Manifest(
        name=name,
        id=st.new_id(),
        created=st.now(),
        backend=backend,
        system=cfg.system,
        version=cfg.version,
        inputs=inputs,
        fingerprint=fingerprint(cfg, runs, runs_per_job, backend),
        runs_required=runs,
        runs_per_job=runs_per_job,
        target_epoch=cfg.spec.target_epoch(),
        target_accuracy=TARGET_ACCURACY,
        cancelled=False,
        provenance=_provenance(cfg, backend),
        stages=stages,
    )
    config = json.dumps(cfg.to_dict(), indent=1, default=str) + "\n"
    _write(into, paths.resolved_config.name, config.encode(), 0o644)
    for stage in stages:
        write_script(cfg, paths, manifest, stage, backend, into=into)
        manifest.plan_attempt(stage)
    return manifest


def _provenance(cfg: ResolvedConfig, backend: str) -> st.Provenance:
    """What submit records of what produces the runs (`hpcrepro.provenance`)."""
    from hpcrepro import provenance

    image = cfg.site.image or (
        str(image_cache_file(cfg)) if needs_image_stage(cfg) else None
    )
    return st.Provenance.from_json(provenance.at_submit(
        version=cfg.version,
        implementation=cfg.spec.implementation,
        image=image,
        site_file=cfg.site_path,
        backend=backend,
    ))


def _write(folder: Path, relative: str, data: bytes, mode: int) -> None:
    """One file of the campaign folder, never written through a link (see `safeopen`)."""
    from hpcrepro.safeopen import cannot_write, replace_inside

    try:
        replace_inside(folder, relative, data, mode)
    except OSError as error:
        raise cannot_write(folder / relative, error) from None


def write_script(
    cfg: ResolvedConfig,
    paths: CampaignPaths,
    manifest: Manifest,
    stage: Stage,
    backend: str,
    into: Path | None = None,
) -> None:
    """Render the script of one stage into the campaign's scripts/ folder (in `into`, the
    folder being built, when given)."""
    from hpcrepro.render import render_training
    from hpcrepro.templating import ShellText, render_template

    name = manifest.name
    output = str(paths.job_output / f"{stage.name}-%j.out")
    job_name = st.token(manifest.key, stage.name, 1)
    if stage.kind == st.TRAIN:
        text = render_training(
            training_config(cfg),
            job_name=job_name,
            run_indices=stage.runs,
            log_dir=paths.logs,
            output=output,
            launcher="local" if backend == "local" else "srun",
        )
    elif stage.kind == "image":
        header = one_task_header(small_job_config(cfg), job_name, output, IMAGE_STAGE_MINUTES)
        text = render_image_stage(cfg, ShellText(header))
    elif stage.kind == "prep":
        text = render_prep(cfg, name, job_name, output)
    else:
        header = one_task_header(small_job_config(cfg), job_name, output, COLLECT_MINUTES)
        text = render_template(
            "collect.sbatch.j2",
            header=ShellText(header),
            campaign=name,
            campaign_dir=str(paths.root),
            python=sys.executable,
            pythonpath=package_root(),
            hpcrepro_version=__version__,
        )
    _write(into or paths.root, stage.script, text.encode(), 0o755)


def render_image_stage(cfg: ResolvedConfig, header: str) -> str:
    """The image stage: import the registry image, or build NVIDIA's (hpcrepro image build on
    the compute node, every value passed explicitly so the job builds what submit planned)."""
    from hpcrepro.image.reference import apptainer_image, pyxis_image
    from hpcrepro.templating import ShellText, render_template

    target = image_cache_file(cfg)
    common = {"header": ShellText(header), "target": str(target), "hpcrepro_version": __version__}
    image = cfg.site.image
    if image:
        source = pyxis_image(image) if cfg.site.runtime == "pyxis" else apptainer_image(image)
        return render_template(
            "image.sbatch.j2",
            build=False,
            uri=image,
            source=source,
            runtime=cfg.site.runtime,
            **common,
        )
    from hpcrepro.image.build import plan, request_for

    request = request_for(cfg.system, cfg.version, cfg.spec, cfg.site)
    built = plan(request)
    arguments = [
        "--system",
        cfg.system,
        "--version",
        cfg.version,
        "--no-site",
        "--format",
        request.output_format,
        "--builder",
        request.builder,
        "--base",
        built.base,
    ]
    for option, value in (
        ("--code", request.code),
        ("--dockerfile", request.dockerfile),
        ("--wheels", request.wheels),
    ):
        if value is not None:
            arguments += [option, str(value)]
    arguments += ["--output", str(target)]
    return render_template(
        "image.sbatch.j2",
        build=True,
        code=built.location.label,
        base=built.base,
        arguments=arguments,
        python=sys.executable,
        pythonpath=package_root(),
        **common,
    )


def one_task_header(cfg: ResolvedConfig, job_name: str, output: str, minutes: int) -> str:
    """`#SBATCH` lines of a one-node, one-task helper stage (image, prep, collect): no GPUs."""
    from hpcrepro.render import sbatch_header

    return sbatch_header(
        cfg,
        job_name=job_name,
        nodes=1,
        ntasks_per_node=1,
        time_minutes=minutes,
        output=output,
        gpus=False,
    )


def render_prep(cfg: ResolvedConfig, campaign: str, job_name: str, output: str) -> str:
    """The prep stage: `hpcrepro prep imagenet` on the host (no container: it is our own code),
    one node, exclusive only when the site's jobs are."""
    from hpcrepro.templating import ShellText, render_template

    header = one_task_header(cfg, job_name, output, PREP_STAGE_MINUTES)
    workers = cfg.site.prep_workers
    if workers:
        header += f"\n#SBATCH --cpus-per-task={workers}"
    return render_template(
        "prep-stage.sbatch.j2",
        header=ShellText(header),
        campaign=campaign,
        raw=str(cfg.site.imagenet_dir),
        dataset=str(cfg.site.dataset_dir),
        lock=PREP_LOCK,
        workers=workers or 0,
        python=sys.executable,
        pythonpath=package_root(),
        hpcrepro_version=__version__,
    )


# Fields `ResolvedConfig.to_dict` adds to the spec that are computed, not settings.
_COMPUTED_SPEC_KEYS = ("global_batch", "eval_epochs", "target_epoch")


def stored_config(paths: CampaignPaths, manifest: Manifest) -> ResolvedConfig:
    """The configuration the campaign was submitted with, read back from resolved-config.json.

    `resume` renders replacement runs from it, never from the site file as it is now: MLPerf
    wants every run of a result made with one setup. The campaign's fingerprint proves the file
    is the one submit wrote (it is checked on the file's own content, so a newer hpcrepro reads an
    older campaign's file); anything else stops resume with what is wrong.
    """
    from pydantic import ValidationError

    from hpcrepro.catalog import SystemVersion
    from hpcrepro.config import ResolvedConfig
    from hpcrepro.jsonio import read_json
    from hpcrepro.site import Site

    where = str(paths.resolved_config)

    def unusable(problem: str) -> UserError:
        return UserError(
            f"resume needs the configuration the campaign was submitted with, but "
            f"resolved-config.json {problem}",
            where=where,
            hint="replacement runs must use the same setup as the runs they replace; restore "
            "that file from a backup, or submit a new campaign with `hpcrepro submit --name`",
        )

    if not paths.resolved_config.is_file():
        raise unusable("is missing")
    try:
        data = read_json(paths.resolved_config)
    except UserError as error:
        raise unusable(f"cannot be read ({error.message})") from error
    runs, per_job = manifest.runs_required, manifest.runs_per_job
    if _fingerprint_of(data, runs, per_job, manifest.backend) != manifest.fingerprint:
        raise unusable("does not match the campaign's fingerprint (it was changed after submit)")
    try:
        spec = {k: v for k, v in data["spec"].items() if k not in _COMPUTED_SPEC_KEYS}
        site_file = data.get("site_file")
        cfg = ResolvedConfig(
            system=data["system"],
            version=data["version"],
            spec=SystemVersion.model_validate(spec),
            site=Site.model_validate(data["site"]),
            site_path=Path(site_file) if site_file else None,
        )
    except (KeyError, TypeError, AttributeError, ValidationError) as error:
        # the file is the one submit wrote: this hpcrepro no longer reads it the same way
        raise unusable(
            f"cannot be read by this hpcrepro version ({type(error).__name__}: {str(error)[:160]})"
        ) from None
    return cfg
