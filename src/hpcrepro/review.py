"""Rendering for review without a site file: placeholder paths and a banner that says so.

`hpcrepro render` with no site file still writes the scripts, so a system's job can be read
before a cluster is set up; the two required folders become `/PLACEHOLDER/` paths and every file
starts with a line saying it is not submittable. `submit` keeps needing a real site file.
"""

from __future__ import annotations

from pathlib import Path

REQUIRED = ("dataset_dir", "log_dir")
PLACEHOLDER = "/PLACEHOLDER/set-{key}-in-site.yaml"
BANNER = (
    "# PLACEHOLDER SCRIPT, NOT SUBMITTABLE: rendered without a site file for review; the "
    "/PLACEHOLDER/ paths ({keys}) are not real. Write a site file (hpcrepro site init) and "
    "render again."
)


def placeholders(site: Path | None, overrides: list[str]) -> list[str]:
    """The required keys to fill with placeholders: those no site file and no --set gives."""
    from hpcrepro.config import site_file_and_source

    if site_file_and_source(site)[0] is not None:
        return []
    given = {text.partition("=")[0].strip().removeprefix("site.") for text in overrides}
    return [key for key in REQUIRED if key not in given]


def placeholder_overrides(keys: list[str]) -> list[str]:
    """`--set` texts for the placeholder paths (the user's own --set come after and win)."""
    return [f"{key}={PLACEHOLDER.format(key=key)}" for key in keys]


def with_banner(text: str, keys: list[str]) -> str:
    """`text` with the banner as its first comment line (after a script's `#!` line)."""
    banner = BANNER.format(keys=", ".join(keys))
    if text.startswith("#!"):
        first, _, rest = text.partition("\n")
        return f"{first}\n{banner}\n{rest}"
    return f"{banner}\n{text}"
