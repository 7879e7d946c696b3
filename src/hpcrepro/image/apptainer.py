"""Build with Apptainer: NVIDIA's Dockerfile translated into a definition file, one `.sif`.

Apptainer copies `%files` before `%post`, while the Dockerfile interleaves COPY and RUN. To keep
Docker's order exactly, `%files` only places the build context (and the local wheels) in
/.hpcrepro-context; `%post` then replays every step in order (WORKDIR's mkdir, COPY's cp, RUN in
its WORKDIR with the ENV and ARG values of that point) and removes the staging folders at the
end. ENV becomes `%environment`, LABEL `%labels`; the WORKDIR is a label too (Apptainer ignores
an image's working folder: the job passes `--pwd`). Apptainer cannot be installed on the
project's test machine: the tests run these definitions through a strict stand-in.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hpcrepro.errors import UserError
from hpcrepro.image import dockerfile as df
from hpcrepro.image.replay import command_line, copy_script
from hpcrepro.image.requirements import WHEELS_MOUNT
from hpcrepro.image.spec import CONTEXT_MOUNT, BuildSpec, run_checked
from hpcrepro.shell import quote

WORKDIR_LABEL = "org.hpcrepro.workdir"
DOCKER_ENV = "/.singularity.d/env/10-docker2singularity.sh"


def program() -> str:
    found = shutil.which("apptainer")
    if found is None:
        raise UserError(
            "the apptainer builder needs `apptainer`, which is not on PATH",
            hint="install Apptainer (https://apptainer.org/docs/admin/main/installation.html) "
            "or choose another --builder",
        )
    return found


def bootstrap(base: str, base_is_file: bool) -> tuple[str, str]:
    """(Bootstrap, From) of the base: a registry image, a .sif or a sandbox folder."""
    if not base_is_file:
        from hpcrepro.image.reference import apptainer_image

        uri = apptainer_image(base)
        if not uri.startswith("docker://"):
            raise UserError(
                f"base {base}: only docker:// registries are bootstrapped here",
                where="--base",
                hint="give a docker:// image or a local .sif",
            )
        return "docker", uri.removeprefix("docker://")
    path = str(Path(base).expanduser().absolute())
    if not (path.endswith(".sif") or Path(path).is_dir()):
        raise UserError(
            f"base {base}: Apptainer bootstraps a local .sif file or sandbox folder",
            where="--base",
            hint="convert it first (`apptainer build base.sif docker-archive:base.tar`), or "
            "give the registry image",
        )
    return "localimage", path


def _files_path(path: Path, what: str) -> str:
    text = str(path)
    if any(ch.isspace() for ch in text):
        raise UserError(
            f"{what} {text} has white space, which a %files line cannot hold",
            hint="use a path without spaces (a symlink to the folder works)",
        )
    return text


def definition(spec: BuildSpec, recipe: df.Recipe) -> str:
    """The definition file text for `recipe`, staged from `spec.context`."""
    kind, source = bootstrap(spec.base, spec.base_is_file)
    lines = [f"Bootstrap: {kind}", f"From: {source}", "", "%files"]
    lines.append(f"    {_files_path(spec.context, 'the code folder')} {CONTEXT_MOUNT}")
    if spec.wheels is not None:
        lines.append(f"    {_files_path(spec.wheels, 'the wheels folder')} {WHEELS_MOUNT}")
    lines += ["", "%post", "    set -e", f"    if [ -f {DOCKER_ENV} ]; then . {DOCKER_ENV}; fi"]
    for step in recipe.steps:
        lines.append("")
        if isinstance(step, df.MakeDir):
            lines.append(f"    # Dockerfile line {step.line}: WORKDIR {step.path}")
            lines.append(f"    mkdir -p -- {quote(step.path)}")
        elif isinstance(step, df.Copy):
            lines.append(
                f"    # Dockerfile line {step.line}: COPY {' '.join(step.sources)} {step.dest}"
            )
            script = copy_script(step, CONTEXT_MOUNT)
            lines.append(f"    /bin/sh -c {quote(script)}")
        else:
            lines.append(f"    # Dockerfile line {step.line}: RUN")
            env = " ".join(quote(f"{name}={value}") for name, value in step.env)
            run = command_line(step.argv)
            lines.append(
                f"    ( cd -- {quote(step.workdir)} && exec env {env + ' ' if env else ''}"
                f"{run} ) || {{ echo 'hpcrepro: Dockerfile line {step.line} failed' >&2; "
                "exit 1; }"
            )
    staged = [CONTEXT_MOUNT] + ([WHEELS_MOUNT] if spec.wheels is not None else [])
    lines += ["", f"    rm -rf -- {' '.join(staged)}", "", "%environment"]
    for name, value in recipe.env.items():
        lines.append(f"    export {name}={quote(value)}")
    labels = dict(recipe.labels)
    if recipe.workdir:
        labels[WORKDIR_LABEL] = recipe.workdir
    if labels:
        lines += ["", "%labels"]
        for name, value in labels.items():
            if any(ch.isspace() for ch in name) or "\n" in value:
                raise UserError(
                    f"LABEL {name!r} cannot be written as a %labels line",
                    where=str(spec.dockerfile),
                )
            lines.append(f"    {name} {value}")
    return "\n".join(lines) + "\n"


def build_command(apptainer: str, definition_file: Path, partial: Path) -> list[str]:
    """`apptainer build [--fakeroot] OUT.sif DEF` (--fakeroot unless run as root)."""
    command = [apptainer, "build"]
    if os.geteuid() != 0:
        command.append("--fakeroot")
    return [*command, str(partial), str(definition_file)]


def build(spec: BuildSpec, partial: Path) -> None:
    apptainer = program()
    recipe = df.recipe(
        spec.dockerfile_text,
        str(spec.dockerfile),
        build_args=spec.build_args,
        context=spec.context,
        builder="apptainer",
    )
    definition_file = spec.work / "image.def"
    definition_file.write_text(definition(spec, recipe))
    run_checked(
        build_command(apptainer, definition_file, partial),
        "apptainer build",
        f"the definition file is {definition_file}; fix the failing step (the output "
        "above says why), or give your own Dockerfile (--dockerfile)",
    )
