"""The warning for a prebuilt `image:` that is not the image of the catalog entry.

A registry image equal to the entry's `container_base` is NVIDIA's base only (no ResNet code);
one with another tag is built on another base than the published result; an image file that
`hpcrepro image build` made carries its record (`<file>.json`) to compare. Anything else cannot
be told from here (the job checks for NVIDIA's code at its start).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpcrepro.config import ResolvedConfig


def _tag(reference: str) -> tuple[str, str]:
    """(name, tag) of a registry reference in Docker's or enroot's syntax (`[USER@]HOST#PATH`)."""
    ref = reference.removeprefix("docker://").split("@sha256:", 1)[0]
    if "#" in ref:
        head, _, path = ref.partition("#")
        ref = f"{head.rpartition('@')[2]}/{path}"
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return name, tag


def image_warning(image: str | None, container_base: str, system: str, version: str) -> str | None:
    """A one-line warning, or None when nothing is wrong that can be seen here."""
    from hpcrepro.site import image_is_file

    if not image:
        return None
    build_hint = f"`hpcrepro image build --system {system} --version {version}`"
    if image_is_file(image):
        from hpcrepro.image.build import read_metadata

        record = read_metadata(Path(image).expanduser())
        if record is None:
            return None
        if record.get("system") and (record.get("version") != version):
            return (
                f"image {image} was built for {record.get('system')} "
                f"{record.get('version')}, not {system} {version}"
            )
        built_on = str(record.get("base", ""))
        if (
            built_on
            and not image_is_file(built_on)
            and _tag(built_on)[1] != _tag(container_base)[1]
        ):
            return (
                f"image {image} was built on {built_on}, but {system} {version} was "
                f"published with {container_base}"
            )
        return None
    name, tag = _tag(image)
    base_name, base_tag = _tag(container_base)
    if (name, tag) == (base_name, base_tag):
        return (
            f"image {image} is NVIDIA's base image only: it has none of NVIDIA's ResNet code "
            f"(run_and_time.sh); remove `image` to let submit build it, or run {build_hint}"
        )
    if tag != base_tag:
        return (
            f"image {image} has the tag {tag}, but {system} {version} was published with "
            f"{container_base}; results on another base are not a reproduction"
        )
    return None


def image_notes(cfg: ResolvedConfig) -> tuple[ResolvedConfig, list[str]]:
    """What `render` and `submit` tell about the image: the configuration with NVIDIA's image
    file filled in when `image` is unset under a container runtime, and the warnings to print."""
    site = cfg.site
    if site.runtime == "none":
        return cfg, []
    if not site.image:
        import dataclasses

        from hpcrepro.image.build import planned_file

        target = planned_file(cfg)
        note = f"no image set: the job uses NVIDIA's image {target}" + (
            " (built)"
            if target.is_file()
            else f", which `hpcrepro submit` builds in its image stage (or run `hpcrepro image "
            f"build --system {cfg.system} --version {cfg.version}` first)"
        )
        filled = dataclasses.replace(cfg, site=site.model_copy(update={"image": str(target)}))
        return filled, [note]
    warning = image_warning(site.image, cfg.spec.container_base, cfg.system, cfg.version)
    return cfg, [warning] if warning else []
