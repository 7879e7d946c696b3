"""The image stage of a campaign, the one cache-file name, and the prebuilt-image warnings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hpcrepro.campaign import plan
from hpcrepro.config import resolve
from hpcrepro.image.cache import registry_cache_file
from hpcrepro.render import container_plan
from script_checks import check_scripts


def site_file(tmp_path: Path, extra: str = "", runtime: str = "pyxis") -> Path:
    for name in ("data", "logs"):
        (tmp_path / name).mkdir(exist_ok=True)
    path = tmp_path / "site.yaml"
    path.write_text(
        f"runtime: {runtime}\ndataset_dir: {tmp_path / 'data'}\n"
        f"log_dir: {tmp_path / 'logs'}\nimage_cache_dir: {tmp_path / 'cache'}\n{extra}"
    )
    return path


def test_no_image_means_an_image_stage_that_builds_nvidias(tmp_path: Path) -> None:
    code = tmp_path / "nvidia code"
    site = site_file(
        tmp_path, f"image_code_dir: {code}\nimage_builder: enroot\nimage_base: ./base.sqsh\n"
    )
    (tmp_path / "base.sqsh").write_bytes(b"base")
    cfg = resolve("dgxh100_8x8", "r4.0", site)
    assert cfg.site.image_base == str(tmp_path / "base.sqsh")  # relative to the site file
    assert plan.needs_image_stage(cfg)
    target = plan.image_cache_file(cfg)
    assert (
        target.parent == tmp_path / "cache"
        and target.name.startswith("nvidia-resnet-v4.0-eos_n8_ngc24.04_mxnet-")
        and target.suffix == ".sqsh"
    )
    assert plan.training_config(cfg).site.image == str(target)
    script = plan.render_image_stage(cfg, "#SBATCH --job-name=x")
    assert "-m hpcrepro image build --system dgxh100_8x8 --version r4.0 --no-site" in script
    assert f"--code '{code}'" in script and "--builder enroot" in script
    assert f"--output {target}" in script and "--format sqsh" in script
    stage = tmp_path / "image.sbatch"
    stage.write_text(script)
    check_scripts(stage)
    # the key changes with what changes the image: another base, another Dockerfile
    (tmp_path / "base.sqsh").write_bytes(b"another base")
    assert plan.image_cache_file(resolve("dgxh100_8x8", "r4.0", site)) != target
    # entries sharing NVIDIA's folder share the image
    same = plan.image_cache_file(resolve("dgxh100_1x8", "r4.0", site))
    assert same.name.startswith("nvidia-resnet-v4.0-eos_ngc24.04_mxnet-")


def test_the_build_stage_reuses_an_existing_file(tmp_path: Path) -> None:
    cfg = resolve("dgxh100_8x8", "r4.0", site_file(tmp_path))
    target = plan.image_cache_file(cfg)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"built")
    assert plan.needs_image_stage(cfg) and target.is_file()  # plan.build then adds no stage


def test_registry_images_never_share_a_cache_file(tmp_path: Path) -> None:
    cfg = resolve(
        "dgxh100_8x8", "r3.0", site_file(tmp_path, "image: nvcr.io/nvidia/mxnet:23.04-py3\n")
    )
    names = {
        registry_cache_file(cfg.site, ref).name
        for ref in (
            "nvcr.io#nvidia/mxnet:23.04-py3",
            "nvcr.io#nvidia/mxnet_23.04-py3",
            "nvcr.io#nvidia_mxnet:23.04-py3",
        )
    }
    assert len(names) == 3 and all(n.startswith("nvcr.io_nvidia_mxnet") for n in names)
    # pyxis' two spellings of one image are one file
    other = resolve(
        "dgxh100_8x8", "r3.0", site_file(tmp_path, "image: nvcr.io#nvidia/mxnet:23.04-py3\n")
    )
    assert plan.image_cache_file(cfg) == plan.image_cache_file(other)


def test_render_and_the_stage_agree_on_the_apptainer_file(tmp_path: Path) -> None:
    site = site_file(tmp_path, "image: nvcr.io/nvidia/mxnet:23.04-py3\n", runtime="apptainer")
    cfg = resolve("dgxh100_8x8", "r3.0", site)
    rendered = container_plan(cfg, tmp_path / "logs")
    assert rendered.build_sif == "docker://nvcr.io/nvidia/mxnet:23.04-py3"
    assert rendered.image == str(plan.image_cache_file(cfg))


def render(tmp_path: Path, site: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "hpcrepro",
            "render",
            "--system",
            "dgxh100_8x8",
            "--version",
            version,
            "--site",
            str(site),
            "-d",
            str(tmp_path / f"review-{version}"),
            "--force",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )


def test_render_warns_about_a_base_only_or_mistagged_image(tmp_path: Path) -> None:
    site = site_file(tmp_path, "image: nvcr.io/nvidia/mxnet:24.04-py3\n")
    bare = render(tmp_path, site, "r4.0")
    assert bare.returncode == 0 and "NVIDIA's base image only" in bare.stderr
    other = render(tmp_path, site, "r3.1")
    assert other.returncode == 0 and "published with nvcr.io/nvidia/mxnet:23.09-py3" in other.stderr
    built = render(tmp_path, site_file(tmp_path), "r4.0")
    assert built.returncode == 0 and "no image set: the job uses NVIDIA's image" in built.stderr
    script = (tmp_path / "review-r4.0" / "train.sbatch").read_text()
    assert "nvidia-resnet-v4.0-eos_n8_ngc24.04_mxnet-" in script
