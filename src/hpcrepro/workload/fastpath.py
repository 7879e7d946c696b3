"""Which data path and which step compilation a run uses, chosen at run time.

`auto` (the default of both) means: on a GPU, decode with nvJPEG when torchvision can do it on
this GPU (checked by decoding a small JPEG there, not guessed from the installed packages) and
compile the step with `torch.compile`; on a CPU, Pillow decoding and the eager step, which keeps
CPU-only runs and the test suite quick. A path asked for by name that cannot work here is an
error that says why, never a silent fallback. The choice and its reason go to stderr.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from hpcrepro.errors import UserError

DATA_BACKENDS = ("auto", "cpu", "nvjpeg")
COMPILE_CHOICES = ("auto", "off", "default", "reduce-overhead", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str


def choose_data_backend(
    requested: str, use_gpu: bool, nvjpeg_problem: Callable[[], str | None]
) -> Choice:
    """`nvjpeg_problem()` is None when GPU decoding works here, else why it does not."""
    if requested == "cpu":
        return Choice("cpu", "asked for")
    if not use_gpu:
        if requested == "nvjpeg":
            raise UserError(
                "--data-backend nvjpeg (HPCREPRO_DATA_BACKEND) needs a GPU, but this run is on "
                "the CPU",
                hint="use --data-backend cpu or auto, or run with --device cuda on a GPU node",
            )
        return Choice("cpu", "no GPU")
    problem = nvjpeg_problem()
    if problem is None:
        return Choice("nvjpeg", "asked for" if requested == "nvjpeg" else "GPU decode works here")
    if requested == "nvjpeg":
        raise UserError(
            f"--data-backend nvjpeg (HPCREPRO_DATA_BACKEND) cannot decode on this GPU: {problem}",
            hint="install the torchvision build that matches this torch (same CUDA), or use "
            "--data-backend cpu",
        )
    return Choice("cpu", f"GPU decode unavailable: {problem}")


def choose_compile(requested: str, use_gpu: bool) -> Choice:
    if requested != "auto":
        return Choice(requested, "asked for")
    if use_gpu:
        return Choice("default", "GPU")
    return Choice("off", "CPU: compiling would cost more than it saves on short runs")


def nvjpeg_problem(device: object) -> str | None:
    """Decode a small JPEG on `device` with torchvision; None when that worked."""
    try:
        import torch
        from PIL import Image
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        return f"torchvision cannot be imported ({type(exc).__name__}: {exc})"
    if torch.device(device).type != "cuda":  # type: ignore[call-overload]
        return f"{device} is not a GPU"
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 100, 50)).save(buffer, format="JPEG")
    jpeg = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    try:
        (image,) = decode_jpeg([jpeg], mode=ImageReadMode.RGB, device=device)
    except Exception as exc:  # torchvision built without nvJPEG, driver problems
        return f"torchvision's decode_jpeg failed on the GPU ({type(exc).__name__}: {exc})"
    if tuple(image.shape) != (3, 16, 16):
        return f"torchvision's decode_jpeg returned shape {tuple(image.shape)} for a 16x16 JPEG"
    return None
