"""Backbone-gradient norm of each base method's loss at initialisation, relative to SimCLR's InfoNCE.

The λ of the E-BYOL, E-VICReg and E-MoCo v3 presets is the paper's E-SimCLR weight (0.4) times this ratio, so
that the prediction term gets about the share of the backbone gradient it has in E-SimCLR (docs/methods.md).

- ``mnist``: the small CNN with the mnist5k presets' heads on 256 MNIST-5k training digits (plus a little noise
  per view);
- ``cifar``: the CIFAR ResNet-18 with the cifar10 presets' heads on 128 random CIFAR-sized images.

Both views, the model in train mode, fp32; mean over 2 initialisation seeds. Run:

    python benchmarks/gradient_scale.py mnist|cifar
"""

from __future__ import annotations

import sys

import torch

from essl.training.config import load_config
from essl.training.model import ESSLModel

PRESETS = {"mnist": "mnist5k-{}", "cifar": "cifar10-{}"}
METHODS = ("simclr", "simsiam", "byol", "vicreg", "mocov3")


def inputs(kind: str, g: torch.Generator) -> torch.Tensor:
    if kind == "cifar":
        return torch.randn(128, 3, 32, 32, generator=g)
    from essl.data import load_dataset

    digits = load_dataset("mnist5k", "train", None, 28).images[:256].float() / 255
    return (digits + 0.1 * torch.randn(digits.shape, generator=g) - 0.13) / 0.3


def main(kind: str) -> None:
    norms: dict[str, list[float]] = {m: [] for m in METHODS}
    for seed in range(2):
        g = torch.Generator().manual_seed(100 + seed)
        x1, x2 = inputs(kind, g), inputs(kind, g)
        for method in METHODS:
            cfg = load_config(PRESETS[kind].format(method), ["precision=fp32"])
            torch.manual_seed(seed)
            model = ESSLModel(cfg, x1.shape[1]).train()
            model(x1, x2)["loss"].backward()
            grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
            norms[method].append(torch.sqrt(sum((gr**2).sum() for gr in grads)).item())
    base = sum(norms["simclr"]) / 2
    print(f"| method ({kind}) | backbone-gradient norm | ratio to SimCLR |\n|---|---|---|")
    for method, values in norms.items():
        print(f"| {method} | {sum(values) / 2:.3f} | {sum(values) / 2 / base:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mnist")
