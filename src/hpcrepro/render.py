"""Render job scripts from the resolved configuration (pure: config in, text out).

Templates live in `templates/` as data. The Jinja environment is strict twice over: an undefined
name fails (StrictUndefined), and a plain string printed without the `q` filter fails too (the
`finalize` hook), so no template can put an unquoted user value on a shell line.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2

from hpcrepro import __version__
from hpcrepro.config import ResolvedConfig
from hpcrepro.errors import UserError
from hpcrepro.resources import templates_dir
from hpcrepro.shell import check_env_name, quote

Launcher = Literal["srun", "local"]
CONTAINER_DATA_DIR = "/data"
CONTAINER_RESULTS_DIR = "/results"


class ShellText(str):
    """Text that is already safe on a shell line (quoted, or a vetted literal)."""


def q(value: object) -> ShellText:
    """Jinja filter: one value as one quoted shell word."""
    return ShellText(quote(value))


def qjoin(values: Iterable[object]) -> ShellText:
    """Jinja filter: a list as quoted shell words separated by spaces."""
    return ShellText(" ".join(quote(v) for v in values))


def _finalize(value: object) -> object:
    if isinstance(value, ShellText) or value is None:
        return "" if value is None else value
    if isinstance(value, bool):
        raise jinja2.TemplateError("booleans must be rendered explicitly (use a test, not output)")
    if isinstance(value, (int, float)):
        return value
    raise jinja2.TemplateError(
        f"unquoted value {value!r} in a template: pass it through the 'q' filter"
    )


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["q"] = q
    env.filters["qjoin"] = qjoin
    return env


_ENV: jinja2.Environment | None = None


def render_template(name: str, **context: Any) -> str:
    """Render `templates/<name>` with the strict environment."""
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return _ENV.get_template(name).render(**context)


# --- Pieces shared by every stage script ---------------------------------------------------


def sbatch_options(
    cfg: ResolvedConfig,
    *,
    job_name: str,
    nodes: int,
    ntasks_per_node: int,
    time_minutes: int,
    output: str,
    gpus: bool,
) -> list[str]:
    """The `#SBATCH` options of a job, site settings included (each is one token)."""
    site = cfg.site
    options = [
        f"--job-name={job_name}",
        f"--nodes={nodes}",
        f"--ntasks-per-node={ntasks_per_node}",
        f"--time={time_minutes}",
        f"--output={output}",
    ]
    for key in ("partition", "account", "qos", "reservation", "constraint"):
        value = getattr(site, key)
        if value:
            options.append(f"--{key}={value}")
    if site.exclusive:
        options.append("--exclusive")
    if gpus and site.gpu_request == "gpus-per-node":
        options.append(f"--gpus-per-node={cfg.spec.gpus_per_node}")
    elif gpus and site.gpu_request == "gres":
        options.append(f"--gres=gpu:{cfg.spec.gpus_per_node}")
    site_network = any(arg.startswith("--network") for arg in site.sbatch_args)
    if gpus and cfg.spec.sbatch_network and not site_network:  # the site's own --network wins
        options.append(f"--network={cfg.spec.sbatch_network}")
    options.extend(site.sbatch_args)
    return [_sbatch_token(option) for option in options]


def _sbatch_token(option: str) -> str:
    """One option as sbatch reads it from an '#SBATCH' line.

    sbatch splits a directive at white space unless it is quoted, and an unquoted '#' starts a
    comment; so values with spaces are double-quoted, and '#', '"', '\\' or a line break (which no
    quoting survives reliably) are refused.
    """
    if any(ch in option for ch in '#"\\\n\r'):
        raise UserError(
            f"'{option}' cannot be written as an '#SBATCH' line: sbatch would cut it at '#' "
            "or misread quotes, backslashes and line breaks",
            hint="use names and paths without '#', '\"', '\\' or line breaks in job options",
        )
    if any(ch.isspace() for ch in option) or "'" in option:
        name, _, value = option.partition("=")
        return f'{name}="{value}"'
    return option


def sbatch_header(
    cfg: ResolvedConfig,
    *,
    job_name: str,
    nodes: int,
    ntasks_per_node: int,
    time_minutes: int,
    output: str,
    gpus: bool,
) -> str:
    """`#SBATCH` lines for a stage script (used by the campaign and prep stages too)."""
    options = sbatch_options(
        cfg,
        job_name=job_name,
        nodes=nodes,
        ntasks_per_node=ntasks_per_node,
        time_minutes=time_minutes,
        output=output,
        gpus=gpus,
    )
    return "\n".join(f"#SBATCH {option}" for option in options)


# --- Training script -----------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerPlan:
    """How tasks enter the container: data for the runtime blocks of the template."""

    runtime: str
    image: str
    data_dir: str
    results_dir: str
    workdir: str
    mounts: str  # pyxis --container-mounts value; apptainer gets `binds` instead
    binds: list[str]
    build_sif: str  # registry URI to build into `image` first (apptainer), or ""


def pyxis_image(image: str) -> str:
    """An image reference in enroot's syntax: registry and path separated by '#'."""
    image = image.removeprefix("docker://")
    if image.startswith("/") or "#" in image:
        return image
    first, sep, rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return f"{first}#{rest}"
    return image


def apptainer_image(image: str) -> str:
    """An image reference for apptainer: a file path, or a docker:// URI."""
    if image.startswith("/") or "://" in image:
        return image
    return "docker://" + image.replace("#", "/", 1)


def _check_mount_path(path: Path, key: str) -> str:
    text = str(path)
    if "," in text or ":" in text:
        raise UserError(
            f"'{text}' contains ',' or ':', which container mount syntax cannot express",
            where=f"site key '{key}'",
            hint="use a path without commas or colons (a symlink to it works)",
        )
    return text


