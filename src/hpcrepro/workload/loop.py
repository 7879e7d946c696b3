"""The training loop: epochs in eval-delimited blocks, evaluation across ranks, MLLOG events.

Blocks follow NVIDIA's logs: a block runs from the epoch after one evaluation to the next
evaluation epoch. Epochs after the last scheduled evaluation are not trained (nothing could judge
them); NUMEPOCHS still sets the length of the learning-rate decay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from mlperf_logging.mllog import constants as keys
from torch import nn

from hpcrepro.errors import UserError
from hpcrepro.workload.config import RunConfig
from hpcrepro.workload.data import RecordImageDataset, ShardedBatches, make_loader, normalise
from hpcrepro.workload.dist import Placement
from hpcrepro.workload.mlperf import MLPerfLogger
from hpcrepro.workload.model import ResNet50
from hpcrepro.workload.optim import Lars, PolySchedule, lars_groups, set_lr, smoothed_cross_entropy


@dataclass
class Runtime:
    """Where this process runs."""

    place: Placement
    device: torch.device
    use_gpu: bool


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
        self.memory_format = torch.channels_last if runtime.use_gpu else torch.contiguous_format
        model = ResNet50(num_classes=cfg.num_classes, width=cfg.width)
        model = model.to(runtime.device).to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.model: nn.Module = model
        if self.place.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                model,
                device_ids=[runtime.device.index] if runtime.use_gpu else None,
                gradient_as_bucket_view=True,
            )
        self.optimizer = Lars(
            lars_groups(model),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            eta=cfg.lars_eta,
        )
        self.schedule = PolySchedule(
            base_lr=cfg.lr,
            warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
            total_steps=cfg.epochs * steps_per_epoch,
        )
        self.criterion = smoothed_cross_entropy(cfg.label_smoothing)
        self.train_batches = ShardedBatches(
            len(train_set),
            cfg.batch_size,
            self.place.rank,
            self.place.world_size,
            cfg.seed,
            train=True,
        )
        val_batches = ShardedBatches(
            len(val_set),
            cfg.batch_size,
            self.place.rank,
            self.place.world_size,
            cfg.seed,
            train=False,
        )
        pin = runtime.use_gpu
        self.train_loader = make_loader(train_set, self.train_batches, cfg.workers, pin)
        self.val_loader = make_loader(val_set, val_batches, cfg.workers, pin)
        self.autocast = torch.autocast(
            device_type=runtime.device.type, dtype=torch.bfloat16, enabled=runtime.use_gpu
        )
        self.step = 0

    def _inputs(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if int(labels.max()) >= self.cfg.num_classes or int(labels.min()) < 0:
            raise UserError(
                f"a record has label {int(labels.max())}, outside 0..{self.cfg.num_classes - 1}",
                hint="pass --num-classes with the number of classes of the data set",
            )
        device = self.runtime.device
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        return normalise(images, self.runtime.use_gpu, torch.float32), labels

    def train_epoch(self, epoch: int) -> float:
        """One epoch; returns images per second over all ranks."""
        self.model.train()
        self.train_batches.epoch = epoch
        started = time.perf_counter()
        for images, labels in self.train_loader:
            inputs, targets = self._inputs(images, labels)
            with self.autocast:
                loss = self.criterion(self.model(inputs), targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            set_lr(self.optimizer, self.schedule(self.step))
            self.optimizer.step()
            self.step += 1
        if self.runtime.use_gpu:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        images_seen = self.steps_per_epoch * self.cfg.batch_size * self.place.world_size
        return images_seen / seconds

    @torch.no_grad()
    def evaluate(self) -> float:
        """Top-1 accuracy over the whole validation set, each image counted once across ranks."""
        self.model.eval()
        counts = torch.zeros(2, dtype=torch.float64, device=self.runtime.device)
        for images, labels in self.val_loader:
            inputs, targets = self._inputs(images, labels)
            with self.autocast:
                predicted = self.model(inputs).argmax(dim=1)
            counts[0] += (predicted == targets).sum()
            counts[1] += targets.numel()
        if self.place.world_size > 1:
            torch.distributed.all_reduce(counts)
        return float(counts[0] / counts[1])

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
