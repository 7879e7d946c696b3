"""Which division a run may claim."""

from __future__ import annotations

from hpcrepro.workload.mlperf import division_for

FULL = {
    "width": 64,
    "image_size": 224,
    "num_classes": 1000,
    "target": 0.759,
    "train_samples": 1_281_167,
    "eval_samples": 50_000,
}


def test_only_resnet50_on_imagenet_to_the_mlperf_target_is_closed():
    assert division_for(**FULL) == "closed"
    assert division_for(**{**FULL, "num_classes": 1001}) == "closed"
    for change in (
        {"width": 16},
        {"image_size": 128},
        {"num_classes": 10},
        {"target": 0.7},
        {"train_samples": 1000},
        {"eval_samples": 200},
    ):
        assert division_for(**{**FULL, **change}) == "open", change