def container_plan(cfg: ResolvedConfig, log_dir: Path) -> ContainerPlan:
    """`log_dir` is the folder the run logs go to; it is what tasks see as /results."""
    site = cfg.site
    if site.runtime == "none":
        return ContainerPlan(
            runtime="none",
            image="",
            data_dir=str(site.dataset_dir),
            results_dir=str(log_dir),
            workdir=site.workdir
            if site.train_command is None and site.workload == "nvidia"
            else "",
            mounts="",
            binds=[],
            build_sif="",
        )
    assert site.image is not None  # Site validation guarantees an image for container runtimes
    data = _check_mount_path(site.dataset_dir, "dataset_dir")
    logs = _check_mount_path(log_dir, "log_dir")
    specs = [f"{data}:{CONTAINER_DATA_DIR}", f"{logs}:{CONTAINER_RESULTS_DIR}"]
    specs += [m.spec() for m in site.mounts]
    if site.runtime == "pyxis":
        return ContainerPlan(
            runtime="pyxis",
            image=pyxis_image(site.image),
            data_dir=CONTAINER_DATA_DIR,
            results_dir=CONTAINER_RESULTS_DIR,
            workdir=site.workdir,
            mounts=",".join(specs),
            binds=[],
            build_sif="",
        )
    image = apptainer_image(site.image)
    build = ""
    if "://" in image:
        cache = site.image_cache_dir or site.log_dir
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in image.split("://", 1)[1])
        build, image = image, str(cache / f"{safe}.sif")
    return ContainerPlan(
        runtime="apptainer",
        image=image,
        data_dir=CONTAINER_DATA_DIR,
        results_dir=CONTAINER_RESULTS_DIR,
        workdir=site.workdir,
        mounts="",
        binds=specs,
        build_sif=build,
    )


def train_command(cfg: ResolvedConfig) -> list[str]:
    """Each task's command: NVIDIA's run_and_time.sh, the reference workload, or the site's."""
    site = cfg.site
    if site.train_command:
        try:
            words = shlex.split(site.train_command)
        except ValueError as exc:
            raise UserError(
                f"train_command cannot be split into words: {exc}", where="site key 'train_command'"
            ) from None
        if not words:
            raise UserError("train_command is empty", where="site key 'train_command'")
        return words
    if site.workload == "reference":
        return [site.python, "-m", "hpcrepro.workload.train"]
    return ["./run_and_time.sh"]


def job_exports(cfg: ResolvedConfig, plan: ContainerPlan) -> list[tuple[str, str]]:
    """Every variable the job exports: NVIDIA's config, then hpcrepro's, then the site's."""
    spec = cfg.spec
    exports: dict[str, str] = {
        "DGXSYSTEM": spec.dgxsystem,
        "DGXNNODES": str(spec.nodes),
        "DGXNGPU": str(spec.gpus_per_node),
        "BATCHSIZE": str(spec.batch_per_gpu),
    }
    exports.update(spec.hparams.exports())
    exports.update(spec.env)
    exports.update(
        {
            "MLPERF_RULESET": spec.ruleset,
            "CLEAR_CACHES": "1" if cfg.site.drop_caches_command else "0",
            "CHECK_COMPLIANCE": "1" if cfg.site.check_compliance else "0",
            "NCCL_TEST": "1" if cfg.site.nccl_test else "0",
            "SLURM_MPI_TYPE": cfg.site.mpi,
            "HPCREPRO_SYSTEM": cfg.system,
            "HPCREPRO_VERSION": cfg.version,
            "HPCREPRO_DATA_DIR": plan.data_dir,
            "HPCREPRO_RESULTS_DIR": plan.results_dir,
            "HPCREPRO_PYTHON": cfg.site.python,
        }
    )
    if cfg.site.cluster_name:
        exports["MLPERF_CLUSTER_NAME"] = cfg.site.cluster_name
    exports.update(cfg.site.env)
    return [(check_env_name(name), value) for name, value in exports.items()]


def render_training(
    cfg: ResolvedConfig,
    *,
    job_name: str,
    run_indices: list[int],
    log_dir: Path | None = None,
    launcher: Launcher = "srun",
    output: str | None = None,
) -> str:
    """The training job: `len(run_indices)` runs, one log each at `<log_dir>/run-NN.log`."""
    if not run_indices or any(index < 1 for index in run_indices):
        raise ValueError("run indices are 1-based and at least one is needed")
    logs = Path(log_dir) if log_dir is not None else cfg.site.log_dir
    plan = container_plan(cfg, logs)
    spec = cfg.spec
    header = sbatch_header(
        cfg,
        job_name=job_name,
        nodes=spec.nodes,
        ntasks_per_node=spec.gpus_per_node,
        time_minutes=cfg.time_limit_minutes(len(run_indices)),
        output=output or str(logs / f"{job_name}-%j.out"),
        gpus=True,
    )
    return render_template(
        "train.sbatch.j2",
        header=ShellText(header),
        hpcrepro_version=__version__,
        system=cfg.system,
        version=cfg.version,
        spec=spec,
        site=cfg.site,
        provenance=ShellText(
            f"{spec.provenance}: {spec.derived_from or spec.source}".replace("\n", " ")
        ),
        exports=[(ShellText(name), value) for name, value in job_exports(cfg, plan)],
        plan=plan,
        launcher=launcher,
        log_dir=str(logs),
        run_indices=ShellText(" ".join(str(i) for i in run_indices)),
        run_count=len(run_indices),
        train_command=train_command(cfg),
        nvidia_workload=cfg.site.workload == "nvidia" and cfg.site.train_command is None,
        total_tasks=spec.nodes * spec.gpus_per_node,
    )
