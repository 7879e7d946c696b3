"""The settings of one training run: profile defaults, then NVIDIA's environment, then flags.

The job script exports the same variables NVIDIA's `run_and_time.sh` reads (BATCHSIZE per GPU, LR,
WARMUP_EPOCHS, NUMEPOCHS, EVAL_OFFSET, EVAL_PERIOD, WD, MOM, LARSETA, LABELSMOOTHING, OPTIMIZER,
SEED) plus HPCREPRO_DATA_DIR and HPCREPRO_WORKLOAD_PROFILE; a command-line flag wins over its
variable. A profile fixes what
the environment does not describe: image size, network width, classes and the accuracy target.
This module needs only the standard library, so `--help` and config errors are instant.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from hpcrepro.errors import UserError
from hpcrepro.workload.fastpath import COMPILE_CHOICES, DATA_BACKENDS


@dataclass(frozen=True)
class RunConfig:
    profile: str
    data_dir: Path
    batch_size: int
    lr: float
    warmup_epochs: float
    epochs: int
    eval_offset: int
    eval_period: int
    weight_decay: float
    momentum: float
    lars_eta: float
    label_smoothing: float
    optimizer: str
    seed: int | None
    target_accuracy: float
    num_classes: int
    image_size: int
    width: int
    workers: int
    data_backend: str
    dali_pipelines: int
    compile_mode: str
    device: str
    org: str
    platform: str

    def eval_epochs(self) -> list[int]:
        """1-based epochs that end with an evaluation (NVIDIA: 0-based epoch % period == offset)."""
        return [
            epoch
            for epoch in range(1, self.epochs + 1)
            if epoch - 1 >= self.eval_offset
            and (epoch - 1 - self.eval_offset) % self.eval_period == 0
        ]


# The full profile is NVIDIA's single-node DGX H100 recipe (config_DGXH100.sh, v3.0-v4.0).
FULL = {
    "batch_size": 400,
    "lr": 11.0,
    "warmup_epochs": 2.0,
    "epochs": 37,
    "eval_offset": 2,
    "eval_period": 4,
    "weight_decay": 5e-5,
    "momentum": 0.9,
    "lars_eta": 0.001,
    "label_smoothing": 0.1,
    "optimizer": "sgdwfastlars",
    "target_accuracy": 0.759,
    "num_classes": 1000,
    "image_size": 224,
    "width": 64,
    "workers": 8,
}
# The tiny profile: 32-pixel crops, a quarter-width ResNet-50, the 10 classes of the synthetic set
# (`hpcrepro.workload.synthetic`); reaches its 0.80 target in a few CPU seconds per epoch.
TINY = {
    "batch_size": 32,
    "lr": 2.0,
    "warmup_epochs": 1.0,
    "epochs": 16,
    "eval_offset": 1,
    "eval_period": 1,
    "weight_decay": 5e-5,
    "momentum": 0.9,
    "lars_eta": 0.001,
    "label_smoothing": 0.1,
    "optimizer": "sgdwfastlars",
    "target_accuracy": 0.80,
    "num_classes": 10,
    "image_size": 32,
    "width": 16,
    "workers": 1,
}
PROFILES = {"full": FULL, "tiny": TINY}

# field -> (environment variable, parser)
ENV_VARS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "batch_size": ("BATCHSIZE", int),
    "lr": ("LR", float),
    "warmup_epochs": ("WARMUP_EPOCHS", float),
    "epochs": ("NUMEPOCHS", int),
    "eval_offset": ("EVAL_OFFSET", int),
    "eval_period": ("EVAL_PERIOD", int),
    "weight_decay": ("WD", float),
    "momentum": ("MOM", float),
    "lars_eta": ("LARSETA", float),
    "label_smoothing": ("LABELSMOOTHING", float),
    "optimizer": ("OPTIMIZER", str),
    "seed": ("SEED", int),
    "data_dir": ("HPCREPRO_DATA_DIR", Path),
    "data_backend": ("HPCREPRO_DATA_BACKEND", str),
    "dali_pipelines": ("HPCREPRO_DALI_PIPELINES", int),
    "compile_mode": ("HPCREPRO_COMPILE", str),
}
# Not part of a profile: chosen at run time (see `fastpath`) unless asked for.
RUNTIME_DEFAULTS = {"data_backend": "auto", "compile_mode": "auto", "dali_pipelines": 2}
MAX_DALI_PIPELINES = 8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpcrepro.workload.train",
        description="hpcrepro's reference ResNet-50 training (MLPerf recipe, MLLOG output). "
        "Reads NVIDIA's run_and_time.sh variables from the environment; flags override them.",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help="full (ResNet-50 at 224 px, target 0.759) or tiny (CPU-sized, target 0.80); "
        "default: $HPCREPRO_WORKLOAD_PROFILE, else full",
    )
    flags = {
        "--data-dir": ("data_dir", Path, "folder with train.rec/.idx and val.rec/.idx"),
        "--batch-size": ("batch_size", int, "images per process (BATCHSIZE)"),
        "--lr": ("lr", float, "base learning rate (LR)"),
        "--warmup-epochs": ("warmup_epochs", float, "WARMUP_EPOCHS"),
        "--epochs": ("epochs", int, "epoch limit, also the decay length (NUMEPOCHS)"),
        "--eval-offset": ("eval_offset", int, "EVAL_OFFSET"),
        "--eval-period": ("eval_period", int, "EVAL_PERIOD"),
        "--weight-decay": ("weight_decay", float, "WD"),
        "--momentum": ("momentum", float, "MOM"),
        "--lars-eta": ("lars_eta", float, "LARSETA"),
        "--label-smoothing": ("label_smoothing", float, "LABELSMOOTHING"),
        "--optimizer": ("optimizer", str, "OPTIMIZER (LARS variants only)"),
        "--seed": ("seed", int, "SEED; random when neither is given"),
        "--target-accuracy": ("target_accuracy", float, "top-1 that ends the run"),
        "--num-classes": ("num_classes", int, "classifier outputs"),
        "--image-size": ("image_size", int, "crop size in pixels"),
        "--width": ("width", int, "channels of the first stage (64 = ResNet-50)"),
        "--workers": ("workers", int, "data-loader processes per task"),
    }
    for flag, (dest, kind, text) in flags.items():
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=text)
    parser.add_argument(
        "--data-backend",
        dest="data_backend",
        choices=DATA_BACKENDS,
        default=None,
        help="JPEG decoding: dali (NVIDIA DALI's decoder and resize, on the GPU), nvjpeg (on "
        "the GPU, torchvision), nvimgcodec (the GPU's hardware "
        "JPEG engines, nvImageCodec), cpu (Pillow in the loader workers) or auto (the first of "
        "dali, nvjpeg, nvimgcodec that works); default: $HPCREPRO_DATA_BACKEND, else auto",
    )
    parser.add_argument(
        "--dali-pipelines",
        dest="dali_pipelines",
        type=int,
        default=None,
        help="DALI pipelines per task, each a batch in flight (dali only; 1 to "
        f"{MAX_DALI_PIPELINES}); default: $HPCREPRO_DALI_PIPELINES, else 2",
    )
    parser.add_argument(
        "--compile",
        dest="compile_mode",
        choices=COMPILE_CHOICES,
        default=None,
        help="torch.compile mode of the step (off = eager; reduce-overhead adds CUDA graphs); "
        "auto compiles on a GPU only; default: $HPCREPRO_COMPILE, else auto",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    return parser


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, (variable, kind) in ENV_VARS.items():
        raw = env.get(variable, "").strip()
        if raw == "":
            continue
        try:
            values[name] = kind(raw)
        except ValueError:
            raise UserError(
                f"environment variable {variable}='{raw}' is not a valid {kind.__name__}",
                hint=f"fix {variable} in the system config, or pass the matching flag",
            ) from None
    return values


def platform_name(env: Mapping[str, str], device_name: str) -> str:
    """`<nodes>x<platform>` like NVIDIA's logs, from MLPERF_SUBMISSION_PLATFORM or DGXSYSTEM."""
    given = env.get("MLPERF_SUBMISSION_PLATFORM") or env.get("DGXSYSTEM") or device_name
    if re.match(r"^\d+x", given):
        return given
    nodes = env.get("DGXNNODES") or env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or "1"
    return f"{nodes}x{given}"


