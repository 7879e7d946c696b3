"""The MLPerf ResNet recipe: LARS, linear warmup then polynomial (power 2) decay, label smoothing.

LARS as in MLPerf's reference and NVIDIA's `sgdwfastlars`: convolution and classifier weights get
a per-layer trust ratio eta*|w| / (|g| + wd*|w|) and weight decay; batch-norm parameters and
biases get plain momentum SGD without weight decay. The compliance rules fix epsilon at 0, the end
learning rate at 1e-4 and the decay power at 2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

END_LR = 0.0001
POLY_POWER = 2
LARS_EPSILON = 0.0


class Lars(torch.optim.Optimizer):
    """Momentum SGD with layer-wise adaptive rate scaling for groups whose `lars` flag is set."""

    def __init__(
        self, groups: Iterable[dict], lr: float, momentum: float, weight_decay: float, eta: float
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "lars": True,
        }
        super().__init__(list(groups), defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["lars"]:
                wd, eta = group["weight_decay"], group["eta"]
                w_norms = torch.stack(torch._foreach_norm(params))
                g_norms = torch.stack(torch._foreach_norm(grads))
                trust = eta * w_norms / (g_norms + wd * w_norms + LARS_EPSILON)
                # No scaling where either norm is zero (fresh zero-initialised layers).
                trust = torch.where((w_norms > 0) & (g_norms > 0), trust, torch.ones_like(trust))
                updates = torch._foreach_add(grads, params, alpha=wd)
                torch._foreach_mul_(updates, list((trust * group["lr"]).unbind()))
            else:
                updates = torch._foreach_mul(grads, group["lr"])
            buffers = []
            for param in params:
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param)
                buffers.append(state["momentum_buffer"])
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, updates)
            torch._foreach_sub_(params, buffers)


def lars_groups(model: nn.Module) -> list[dict]:
    """Weights (conv, linear) get LARS and weight decay; BN parameters and biases get neither."""
    scaled: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    for parameter in model.parameters():
        (scaled if parameter.ndim > 1 else plain).append(parameter)
    return [{"params": scaled, "lars": True}, {"params": plain, "lars": False, "weight_decay": 0.0}]


@dataclass(frozen=True)
class PolySchedule:
    """Learning rate per step: linear warmup to `base_lr`, then (1 - progress)^2 decay to END_LR."""

    base_lr: float
    warmup_steps: int
    total_steps: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return END_LR + (self.base_lr - END_LR) * (1.0 - progress) ** POLY_POWER


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def smoothed_cross_entropy(smoothing: float) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=smoothing)
