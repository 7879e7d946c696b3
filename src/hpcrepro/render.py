"""Render the training job script from the resolved configuration (pure: config in, text out).

Through the strict template environment of `hpcrepro.templating`: no template can put an
unquoted user value on a shell line.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hpcrepro import __version__, preflight, slurm_args
from hpcrepro.config import ResolvedConfig
from hpcrepro.errors import UserError
from hpcrepro.image.reference import apptainer_image, image_file, pyxis_image
from hpcrepro.nvidia_launch import LaunchProfile, profile_for
from hpcrepro.shell import check_env_name
from hpcrepro.site import Mount, Site
from hpcrepro.templating import ShellText, render_template, sbatch_literal

Launcher = Literal["srun", "local"]
CONTAINER_DATA_DIR = "/data"
CONTAINER_RESULTS_DIR = "/results"


# --- Pieces shared by every stage script ---------------------------------------------------


# Options that size or name one job. Every stage sets these for itself, so the site's values
# reach the training jobs only (where sbatch lets a later option win over hpcrepro's), never the
# one-task helper stages (image import, prep, collect): those keep their own time and ask for no
# GPUs. Scheduling policy (partition, account, qos, reservation, constraint, mail, comment,
# licenses...) reaches every stage.
_PER_JOB = frozenset(
    [
        "nodes", "ntasks", "ntasks-per-node", "ntasks-per-socket", "ntasks-per-core",
        "ntasks-per-gpu", "cpus-per-task", "cpus-per-gpu", "gpus", "gpus-per-node",
        "gpus-per-task", "gpus-per-socket", "gres", "gres-flags", "gpu-bind", "gpu-freq",
        "tres-per-task", "tres-bind", "mem", "mem-per-cpu", "mem-per-gpu", "mem-bind", "tmp",
        "time", "time-min", "exclusive", "oversubscribe", "nodelist", "switches", "network",
        "distribution", "sockets-per-node", "cores-per-socket", "threads-per-core",
        "extra-node-info", "spread-job", "use-min-nodes", "contiguous", "core-spec",
        "thread-spec", "segment", "array", "dependency", "job-name", "output", "error", "input",
    ]
)  # fmt: skip


def is_per_job_option(option: str) -> bool:
    """Whether a (checked) site sbatch option sizes or names the job (see `_PER_JOB`), read as
    sbatch reads it: `--gpus-per-n=8` is --gpus-per-node, `-N2` is --nodes."""
    return any(name in _PER_JOB for name, _ in slurm_args.options_of(slurm_args.SBATCH, option))


def sbatch_output(output: str) -> str:
    """An --output value: the folder is taken literally, the file name keeps its % patterns.

    hpcrepro names the file itself (e.g. 'train-%j.out'); the folder comes from the site
    (log_dir) and may hold a '%' that sbatch must not expand.
    """
    folder, sep, name = output.rpartition("/")
    return sbatch_literal(folder) + sep + name


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
    """The `#SBATCH` options of a campaign or render job, site settings included (each is one
    token). `gpus=False` marks a helper stage (image, prep, collect); `gpus=True` a training
    job, with the system's GPUs and network (see `job_options`)."""
    return job_options(
        cfg.site,
        job_name=job_name,
        nodes=nodes,
        ntasks_per_node=ntasks_per_node,
        time_minutes=time_minutes,
        output=output,
        gpus_per_node=cfg.spec.gpus_per_node if gpus else 0,
        network=cfg.spec.sbatch_network if gpus else None,
        training=gpus,
    )


def job_options(
    site: Site,
    *,
    job_name: str,
    nodes: int,
    ntasks_per_node: int,
    time_minutes: int,
    output: str,
    gpus_per_node: int = 0,
    network: str | None = None,
    training: bool = False,
) -> list[str]:
    """The `#SBATCH` options of any job hpcrepro writes (each is one token): the one place where
    site settings become Slurm options, for the training jobs, the helper stages and detect's
    node job alike.

    Every job gets the site's scheduling options; a job that is not `training` gets none of the
    site's per-job resource options (`is_per_job_option`). A training job also starts from the
    user's login environment, not the submitting shell's (`--export=NONE`), and is never
    requeued: a requeued run restarts its log and is void. `gpus_per_node` > 0 asks for that
    many GPUs the way the site says (`gpu_request`).
    """
    site_args = slurm_args.check(slurm_args.SBATCH, site.sbatch_args)
    options = [
        f"--job-name={job_name}",
        f"--nodes={nodes}",
        f"--ntasks-per-node={ntasks_per_node}",
        f"--time={time_minutes}",
        f"--output={sbatch_output(output)}",
    ]
    if training:
        options += ["--export=NONE", "--no-requeue"]
    for key in ("partition", "account", "qos", "reservation", "constraint"):
        value = getattr(site, key)
        if value:
            options.append(f"--{key}={value}")
    if site.exclusive:
        options.append("--exclusive")
    if gpus_per_node and site.gpu_request == "gpus-per-node":
        options.append(f"--gpus-per-node={gpus_per_node}")
    elif gpus_per_node and site.gpu_request == "gres":
        options.append(f"--gres=gpu:{gpus_per_node}")
    site_network = slurm_args.sets_option(slurm_args.SBATCH, site_args, "network")
    if network and not site_network:  # the site's own --network wins
        options.append(f"--network={network}")
    options.extend(arg for arg in site_args if training or not is_per_job_option(arg))
    return [sbatch_token(option) for option in options]


