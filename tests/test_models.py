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


def _plain_copy(model: nn.Module) -> nn.Module:
    """``model`` with every 3×3 convolution as a plain ``nn.Conv2d`` holding the same weights (the reference)."""
    import copy

    from essl.models.resnet import Conv3x3

    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, Conv3x3):
            m.__class__ = nn.Conv2d
    return ref


def test_conv3x3_on_2x2_is_the_padded_convolution():
    import torch.nn.functional as F

    from essl.models.resnet import conv3x3_on_2x2

    torch.manual_seed(0)
    x = torch.randn(5, 7, 2, 2, dtype=torch.float64)
    w, b = torch.randn(6, 7, 3, 3, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    ref = F.conv2d(x, w, b, padding=1)
    torch.testing.assert_close(conv3x3_on_2x2(x, w, b), ref, rtol=0, atol=1e-12)
    out = conv3x3_on_2x2(x.contiguous(memory_format=torch.channels_last), w)
    assert out.is_contiguous(memory_format=torch.channels_last)  # no layout change for a channels-last network
    torch.testing.assert_close(out, F.conv2d(x, w, padding=1), rtol=0, atol=1e-12)
    assert conv3x3_on_2x2(x, w).is_contiguous()
    # gradients with respect to the input, the weight (each tap summed over the (p, q) blocks that use it) and bias
    args = (x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_())
    assert torch.autograd.gradcheck(conv3x3_on_2x2, args)
    (conv3x3_on_2x2(*args) * ref).sum().backward()
    ref_args = (x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_())
    (F.conv2d(*ref_args, padding=1) * ref).sum().backward()
    for mine, theirs in zip(args, ref_args):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=0, atol=1e-10)


def test_conv3x3_uses_the_product_only_on_2x2_stride_1_cpu_maps(monkeypatch):
    import essl.models.resnet as resnet

    calls = []
    real = resnet.conv3x3_on_2x2
    monkeypatch.setattr(resnet, "conv3x3_on_2x2", lambda *a: calls.append(a[0].shape) or real(*a))
    conv, down = resnet.Conv3x3(4, 8), resnet.Conv3x3(4, 8, stride=2)
    assert list(conv.state_dict()) == ["weight"] and isinstance(conv, nn.Conv2d)  # nn.Conv2d's parameters
    for layer, size in ((conv, 2), (conv, 4), (conv, 1), (down, 2), (down, 4)):
        x = torch.randn(3, 4, size, size)
        torch.testing.assert_close(layer(x), nn.functional.conv2d(x, layer.weight, stride=layer.stride, padding=1))
    assert calls == [(3, 4, 2, 2)]


def test_resnet18_cifar_on_16px_crops_equals_the_convolutions():
    """The 16-px rotation crops reach 2×2 maps in layer 4: features and every gradient as with nn.Conv2d."""
    torch.manual_seed(0)
    model = resnet18_cifar().double()
    ref = _plain_copy(model)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    out, ref_out = model(x), ref(x)
    torch.testing.assert_close(out, ref_out, rtol=1e-9, atol=1e-9)
    out.square().sum().backward()
    ref_out.square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-9, msg=name)


def test_resnet18_cifar_2x2_product_under_bf16_autocast_matches_the_convolution():
    torch.manual_seed(0)
    model = resnet18_cifar().to(memory_format=torch.channels_last)
    ref = _plain_copy(model)
    x = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref_out = model(x), ref(x)
    assert out.dtype == ref_out.dtype
    # bf16 products summed in another order: agreement to bf16's precision, not bit for bit
    assert (out.float() - ref_out.float()).abs().max() <= 0.05 * ref_out.float().abs().max()
