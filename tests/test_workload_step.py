"""The training step: warm-up before run_start leaves no trace, padded evaluation counts right."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hpcrepro.workload.model import ResNet50  # noqa: E402
from hpcrepro.workload.optim import Lars, PolySchedule, lars_groups, smoothed_cross_entropy  # noqa: E402
from hpcrepro.workload.step import TrainStep  # noqa: E402

CPU = torch.device("cpu")


def make_step(
    compile_mode: str = "off", fall_back: bool = False
) -> tuple[TrainStep, torch.nn.Module]:
    torch.manual_seed(0)
    model = ResNet50(num_classes=4, width=4)
    optimizer = Lars(lars_groups(model), lr=2.0, momentum=0.9, weight_decay=5e-5, eta=0.001)
    schedule = PolySchedule(base_lr=2.0, warmup_steps=1, total_steps=10)
    criterion = smoothed_cross_entropy(0.1)
    step = TrainStep(model, model, optimizer, criterion, schedule, CPU, compile_mode, fall_back)
    return step, model


def test_warm_up_restores_weights_statistics_and_optimiser_state_exactly():
    step, model = make_step()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    seconds = step.warm_up(batch_size=4, image_size=32, num_classes=4, dtype=torch.float32)
    assert seconds > 0
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert not step.optimizer.state and model.training
    assert all(p.grad is None for p in model.parameters())


def test_warm_up_really_trains_and_evaluates_so_the_restore_is_needed():
    step, model = make_step()
    running_mean = model.stem[1].running_mean.clone()
    inputs, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    step._apply(inputs, targets, 0.0)  # what warm_up runs: lr 0, and still the BN statistics move
    assert not torch.equal(model.stem[1].running_mean, running_mean)
    assert step.optimizer.state  # momentum buffers exist after a step


def test_a_short_evaluation_batch_is_padded_and_the_padding_not_counted():
    step, model = make_step()
    model.eval()
    inputs, targets = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    plain = int(step.correct(inputs, targets, batch_size=8))
    step.compile_mode = "default"  # what a compiled run does: pad to the full batch
    padded = int(step.correct(inputs, targets, batch_size=8))
    assert padded == plain and 0 <= plain <= 3


def test_a_training_step_follows_the_schedule():
    step, model = make_step()
    before = [p.clone() for p in model.parameters()]
    step.train(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]), 0)
    assert step.optimizer.param_groups[0]["lr"] == step.schedule(0)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def _no_compiler(*args):
    raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")


def test_a_compilation_chosen_by_auto_that_fails_falls_back_to_the_eager_step():
    step, model = make_step("default", fall_back=True)
    step._loss = _no_compiler  # what a node without a C compiler for Triton does on first call
    before = {name: value.clone() for name, value in model.state_dict().items()}
    step.warm_up(batch_size=4, image_size=32, num_classes=4, dtype=torch.float32)
    assert step.compile_mode == "off" and step.fell_back.startswith("Failed to find C compiler")
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    step.train(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]), 0)  # eager from now on


def test_a_compilation_asked_for_by_name_that_fails_is_not_hidden():
    step, _ = make_step("default", fall_back=False)
    step._loss = _no_compiler
    with pytest.raises(RuntimeError, match="Failed to find C compiler"):
        step.warm_up(batch_size=4, image_size=32, num_classes=4, dtype=torch.float32)
