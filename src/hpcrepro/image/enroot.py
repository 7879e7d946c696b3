"""Build with enroot alone: import the base, replay the Dockerfile's steps, export one .sqsh.

Every step runs in `enroot start --root --rw` on a container made from the base, with the build
context mounted read-only at /.hpcrepro-context (and the local wheels at /.hpcrepro-wheels); a
small rc file enters the step's WORKDIR and execs the step, so the base's entrypoint never runs
(Docker's RUN does not run it either). The image config goes where enroot and pyxis read it, as
`enroot import` writes it (enroot's src/docker.sh): the environment as `NAME=VALUE` lines in
/etc/environment, the working folder in the `mkdir -p`/`cd` lines of /etc/rc. enroot expands
`${NAME}` in /etc/environment at every start and strips surrounding quotes, so an ENV value that
would change on the way is refused. The container uses the site's enroot configuration
(ENROOT_DATA_PATH...) and is removed afterwards, also on failure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from hpcrepro.errors import UserError
from hpcrepro.image import dockerfile as df
from hpcrepro.image.replay import copy_script
from hpcrepro.image.requirements import WHEELS_MOUNT
from hpcrepro.image.spec import CONTEXT_MOUNT, BuildSpec, run_checked
from hpcrepro.shell import quote

BUILD_MOUNT = "/.hpcrepro-build"
STEP_RC = 'cd -- "$1" || exit 1\nshift\nexec "$@"\n'
_RC_WORD = r"""(?:"[^"\n]*"|'[^'\n]*'|\S+)"""
_RC_MKDIR = re.compile(rf"^mkdir -p {_RC_WORD} 2> /dev/null$", re.M)
_RC_CD = re.compile(rf"^cd ({_RC_WORD}) && unset OLDPWD \|\| exit 1$", re.M)
_INSTALL = "install enroot (https://github.com/NVIDIA/enroot) or choose another --builder"


def program() -> str:
    found = shutil.which("enroot")
    if found is None:
        raise UserError("the enroot builder needs `enroot`, which is not on PATH", hint=_INSTALL)
    return found


def base_import_command(enroot: str, source: str, target: Path) -> list[str]:
    """`enroot import` of a registry base; `source` in enroot's `[USER@][REGISTRY#]IMAGE`."""
    return [enroot, "import", "--output", str(target), f"docker://{source}"]


def mount_spec(host: Path, target: str, what: str) -> str:
    """`HOST:TARGET:x-create=dir,bind,ro` for `enroot start --mount` (no spaces or ':')."""
    text = str(host)
    if any(ch.isspace() for ch in text) or ":" in text:
        raise UserError(
            f"{what} {text} has a space or ':', which `enroot start --mount` cannot express",
            hint="use a path without them (a symlink to the folder works)",
        )
    return f"{text}:{target}:x-create=dir,bind,ro"


def start_command(
    enroot: str,
    spec: BuildSpec,
    container: str,
    rc: Path,
    workdir: str,
    argv: tuple[str, ...],
    env: tuple[tuple[str, str], ...] = (),
) -> list[str]:
    """One `enroot start` of a build step, as root, writable, with the context mounted."""
    command = [
        enroot,
        "start",
        "--root",
        "--rw",
        "--rc",
        str(rc),
        "--mount",
        mount_spec(spec.context, CONTEXT_MOUNT, "the code folder"),
        "--mount",
        mount_spec(spec.work / "files", BUILD_MOUNT, "the build folder"),
    ]
    if spec.wheels is not None:
        command += ["--mount", mount_spec(spec.wheels, WHEELS_MOUNT, "the wheels folder")]
    for name, value in env:
        if "\n" in value:
            raise UserError(
                f"ENV {name} holds a line break, which `enroot start --env` splits",
                where=str(spec.dockerfile),
            )
        command += ["--env", f"{name}={value}"]
    return [*command, container, workdir, *argv]


def step_commands(
    enroot: str, spec: BuildSpec, recipe: df.Recipe, container: str, rc: Path
) -> list[tuple[str, list[str]]]:
    """(what, command) for every Dockerfile step, in order: the enroot step list."""
    commands: list[tuple[str, list[str]]] = []
    for step in recipe.steps:
        if isinstance(step, df.MakeDir):
            what = f"Dockerfile line {step.line} (WORKDIR {step.path})"
            argv: tuple[str, ...] = ("mkdir", "-p", "--", step.path)
            commands.append((what, start_command(enroot, spec, container, rc, "/", argv)))
        elif isinstance(step, df.Copy):
            what = f"Dockerfile line {step.line} (COPY {' '.join(step.sources)} {step.dest})"
            argv = ("/bin/sh", "-c", copy_script(step, CONTEXT_MOUNT))
            commands.append((what, start_command(enroot, spec, container, rc, "/", argv)))
        else:
            what = f"Dockerfile line {step.line} (RUN {step.argv[-1][:80]})"
            commands.append(
                (
                    what,
                    start_command(enroot, spec, container, rc, step.workdir, step.argv, step.env),
                )
            )
    return commands


def environment_file(base: str, recipe: df.Recipe, where: str) -> str:
    """/etc/environment: the base's lines, with the Dockerfile's ENV replacing or appended."""
    out: list[str] = []
    seen: set[str] = set()
    for line in base.splitlines():
        name = line.partition("=")[0].strip()
        if name in recipe.env:
            if name not in seen:
                out.append(f"{name}={_env_value(name, recipe.env[name], where)}")
                seen.add(name)
            continue
        out.append(line)
    for name, value in recipe.env.items():
        if name not in seen:
            out.append(f"{name}={_env_value(name, value, where)}")
    return "\n".join(out) + "\n"


