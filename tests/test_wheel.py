"""The wheel carries templates/ and systems/: install it into a clean venv and render from there."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What rendering needs at run time; the rest of the dependencies serve other commands.
RENDER_DEPENDENCIES = ["jinja2", "pyyaml", "typer", "rich", "pydantic"]


@pytest.mark.slow
def test_wheel_renders_from_a_clean_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
    )
    (wheel,) = dist.glob("hpcrepro-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *RENDER_DEPENDENCIES], check=True)
    site = tmp_path / "site.yaml"
    site.write_text(
        "runtime: pyxis\nimage: /images/rn50.sqsh\ndataset_dir: /data\nlog_dir: /logs\n"
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run(
        [
            env_dir / "bin" / "hpcrepro",
            "render",
            "--system",
            "dgxh100_8x8",
            "--version",
            "r3.0",
            "--site",
            str(site),
            "-d",
            "review",
        ],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    script = (work / "review" / "train.sbatch").read_text()
    assert "#SBATCH --nodes=8" in script and "export BATCHSIZE=50" in script
    assert (work / "review" / "resolved-config.yaml").is_file()
    listing = subprocess.run(
        [
            env_dir / "bin" / "python",
            "-c",
            "import hpcrepro.resources as r; print(r.templates_dir(), r.systems_dir())",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (
        "site-packages/hpcrepro/templates" in listing
        and "site-packages/hpcrepro/systems" in listing
    )
