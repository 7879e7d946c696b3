"""Every round's real Dockerfile, read in place, through each builder's translation.

enroot: the `enroot start` step list; Apptainer: the definition file, checked by the strict
stand-in (header, %files sources, `sh -n` of %post/%environment); podman: the build command.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NVIDIA_CODE, require_shared
from hpcrepro.errors import UserError
from hpcrepro.image import apptainer, enroot, podman
from hpcrepro.image import dockerfile as df
from hpcrepro.image.spec import CONTEXT_MOUNT, BuildSpec

FAKES = Path(__file__).resolve().parent / "fakes"


def nvidia_dockerfiles() -> list[Path]:
    return sorted(require_shared(NVIDIA_CODE).glob("v*/*/*/Dockerfile"))


def dockerfile_ids() -> list[str]:
    return [
        str(p.parent.relative_to(NVIDIA_CODE))
        for p in sorted(NVIDIA_CODE.glob("v*/*/*/Dockerfile"))
    ]


def env_block(path: Path) -> dict[str, str]:
    """The ENV block as NVIDIA wrote it, read with a plain regex (independent of the parser)."""
    text = path.read_text().split("\nENV ", 1)[1]
    return dict(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", text))


def spec_for(
    folder: Path,
    tmp_path: Path,
    base: str = "nvcr.io/nvidia/mxnet:24.04-py3",
    *,
    base_is_file: bool = False,
    fmt: str = "sqsh",
) -> BuildSpec:
    (tmp_path / "files").mkdir(exist_ok=True)
    return BuildSpec(
        context=folder, dockerfile=folder / "Dockerfile",
        dockerfile_text=(folder / "Dockerfile").read_text(), base=base, base_is_file=base_is_file,
        build_args={"FROM_IMAGE_NAME": base}, wheels=None, output_format=fmt,  # type: ignore[arg-type]
        work=tmp_path, name="hpcrepro-build-test",
    )  # fmt: skip


@pytest.mark.parametrize("path", nvidia_dockerfiles(), ids=dockerfile_ids())
def test_every_nvidia_dockerfile_translates_for_enroot(path: Path, tmp_path: Path) -> None:
    spec = spec_for(path.parent, tmp_path)
    recipe = df.recipe(
        spec.dockerfile_text,
        str(path),
        build_args=spec.build_args,
        context=path.parent,
        base_env={"PATH": "/usr/bin"},
        base_workdir="/workspace",
    )
    commands = enroot.step_commands("/x/enroot", spec, recipe, "c1", tmp_path / "step.rc")
    text = path.read_text()
    runs = re.findall(r"^RUN (.+?)(?<!\\)$", text.replace("\\\n", " "), re.M)
    assert [c for w, c in commands if "(RUN" in w] and len(runs) == sum(
        "(RUN" in w for w, _ in commands
    )
    # every step: enroot start as root, writable, the context mounted read-only, then the rc args
    for what, command in commands:
        assert command[:5] == ["/x/enroot", "start", "--root", "--rw", "--rc"], what
        assert f"{path.parent}:{CONTEXT_MOUNT}:x-create=dir,bind,ro" in command
        assert command[command.index("c1") + 1].startswith("/")
    run_texts = [c[-1] for w, c in commands if "(RUN" in w]
    assert "pip install --no-cache-dir -r requirements.txt" in run_texts
    assert any("apt-get install" in t and "infiniband-diags" in t for t in run_texts)
    if "graph_lib.so" in text:
        assert "cd cuda_graphs && make -f Makefile.txt graph_lib.so && cd .." in run_texts
    # the pip step runs in the WORKDIR, after requirements.txt was copied, before the code
    whats = [w for w, _ in commands]
    pip = next(i for i, (w, c) in enumerate(commands) if c[-1].startswith("pip install"))
    assert "COPY requirements.txt" in whats[pip - 1] and "COPY ." in whats[pip + 1]
    assert commands[pip][1][commands[pip][1].index("c1") + 1] == "/workspace/image_classification"
    # ENV and WORKDIR land where enroot and pyxis read them
    environment = enroot.environment_file("PATH=/usr/bin\n", recipe, str(path))
    assert environment.splitlines()[0] == "PATH=/usr/bin"
    assert dict(line.split("=", 1) for line in environment.splitlines()[1:]) == env_block(path)
    rc = enroot.rc_file(None, recipe.workdir)
    assert rc is not None and "cd /workspace/image_classification && unset OLDPWD" in rc


@pytest.mark.parametrize("path", nvidia_dockerfiles(), ids=dockerfile_ids())
def test_every_nvidia_dockerfile_translates_for_apptainer(path: Path, tmp_path: Path) -> None:
    spec = spec_for(path.parent, tmp_path, fmt="sif")
    recipe = df.recipe(
        spec.dockerfile_text,
        str(path),
        build_args=spec.build_args,
        context=path.parent,
        builder="apptainer",
    )
    definition = apptainer.definition(spec, recipe)
    assert definition.startswith("Bootstrap: docker\nFrom: nvcr.io/nvidia/mxnet:24.04-py3\n")
    assert f"    {path.parent} {CONTEXT_MOUNT}\n" in definition
    post = definition.split("%post\n", 1)[1].split("%environment", 1)[0]
    order = [m for m in re.findall(r"# Dockerfile line \d+: (\w+)", post)]
    assert order[:4] == ["RUN", "WORKDIR", "COPY", "RUN"]
    assert "pip install --no-cache-dir -r requirements.txt" in post
    assert "cd -- /workspace/image_classification" in post
    environment = definition.split("%environment\n", 1)[1].split("%labels", 1)[0]
    exported = dict(
        shlex.split(line.split(None, 1)[1])[0].split("=", 1)
        for line in environment.splitlines()
        if line.strip()
    )
    assert exported == env_block(path)
    assert f"{apptainer.WORKDIR_LABEL} /workspace/image_classification" in definition
    # the strict stand-in accepts it (sections, %files sources, sh -n of %post and %environment)
    def_file = tmp_path / "image.def"
    def_file.write_text(definition)
    log = tmp_path / "calls.jsonl"
    result = subprocess.run(
        [sys.executable, str(FAKES / "apptainer"), "build", str(tmp_path / "x.sif"), str(def_file)],
        capture_output=True,
        text=True,
        env={**os.environ, "FAKE_SRUN_LOG": str(log)},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "x.sif").read_text())["fake sif from definition"] == definition


@pytest.mark.parametrize("path", nvidia_dockerfiles(), ids=dockerfile_ids())
def test_every_nvidia_dockerfile_builds_with_podman_arguments(path: Path, tmp_path: Path) -> None:
    spec = spec_for(path.parent, tmp_path, base="localhost/base:1")
    command = podman.build_command("podman", "/usr/bin/podman", spec, "localhost/x:latest")
    assert command == [
        "/usr/bin/podman", "build", "--file", str(path), "--tag", "localhost/x:latest",
        "--isolation=chroot", "--build-arg", "FROM_IMAGE_NAME=localhost/base:1", str(path.parent),
    ]  # fmt: skip


def recipe_of(text: str, **kw: object) -> df.Recipe:
    return df.recipe(
        text,
        "Dockerfile",
        build_args=kw.pop("build_args", {}),  # type: ignore[arg-type]
        context=None,
        base_env=kw.pop("base_env", {}),
        **kw,
    )  # type: ignore[arg-type]


def test_docker_word_rules() -> None:
    r = recipe_of(
        '# escape=\\\nARG B=1\nFROM ${B}x\nARG B\nENV A=1 Q="x y" C=$A D=${B:-q} E=${NOPE:-d} '
        "F='$A' G=a\\ b\nENV H $A two\nENV I=${A:+set}\nWORKDIR /w\nWORKDIR sub\n",
        base_env={"PATH": "/bin"},
    )
    assert r.base == "1x"
    # values come from the environment before the instruction: C and I see A, C does not
    assert r.env == {
        "A": "1",
        "Q": "x y",
        "C": "",
        "D": "1",
        "E": "d",
        "F": "$A",
        "G": "a b",
        "H": "1 two",
        "I": "set",
    }
    assert r.workdir == "/w/sub"


def test_run_environment_and_exec_form() -> None:
    r = recipe_of(
        'FROM b\nARG X=1\nENV Y=2\nWORKDIR /w\nSHELL ["/bin/bash", "-c"]\n'
        'RUN echo "$X"\nRUN ["true", "a b"]\n'
    )
    shell_run, exec_run = [s for s in r.steps if isinstance(s, df.Run)]
    assert shell_run.argv == ("/bin/bash", "-c", 'echo "$X"') and dict(shell_run.env) == {
        "X": "1",
        "Y": "2",
    }
    assert exec_run.argv == ("true", "a b") and exec_run.workdir == "/w"
    assert r.env == {"Y": "2"}  # ARG is not part of the image


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("FROM a\nADD x /x\n", "ADD cannot be replayed"),
        ("FROM a\nCOPY --from=b /x /y\n", "COPY --from=b"),
        ("FROM a\nCOPY --chown=1:1 x /y\n", "--chown"),
        ("FROM a\nFROM b\n", "a second FROM"),
        ("FROM a\nUSER nobody\n", "USER nobody"),
        ("FROM a\nWORKDIR /w\nRUN <<EOF\necho\nEOF\n", "heredocs"),
        ("FROM a\nCOPY *.py /x/\n", "wildcard"),
        ("FROM a\nCOPY x rel\n", "relative path 'rel' before any absolute WORKDIR"),
        ("FROM a\nCOPY ../x /x\n", "outside the build context"),
        ('FROM a\nENTRYPOINT ["x"]\n', "ENTRYPOINT"),
        ("FROM a\nBOGUS x\n", "unknown instruction"),
        ("RUN x\n", "before FROM"),
        ("ARG FROM_IMAGE_NAME=REDACTED\nFROM ${FROM_IMAGE_NAME}\n", "no usable base image"),
        ("FROM a\nENV A=${B/x/y}\n", "substitution this builder does not replay"),
        ("FROM a\nENV A=${1}\n", "not a variable reference"),
    ],
)
def test_what_cannot_be_replayed_is_refused_with_the_line(text: str, fragment: str) -> None:
    with pytest.raises(UserError) as error:
        df.recipe(text, "Dockerfile", build_args={}, context=None, base_env={})
    assert fragment in error.value.render() and "Dockerfile:" in error.value.render()


def test_unknown_base_variables_are_refused_when_the_base_env_is_unknown() -> None:
    with pytest.raises(UserError, match=r"uses \$PATH, which neither"):
        df.recipe("FROM a\nENV PATH=/x:$PATH\n", "Dockerfile", build_args={}, context=None)
    r = recipe_of("FROM a\nENV PATH=/x:$PATH\n", base_env={"PATH": "/bin"})
    assert r.env == {"PATH": "/x:/bin"}


def test_enroot_refuses_env_values_it_would_change(tmp_path: Path) -> None:
    r = recipe_of("FROM a\nENV A='${HOME}'\n")
    with pytest.raises(UserError, match="enroot expands"):
        enroot.environment_file("", r, "Dockerfile")


def test_enroot_rc_keeps_the_imported_entrypoint() -> None:
    imported = (
        '# label\nmkdir -p "/workspace" 2> /dev/null\ncd "/workspace" && unset OLDPWD || exit 1\n'
        "\nif [ $# -gt 0 ]; then\n    exec '/opt/nvidia/nvidia_entrypoint.sh' \"$@\"\nfi\n"
    )
    assert enroot.base_workdir(imported) == "/workspace"
    rc = enroot.rc_file(imported, "/workspace/image classification")
    assert rc is not None
    assert "cd '/workspace/image classification' && unset OLDPWD || exit 1" in rc
    assert "nvidia_entrypoint.sh" in rc and '"/workspace"' not in rc
    assert enroot.base_workdir(rc) == "/workspace/image classification"
    with pytest.raises(UserError, match="working-folder lines"):
        enroot.rc_file("exec /bin/sh\n", "/w")
