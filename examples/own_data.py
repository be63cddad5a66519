"""Bring your own data: pretrain on images already in memory, then take the encoder out and use it.

    python examples/own_data.py --epochs 2
    python examples/own_data.py --epochs 2 --logger tensorboard   # needs pip install 'essl[tensorboard]'

Here "your data" is a numpy array of uint8 digits (N, 28, 28) with labels; any uint8 array of shape (N, H, W) or
(N, C, H, W) works the same. The run folder gets run.json (versions, command, device, data), the export an
encoder.safetensors + encoder.json that essl.load_backbone (or torch.hub) reads back. docs/downstream.md.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import essl
from essl.data import load_mnist5k
from essl.export import export_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=1024, help="training images taken from the arrays")
    parser.add_argument("--logger", default="none", choices=("none", "tensorboard", "wandb"))
    parser.add_argument("--out", type=Path, default=Path("runs/own-data"))
    args = parser.parse_args()

    # your arrays: uint8 images and integer labels (the labels are optional; they feed the online linear probe)
    train, test = load_mnist5k("train"), load_mnist5k("test")
    rng = np.random.default_rng(0)
    keep = rng.permutation(len(train))[: args.subset]
    images, labels = train.images[keep, 0].numpy(), train.labels[keep].numpy()
    test_images, test_labels = test.images[:, 0].numpy(), test.labels.numpy()

    # a preset for the method and its settings; batch 32 gives 32 steps per epoch on 1,024 images (essl warns
    # below 20: the schedule would barely move)
    cfg = essl.load_config(
        "mnist5k-esimclr", [f"epochs={args.epochs}", "batch_size=32", "knn_k=20", f"logger={args.logger}"]
    )
    run = essl.pretrain(
        cfg, args.out, overwrite=True, train=images, labels=labels, test=test_images, test_labels=test_labels
    )
    record = json.loads((run / "run.json").read_text())
    print(f"trained on {record['data']['images']} images in memory ({record['precision']} on {record['device']})")

    # take the encoder out, and use it like any torch module
    weights, _ = export_backbone(run, run / "encoder.safetensors", overwrite=True)
    backbone, meta = essl.load_backbone(weights)
    mean = torch.tensor(meta["normalization"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["normalization"]["std"]).view(1, -1, 1, 1)
    x = torch.from_numpy(test_images[:8]).unsqueeze(1).float() / 255  # (8, 1, 28, 28) in [0, 1]
    with torch.no_grad():
        features = backbone((x - mean) / std)
    print(f"{weights.name}: {meta['architecture']}, features {tuple(features.shape)}")


if __name__ == "__main__":
    main()
