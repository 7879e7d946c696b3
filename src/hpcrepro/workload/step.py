"""The training step and the evaluation forward, compiled with `torch.compile` where asked.

Compilation (and cuDNN's algorithm search, and CUDA-graph capture in `reduce-overhead` mode)
happens in `warm_up`, which the entry point calls between `init_start` and `init_stop`, on random
tensors rather than training data, as NVIDIA's own code warms up and captures its graphs before
`run_start`. The MLPerf clock therefore starts on a compiled model; ruleset 4.0.0 allows 30
minutes of initialisation in the closed division (240 in the open), and the compliance checker
checks that. Warm-up steps run with learning rate 0; afterwards the weights, batch-norm
statistics and optimiser state are put back exactly, so the run starts from its seeded weights.

The evaluation forward always sees full batches when compiled: the last, shorter batch is padded
(and the padding not counted), so no shape ever forces a recompilation mid-run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from hpcrepro.workload.optim import PolySchedule, set_lr


class TrainStep:
    def __init__(
        self,
        model: nn.Module,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: nn.Module,
        schedule: PolySchedule,
        device: torch.device,
        compile_mode: str,
        fall_back: bool = False,
    ) -> None:
        """`model` is what runs (DDP-wrapped where distributed), `module` the bare network.

        With `fall_back` (compilation chosen by `auto`, not asked for), a compilation that fails in
        the warm-up (no C compiler for Triton, say) leaves the step eager; `fell_back` says why.
        """
        self.model, self.module, self.optimizer = model, module, optimizer
        self.criterion, self.schedule, self.device = criterion, schedule, device
        self.compile_mode, self.fall_back, self.fell_back = compile_mode, fall_back, ""
        self.graphs = compile_mode == "reduce-overhead"
        self.bf16 = device.type == "cuda"
        self._loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = self._forward_loss
        self._logits: Callable[[torch.Tensor], torch.Tensor] = self._forward_logits
        if compile_mode != "off":
            mode = None if compile_mode == "default" else compile_mode
            self._loss = torch.compile(self._forward_loss, mode=mode, dynamic=False)
            self._logits = torch.compile(self._forward_logits, mode=mode, dynamic=False)

    # The autocast context is made inside each function, where torch.compile traces it.
    def _forward_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.criterion(self.model(inputs), targets)

    def _forward_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.model(inputs)

    def train(self, inputs: torch.Tensor, targets: torch.Tensor, step: int) -> None:
        """One optimiser step at the schedule's learning rate for global step `step`."""
        self._apply(inputs, targets, self.schedule(step))

    def _apply(self, inputs: torch.Tensor, targets: torch.Tensor, lr: float) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()
        loss = self._loss(inputs, targets)
        loss.backward()
        set_lr(self.optimizer, lr)
        self.optimizer.step()

    @torch.no_grad()
    def correct(self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Number of right top-1 predictions in the batch (a tensor on the device: no sync)."""
        count = len(targets)
        if self.compile_mode != "off" and count < batch_size:
            layout = _format_of(inputs)
            padding = inputs.new_zeros((batch_size - count, *inputs.shape[1:]))
            inputs = torch.cat([inputs, padding]).contiguous(memory_format=layout)
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()
        predicted = self._logits(inputs)[:count].argmax(dim=1)
        return (predicted == targets).sum()

    def warm_up(
        self, batch_size: int, image_size: int, num_classes: int, dtype: torch.dtype, steps: int = 3
    ) -> float:
        """Compile and tune both graphs on random tensors, then restore the initial state.

        Returns the seconds it took. Every rank must call it (the steps all-reduce under DDP).
        """
        started = time.perf_counter()
        saved = {name: value.clone() for name, value in self.module.state_dict().items()}
        generator = torch.Generator(device=self.device).manual_seed(0)
        on_gpu = self.device.type == "cuda"
        memory_format = torch.channels_last if on_gpu else torch.contiguous_format
        inputs = torch.randn(
            (batch_size, 3, image_size, image_size),
            generator=generator,
            device=self.device,
            dtype=torch.float32,
        ).to(dtype=dtype, memory_format=memory_format)
        targets = torch.randint(
            0, num_classes, (batch_size,), generator=generator, device=self.device
        )
        try:
            self._exercise(inputs, targets, batch_size, steps)
        except Exception as exc:
            if self.compile_mode == "off" or not self.fall_back:
                raise
            self.fell_back = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self._loss, self._logits = self._forward_loss, self._forward_logits
            self.compile_mode, self.graphs = "off", False
            self._exercise(inputs, targets, batch_size, steps)
        with torch.no_grad():
            self.module.load_state_dict(saved)
        self.optimizer.state.clear()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started

    def _exercise(
        self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, steps: int
    ) -> None:
        self.model.train()
        for _ in range(steps):
            self._apply(inputs, targets, 0.0)
        self.model.eval()
        for count in (batch_size, max(1, batch_size // 2)):  # a full and a padded last batch
            self.correct(inputs[:count], targets[:count], batch_size)
        self.model.train()


def _format_of(tensor: torch.Tensor) -> torch.memory_format:
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
