"""Container image references: what pyxis/enroot and Apptainer each pull, checked as Docker
reads a reference, and image files as absolute paths.

A site's `image` is either a file (see `site.image_is_file`) or a registry reference in Docker's
syntax (`nvcr.io/nvidia/mxnet:23.04-py3`) or enroot's (`nvcr.io#nvidia/mxnet:23.04-py3`). The
image cache names its files after what the runtime pulls (`hpcrepro.image.cache`).
"""

from __future__ import annotations

import re
from pathlib import Path

from hpcrepro.errors import UserError
from hpcrepro.site import image_is_file

# A registry reference as Docker reads it: [HOST[:PORT]/]PATH[:TAG][@DIGEST], lower-case path.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(
    rf"^{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
_HOST_RE = re.compile(rf"^{_HOST}$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Sources `apptainer build` takes besides docker:// (which is checked like any registry image).
_APPTAINER_URIS = ("library://", "oras://", "shub://", "http://", "https://")
_APPTAINER_LOCAL = ("docker-daemon:", "docker-archive:", "oci:", "oci-archive:")
_IMAGE_HINT = (
    "write a registry image as nvcr.io/nvidia/mxnet:23.04-py3 (or enroot's nvcr.io#nvidia/...), "
    "or give the path of an image file"
)


def _split_reference(image: str) -> tuple[str, str, str]:
    """(USER@, REGISTRY, PATH[:TAG][@DIGEST]) of a registry image in Docker's or enroot's syntax.

    enroot writes `[USER@][REGISTRY#]IMAGE[:TAG]`; Docker writes `[REGISTRY/]IMAGE[:TAG]`, where
    the first component is a registry when it holds '.' or ':' or is 'localhost'.
    """
    ref = image.removeprefix("docker://")
    if "#" in ref:
        head, _, path = ref.partition("#")
        user, at, registry = head.rpartition("@")
        user += at
    else:
        first, sep, rest = ref.partition("/")
        user, at, host = first.rpartition("@") if sep else ("", "", first)
        if sep and ("." in host or ":" in host or host == "localhost"):
            user, registry, path = user + at, host, rest
        else:
            user, registry, path = "", "", ref
    if (registry and not _HOST_RE.fullmatch(registry)) or (user and not registry):
        raise UserError(
            f"image '{image}': '{registry or user}' is not a registry host name",
            where="site key 'image'",
            hint=_IMAGE_HINT,
        )
    if user and not re.fullmatch(r"[A-Za-z0-9._$-]+@", user):
        raise UserError(f"image '{image}': '{user}' is not a user name", where="site key 'image'")
    if not _PATH.fullmatch(path):
        raise UserError(
            f"image '{image}': '{path}' is not an image name with an optional :tag or @digest "
            "(lower-case names, no spaces, one '#' at most)",
            where="site key 'image'",
            hint=_IMAGE_HINT,
        )
    return user, registry, path


def pyxis_image(image: str) -> str:
    """An image for `srun --container-image`: a squashfs path or `[USER@][REGISTRY#]IMAGE[:TAG]`.

    pyxis treats a value starting with '/' or '.' as a file and prefixes anything else with
    docker:// for `enroot import`, which pulls from Docker registries only.
    """
    if image.endswith(".sif"):
        raise UserError(
            f"image '{image}' is an Apptainer SIF file, which pyxis/enroot cannot run",
            where="site key 'image'",
            hint="use runtime: apptainer for it, or give pyxis a registry image or a .sqsh file",
        )
    if image_is_file(image):
        return image
    scheme = _SCHEME.match(image)
    if scheme and scheme[1] != "docker":
        raise UserError(
            f"image '{image}': pyxis/enroot only pull Docker registry images, not {scheme[1]}://",
            where="site key 'image'",
            hint=f"import it once on a node (enroot import -o IMAGE.sqsh {image}) and set image "
            "to that .sqsh file"
            if scheme[1] in ("dockerd", "podman")
            else f"use runtime: apptainer for {scheme[1]}:// images, or set image to a squashfs "
            "(.sqsh) file made from it",
        )
    user, registry, path = _split_reference(image)
    return f"{user}{registry}#{path}" if registry else path


def apptainer_image(image: str) -> str:
    """An image for apptainer: a file path, or a URI `apptainer build` takes.

    Registry images become docker:// URIs in Docker's own syntax (enroot's '#' becomes '/').
    """
    if image_is_file(image) or image.startswith(_APPTAINER_URIS + _APPTAINER_LOCAL):
        return image
    scheme = _SCHEME.match(image)
    if scheme and scheme[1] != "docker":
        raise UserError(
            f"image '{image}': apptainer cannot build from {scheme[1]}://",
            where="site key 'image'",
            hint="use docker://, library://, oras://, shub://, https:// or a .sif file",
        )
    user, registry, path = _split_reference(image)
    if user:
        raise UserError(
            f"image '{image}': apptainer takes no user name in the image",
            where="site key 'image'",
            hint="drop the 'USER@' part and log in with `apptainer registry login` "
            "(or set APPTAINER_DOCKER_USERNAME / APPTAINER_DOCKER_PASSWORD)",
        )
    return f"docker://{registry}/{path}" if registry else f"docker://{path}"


def image_file(image: str) -> str:
    """An image file as an absolute path (a relative one is taken from the current folder)."""
    return str(Path(image).expanduser().absolute())