def resolve(args: argparse.Namespace, env: Mapping[str, str], device_name: str) -> RunConfig:
    """Profile defaults < environment < flags, then checks that name the offending setting."""
    profile = args.profile or env.get("HPCREPRO_WORKLOAD_PROFILE", "").strip() or "full"
    if profile not in PROFILES:
        raise UserError(
            f"HPCREPRO_WORKLOAD_PROFILE='{profile}' is not a profile",
            hint=f"use one of: {', '.join(sorted(PROFILES))}",
        )
    values: dict[str, Any] = {**PROFILES[profile], **RUNTIME_DEFAULTS}
    values.update(_from_env(env))
    for item in fields(RunConfig):
        flag_value = getattr(args, item.name, None)
        if flag_value is not None and item.name not in ("profile", "device"):
            values[item.name] = flag_value
    if "data_dir" not in values:
        raise UserError(
            "no data folder given",
            hint="set HPCREPRO_DATA_DIR or pass --data-dir (the folder with train.rec/train.idx/"
            "val.rec/val.idx)",
        )
    config = RunConfig(
        profile=profile,
        seed=values.pop("seed", None),
        device=args.device,
        org=env.get("MLPERF_SUBMISSION_ORG") or "hpcrepro",
        platform=platform_name(env, device_name),
        **values,
    )
    _check(config)
    return config


