"""LARS and the MLPerf schedule against hand-computed values."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from hpcrepro.workload.optim import (  # noqa: E402
    END_LR,
    Lars,
    PolySchedule,
    lars_groups,
    smoothed_cross_entropy,
)


def test_schedule_warms_up_linearly_then_decays_quadratically_to_end_lr():
    schedule = PolySchedule(base_lr=10.0, warmup_steps=4, total_steps=14)
    assert [schedule(step) for step in range(4)] == [2.5, 5.0, 7.5, 10.0]
    assert schedule(4) == pytest.approx(10.0)
    assert schedule(9) == pytest.approx(END_LR + (10.0 - END_LR) * 0.25)
    assert schedule(14) == pytest.approx(END_LR)
    assert schedule(100) == pytest.approx(END_LR)


def test_lars_step_matches_the_formula():
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # |w| = 5
    bias = torch.nn.Parameter(torch.tensor([1.0]))
    weight.grad = torch.tensor([[0.6, 0.8]])  # |g| = 1
    bias.grad = torch.tensor([0.5])
    lr, wd, eta, momentum = 2.0, 0.01, 0.001, 0.9
    optimizer = Lars(
        [
            {"params": [weight], "lars": True},
            {"params": [bias], "lars": False, "weight_decay": 0.0},
        ],
        lr=lr,
        momentum=momentum,
        weight_decay=wd,
        eta=eta,
    )
    optimizer.step()
    trust = eta * 5.0 / (1.0 + wd * 5.0)
    expected_update = lr * trust * (torch.tensor([[0.6, 0.8]]) + wd * torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(weight.detach(), torch.tensor([[3.0, 4.0]]) - expected_update)
    torch.testing.assert_close(bias.detach(), torch.tensor([1.0 - lr * 0.5]))
    # Second step: momentum carries the first update.
    weight.grad = torch.tensor([[0.6, 0.8]])
    bias.grad = torch.tensor([0.5])
    before = bias.detach().clone()
    optimizer.step()
    torch.testing.assert_close(bias.detach(), before - (momentum * lr * 0.5 + lr * 0.5))


def test_zero_weight_layers_are_not_scaled():
    weight = torch.nn.Parameter(torch.zeros(2, 2))
    weight.grad = torch.ones(2, 2)
    optimizer = Lars([{"params": [weight]}], lr=0.1, momentum=0.0, weight_decay=0.0, eta=0.001)
    optimizer.step()
    torch.testing.assert_close(weight.detach(), torch.full((2, 2), -0.1))


def test_batch_norm_and_biases_get_neither_lars_nor_weight_decay():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 2)
    )
    scaled, plain = lars_groups(model)
    assert {p.ndim for p in scaled["params"]} == {2, 4}
    assert len(plain["params"]) == 4 and plain["weight_decay"] == 0.0 and not plain["lars"]


def test_label_smoothing_loss_value():
    loss = smoothed_cross_entropy(0.1)(torch.zeros(1, 10), torch.tensor([3]))
    assert float(loss) == pytest.approx(math.log(10))
