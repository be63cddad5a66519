"""ResNet backbones (He et al. 2016) that return pooled features, with torchvision's parameter names.

- :func:`resnet18_cifar`: the CIFAR variant of the paper (3×3 stride-1 stem, no max-pool, 512-d output).
- :func:`resnet50`: the ImageNet ResNet-50 (7×7 stride-2 stem + max-pool, 2048-d output). Its ``state_dict`` keys
  are those of ``torchvision.models.resnet50`` without ``fc.*``, so published backbone weights load directly
  (:func:`load_torchvision_state_dict` drops the classifier).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# For output position p and input position q of a 2×2 map, the 3×3 tap (row, column) that joins them under
# padding 1: q = p − 1 + tap, so tap = q − p + 1 (positions in row-major order (0,0), (0,1), (1,0), (1,1)).
_POSITIONS = torch.tensor([(0, 0), (0, 1), (1, 0), (1, 1)])
_TAP_ROW = _POSITIONS[None, :, 0] - _POSITIONS[:, None, 0] + 1  # [p, q]
_TAP_COL = _POSITIONS[None, :, 1] - _POSITIONS[:, None, 1] + 1


def conv3x3_on_2x2(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for a 2×2 input ``(N, C, 2, 2)`` as one matrix product.

    On a 2×2 map every output sees every input through one tap, so the convolution is the linear map
    ``(N, 4·C_in) → (N, 4·C_out)`` whose ``(p, q)`` block is ``weight[:, :, q − p + 1]``: the same arithmetic
    without the padded taps (20 of the 36 the convolution visits), as one large GEMM instead of a convolution
    over a tiny map, which oneDNN runs at a fraction of its rate on the CPU. The last stage of a CIFAR ResNet on
    the paper's 16-px prediction crops runs on such maps. Channels-last input is read without a copy and the
    output is channels-last.
    """
    n, cin = x.shape[:2]
    cout = weight.shape[0]
    if torch.is_autocast_enabled(x.device.type):  # cast first, as autocast's conv2d would: the gather moves half
        weight = weight.to(torch.get_autocast_dtype(x.device.type))
    big = weight.permute(2, 3, 0, 1)[_TAP_ROW, _TAP_COL]  # [p, q, C_out, C_in]
    big = big.permute(0, 2, 1, 3).reshape(4 * cout, 4 * cin)  # rows (p, C_out), columns (q, C_in)
    flat = x.permute(0, 2, 3, 1).reshape(n, 4 * cin)  # (q, C_in): a view of a channels-last input
    y = F.linear(flat, big, None if bias is None else bias.repeat(4))
    out = y.view(n, 2, 2, cout).permute(0, 3, 1, 2)
    return out if x.is_contiguous(memory_format=torch.channels_last) else out.contiguous()


class Conv3x3(nn.Conv2d):
    """A 3×3 convolution (``nn.Conv2d`` with padding 1, same parameters and ``state_dict``) that computes a
    stride-1 layer on a 2×2 CPU map with :func:`conv3x3_on_2x2`; everywhere else it is ``nn.Conv2d``.
    Measured on the CPU only (BENCHMARKS.md), so other devices keep the convolution."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(cin, cout, 3, stride=stride, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1) and x.dim() == 4 and x.shape[-2:] == (2, 2) and x.device.type == "cpu":
            return conv3x3_on_2x2(x, self.weight, self.bias)
        return super().forward(x)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return Conv3x3(cin, cout, stride)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(cin, planes, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """ResNet trunk + global average pool; ``forward`` returns ``(N, feature_dim)`` features."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        stem: str = "imagenet",
        in_channels: int = 3,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self._cin = 64
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 512 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # Goyal et al. 2017: each residual branch starts as zero
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._cin != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._cin, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self._cin, planes, stride, downsample)]
        self._cin = planes * block.expansion
        layers += [block(self._cin, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def resnet18_cifar(in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-18 of the paper (official ``cifar10/resnet.py`` layout): 3×3 stem, no max-pool, 512-d."""
    return ResNet(BasicBlock, [2, 2, 2, 2], stem="cifar", in_channels=in_channels)


def resnet18(in_channels: int = 3) -> ResNet:
    """ImageNet ResNet-18 (512-d)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], stem="imagenet", in_channels=in_channels)


def resnet50(in_channels: int = 3, zero_init_residual: bool = True) -> ResNet:
    """ImageNet ResNet-50 (2048-d), ``zero_init_residual=True`` as in the paper's ImageNet scripts."""
    return ResNet(
        Bottleneck, [3, 4, 6, 3], stem="imagenet", in_channels=in_channels, zero_init_residual=zero_init_residual
    )


def load_torchvision_state_dict(model: ResNet, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a torchvision-layout ResNet state_dict (``fc.*`` and a ``module.`` prefix are dropped); strict otherwise."""
    cleaned = {k.removeprefix("module."): v for k, v in state_dict.items()}
    cleaned = {k: v for k, v in cleaned.items() if not k.startswith("fc.")}
    model.load_state_dict(cleaned, strict=True)