@dataclass(frozen=True)
class FloatRange:
    """Where a float setting may lie; `None` leaves that side open."""

    variable: str
    low: float
    high: float | None
    low_allowed: bool
    high_allowed: bool

    def admits(self, value: float) -> bool:
        above = value >= self.low if self.low_allowed else value > self.low
        below = self.high is None or (
            value <= self.high if self.high_allowed else value < self.high
        )
        return above and below

    def describe(self) -> str:
        opening = "[" if self.low_allowed else "("
        if self.high is None:
            return f"{opening}{self.low:g}, inf)"
        closing = "]" if self.high_allowed else ")"
        return f"{opening}{self.low:g}, {self.high:g}{closing}"


FLOAT_RANGES = {
    "lr": FloatRange("LR", 0.0, None, False, False),
    "warmup_epochs": FloatRange("WARMUP_EPOCHS", 0.0, None, True, False),
    "weight_decay": FloatRange("WD", 0.0, None, True, False),
    "momentum": FloatRange("MOM", 0.0, 1.0, True, False),
    "lars_eta": FloatRange("LARSETA", 0.0, None, False, False),
    "label_smoothing": FloatRange("LABELSMOOTHING", 0.0, 1.0, True, False),
    "target_accuracy": FloatRange("--target-accuracy", 0.0, 1.0, False, True),
}


def _check_floats(config: RunConfig) -> None:
    """Every float finite and in its range: a NaN or infinite rate would train on NaN weights
    and log `NaN` values that no MLLOG reader accepts."""
    for name, allowed in FLOAT_RANGES.items():
        value = getattr(config, name)
        hint = f"set {allowed.variable} to a number such as {PROFILES[config.profile][name]}"
        if not math.isfinite(value):
            raise UserError(f"{allowed.variable} must be a finite number, got {value}", hint=hint)
        if not allowed.admits(value):
            raise UserError(
                f"{allowed.variable} must be in {allowed.describe()}, got {value}", hint=hint
            )


def _check(config: RunConfig) -> None:
    _check_floats(config)
    positive = {
        "batch_size": "BATCHSIZE",
        "epochs": "NUMEPOCHS",
        "eval_period": "EVAL_PERIOD",
        "num_classes": "--num-classes",
        "image_size": "--image-size",
        "width": "--width",
    }
    for name, source in positive.items():
        if getattr(config, name) <= 0:
            raise UserError(f"{source} must be positive, got {getattr(config, name)}")
    if config.eval_offset < 0 or config.workers < 0:
        raise UserError("EVAL_OFFSET and --workers must not be negative")
    if not 1 <= config.dali_pipelines <= MAX_DALI_PIPELINES:
        raise UserError(
            f"HPCREPRO_DALI_PIPELINES (--dali-pipelines) must be 1 to {MAX_DALI_PIPELINES}, "
            f"got {config.dali_pipelines}",
            hint="2 keeps two batches in flight, which is what one GPU needs beside its step",
        )
    for name, variable, allowed in (
        ("data_backend", "HPCREPRO_DATA_BACKEND", DATA_BACKENDS),
        ("compile_mode", "HPCREPRO_COMPILE", COMPILE_CHOICES),
    ):
        if getattr(config, name) not in allowed:
            raise UserError(
                f"{variable}='{getattr(config, name)}' is not one of: {', '.join(allowed)}",
                hint=f"fix {variable}, or pass the matching flag",
            )
    if "lars" not in config.optimizer.lower():
        raise UserError(
            f"OPTIMIZER='{config.optimizer}' is not supported by the reference workload",
            hint="it implements LARS (NVIDIA's sgdwfastlars / sgdwfastlarsv2) only",
        )
    if not config.eval_epochs():
        raise UserError(
            f"no evaluation falls within NUMEPOCHS={config.epochs} "
            f"(EVAL_OFFSET={config.eval_offset}, EVAL_PERIOD={config.eval_period})",
            hint="raise NUMEPOCHS or lower EVAL_OFFSET",
        )


def with_seed(config: RunConfig, seed: int) -> RunConfig:
    return replace(config, seed=seed)


def cache_cleared(env: Mapping[str, str] | None = None) -> bool:
    """Whether the job dropped the page cache before this run and logged `cache_clear` itself.

    Like NVIDIA's run.sub, the job script drops the cache and logs `cache_clear: true`; it sets
    HPCREPRO_CACHE_CLEARED=1 so the workload does not log a second, contradicting event.
    """
    env = os.environ if env is None else env
    return env.get("HPCREPRO_CACHE_CLEARED", "").strip().lower() in ("1", "true", "yes")
