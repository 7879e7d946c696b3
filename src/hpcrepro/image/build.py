"""One image build: what it is made of (the key), where it goes, the lock, the temp-and-rename.

The key names everything that changes the result: the base image, NVIDIA's code (repository,
commit, folder and the hash of its manifest), the Dockerfile (NVIDIA's, or the site's own), the
mlperf-common pin and the local wheels, the output format, and this module's RECIPE version
(bumped when a builder changes what it makes). It is computed from the shipped manifest, so
`submit` knows the cache file before any code is fetched. A build holds `<file>.lock` (flock: the
kernel drops it when a build dies), works in a hidden folder beside the target and renames the
finished file into place last, so an interrupted build leaves nothing that looks finished; a
second build of the same key waits for the lock and then reuses the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpcrepro.errors import UserError
from hpcrepro.image import cache
from hpcrepro.image.published import CodeLocation, locate
from hpcrepro.image.spec import BuildSpec, Format
from hpcrepro.progress import Steps
from hpcrepro.safeopen import replace_file

if TYPE_CHECKING:
    from hpcrepro.site import Site

RECIPE = 1
BUILDERS = ("enroot", "apptainer", "podman", "docker")
# The default builder: the first one found, in this order, for each output format.
DEFAULT_ORDER: dict[str, tuple[str, ...]] = {
    "sqsh": ("enroot", "podman", "docker"),
    "sif": ("apptainer", "podman", "docker"),
}
FORMAT_OF = {"pyxis": "sqsh", "apptainer": "sif"}
_WORK_PREFIX = ".hpcrepro-build-"


@dataclass(frozen=True)
class Request:
    """What the user asked for; paths absolute."""

    system: str
    version: str
    implementation: str
    source: str  # the catalog entry's `source`: names the submitter folder
    container_base: str
    output_format: Format
    builder: str = "auto"
    code: Path | None = None
    base: str | None = None
    dockerfile: Path | None = None
    wheels: Path | None = None


@dataclass(frozen=True)
class Plan:
    """A request with its code location, base and key worked out."""

    request: Request
    location: CodeLocation
    base: str
    base_is_file: bool
    identity: str  # JSON text; its hash names the cache file
    label: str

    @property
    def key(self) -> str:
        return hashlib.sha256(self.identity.encode()).hexdigest()

    def file_name(self) -> str:
        return cache.file_name(self.label, self.identity, self.suffix)

    def cache_file(self, site: Site) -> Path:
        """Where this image is kept in the site's image cache (`hpcrepro.image.cache`)."""
        return cache.cache_file(site, self.label, self.identity, self.suffix)

    @property
    def suffix(self) -> str:
        return f".{self.request.output_format}"


def _base(request: Request) -> tuple[str, bool]:
    from hpcrepro.site import image_is_file

    base = request.base or request.container_base
    if image_is_file(base):
        path = Path(base).expanduser().absolute()
        if not path.exists():
            raise UserError(f"base image {path} does not exist", where="--base")
        return str(path), True
    return base, False


def plan(request: Request) -> Plan:
    """The code location and the key, without touching the code or any builder."""
    from hpcrepro.image.code import file_sha256
    from hpcrepro.image.requirements import candidate_digest

    location = locate(request.version, request.implementation, request.source)
    base, base_is_file = _base(request)
    if request.dockerfile is not None:
        if not request.dockerfile.is_file():
            raise UserError(f"{request.dockerfile} is not a file", where="--dockerfile")
        dockerfile = f"site {file_sha256(request.dockerfile)}"
    elif "Dockerfile" in location.files:
        dockerfile = f"nvidia {location.files['Dockerfile'].sha256}"
    else:
        raise UserError(
            f"{location.label} has no Dockerfile (NVIDIA published only a README there)",
            hint="use the catalog entry whose implementation folder holds the code, or give "
            "your own Dockerfile with --dockerfile",
        )
    identity = json.dumps(
        {
            "recipe": RECIPE,
            "format": request.output_format,
            "base": base if not base_is_file else f"file {file_sha256(Path(base))}",
            "code": location.label,
            "tree": location.tree_digest(),
            "dockerfile": dockerfile,
            "mlperf_common": location.mlperf_common,
            "wheels": candidate_digest(request.wheels) if request.wheels else None,
        },
        sort_keys=True,
    )
    label = f"nvidia-resnet-{location.round}-{request.implementation}"
    return Plan(request, location, base, base_is_file, identity, label)


