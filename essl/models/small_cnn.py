"""A small convolutional backbone that trains fast on 28×28 digits on a CPU.

Four stages of 3×3 conv + BatchNorm + ReLU (widths 32, 64, 128, 256; strides 1, 2, 2, 2) and global average
pooling, giving a 256-d representation for any input size ≥ 8 px (the 20 px prediction crops included).
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i, w in enumerate(widths):
            layers += [
                nn.Conv2d(cin, w, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
            ]
            if i > 0:
                layers += [nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)
