"""Which data path and which step compilation a run uses, chosen at run time.

`auto` (the default of both) means: on a GPU, decode with DALI when it is installed and decodes
here, else with torchvision's nvJPEG, else with nvImageCodec (the hardware JPEG engines), each
checked by decoding a small JPEG there, not guessed from the installed packages; and compile the
step with `torch.compile`. The order is the measured one through the entry point on an H200
(benchmarks/RESULTS.md): DALI's native threads leave the training thread its interpreter, and
nvImageCodec's host-side work per image outweighs the engines' saving. On a CPU: Pillow
decoding and the eager step, which keeps CPU-only runs and the test suite quick. A path asked
for by name that cannot work here is an error that says why, never a silent fallback. The
choice and its reason go to stderr.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from hpcrepro.errors import UserError

DATA_BACKENDS = ("auto", "cpu", "dali", "nvjpeg", "nvimgcodec")
GPU_BACKENDS = ("dali", "nvjpeg", "nvimgcodec")  # what `auto` tries on a GPU, in this order
COMPILE_CHOICES = ("auto", "off", "default", "reduce-overhead", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str


_INSTALL_HINTS = {
    "dali": "install DALI for this CUDA major version (pip install nvidia-dali-cuda130, or "
    "nvidia-dali-cuda120 for CUDA 12), or use --data-backend nvjpeg",
    "nvjpeg": "install the torchvision build that matches this torch (same CUDA)",
    "nvimgcodec": "install nvImageCodec for this CUDA major version (the nvidia-nvimgcodec-cu13 "
    "wheel with nvidia-nvjpeg, say), or use --data-backend nvjpeg",
}


def choose_data_backend(
    requested: str, use_gpu: bool, problems: dict[str, Callable[[], str | None]]
) -> Choice:
    """`problems[name]()` is None when GPU backend `name` decodes here, else why it does not.

    `auto` takes the first of `GPU_BACKENDS` that works and says why the ones before it did not.
    """
    if requested == "cpu":
        return Choice("cpu", "asked for")
    if not use_gpu:
        if requested in GPU_BACKENDS:
            raise UserError(
                f"--data-backend {requested} (HPCREPRO_DATA_BACKEND) needs a GPU, but this run "
                "is on the CPU",
                hint="use --data-backend cpu or auto, or run with --device cuda on a GPU node",
            )
        return Choice("cpu", "no GPU")
    if requested in GPU_BACKENDS:
        problem = problems[requested]()
        if problem is None:
            return Choice(requested, "asked for")
        raise UserError(
            f"--data-backend {requested} (HPCREPRO_DATA_BACKEND) cannot decode on this GPU: "
            f"{problem}",
            hint=f"{_INSTALL_HINTS[requested]}, or use --data-backend cpu",
        )
    skipped: list[str] = []
    for name in GPU_BACKENDS:
        problem = problems[name]()
        if problem is None:
            reason = "GPU decode works here"
            return Choice(name, f"{reason}; {'; '.join(skipped)}" if skipped else reason)
        skipped.append(f"{name}: {problem}")
    return Choice("cpu", f"GPU decode unavailable: {'; '.join(skipped)}")


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


def nvimgcodec_problem(device: object) -> str | None:
    """Decode a small JPEG on `device` with nvImageCodec; None when that worked.

    Imported here only: nvImageCodec loads CUDA libraries, which neither the CLI nor a CPU run
    should pay for.
    """
    try:
        import torch
        from PIL import Image

        from hpcrepro.workload.nvjpeg import nvimgcodec_decoder

        decode = nvimgcodec_decoder(torch.device(device))  # type: ignore[call-overload]
    except ImportError as exc:
        return f"nvImageCodec is not installed ({type(exc).__name__}: {exc})"
    except Exception as exc:  # a wheel for another CUDA, no libnvjpeg, no GPU
        return f"nvImageCodec cannot start ({type(exc).__name__}: {exc})"
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 100, 50)).save(buffer, format="JPEG")
    jpeg = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    try:
        (image,) = decode([jpeg])
        torch.cuda.synchronize(device)  # type: ignore[arg-type]
    except Exception as exc:
        return f"nvImageCodec's decode failed on the GPU ({type(exc).__name__}: {exc})"
    if tuple(image.shape) != (3, 16, 16):
        return f"nvImageCodec returned shape {tuple(image.shape)} for a 16x16 JPEG"
    return None


def dali_problem(device: object) -> str | None:
    """Decode a small JPEG on `device` through the DALI path's own pipeline; None when it worked.

    Imported here only: DALI loads CUDA libraries, which neither the CLI nor a CPU run should
    pay for.
    """
    import torch
    from PIL import Image

    from hpcrepro.workload.augment import eval_plan
    from hpcrepro.workload.data import JPEG, EncodedItem, collate_encoded

    try:
        import nvidia.dali  # noqa: F401  (DaliAssembler imports it only when built)
    except ImportError as exc:
        return f"DALI is not installed ({type(exc).__name__}: {exc})"
    target = torch.device(device)  # type: ignore[call-overload]
    if target.type != "cuda":
        return f"{device} is not a GPU"
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 100, 50)).save(buffer, format="JPEG")
    item = EncodedItem(buffer.getvalue(), JPEG, 16, 16, eval_plan(16, 16), 0, 0)
    from hpcrepro.workload.dali import DaliAssembler

    try:
        assemble = DaliAssembler(target, 8, True, torch.float32, batch_size=1, threads=1)
        images, _ = assemble(collate_encoded([item]))
        torch.cuda.synchronize(target)
    except ImportError as exc:
        return f"DALI is not installed ({type(exc).__name__}: {exc})"
    except Exception as exc:  # a wheel for another CUDA, driver problems
        return f"DALI's pipeline failed on the GPU ({type(exc).__name__}: {exc})"
    if tuple(images.shape) != (1, 3, 8, 8):
        return f"DALI returned shape {tuple(images.shape)} for one 8x8 crop"
    return None
