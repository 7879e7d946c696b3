"""`python -m hpcrepro.workload.train`: one MLPerf-style ResNet-50 training run, a process per task.

Started once per task by srun (or hpcrepro's local launcher); reads NVIDIA's run_and_time.sh
variables (see `config`), trains with LARS until an evaluation reaches the target accuracy or the
epochs run out, and prints MLLOG lines on rank 0. Exit code 0 for a finished run, converged or
not (`run_stop` says which: success or aborted); 2 for a settings mistake.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hpcrepro.errors import USER_ERROR_EXIT, UserError
from hpcrepro.workload import config as run_config
from hpcrepro.workload.dist import Placement

if TYPE_CHECKING:
    import torch


def main(argv: Sequence[str] | None = None) -> int:
    args = run_config.build_parser().parse_args(argv)
    try:
        run(args)
    except UserError as error:
        text = error.render()
        if "Original Traceback" in text:  # raised in a loader worker: keep the original message
            text = text.rsplit("UserError: ", 1)[-1]
        lines = text.splitlines()
        sys.stderr.write(f"error: {lines[0]}\n" + "".join(f"  {line}\n" for line in lines[1:]))
        return USER_ERROR_EXIT
    return 0


def run(args: argparse.Namespace) -> str:
    """Set up, train, and return the run_stop status ("success" or "aborted")."""
    import torch
    from mlperf_logging.mllog import constants as keys

    from hpcrepro.workload import dist, fastpath
    from hpcrepro.workload.data import EncodedRecordDataset, RecordImageDataset
    from hpcrepro.workload.mlperf import (
        MLPerfLogger,
        division_for,
        log_hyperparameters,
        log_submission,
    )
    from hpcrepro.workload.optim import END_LR, LARS_EPSILON, POLY_POWER

    place = dist.placement_from_env()
    use_gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_gpu and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no GPU")
    if use_gpu:
        index = dist.gpu_index(place, torch.cuda.device_count())
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
        device_name = torch.cuda.get_device_name(index)
        torch.backends.cudnn.benchmark = True
    else:
        device = torch.device("cpu")
        device_name = "CPU"
    cfg = run_config.resolve(args, os.environ, device_name)
    if not use_gpu:
        torch.set_num_threads(dist.cpu_threads(place, cfg.workers))
    backend = fastpath.choose_data_backend(
        cfg.data_backend,
        use_gpu,
        {
            "dali": lambda: fastpath.dali_problem(device),
            "nvimgcodec": lambda: fastpath.nvimgcodec_problem(device),
            "nvjpeg": lambda: fastpath.nvjpeg_problem(device),
        },
    )
    compiled = fastpath.choose_compile(cfg.compile_mode, use_gpu)
    log = MLPerfLogger(enabled=place.rank == 0)
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    sys.stderr.write(
        f"hpcrepro.workload: rank {place.rank}/{place.world_size} on node {node}, {device_name}, "
        f"rendezvous {place.master_addr}:{place.master_port}; data: {backend.name} "
        f"({backend.reason}), step: compile {compiled.name} ({compiled.reason})\n"
    )

    data_dir = Path(cfg.data_dir)
    # Index files only: cheap, and the sample counts decide the division before anything is logged.
    dataset = EncodedRecordDataset if backend.name in fastpath.GPU_BACKENDS else RecordImageDataset
    train_set = dataset(data_dir / "train.rec", data_dir / "train.idx", cfg.image_size, True, 0)
    val_set = dataset(data_dir / "val.rec", data_dir / "val.idx", cfg.image_size, False, 0)
    log_submission(
        log,
        org=cfg.org,
        platform=cfg.platform,
        division=division_for(
            width=cfg.width,
            image_size=cfg.image_size,
            num_classes=cfg.num_classes,
            target=cfg.target_accuracy,
            train_samples=len(train_set),
            eval_samples=len(val_set),
        ),
    )
    if not run_config.cache_cleared():
        # Nobody dropped the cache: say so, and the log still carries the key the rules ask for.
        log.event(keys.CACHE_CLEAR, False)
    log.start(keys.INIT_START)

    dist.init_process_group(place, use_gpu)
    seed = cfg.seed if cfg.seed is not None else _shared_random_seed(place, device)
    cfg = run_config.with_seed(cfg, seed)
    log.event(keys.SEED, seed)
    torch.manual_seed(seed)
    train_set.seed = seed

    if len(val_set) == 0:
        raise UserError(f"{data_dir / 'val.idx'} lists no images", hint="rebuild the data set")
    global_batch = cfg.batch_size * place.world_size
    steps_per_epoch = len(train_set) // global_batch
    if steps_per_epoch == 0:
        raise UserError(
            f"the training set has {len(train_set)} images, fewer than one global batch "
            f"({cfg.batch_size} per task x {place.world_size} tasks = {global_batch})",
            hint="lower BATCHSIZE or use a larger data set",
        )
    log_hyperparameters(
        log,
        global_batch=global_batch,
        local_batch=cfg.batch_size,
        lr=cfg.lr,
        warmup_epochs=cfg.warmup_epochs,
        epochs=cfg.epochs,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        end_lr=END_LR,
        poly_power=POLY_POWER,
        epsilon=LARS_EPSILON,
    )
    from hpcrepro.workload.loop import Runtime, Trainer

    runtime = Runtime(place, device, use_gpu, backend.name, compiled.name)
    trainer = Trainer(cfg, runtime, train_set, val_set, steps_per_epoch, log)
    # Compilation and tuning belong to initialisation, as in NVIDIA's code: before run_start.
    seconds = trainer.warm_up()
    if trainer.step.fell_back:
        sys.stderr.write(
            f"hpcrepro.workload: rank {place.rank}: torch.compile failed in the warm-up "
            f"({trainer.step.fell_back}); training eagerly\n"
        )
    if seconds and place.rank == 0:
        mode = trainer.step.compile_mode
        sys.stderr.write(f"hpcrepro.workload: warm-up (compile {mode}) {seconds:.1f} s\n")
    log.end(keys.INIT_STOP)
    if place.world_size > 1:
        torch.distributed.barrier()
    log.start(keys.RUN_START)
    log.event(keys.TRAIN_SAMPLES, len(train_set))
    log.event(keys.EVAL_SAMPLES, len(val_set))
    status = trainer.train()
    sys.stderr.write(f"hpcrepro.workload: rank {place.rank}: {trainer.input_wait()}\n")
    if place.world_size > 1:
        torch.distributed.destroy_process_group()
    return status


def _shared_random_seed(place: Placement, device: torch.device) -> int:
    """A fresh seed when SEED is unset; rank 0 draws it and every rank uses the same one."""
    import torch

    seed = torch.tensor([secrets.randbelow(2**31)], dtype=torch.int64, device=device)
    if place.world_size > 1:
        torch.distributed.broadcast(seed, src=0)
    return int(seed.item())


if __name__ == "__main__":
    sys.exit(main())
