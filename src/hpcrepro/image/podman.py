"""Build with podman (or docker) from the Dockerfile itself, then import into enroot or Apptainer.

`podman build --isolation=chroot`: with podman's default OCI runtime, RUN steps fail on hosts
with hybrid cgroups ("cgroups in hybrid mode not supported"); chroot isolation runs them on any
host podman runs on. NVIDIA's Dockerfiles take the base as `--build-arg FROM_IMAGE_NAME=...`.
The local wheels reach the RUN steps as a read-only `--volume` (docker build has no volumes:
with docker the wheels folder is refused). The result goes to enroot with `enroot import
podman://` (enroot's cleanup calls `docker rm` whatever the engine, so `docker` resolves to
podman on its PATH) or to Apptainer through a docker-archive.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from hpcrepro.errors import UserError
from hpcrepro.image.requirements import WHEELS_MOUNT
from hpcrepro.image.spec import BuildSpec, run_checked

_HINT = {
    "podman": "install podman (Debian/Ubuntu: apt-get install podman) or choose another --builder",
    "docker": "install docker and start its daemon, or choose another --builder",
}


def program(engine: str) -> str:
    found = shutil.which(engine)
    if found is None:
        raise UserError(
            f"the {engine} builder needs `{engine}`, which is not on PATH", hint=_HINT[engine]
        )
    return found


def build_command(engine: str, program_path: str, spec: BuildSpec, tag: str) -> list[str]:
    """`podman build` (or `docker build`) of the staged context with NVIDIA's build argument."""
    command = [program_path, "build", "--file", str(spec.dockerfile), "--tag", tag]
    if engine == "podman":
        command.append("--isolation=chroot")
    for name, value in spec.build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    if spec.wheels is not None:
        if engine == "docker":
            raise UserError(
                "docker build cannot mount the wheels folder into RUN steps",
                hint="build with --builder podman or enroot, or on a node that reaches GitHub "
                "without --wheels",
            )
        command += ["--volume", f"{spec.wheels}:{WHEELS_MOUNT}:ro"]
    return [*command, str(spec.context)]


def import_commands(
    engine: str, program_path: str, spec: BuildSpec, tag: str, partial: Path
) -> list[list[str]]:
    """The commands turning the built image into `partial` (.sqsh through enroot, .sif through
    Apptainer)."""
    if spec.output_format == "sqsh":
        enroot = shutil.which("enroot")
        if enroot is None:
            raise UserError(
                f"turning the {engine} image into a .sqsh needs `enroot`",
                hint="install enroot, or build a .sif for Apptainer",
            )
        scheme = "podman" if engine == "podman" else "dockerd"
        return [[enroot, "import", "--output", str(partial), f"{scheme}://{tag}"]]
    apptainer = shutil.which("apptainer")
    if apptainer is None:
        raise UserError(
            f"turning the {engine} image into a .sif needs `apptainer`",
            hint="install Apptainer, or build a .sqsh for enroot",
        )
    archive = spec.work / "image.tar"
    return [
        [program_path, "save", "--format", "docker-archive", "--output", str(archive), tag]
        if engine == "podman"
        else [program_path, "save", "--output", str(archive), tag],
        [apptainer, "build", str(partial), f"docker-archive:{archive}"],
    ]


def _enroot_env(engine: str, program_path: str, spec: BuildSpec) -> dict[str, str]:
    """PATH for `enroot import podman://`: its cleanup runs `docker rm`, so docker is podman."""
    env = os.environ.copy()
    if engine == "podman":
        shim = spec.work / "bin"
        shim.mkdir(exist_ok=True)
        link = shim / "docker"
        if not link.exists():
            link.symlink_to(program_path)
        env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    return env


def build(spec: BuildSpec, partial: Path, engine: str) -> None:
    """Make `partial` from the spec with podman or docker; the local image is removed after."""
    if spec.base_is_file:
        raise UserError(
            f"the {engine} builder takes the base from a registry or its own image store, not "
            f"the file {spec.base}",
            hint=f"load it first (`{engine} load` / `{engine} import`) and give its name with "
            "--base, or build with --builder enroot",
        )
    program_path = program(engine)
    tag = f"localhost/{spec.name}:latest"
    imports = import_commands(engine, program_path, spec, tag, partial)
    try:
        run_checked(
            build_command(engine, program_path, spec, tag),
            f"{engine} build",
            "fix the failing step (the output above says why), or give your own "
            "Dockerfile (--dockerfile)",
        )
        if spec.output_format == "sqsh":
            _check_runnable(program_path, tag, engine)
        env = _enroot_env(engine, program_path, spec)
        for command in imports:
            run_checked(
                command,
                f"{Path(command[0]).name} {command[1]} of the built image",
                "check the free space in the image cache folder",
                env=env,
            )
    finally:
        subprocess.run([program_path, "rmi", "--force", tag], capture_output=True)


def _check_runnable(program_path: str, tag: str, engine: str) -> None:
    """enroot imports through `podman create`, which needs a CMD or ENTRYPOINT (NGC bases have
    one; a base made with `podman import` may not)."""
    out = run_checked(
        [
            program_path,
            "image",
            "inspect",
            "--format",
            "{{.Config.Cmd}}{{.Config.Entrypoint}}",
            tag,
        ],
        f"{engine} image inspect",
        "check the built image",
        capture=True,
    )
    if out.strip() in ("", "[][]", "<nil><nil>", "[]<nil>", "<nil>[]"):
        raise UserError(
            "the built image has neither CMD nor ENTRYPOINT, which `enroot import` needs",
            hint="use a base that has one (every NGC image does), e.g. "
            f"`{engine} import --change 'CMD [\"/bin/bash\"]' ...` for a hand-made base",
        )
