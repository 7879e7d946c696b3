"""The training loop: epochs in eval-delimited blocks, evaluation across ranks, MLLOG events.

Blocks follow NVIDIA's logs: a block runs from the epoch after one evaluation to the next
evaluation epoch. Epochs after the last scheduled evaluation are not trained (nothing could judge
them); NUMEPOCHS still sets the length of the learning-rate decay.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from mlperf_logging.mllog import constants as keys
from torch import nn

from hpcrepro.errors import UserError
from hpcrepro.workload.augment import normalise
from hpcrepro.workload.config import RunConfig
from hpcrepro.workload.data import (
    EncodedRecordDataset,
    RecordImageDataset,
    ShardedBatches,
    make_loader,
)
from hpcrepro.workload.dist import Placement
from hpcrepro.workload.mlperf import MLPerfLogger
from hpcrepro.workload.model import ResNet50
from hpcrepro.workload.optim import Lars, PolySchedule, lars_groups, smoothed_cross_entropy
from hpcrepro.workload.prefetch import Assembler, Prefetcher
from hpcrepro.workload.step import TrainStep

if TYPE_CHECKING:
    from hpcrepro.workload.nvjpeg import Decoder


@dataclass
class Runtime:
    """Where this process runs, and the fast paths `fastpath` chose for it."""

    place: Placement
    device: torch.device
    use_gpu: bool
    data_backend: str = "cpu"
    compile_mode: str = "off"


def check_labels(labels: torch.Tensor, num_classes: int) -> None:
    if int(labels.max()) >= num_classes or int(labels.min()) < 0:
        raise UserError(
            f"a record has label {int(labels.max())}, outside 0..{num_classes - 1}",
            hint="pass --num-classes with the number of classes of the data set",
        )


class DeviceBatches:
    """One split's batches of one epoch, as normalised images and labels on the device.

    The CPU path decodes in the loader workers and normalises here; the GPU paths (dali,
    nvimgcodec, nvjpeg) get JPEG bytes from the workers and decode them on the GPU in a prefetch
    thread (for dali, in DALI's own threads, which the prefetch thread feeds).
    """

    def __init__(
        self,
        dataset: RecordImageDataset,
        sampler: ShardedBatches,
        cfg: RunConfig,
        runtime: Runtime,
        decoder: Decoder | None = None,
    ) -> None:
        """`decoder` replaces the GPU decoder of an `EncodedRecordDataset` (tests: Pillow)."""
        self.sampler, self.cfg, self.runtime = sampler, cfg, runtime
        self.channels_last = runtime.use_gpu
        # bf16 inputs on the GPU (the first convolution runs in bf16 under autocast anyway).
        self.dtype = torch.bfloat16 if runtime.use_gpu else torch.float32
        self.loader = make_loader(dataset, sampler, cfg.workers, runtime.use_gpu)
        self.prefetcher: Prefetcher | None = None
        self.waited = 0.0  # seconds the consumer of `epoch` spent waiting for its next batch
        if isinstance(dataset, EncodedRecordDataset):
            from hpcrepro.workload.nvjpeg import BatchAssembler, gpu_decoder

            assemblers: list[Assembler]
            if runtime.data_backend == "dali" and decoder is None:
                from hpcrepro.workload.dali import DaliAssembler, pipeline_threads

                pipelines = cfg.dali_pipelines
                threads = pipeline_threads(runtime.place.local_world_size, cfg.workers, pipelines)
                assemblers = [
                    DaliAssembler(
                        runtime.device,
                        cfg.image_size,
                        self.channels_last,
                        self.dtype,
                        batch_size=cfg.batch_size,
                        threads=threads,
                    )
                    for _ in range(pipelines)
                ]
            else:
                assemblers = [
                    BatchAssembler(
                        runtime.device,
                        cfg.image_size,
                        decoder or gpu_decoder(runtime.data_backend, runtime.device),
                        self.channels_last,
                        self.dtype,
                    )
                ]
            self.prefetcher = Prefetcher(
                _LabelChecked(self.loader, cfg.num_classes), assemblers, runtime.device
            )

    def _on_device(self) -> Generator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.runtime.device
        for images, labels in self.loader:
            check_labels(labels, self.cfg.num_classes)
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            yield normalise(images, self.channels_last, self.dtype), labels

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `epoch`; the time spent waiting for each is added to `waited`."""
        self.sampler.epoch = epoch
        source = self._on_device() if self.prefetcher is None else self.prefetcher.__iter__()
        with contextlib.closing(source) as batches:  # a consumer that stops stops the threads
            while True:
                started = time.perf_counter()
                batch = next(batches, None)
                self.waited += time.perf_counter() - started
                if batch is None:
                    return
                yield batch


@dataclass
class _LabelChecked:
    """The encoded batches of a loader, each checked for labels the classifier cannot have."""

    loader: Iterable
    num_classes: int

    def __iter__(self) -> Iterator:
        for batch in self.loader:
            check_labels(batch.labels, self.num_classes)
            yield batch


class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        runtime: Runtime,
        train_set: RecordImageDataset,
        val_set: RecordImageDataset,
        steps_per_epoch: int,
        log: MLPerfLogger,
    ) -> None:
        assert cfg.seed is not None
        self.cfg, self.runtime, self.log = cfg, runtime, log
        self.place = runtime.place
        self.steps_per_epoch = steps_per_epoch
        memory_format = torch.channels_last if runtime.use_gpu else torch.contiguous_format
        model = ResNet50(num_classes=cfg.num_classes, width=cfg.width)
        model = model.to(runtime.device).to(memory_format=memory_format)  # type: ignore[call-overload]
        self.model: nn.Module = model
        if self.place.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                model,
                device_ids=[runtime.device.index] if runtime.use_gpu else None,
                gradient_as_bucket_view=True,
            )
        optimizer = Lars(
            lars_groups(model),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            eta=cfg.lars_eta,
        )
        schedule = PolySchedule(
            base_lr=cfg.lr,
            warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
            total_steps=cfg.epochs * steps_per_epoch,
        )
        self.step = TrainStep(
            self.model,
            model,
            optimizer,
            smoothed_cross_entropy(cfg.label_smoothing),
            schedule,
            runtime.device,
            runtime.compile_mode,
            fall_back=cfg.compile_mode == "auto",
        )
        rank, world = self.place.rank, self.place.world_size
        train_batches = ShardedBatches(
            len(train_set), cfg.batch_size, rank, world, cfg.seed, train=True
        )
        val_batches = ShardedBatches(len(val_set), cfg.batch_size, rank, world, cfg.seed, False)
        self.train_batches = DeviceBatches(train_set, train_batches, cfg, runtime)
        self.val_batches = DeviceBatches(val_set, val_batches, cfg, runtime)
        self.global_step = 0
        self.train_seconds = 0.0  # in training epochs, evaluations not counted

    def warm_up(self) -> float:
        """Compile and tune before run_start (see `step`); seconds taken, 0 when eager on CPU."""
        if self.runtime.compile_mode == "off" and not self.runtime.use_gpu:
            return 0.0
        return self.step.warm_up(
            self.cfg.batch_size,
            self.cfg.image_size,
            self.cfg.num_classes,
            self.train_batches.dtype,
        )

    def train_epoch(self, epoch: int) -> float:
        """One epoch; returns images per second over all ranks."""
        self.model.train()
        started = time.perf_counter()
        for inputs, targets in self.train_batches.epoch(epoch):
            self.step.train(inputs, targets, self.global_step)
            self.global_step += 1
        if self.runtime.use_gpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        self.train_seconds += seconds
        images_seen = self.steps_per_epoch * self.cfg.batch_size * self.place.world_size
        return images_seen / seconds

    @torch.no_grad()
    def evaluate(self) -> float:
        """Top-1 accuracy over the whole validation set, each image counted once across ranks."""
        self.model.eval()
        counts = torch.zeros(2, dtype=torch.float64, device=self.runtime.device)
        for inputs, targets in self.val_batches.epoch(0):
            counts[0] += self.step.correct(inputs, targets, self.cfg.batch_size)
            counts[1] += targets.numel()
        if self.place.world_size > 1:
            torch.distributed.all_reduce(counts)
        return float(counts[0] / counts[1])

    def input_wait(self) -> str:
        """How long the training epochs waited for input batches: a run that waits is
        input-bound, whatever its step could do."""
        waited, seconds = self.train_batches.waited, self.train_seconds
        share = waited / seconds if seconds else 0.0
        text = f"training epochs waited {waited:.2f} s of {seconds:.2f} s for input ({share:.0%})"
        if share > 0.05:
            more = "loader workers (--workers)"
            if self.runtime.data_backend == "dali":
                more += " or DALI pipelines (--dali-pipelines)"
            text += f"; input-bound: more {more} may help"
        return text

    def train(self) -> str:
        """Blocks of epochs until the target is met (success) or evaluations run out (aborted)."""
        log, cfg = self.log, self.cfg
        first = 1
        for eval_epoch in cfg.eval_epochs():
            log.start(
                keys.BLOCK_START,
                metadata={keys.FIRST_EPOCH_NUM: first, keys.EPOCH_COUNT: eval_epoch - first + 1},
            )
            for epoch in range(first, eval_epoch + 1):
                log.start(keys.EPOCH_START, metadata={keys.EPOCH_NUM: epoch})
                throughput = self.train_epoch(epoch)
                log.end(keys.EPOCH_STOP, metadata={keys.EPOCH_NUM: epoch})
                log.event(
                    "tracked_stats", {"throughput": round(throughput, 2)}, metadata={"step": epoch}
                )
            log.start(keys.EVAL_START, metadata={keys.EPOCH_NUM: eval_epoch})
            accuracy = self.evaluate()
            log.end(keys.EVAL_STOP, metadata={keys.EPOCH_NUM: eval_epoch})
            log.event(keys.EVAL_ACCURACY, accuracy, metadata={keys.EPOCH_NUM: eval_epoch})
            log.end(keys.BLOCK_STOP, metadata={keys.FIRST_EPOCH_NUM: first})
            if accuracy >= cfg.target_accuracy:
                log.end(keys.RUN_STOP, metadata={keys.STATUS: keys.SUCCESS, "epoch": eval_epoch})
                return keys.SUCCESS
            first = eval_epoch + 1
        log.end(keys.RUN_STOP, metadata={keys.STATUS: keys.ABORTED, "epoch": first - 1})
        return keys.ABORTED