def choose_builder(requested: str, output_format: Format) -> str:
    """The builder asked for, or the first available one in DEFAULT_ORDER."""
    if requested != "auto":
        if requested not in BUILDERS:
            raise UserError(
                f"unknown builder '{requested}'",
                where="--builder",
                hint=f"choose one of: auto, {', '.join(BUILDERS)}",
            )
        if requested == "apptainer" and output_format == "sqsh":
            raise UserError(
                "the apptainer builder makes .sif files, not .sqsh",
                where="--builder",
                hint="use enroot or podman for pyxis",
            )
        if requested == "enroot" and output_format == "sif":
            raise UserError(
                "the enroot builder makes .sqsh files, not .sif",
                where="--builder",
                hint="use apptainer or podman for Apptainer",
            )
        return requested
    for name in DEFAULT_ORDER[output_format]:
        if shutil.which(name):
            return name
    wanted = " or ".join(DEFAULT_ORDER[output_format])
    raise UserError(
        f"no image builder found on this node: a .{output_format} needs {wanted}",
        hint="install enroot (https://github.com/NVIDIA/enroot) for pyxis or Apptainer for "
        ".sif files, or podman (apt-get install podman), or build on a node that has one "
        "(the campaign's image stage runs on a compute node)",
    )


def metadata(built: Plan, builder: str) -> dict[str, object]:
    request = built.request
    return {
        "hpcrepro_image": 1,
        "system": request.system,
        "version": request.version,
        "code": built.location.label,
        "base": built.base,
        "container_base": request.container_base,
        "builder": builder,
        "format": request.output_format,
        "key": built.key,
        "identity": json.loads(built.identity),
    }


