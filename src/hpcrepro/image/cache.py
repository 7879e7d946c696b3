"""The one name of a file in the image cache, for a registry import and for a build alike.

A readable slug (for people listing the folder) plus a hash of the exact identity (for the
machine): `nvcr.io/nvidia/mxnet:23.04-py3` and `nvcr.io/nvidia_mxnet:23.04-py3` slug alike but
never share a file. Kept free of heavy imports: render and the campaign plan call it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpcrepro.site import Site

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SLUG_CHARS = 80


def cache_dir(site: Site) -> Path:
    """`image_cache_dir`, else `<log_dir>/images`."""
    return site.image_cache_dir or site.log_dir / "images"


def suffix_for(runtime: str) -> str:
    """.sqsh for pyxis/enroot, .sif for Apptainer."""
    return ".sif" if runtime == "apptainer" else ".sqsh"


def file_name(label: str, identity: str, suffix: str) -> str:
    """`<slug of label>-<16 hex of sha256(identity)><suffix>`."""
    slug = _UNSAFE.sub("_", label.split("://", 1)[-1]).strip("._-")[:_SLUG_CHARS] or "image"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return f"{slug}-{digest}{suffix}"


def cache_file(site: Site, label: str, identity: str, suffix: str | None = None) -> Path:
    """Where the image of `identity` is kept on this site (`suffix` by default the runtime's)."""
    return cache_dir(site) / file_name(label, identity, suffix or suffix_for(site.runtime))


def registry_cache_file(site: Site, source: str) -> Path:
    """The cached import of a registry image; `source` is the reference the runtime pulls
    (pyxis' `[USER@]REGISTRY#IMAGE[:TAG]` or Apptainer's `docker://...`)."""
    return cache_file(site, source, f"registry {site.runtime} {source}")
