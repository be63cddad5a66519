"""Bring your own backbone: any function that returns an nn.Module with a ``feature_dim`` attribute.

    python examples/custom_backbone.py --epochs 2
    # the same from the command line, run from examples/ (or with it on PYTHONPATH):
    essl pretrain mnist5k-esimclr backbone=custom_backbone:tiny_convnet epochs=2

essl passes ``in_channels`` when the function takes it. The module is imported by name, so it must be importable
where the run happens (installed, on PYTHONPATH, or in the current folder); an export of the run stores the same
``module:function`` name, and loading it imports the module again.
"""

import argparse
import sys
from pathlib import Path

import torch
from torch import nn


class TinyConvNet(nn.Module):
    """Three strided 3x3 convolutions and global average pooling: images (N, C, H, W) -> features (N, width)."""

    def __init__(self, in_channels: int = 3, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width // 4, 3, padding=1),
            nn.BatchNorm2d(width // 4),
            nn.ReLU(),
            nn.Conv2d(width // 4, width // 2, 3, stride=2, padding=1),
            nn.BatchNorm2d(width // 2),
            nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = width  # essl sizes the projector and heads from this

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_convnet(in_channels: int = 3) -> nn.Module:
    """The factory essl calls: backbone=custom_backbone:tiny_convnet."""
    return TinyConvNet(in_channels)


if __name__ == "__main__":
    import essl
    from essl.export import export_backbone
    from essl.training.config import load_config
    from essl.training.pretrain import pretrain

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=1000, help="training digits (0: all 4,000)")
    parser.add_argument("--out", type=Path, default=Path("runs/custom-backbone"))
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # so that `custom_backbone` is importable by name
    cfg = load_config(
        "mnist5k-esimclr",
        [
            "backbone=custom_backbone:tiny_convnet",
            f"epochs={args.epochs}",
            f"subset={args.subset}",
            "batch_size=128",
            "knn_every=1",
        ],
    )
    run = pretrain(cfg, args.out, overwrite=True, progress=False)
    weights, _ = export_backbone(run, args.out / "tiny.safetensors", overwrite=True)
    backbone, meta = essl.load_backbone(weights)
    print(
        f"exported {weights}: {meta['architecture']}, {meta['feature_dim']}-d features, "
        f"{sum(p.numel() for p in backbone.parameters()):,} parameters"
    )
