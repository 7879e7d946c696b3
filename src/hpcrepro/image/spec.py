"""What one image build needs, handed from `build` to the builder that makes the file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hpcrepro.errors import UserError

Format = Literal["sqsh", "sif"]
CONTEXT_MOUNT = "/.hpcrepro-context"


@dataclass(frozen=True)
class BuildSpec:
    """A verified, staged build: the builder reads only this."""

    context: Path  # NVIDIA's code, verified and staged (requirements.txt as resolved)
    dockerfile: Path
    dockerfile_text: str
    base: str  # registry reference, or an image file (.sqsh / .sif / podman-local name)
    base_is_file: bool
    build_args: dict[str, str]  # FROM_IMAGE_NAME=base
    wheels: Path | None  # staged local sources, mounted at WHEELS_MOUNT during the build
    output_format: Format
    work: Path  # a private folder for the builder's temporary files
    name: str  # unique, for container and tag names
    # (index, count, what) of each Dockerfile step a builder replays itself (enroot), for progress
    on_step: Callable[[int, int, str], None] | None = None


def run_checked(
    command: Sequence[str],
    what: str,
    hint: str,
    *,
    capture: bool = False,
    env: dict[str, str] | None = None,
) -> str:
    """Run one builder command, its output going to ours (a build log is worth reading);
    a failure is a UserError naming `what` and the exit code. `capture` returns stdout."""
    sys.stdout.flush()
    try:
        result = subprocess.run(
            list(command),
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            text=True,
            env=env if env is not None else os.environ.copy(),
        )
    except OSError as error:
        raise UserError(f"{what}: cannot run {command[0]} ({error.strerror})", hint=hint) from None
    if result.returncode != 0:
        tail = (result.stderr or "").strip()[-600:] if capture else ""
        raise UserError(
            f"{what} failed (exit code {result.returncode})"
            + (f": {tail}" if tail else "; its output is above"),
            hint=hint,
        )
    return result.stdout if capture else ""
