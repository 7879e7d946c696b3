"""ResNet-50 v1.5 as MLPerf defines it: parameter count, stride placement, output shape."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hpcrepro.workload.model import Bottleneck, ResNet50  # noqa: E402

RESNET50_PARAMETERS = 25_557_032  # torchvision's resnet50 and the MLPerf reference have this many


def test_full_model_has_resnet50_parameter_count():
    model = ResNet50(num_classes=1000, width=64)
    assert sum(p.numel() for p in model.parameters()) == RESNET50_PARAMETERS


def test_v1_5_puts_the_stride_on_the_3x3_convolution():
    model = ResNet50(num_classes=1000)
    first_blocks = [stage[0] for stage in model.stages]
    assert [block.conv2.stride for block in first_blocks] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert all(block.conv1.stride == (1, 1) for block in first_blocks)
    assert [len(stage) for stage in model.stages] == [3, 4, 6, 3]


def test_residual_blocks_start_as_identity_and_logits_have_class_count():
    model = ResNet50(num_classes=7, width=8).eval()
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    assert all(float(block.bn3.weight.detach().abs().sum()) == 0.0 for block in blocks)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7)


def test_channels_last_gives_the_same_result():
    torch.manual_seed(0)
    model = ResNet50(num_classes=5, width=8).eval()
    images = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        plain = model(images)
        model = model.to(memory_format=torch.channels_last)
        nhwc = model(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(plain, nhwc, rtol=1e-4, atol=1e-5)