def read_metadata(image: Path) -> dict[str, object] | None:
    """The `<image>.json` written beside a built image, or None."""
    try:
        data = json.loads(Path(f"{image}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("hpcrepro_image") == 1 else None


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    try:
        handle = open(lock_path, "a")  # noqa: SIM115 - held for the whole build
    except OSError as error:
        raise UserError(
            f"cannot create {lock_path} ({error.strerror})",
            hint="set image_cache_dir (or -o) to a folder you can write",
        ) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"hpcrepro: another build of this image holds {lock_path}; waiting for it",
                file=sys.stderr,
                flush=True,
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
                raise UserError(
                    f"the file system of {lock_path} does not support locks ({error.strerror})",
                    hint="put image_cache_dir on a file system with flock (Lustre: mount "
                    "with -o flock), or build into a local folder with -o",
                ) from None
            raise
        yield
    finally:
        handle.close()


def _check_target(target: Path, built: Plan) -> bool:
    """True when `target` is already this build; UserError when it is something else."""
    if not target.exists():
        return False
    data = read_metadata(target)
    if target.is_file() and data is not None and data.get("key") == built.key:
        return True
    raise UserError(
        f"{target} exists and is not this build"
        + (" (built from another recipe)" if data else " (no hpcrepro build record beside it)"),
        where="--output",
        hint="remove it, or choose another -o",
    )


def build(built: Plan, target: Path) -> tuple[Path, bool]:
    """Build into `target` unless it is there already; (target, built_now)."""
    from hpcrepro.image.code import verify_tree

    request = built.request
    builder = choose_builder(request.builder, request.output_format)
    target.parent.mkdir(parents=True, exist_ok=True)
    if _check_target(target, built):
        return target, False
    with _locked(Path(f"{target}.lock")):
        if _check_target(target, built):
            return target, False
        for stale in target.parent.glob(f"{_WORK_PREFIX}{target.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)  # a build that died while holding the lock
        work = target.parent / f"{_WORK_PREFIX}{target.name}.{socket.gethostname()}.{os.getpid()}"
        work.mkdir()
        steps = Steps(4)
        try:
            if request.code is not None:
                code = request.code
                steps.step(f"checking {code} against {built.location.label}")
                verify_tree(code, built.location.files, built.location.label, "--code")
            else:
                from hpcrepro.image.code import fetch

                steps.step(f"fetching {built.location.label}")
                code = fetch(built.location, work)
            steps.step("staging the code and resolving its requirements")
            spec = _spec(built, code, work, steps.sub)
            partial = work / f"image.{request.output_format}"
            steps.step(f"building {target.name} with {builder} from {built.base}")
            _run_builder(builder, spec, partial)
            if not partial.is_file() or partial.stat().st_size == 0:
                raise UserError(f"the {builder} build wrote no image", hint="see its output above")
            steps.step(f"recording the build beside {target.name}")
            record = json.dumps(metadata(built, builder), indent=1) + "\n"
            replace_file(Path(f"{target}.json"), record.encode(), staging=work)
            os.replace(partial, target)  # last: only now does the image look finished
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target, True


def _spec(
    built: Plan, code: Path, work: Path, on_step: Callable[[int, int, str], None] | None = None
) -> BuildSpec:
    from hpcrepro.image.code import stage as stage_code
    from hpcrepro.image.requirements import resolve

    request = built.request
    context = stage_code(code, built.location, work / "context")
    wheels_dir: Path | None = None
    requirements = context / "requirements.txt"
    if requirements.is_file():
        resolved = resolve(
            requirements.read_text(),
            f"{built.location.label}/requirements.txt",
            built.location.mlperf_common,
            request.wheels,
        )
        for note in resolved.notes:
            print(f"hpcrepro: {note}", file=sys.stderr)
        if resolved.changed:
            requirements.chmod(0o644)
            requirements.write_text(resolved.text)
        if resolved.local:
            wheels_dir = work / "wheels"
            wheels_dir.mkdir()
            for source in resolved.local:
                if source.is_dir():
                    shutil.copytree(
                        source,
                        wheels_dir / source.name,
                        symlinks=False,
                        ignore=shutil.ignore_patterns(".git"),
                    )
                else:
                    shutil.copy2(source, wheels_dir / source.name)
    dockerfile = request.dockerfile or context / "Dockerfile"
    return BuildSpec(
        context=context,
        dockerfile=dockerfile,
        dockerfile_text=dockerfile.read_text(),
        base=built.base,
        base_is_file=built.base_is_file,
        build_args={"FROM_IMAGE_NAME": built.base},
        wheels=wheels_dir,
        output_format=request.output_format,
        work=work,
        name=f"hpcrepro-build-{os.getpid()}-{built.key[:10]}",
        on_step=on_step,
    )


def _run_builder(builder: str, spec: BuildSpec, partial: Path) -> None:
    if builder == "enroot":
        from hpcrepro.image import enroot

        enroot.build(spec, partial)
    elif builder == "apptainer":
        from hpcrepro.image import apptainer

        apptainer.build(spec, partial)
    else:
        from hpcrepro.image import podman

        podman.build(spec, partial, builder)


def request_for(
    system: str,
    version: str,
    entry: object,
    site: object | None,
    *,
    output_format: str | None = None,
    builder: str | None = None,
    code: Path | None = None,
    base: str | None = None,
    dockerfile: Path | None = None,
    wheels: Path | None = None,
) -> Request:
    """A request from a catalog entry, the site's image_* keys and the command line (which
    wins). `entry` is a `SystemVersion`, `site` a `Site` or None."""
    from hpcrepro.catalog import SystemVersion
    from hpcrepro.site import Site

    assert isinstance(entry, SystemVersion)
    assert site is None or isinstance(site, Site)
    runtime = site.runtime if site is not None else "pyxis"
    fmt = output_format or FORMAT_OF.get(runtime, "sqsh")
    if fmt not in ("sqsh", "sif"):
        raise UserError(f"format '{fmt}' is not sqsh or sif", where="--format")
    return Request(
        system=system,
        version=version,
        implementation=entry.implementation,
        source=entry.source,
        container_base=entry.container_base,
        output_format=fmt,  # type: ignore[arg-type]
        builder=builder or (site.image_builder if site is not None else "auto"),
        code=_absolute(code) or (site.image_code_dir if site is not None else None),
        base=base or (site.image_base if site is not None else None),
        dockerfile=_absolute(dockerfile) or (site.image_dockerfile if site is not None else None),
        wheels=_absolute(wheels) or (site.image_wheels_dir if site is not None else None),
    )


def _absolute(path: Path | None) -> Path | None:
    return Path(path).expanduser().absolute() if path is not None else None


def planned_file(cfg: object) -> Path:
    """Where the campaign's image stage builds NVIDIA's image for `cfg` (a ResolvedConfig)."""
    from hpcrepro.config import ResolvedConfig

    assert isinstance(cfg, ResolvedConfig)
    request = request_for(cfg.system, cfg.version, cfg.spec, cfg.site)
    return plan(request).cache_file(cfg.site)