def _env_value(name: str, value: str, where: str) -> str:
    if (
        "\n" in value
        or "${" in value
        or (len(value) >= 2 and value[0] in "\"'" and value[-1] in "\"'")
    ):
        raise UserError(
            f"ENV {name}={value!r} would change in the image: enroot expands ${{...}}, strips "
            "surrounding quotes and reads one line per variable in /etc/environment",
            where=where,
            hint="write the value without them, or build with --builder podman",
        )
    return value


def rc_file(base: str | None, workdir: str | None) -> str | None:
    """/etc/rc with the Dockerfile's WORKDIR (None: leave the base's rc as it is)."""
    if workdir is None:
        return None
    mkdir_line = f"mkdir -p {quote(workdir)} 2> /dev/null"
    cd_line = f"cd {quote(workdir)} && unset OLDPWD || exit 1"
    if base is None or not base.strip():
        return (
            f"{mkdir_line}\n{cd_line}\n\n"
            "if [ -s /etc/rc.local ]; then\n    . /etc/rc.local\nfi\n\n"
            'if [ $# -gt 0 ]; then\n    exec "$@"\nelse\n    exec /bin/sh\nfi\n'
        )
    if not (_RC_MKDIR.search(base) and _RC_CD.search(base)):
        raise UserError(
            "the base image's /etc/rc has no working-folder lines as `enroot import` writes "
            "them, so the WORKDIR cannot be set",
            hint="use a base imported with `enroot import`, or build with --builder podman",
        )
    text = _RC_MKDIR.sub(lambda _: mkdir_line, base, count=1)
    return _RC_CD.sub(lambda _: cd_line, text, count=1)


def base_workdir(rc: str | None) -> str:
    """The base image's working folder, from its /etc/rc ('/' without one, as enroot does)."""
    import shlex

    match = _RC_CD.search(rc or "")
    if not match:
        return "/"
    words = shlex.split(match.group(1))
    return words[0] if words and words[0].startswith("/") else "/"


def build(spec: BuildSpec, partial: Path) -> None:
    """Make `partial` (.sqsh) from the spec; the container is removed whatever happens."""
    enroot = program()
    base = Path(spec.base)
    if not spec.base_is_file:
        base = spec.work / "base.sqsh"
        from hpcrepro.image.reference import pyxis_image

        run_checked(
            base_import_command(enroot, pyxis_image(spec.base), base),
            f"enroot import of the base {spec.base}",
            "check the registry name and your credentials (~/.config/enroot/.credentials)"
            ", or give a local copy of the base with --base FILE.sqsh",
        )
    container = spec.name
    files = spec.work / "files"
    files.mkdir(exist_ok=True)
    rc = spec.work / "step.rc"
    rc.write_text(STEP_RC)
    run_checked(
        [enroot, "create", "--name", container, str(base)],
        f"enroot create from {base}",
        "check that the base is a squashfs image",
    )
    try:
        _replay(enroot, spec, container, rc, files)
        run_checked(
            [enroot, "export", "--output", str(partial), container],
            "enroot export",
            "check the free space in the image cache folder",
        )
    finally:
        subprocess.run([enroot, "remove", "--force", container], capture_output=True)


def _read(enroot: str, spec: BuildSpec, container: str, rc: Path, path: str) -> str | None:
    result = subprocess.run(
        [enroot, "start", "--root", "--rc", str(rc), container, "/", "cat", path],
        capture_output=True,
        text=True,
    )
    return result.stdout if result.returncode == 0 else None


def _replay(enroot: str, spec: BuildSpec, container: str, rc: Path, files: Path) -> None:
    base_env = _read(enroot, spec, container, rc, "/etc/environment") or ""
    base_rc = _read(enroot, spec, container, rc, "/etc/rc")
    env = {}
    for line in base_env.splitlines():
        name, sep, value = line.partition("=")
        if sep and df._NAME.fullmatch(name.strip()):
            env[name.strip()] = value
    where = str(spec.dockerfile)
    recipe = df.recipe(
        spec.dockerfile_text,
        where,
        build_args=spec.build_args,
        context=spec.context,
        base_env=env,
        base_workdir=base_workdir(base_rc),
    )
    hint = "fix that step (the output above says why), or give your own Dockerfile (--dockerfile)"
    steps = step_commands(enroot, spec, recipe, container, rc)
    for index, (what, command) in enumerate(steps, 1):
        if spec.on_step is not None:
            spec.on_step(index, len(steps), what)
        run_checked(command, what, hint)
    (files / "environment").write_text(environment_file(base_env, recipe, where))
    script = [f"cp -- {BUILD_MOUNT}/environment /etc/environment"]
    new_rc = rc_file(base_rc, recipe.workdir)
    if new_rc is not None:
        (files / "rc").write_text(new_rc)
        script.append(f"cp -- {BUILD_MOUNT}/rc /etc/rc")
        if base_rc is None:
            script.append("printf '# sourced by /etc/rc\\n' > /etc/rc.local")
    run_checked(
        start_command(enroot, spec, container, rc, "/", ("/bin/sh", "-c", " && ".join(script))),
        "writing the image's ENV and WORKDIR",
        hint,
    )
    mounts = [CONTEXT_MOUNT, BUILD_MOUNT] + ([WHEELS_MOUNT] if spec.wheels else [])
    run_checked(
        [
            enroot,
            "start",
            "--root",
            "--rw",
            "--rc",
            str(rc),
            container,
            "/",
            "rmdir",
            "--",
            *mounts,
        ],
        "removing the build's mount points",
        hint,
    )