def sbatch_token(option: str) -> str:
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


def _check_mount_path(path: Path | str, key: str) -> str:
    """One side of a bind: absolute, and free of the ',' and ':' that separate binds and sides."""
    text = str(path)
    if not text.startswith("/"):
        raise UserError(
            f"'{text}' is not an absolute path, which container mounts need",
            where=f"site key '{key}'",
            hint="write the full path, starting with '/'",
        )
    if "," in text or ":" in text or "\n" in text:
        raise UserError(
            f"{text!r} contains ',', ':' or a line break, which container mounts cannot express",
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
    # The data set is mounted read-only: no task may change what every run reads.
    binds = [
        Mount.model_construct(source=Path(data), target=CONTAINER_DATA_DIR, read_only=True),
        Mount.model_construct(source=Path(logs), target=CONTAINER_RESULTS_DIR, read_only=False),
    ]
    for mount in site.mounts:  # the site checked them; this also refuses line breaks
        _check_mount_path(mount.source, "mounts")
        _check_mount_path(mount.target, "mounts")
        binds.append(mount)
    specs = [mount.spec() for mount in binds]  # the one mount formatter: site.Mount.spec
    is_file = site.image_kind() == "file"
    if site.runtime == "pyxis":
        image = pyxis_image(site.image)  # refuses a .sif and registries enroot cannot pull
        return ContainerPlan(
            runtime="pyxis",
            image=image_file(site.image) if is_file else image,
            data_dir=CONTAINER_DATA_DIR,
            results_dir=CONTAINER_RESULTS_DIR,
            workdir=site.workdir,
            mounts=",".join(specs),
            binds=[],
            build_sif="",
        )
    image = image_file(site.image) if is_file else apptainer_image(site.image)
    build = ""
    if not is_file:
        from hpcrepro.image.cache import registry_cache_file

        build, image = image, str(registry_cache_file(site, image))
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


def launch_profile(cfg: ResolvedConfig) -> LaunchProfile:
    """NVIDIA's launch of the entry's implementation folder (`hpcrepro.nvidia_launch`)."""
    return profile_for(cfg.version, cfg.spec.implementation, cfg.spec.dgxsystem)


def runs_nvidia_code(cfg: ResolvedConfig) -> bool:
    """Whether each task runs NVIDIA's run_and_time.sh (not the reference workload or a site's
    own command), so the job logs through the image's mlperf_log_utils."""
    return cfg.site.workload == "nvidia" and cfg.site.train_command is None


def nccl_test(cfg: ResolvedConfig) -> bool:
    """The site's choice, else NVIDIA's default of the round (NVIDIA's code only); a bandwidth
    threshold (`preflight.min_busbw_gbps`) turns it on."""
    if cfg.site.nccl_test is not None:
        return cfg.site.nccl_test
    if cfg.site.preflight.min_busbw_gbps is not None:
        return True
    return runs_nvidia_code(cfg) and launch_profile(cfg).nccl_test


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
    return [launch_profile(cfg).run_script]


def job_exports(cfg: ResolvedConfig, plan: ContainerPlan) -> list[tuple[str, str]]:
    """Every variable the job exports: NVIDIA's config, then hpcrepro's, then the site's (which
    may not set any name of the first two: `config.check_site_env`)."""
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
            "NCCL_TEST": "1" if nccl_test(cfg) else "0",
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
    exports.update(cfg.site.submission.exports())
    exports.update(cfg.site.env)
    return [(_export_name(name), value) for name, value in exports.items()]


def _export_name(name: str) -> str:
    """`check_env_name`, also refusing the trailing line break its pattern lets through."""
    if "\n" in name:
        raise UserError(
            f"{name!r} is not a valid environment variable name (it holds a line break)",
            where="site key 'env'",
            hint="use letters, digits and underscores, not starting with a digit",
        )
    return check_env_name(name)


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
    slurm_args.check(slurm_args.SRUN, cfg.site.srun_args)
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
        nvidia_workload=runs_nvidia_code(cfg),
        launch=launch_profile(cfg),
        implementation=spec.implementation,
        nccl_test=nccl_test(cfg),
        preflight=preflight.plan(cfg, nccl_test(cfg)),
        preflight_exit=preflight.EXIT_CODE,
        checker_python=sys.executable,
        total_tasks=spec.nodes * spec.gpus_per_node,
    )
