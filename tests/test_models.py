"""Backbones and heads: shapes, layouts and the architectures of the official code (rdangovs/essl cifar10/main.py)."""

import torch
from torch import nn

from essl.models import (
    load_torchvision_state_dict,
    prediction_head,
    projector,
    resnet18_cifar,
    resnet50,
    simsiam_predictor,
    SmallCNN,
)


def test_resnet18_cifar_layout():
    m = resnet18_cifar()
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and isinstance(m.maxpool, nn.Identity)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 512)  # the rotation crops


def _torchvision_resnet50_keys():
    """The parameter and buffer names of torchvision.models.resnet50 (written out from its architecture)."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{b}" for b in bn]
    for layer, blocks in zip(range(1, 5), (3, 4, 6, 3)):
        for i in range(blocks):
            p = f"layer{layer}.{i}"
            for c in (1, 2, 3):
                keys += [f"{p}.conv{c}.weight"] + [f"{p}.bn{c}.{b}" for b in bn]
            if i == 0:
                keys += [f"{p}.downsample.0.weight"] + [f"{p}.downsample.1.{b}" for b in bn]
    return keys + ["fc.weight", "fc.bias"]


def test_resnet50_loads_torchvision_layout():
    m = resnet50()
    expected = [k for k in _torchvision_resnet50_keys() if not k.startswith("fc.")]
    assert sorted(m.state_dict()) == sorted(expected)
    assert m.layer4[2].conv3.weight.shape == (2048, 512, 1, 1)
    state = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in m.state_dict().items()}
    state.update({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    other = resnet50()
    load_torchvision_state_dict(other, {f"module.{k}": v for k, v in state.items()})
    assert torch.equal(other.layer3[1].bn2.running_var, state["layer3.1.bn2.running_var"])
    assert other.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 2048)
    # zero-init residual: each bottleneck's last BN scale starts at 0
    assert torch.count_nonzero(resnet50().layer1[0].bn3.weight) == 0


def _layer_kinds(head):
    return [
        type(m).__name__
        + (
            f"({m.in_features}->{m.out_features},{'b' if m.bias is not None else 'nb'})"
            if isinstance(m, nn.Linear)
            else ""
        )
        for m in head
    ]


def test_cifar_heads_match_the_paper():
    assert _layer_kinds(projector("cifar", 512)) == [
        "Linear(512->2048,nb)",
        "BatchNorm1d",
        "ReLU",
        "Linear(2048->2048,nb)",
        "BatchNorm1d",
    ]
    assert not projector("cifar", 512)[-1].affine
    assert _layer_kinds(prediction_head("cifar_simclr", 512, 4)) == [
        "Linear(512->2048,b)",
        "LayerNorm",
        "ReLU",
        "Linear(2048->2048,b)",
        "LayerNorm",
        "ReLU",
        "Linear(2048->4,b)",
    ]
    assert _layer_kinds(prediction_head("cifar_simsiam", 512, 4)) == [
        "Linear(512->2048,b)",
        "LayerNorm",
        "ReLU",
        "Linear(2048->2048,b)",
        "LayerNorm",
        "Linear(2048->4,b)",
    ]
    assert _layer_kinds(simsiam_predictor(2048, 512)) == [
        "Linear(2048->512,nb)",
        "BatchNorm1d",
        "ReLU",
        "Linear(512->2048,b)",
    ]


def test_imagenet_heads_match_the_paper():
    assert _layer_kinds(prediction_head("imagenet_simclr", 2048, 4)) == [
        "Linear(2048->2048,b)",
        "LayerNorm",
        "ReLU",
        "Linear(2048->2048,b)",
        "LayerNorm",
        "ReLU",
        "Linear(2048->128,b)",
        "LayerNorm",
        "Linear(128->4,b)",
    ]
    assert _layer_kinds(prediction_head("imagenet_simsiam", 2048, 4))[-3:] == [
        "Linear(2048->256,b)",
        "LayerNorm",
        "Linear(256->4,b)",
    ]
    assert _layer_kinds(projector("simclr_imagenet", 2048))[-2:] == ["Linear(2048->128,nb)", "BatchNorm1d"]


def test_small_cnn_any_size():
    m = SmallCNN(1)
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 256) and m(torch.randn(3, 1, 20, 20)).shape == (3, 256)
