"""Shell text that replays a Dockerfile's COPY and RUN steps inside a container (enroot and
Apptainer share it): files keep mode and times and belong to root, as with Docker's COPY."""

from __future__ import annotations

import posixpath

from hpcrepro.image.dockerfile import Copy
from hpcrepro.shell import quote


def copy_script(copy: Copy, context_root: str) -> str:
    """`sh` text copying the step's sources from `context_root` (where the context is mounted).

    A folder's contents go into the destination (created); a file goes into a destination that
    ends in '/' or is a folder, else becomes it. GNU cp (every NGC base is Ubuntu).
    """
    lines = ["set -e"]
    dest = copy.dest.rstrip("/") or "/"
    for source in copy.sources:
        path = context_root if source == "." else posixpath.join(context_root, source)
        into = quote(dest + "/") if copy.dest_is_dir else quote(dest)
        parent = dest if copy.dest_is_dir else posixpath.dirname(dest) or "/"
        lines.append(
            f"if [ -d {quote(path)} ]; then mkdir -p -- {quote(dest)} && "
            f"cp -R --preserve=mode,timestamps -- {quote(path + '/.')} {quote(dest + '/')}; "
            f"else mkdir -p -- {quote(parent)} && "
            f"cp --preserve=mode,timestamps -- {quote(path)} {into}; fi"
        )
    return "\n".join(lines)


def command_line(argv: tuple[str, ...]) -> str:
    """One RUN step's argv as one shell line."""
    return " ".join(quote(word) for word in argv)
